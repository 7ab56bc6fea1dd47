// Package pimproc builds the pim binary and runs `pim serve` as a child
// process, for tests that kill and restart a real server (crash tests,
// bench --faults tests).
//
// Invariants: the binary is built at most once per process; a Server's
// process is waited for by exactly one goroutine, which closes Done when
// the process has exited.
package pimproc

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Build builds cmd/pim into a temporary directory, once per process, and
// returns the binary's path.
func Build() (string, error) {
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pim-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "pim")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/pim-project/pim/cmd/pim").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	return binPath, buildErr
}

// Server is a running `pim serve` child process.
type Server struct {
	Cmd  *exec.Cmd
	Addr string        // the TCP address from the banner
	Pin  string        // the self-signed certificate's fingerprint, if any
	Done chan struct{} // closed once the process has exited
}

// Start runs bin with args (a `serve` command line) and returns once its
// banner has named the TCP address.
func Start(bin string, args ...string) (*Server, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pim serve: %w", err)
	}
	s := &Server{Cmd: cmd, Done: make(chan struct{})}
	s.readBanner(bufio.NewScanner(out))
	if s.Addr == "" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("pim %s printed no tcp address", strings.Join(args, " "))
	}
	go func() { // owns the process until it exits
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(s.Done)
	}()
	return s, nil
}

// readBanner reads `pim serve`'s banner up to its "get a token" line.
func (s *Server) readBanner(sc *bufio.Scanner) {
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 2 && f[0] == "tcp:":
			s.Addr = f[1]
		case len(f) >= 4 && f[0] == "self-signed":
			s.Pin = f[3]
		case len(f) >= 2 && f[0] == "get" && f[1] == "a":
			return
		}
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (s *Server) Kill() {
	s.Cmd.Process.Kill()
	<-s.Done
}
