package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Banner is what a benchmark needs from `pim serve`'s start-up banner.
type Banner struct {
	TCP         string // host:port of the long-connection listener
	TLS         bool
	HTTPBase    string // "http://host:port" or "https://host:port" ("" if disabled)
	Fingerprint string // self-signed certificate fingerprint ("" if none)
	Pprof       string // host:port of `pim bench serve --bench-pprof` ("" if none)
	Done        bool   // the last banner line was seen
}

// ParseBannerLine updates b from one line of the banner.
func (b *Banner) ParseBannerLine(line string) {
	f := strings.Fields(line)
	if len(f) == 0 {
		return
	}
	switch {
	case f[0] == "tcp:" && len(f) >= 2:
		b.TCP = f[1]
		b.TLS = strings.Contains(line, "(tls: true)")
	case f[0] == "api:" && len(f) >= 2:
		u := f[1]
		if i := strings.Index(u, "://"); i >= 0 {
			if j := strings.Index(u[i+3:], "/"); j >= 0 {
				u = u[:i+3+j]
			}
			b.HTTPBase = u
		}
	case f[0] == "pprof:" && len(f) >= 2:
		b.Pprof = f[1]
	case len(f) >= 4 && f[0] == "self-signed" && f[1] == "certificate" && f[2] == "sha256:":
		b.Fingerprint = f[3]
	case strings.HasPrefix(line, "admin key for the HTTP API"):
		b.Done = true
	}
}

// SpawnOptions configures Spawn.
type SpawnOptions struct {
	// Bin is the pim binary (default: this executable).
	Bin string
	// Args are extra `pim serve` flags (--fsync, --max-group-size, ...).
	Args []string
	// TLS serves with a self-signed certificate.
	TLS bool
	// TCP is the long-connection listen address (default 127.0.0.1:0, a
	// free port). A fixed one (FreeLoopbackAddr) makes Restart bring the
	// server back where its clients reconnect.
	TCP string
	// Pprof runs the server as `pim bench serve --bench-pprof 127.0.0.1:0` (the same
	// server with a profiling endpoint) instead of `pim serve`.
	Pprof bool
	// Keep leaves the data directory in place (it is printed).
	Keep bool
	// Env is added to the server's environment (e.g. GOGC=200).
	Env []string
}

// Spawned is a `pim serve` child process on a fresh data directory. After
// Kill, Restart runs it again with the same arguments on the same data
// directory (and, with a fixed SpawnOptions.TCP, the same port); PID and
// the Banner then describe the new process.
type Spawned struct {
	Banner
	PID     int
	DataDir string
	LogPath string
	Args    []string
	// Restarts counts the successful Restarts.
	Restarts int

	env  []string
	tmp  string
	keep bool
	p    *proc // the current process
}

// proc is one run of the server process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, set before done is closed
}

// Spawn starts a server on a temporary data dir and free loopback ports and
// returns once its banner says it listens.
func Spawn(ctx context.Context, o SpawnOptions) (*Spawned, error) {
	bin := o.Bin
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("spawn: find this executable: %w", err)
		}
	}
	tmp, err := os.MkdirTemp("", "pim-bench-")
	if err != nil {
		return nil, fmt.Errorf("spawn: %w", err)
	}
	s := &Spawned{DataDir: filepath.Join(tmp, "data"), LogPath: filepath.Join(tmp, "server.log"),
		tmp: tmp, keep: o.Keep, env: append(os.Environ(), o.Env...)}
	args := []string{"serve"}
	if o.Pprof {
		args = []string{"bench", "serve", "--bench-pprof", "127.0.0.1:0"}
	}
	tcp := o.TCP
	if tcp == "" {
		tcp = "127.0.0.1:0"
	}
	args = append(args, "--data", s.DataDir, "--tcp", tcp, "--http", "127.0.0.1:0", "--log-level", "warn")
	if o.TLS {
		args = append(args, "--tls-self-signed")
	}
	args = append(args, o.Args...)
	s.Args = append([]string{bin}, args...)
	if err := s.start(ctx); err != nil {
		s.cleanup()
		return nil, err
	}
	return s, nil
}

// start runs the server process (s.Args) and returns once its banner says
// it listens; on failure the process is gone.
func (s *Spawned) start(ctx context.Context) error {
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644) // a restart appends
	if err != nil {
		return fmt.Errorf("spawn: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(s.Args[0], s.Args[1:]...)
	cmd.Stderr = logf
	cmd.Env = s.env
	// Its own process group (a Ctrl-C reaches the benchmark, which stops the
	// server in order), and SIGTERM if the benchmark dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("spawn: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("spawn %s: %w", s.Args[0], err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	s.p, s.PID, s.Banner = p, cmd.Process.Pid, Banner{}
	lines := make(chan string)
	stopLines := make(chan struct{})
	defer close(stopLines)
	go func() { // owns stdout: the banner lines while start reads them, then discard
		sc := bufio.NewScanner(out)
	scan:
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stopLines:
				break scan
			}
		}
		close(lines)
		io.Copy(io.Discard, out)
		p.err = cmd.Wait()
		close(p.done)
	}()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for !s.Done {
		select {
		case l, ok := <-lines:
			if !ok {
				<-p.done
				return fmt.Errorf("spawn: server exited before it listened (%v): %s", p.err, s.logTail())
			}
			s.ParseBannerLine(l)
		case <-timeout.C:
			s.terminate(time.Second)
			return fmt.Errorf("spawn: no banner within 30s: %s", s.logTail())
		case <-ctx.Done():
			s.terminate(time.Second)
			return ctx.Err()
		}
	}
	if s.TCP == "" {
		s.terminate(time.Second)
		return errors.New("spawn: the banner has no tcp address")
	}
	return nil
}

// Exited is closed when the current server process has exited.
func (s *Spawned) Exited() <-chan struct{} { return s.p.done }

// Kill stops the server like a crash (SIGKILL) and returns once it has
// exited.
func (s *Spawned) Kill() {
	select {
	case <-s.p.done:
	default:
		_ = s.p.cmd.Process.Kill()
		<-s.p.done
	}
}

// Restart runs the server again after it exited (Kill), with the same
// arguments and data directory, and returns once it listens. It fails if
// the process still runs, or if the new one cannot listen (e.g. its fixed
// port was taken meanwhile).
func (s *Spawned) Restart(ctx context.Context) error {
	select {
	case <-s.p.done:
	default:
		return errors.New("spawn: restart while the server runs")
	}
	if f, err := os.OpenFile(s.LogPath, os.O_WRONLY|os.O_APPEND, 0); err == nil {
		fmt.Fprintf(f, "pim bench: restart %d (the server exited: %v)\n", s.Restarts+1, s.p.err)
		f.Close()
	}
	prev := s.Banner
	if err := s.start(ctx); err != nil {
		s.Banner = prev
		return fmt.Errorf("restart: %w", err)
	}
	s.Restarts++
	return nil
}

// Stop sends SIGTERM, waits up to grace for the server to exit, then kills
// it, and removes the data directory unless it is kept. It returns the
// server's exit error, if any.
func (s *Spawned) Stop(grace time.Duration) error {
	s.terminate(grace)
	err := s.p.err
	s.cleanup()
	if err != nil {
		return fmt.Errorf("server exited: %v: %s", err, s.logTail())
	}
	return nil
}

// terminate ends the current process: SIGTERM, SIGKILL after grace.
func (s *Spawned) terminate(grace time.Duration) {
	select {
	case <-s.p.done:
	default:
		_ = s.p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-s.p.done:
			t.Stop()
		case <-t.C:
			_ = s.p.cmd.Process.Kill()
			<-s.p.done
		}
	}
}

func (s *Spawned) cleanup() {
	if !s.keep {
		os.RemoveAll(s.tmp)
	}
}

// FreeLoopbackAddr returns 127.0.0.1:PORT with a port that is free now,
// for a server that must come back on the same port after a restart. It
// prefers a port below the kernel's ephemeral range, which outgoing
// connections never take while the server is down.
func FreeLoopbackAddr() (string, error) {
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				lo = v
			}
		}
	}
	const from = 20000
	if lo-from >= 1000 {
		for range 50 {
			addr := fmt.Sprintf("127.0.0.1:%d", from+rand.IntN(lo-from))
			if ln, err := net.Listen("tcp", addr); err == nil {
				ln.Close()
				return addr, nil
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// logTail returns the end of the server's log, for error messages.
func (s *Spawned) logTail() string {
	b, err := os.ReadFile(s.LogPath)
	if err != nil {
		return "(no server log)"
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "(server log empty)"
	}
	return "server log: " + t
}
