// Load processes: a process may hold at most RLIMIT_NOFILE open files
// (20,000 on the project's machines), so a storm of more clients than
// PerProc re-executes this binary as workers (`pim bench storm worker`),
// each running one fleet.
//
// Protocol: the parent writes the job (a FleetConfig, one JSON line), then
// commands, one per line: "traffic on", "traffic off", "storm <unix ns>",
// "finish". The worker writes JSON lines: {"event":"progress",...} every
// 200 ms and once "traffic off" is carried out, and
// {"event":"report","report":{...}} after "finish". A worker exits when its
// stdin closes, so it never outlives the parent.
//
// Invariants of this file:
//   - Both sides handle the same commands the same way: a local fleet and a
//     worker are interchangeable (fleetHandle).
//   - A worker's counts are as old as its last report: the parent knows
//     they were read after its last "traffic off" only by their stamp
//     (Progress.TrafficOffs against trafficOffs()), never by having written
//     the command.
//   - Every worker process is waited for; close kills one that does not
//     exit within 30 s of its stdin closing.
package storm

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pim-project/pim/internal/bench"
	"github.com/pim-project/pim/internal/tlsutil"
)

// fleetHandle is a fleet here or in a worker process.
type fleetHandle interface {
	progress() Progress
	storm(at int64) error
	traffic(on bool) error
	// trafficOffs is how many "traffic off" the fleet was given: progress
	// counts stamped with fewer may have been read while it still sent.
	trafficOffs() int64
	finish(ctx context.Context) (FleetReport, error) // stop everything and report
	pid() int                                        // 0 for this process
	close() error
}

type localFleet struct{ f *fleet }

func (l localFleet) progress() Progress    { return l.f.progress() }
func (l localFleet) storm(at int64) error  { l.f.storm(at); return nil }
func (l localFleet) traffic(on bool) error { l.f.traffic(on); return nil }
func (l localFleet) trafficOffs() int64    { return l.f.trafficOffs.Load() } // traffic is synchronous
func (l localFleet) pid() int              { return 0 }
func (l localFleet) close() error          { l.f.close(); return nil }
func (l localFleet) finish(context.Context) (FleetReport, error) {
	l.f.close()
	return l.f.report(), nil
}

// clientTLS builds the TLS client configuration of a job.
func clientTLS(cfg FleetConfig) (*tls.Config, error) {
	if !cfg.TLS {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("storm: server address %q: %w", cfg.Addr, err)
	}
	return tlsutil.ClientConfig(host, cfg.TLSPin, cfg.Insecure, cfg.TLSCA)
}

type workerMsg struct {
	Event string `json:"event"`
	Progress
	Report *FleetReport `json:"report,omitempty"`
}

// RunWorker is `pim bench storm worker`: one fleet driven over stdin/stdout.
func RunWorker(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	bench.RaiseFileLimit()
	in := bufio.NewReader(stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("storm worker: read job: %w", err)
	}
	var job FleetConfig
	if err := json.Unmarshal(line, &job); err != nil {
		return fmt.Errorf("storm worker: decode job: %w", err)
	}
	tc, err := clientTLS(job)
	if err != nil {
		return err
	}
	f, err := newFleet(job, tc)
	if err != nil {
		return err
	}
	defer f.close()
	enc := json.NewEncoder(stdout)
	var mu sync.Mutex
	send := func(m workerMsg) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(m)
	}
	sendProgress := func() { // read under mu: the reports go out in the order they were read
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(workerMsg{Event: "progress", Progress: f.progress()})
	}
	f.start()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // progress reporter; ends at stop
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sendProgress()
			}
		}
	}()
	defer func() { close(stop); <-done }()
	for {
		l, err := in.ReadString('\n')
		cmd := strings.TrimSpace(l)
		switch {
		case cmd == "traffic on":
			f.traffic(true)
		case cmd == "traffic off":
			f.traffic(false) // returns with the pacer stopped
			sendProgress()   // stamped with it: the parent need not wait for the next tick
		case strings.HasPrefix(cmd, "storm "):
			at, perr := strconv.ParseInt(strings.TrimPrefix(cmd, "storm "), 10, 64)
			if perr == nil {
				f.storm(at)
			}
		case cmd == "finish":
			f.close()
			r := f.report()
			send(workerMsg{Event: "report", Report: &r})
		}
		if err != nil || ctx.Err() != nil {
			return nil // stdin closed: the parent is done
		}
	}
}

// worker is a worker process seen from the parent.
type worker struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	mu     sync.Mutex
	last   Progress // the last progress report
	offs   int64    // "traffic off" commands given (counted before writing)
	report chan FleetReport
	exited chan struct{}
}

func startWorker(exe string, job FleetConfig) (*worker, error) {
	cmd := exec.Command(exe, "bench", "storm", "worker")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start a storm worker: %w", err)
	}
	w := &worker{cmd: cmd, stdin: stdin, report: make(chan FleetReport, 1), exited: make(chan struct{})}
	go func() { // owns stdout until the worker exits
		defer close(w.exited)
		dec := json.NewDecoder(stdout)
		for {
			var m workerMsg
			if err := dec.Decode(&m); err != nil {
				break
			}
			w.handle(m)
		}
		_, _ = io.Copy(io.Discard, stdout)
		_ = cmd.Wait()
	}()
	b, _ := json.Marshal(job)
	if err := w.command(string(b)); err != nil {
		w.close()
		return nil, fmt.Errorf("send the job to a storm worker: %w", err)
	}
	return w, nil
}

// handle takes one message from the worker.
func (w *worker) handle(m workerMsg) {
	switch {
	case m.Event == "progress":
		w.mu.Lock()
		w.last = m.Progress
		w.mu.Unlock()
	case m.Event == "report" && m.Report != nil:
		w.report <- *m.Report
	}
}

func (w *worker) command(s string) error {
	_, err := io.WriteString(w.stdin, s+"\n")
	return err
}

func (w *worker) progress() Progress {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

func (w *worker) storm(at int64) error { return w.command("storm " + strconv.FormatInt(at, 10)) }
func (w *worker) pid() int             { return w.cmd.Process.Pid }
func (w *worker) traffic(on bool) error {
	if on {
		return w.command("traffic on")
	}
	// Counted even if the write fails: a worker that did not get it must not
	// pass for stopped on its older reports.
	w.mu.Lock()
	w.offs++
	w.mu.Unlock()
	return w.command("traffic off")
}

func (w *worker) trafficOffs() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.offs
}

func (w *worker) finish(ctx context.Context) (FleetReport, error) {
	if err := w.command("finish"); err != nil {
		return FleetReport{}, err
	}
	select {
	case r := <-w.report:
		return r, nil
	case <-w.exited:
		return FleetReport{}, fmt.Errorf("storm worker %d exited without a report", w.pid())
	case <-ctx.Done():
		return FleetReport{}, ctx.Err()
	}
}

func (w *worker) close() error {
	w.stdin.Close()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-w.exited:
		return nil
	case <-t.C:
		_ = w.cmd.Process.Kill()
		<-w.exited
		return errors.New("a storm worker did not exit; killed")
	}
}
