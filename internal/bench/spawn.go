package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
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
	// Pprof runs the server as `pim bench serve --bench-pprof 127.0.0.1:0` (the same
	// server with a profiling endpoint) instead of `pim serve`.
	Pprof bool
	// Keep leaves the data directory in place (it is printed).
	Keep bool
	// Env is added to the server's environment (e.g. GOGC=200).
	Env []string
}

// Spawned is a `pim serve` child process on a fresh data directory.
type Spawned struct {
	Banner
	PID     int
	DataDir string
	LogPath string
	Args    []string

	cmd  *exec.Cmd
	tmp  string
	keep bool
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
		tmp: tmp, keep: o.Keep, done: make(chan struct{})}
	args := []string{"serve"}
	if o.Pprof {
		args = []string{"bench", "serve", "--bench-pprof", "127.0.0.1:0"}
	}
	args = append(args, "--data", s.DataDir, "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "warn")
	if o.TLS {
		args = append(args, "--tls-self-signed")
	}
	args = append(args, o.Args...)
	s.Args = append([]string{bin}, args...)
	logf, err := os.Create(s.LogPath)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("spawn: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), o.Env...)
	// Its own process group (a Ctrl-C reaches the benchmark, which stops the
	// server in order), and SIGTERM if the benchmark dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	out, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("spawn: %w", err)
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("spawn %s: %w", bin, err)
	}
	s.cmd, s.PID = cmd, cmd.Process.Pid
	lines := make(chan string)
	stopLines := make(chan struct{})
	defer close(stopLines)
	go func() { // owns stdout: the banner lines while Spawn reads them, then discard
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
		s.err = cmd.Wait()
		close(s.done)
	}()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for !s.Done {
		select {
		case l, ok := <-lines:
			if !ok {
				<-s.done
				s.cleanup()
				return nil, fmt.Errorf("spawn: server exited before it listened (%v): %s", s.err, s.logTail())
			}
			s.ParseBannerLine(l)
		case <-timeout.C:
			s.Stop(time.Second)
			return nil, fmt.Errorf("spawn: no banner within 30s: %s", s.logTail())
		case <-ctx.Done():
			s.Stop(time.Second)
			return nil, ctx.Err()
		}
	}
	if s.TCP == "" {
		s.Stop(time.Second)
		return nil, errors.New("spawn: the banner has no tcp address")
	}
	return s, nil
}

// Exited is closed when the server process has exited.
func (s *Spawned) Exited() <-chan struct{} { return s.done }

// Stop sends SIGTERM, waits up to grace for the server to exit, then kills
// it, and removes the data directory unless it is kept. It returns the
// server's exit error, if any.
func (s *Spawned) Stop(grace time.Duration) error {
	select {
	case <-s.done:
	default:
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-s.done:
			t.Stop()
		case <-t.C:
			_ = s.cmd.Process.Kill()
			<-s.done
		}
	}
	err := s.err
	s.cleanup()
	if err != nil {
		return fmt.Errorf("server exited: %v: %s", err, s.logTail())
	}
	return nil
}

func (s *Spawned) cleanup() {
	if !s.keep {
		os.RemoveAll(s.tmp)
	}
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
