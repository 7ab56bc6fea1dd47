package netem

// Named network namespaces (`ip netns`). Invariants: every command runs with
// a bounded context and its output is in its error; Do runs its function on
// a thread that is in the namespace for exactly the function's duration and
// is never handed back to the Go scheduler in the wrong namespace (if
// switching back fails, the thread stays locked and ends with its goroutine).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/var/run/netns"

// cmdTimeout bounds each ip or nft command.
const cmdTimeout = 30 * time.Second

// ErrUnsupported is in the chain of the errors of Check and of a Topology
// that could not be made because this machine or user cannot do it (not
// root, a tool missing, namespaces refused): tests skip on it.
var ErrUnsupported = errors.New("netem: network namespaces unavailable")

// Check reports whether this process can build a Topology: root, `ip` and
// `nft` on PATH, /dev/net/tun present. Its error says what is missing and
// wraps ErrUnsupported.
func Check() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "not root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			hint := ""
			if tool == "nft" {
				hint = " (Debian: apt-get install -y nftables)"
			}
			missing = append(missing, fmt.Sprintf("no %q on PATH%s", tool, hint))
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "no /dev/net/tun")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrUnsupported, strings.Join(missing, "; "))
	}
	return nil
}

// Namespace is a named network namespace, as `ip netns` names it.
type Namespace string

// Command returns a command that runs name with args inside the namespace
// (`ip netns exec NS name args...`, which execs the program: the process is
// the program itself). The process sees the host's file system.
func (ns Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", string(ns), name}, args...)...)
}

// IP runs `ip -n NS args...`.
func (ns Namespace) IP(ctx context.Context, args ...string) error {
	return run(ctx, nil, "ip", append([]string{"-n", string(ns)}, args...)...)
}

// Do runs f on an OS thread that is inside the namespace. Sockets and
// devices f creates stay in the namespace after it returns (a socket's
// namespace is fixed when it is made), so f may return a listener or
// connection to be used from any goroutine. f must not start goroutines
// that need to be in the namespace: they run on other threads.
func (ns Namespace) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netem: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join(netnsDir, string(ns)))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netem: namespace %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netem: setns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it ends with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("netem: setns back from %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen opens a listener inside the namespace (see net.Listen).
func (ns Namespace) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet connection inside the namespace (see net.ListenPacket).
func (ns Namespace) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Dial connects from inside the namespace. addr must be an IP literal
// (host:port), so that dialing needs no lookup on another goroutine.
func (ns Namespace) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// WriteSysctl writes value to /proc/sys/<key> inside the namespace, key
// using slashes (net/ipv4/ip_forward).
func (ns Namespace) WriteSysctl(key, value string) error {
	return ns.Do(func() error {
		return os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0)
	})
}

// run runs a command with a bounded context; stdin, if not nil, is its input.
// The error carries the command line and its output.
func run(ctx context.Context, stdin []byte, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("netem: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// output runs a command like run and returns its standard output.
func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("netem: %s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// ChildAttr returns process attributes for a child that must not outlive the
// test process (it gets SIGKILL when its parent dies).
func ChildAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
