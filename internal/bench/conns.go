package bench

// `pim bench conns`: N idle authenticated connections, the server's memory
// per connection, the connect rate and the idle CPU.
//
// A process may hold at most RLIMIT_NOFILE open files (20,000 on the
// project's machines), so past PerProc connections the benchmark re-executes
// itself as worker processes (`pim bench conns-worker`), each holding a share.
// A worker reads its job (one JSON line) and then commands ("check",
// "close") on stdin, and reports JSON lines on stdout; it exits when stdin
// closes, so it never outlives the benchmark.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pim-project/pim/internal/tlsutil"
)

// ConnsConfig configures RunConns.
type ConnsConfig struct {
	Clients     int
	Concurrency int // connections being set up at once, in all
	SourceIPs   []netip.Addr
	PerProc     int           // connections per load process (more: worker processes)
	Idle        time.Duration // the idle phase whose CPU is measured
	Settle      time.Duration // at least this long reading RSS until it is stable
	Ping        bool          // ping each connection once per heartbeat interval, as clients do
	Exe         string        // the pim binary for workers (default: this executable)
}

// ConnsResult is the report of `pim bench conns` (docs/benchmarks.md).
type ConnsResult struct {
	Common
	Clients        int     `json:"clients"`
	Connected      int64   `json:"connected"`
	Failed         int64   `json:"failed"`
	Alive          int64   `json:"alive"`
	TLS            bool    `json:"tls"`
	SourceIPs      int     `json:"source_ips"`
	Procs          int     `json:"procs"`
	Ping           bool    `json:"ping"`
	HeartbeatMs    uint32  `json:"heartbeat_ms"`
	ConnectMs      float64 `json:"connect_ms"`
	ConnectsPerSec float64 `json:"connects_per_sec"`
	// Server CPU spent per connection set up (TCP accept, TLS, Hello/Welcome).
	ServerCPUUsPerConnect float64 `json:"server_cpu_us_per_connect"`
	RSSBeforeBytes        int64   `json:"rss_before_bytes"`
	RSSAfterBytes         int64   `json:"rss_after_bytes"`
	RSSStable             bool    `json:"rss_stable"`
	BytesPerConn          float64 `json:"bytes_per_conn"`
	HeapInuseBytesPerConn float64 `json:"heap_inuse_bytes_per_conn"`
	StackBytesPerConn     float64 `json:"stack_bytes_per_conn"`
	// Free heap the Go runtime keeps (idle, not yet returned to the OS): part
	// of the RSS that the garbage collector and the scavenger give back later.
	HeapRetainedBytesPerConn float64 `json:"heap_retained_bytes_per_conn"`
	GoroutinesPerConn        float64 `json:"goroutines_per_conn"`
	IdleS                    float64 `json:"idle_s"`
	IdleCPUPct               float64 `json:"idle_cpu_pct"`
	FirstError               string  `json:"first_error,omitempty"`
}

// ConnsJob is a worker's share of the connections.
type ConnsJob struct {
	Addr        string   `json:"addr"`
	TLS         bool     `json:"tls"`
	TLSPin      string   `json:"tls_pin,omitempty"`
	TLSCA       string   `json:"tls_ca,omitempty"`
	Insecure    bool     `json:"insecure,omitempty"`
	Tokens      []string `json:"tokens"`
	Device      string   `json:"device"`
	SourceIPs   []string `json:"source_ips,omitempty"`
	IPOffset    int      `json:"ip_offset"`
	Concurrency int      `json:"concurrency"`
	Ping        bool     `json:"ping"`
}

// workerMsg is one line a worker reports.
type workerMsg struct {
	Event       string `json:"event"` // progress, connected, alive
	Connected   int64  `json:"connected"`
	Failed      int64  `json:"failed"`
	Alive       int64  `json:"alive"`
	Error       string `json:"error,omitempty"`
	HeartbeatMs uint32 `json:"heartbeat_ms,omitempty"`
}

// holder holds one process's idle connections.
type holder struct {
	job       ConnsJob
	tls       *tls.Config
	ips       []netip.Addr
	conns     []*Conn
	connected atomic.Int64
	failed    atomic.Int64
	errOnce   sync.Once
	firstErr  string
	heartbeat atomic.Uint32

	stopPing chan struct{}
	pingDone chan struct{}
}

func newHolder(job ConnsJob) (*holder, error) {
	h := &holder{job: job, conns: make([]*Conn, len(job.Tokens))}
	for _, s := range job.SourceIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		h.ips = append(h.ips, a)
	}
	if job.TLS {
		host, _, err := net.SplitHostPort(job.Addr)
		if err != nil {
			return nil, err
		}
		if h.tls, err = tlsutil.ClientConfig(host, job.TLSPin, job.Insecure, job.TLSCA); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// connect makes every connection (a failure is counted, not fatal).
func (h *holder) connect(ctx context.Context) {
	var next atomic.Int64
	var wg sync.WaitGroup
	n := len(h.job.Tokens)
	for range max(min(h.job.Concurrency, n), 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				c, err := Dial(cctx, DialOptions{Addr: h.job.Addr, TLS: h.tls, LocalIP: sourceIP(h.ips, h.job.IPOffset+i),
					Token: h.job.Tokens[i], Device: h.job.Device, ReadBuffer: 512})
				cancel()
				if err != nil {
					h.failed.Add(1)
					h.errOnce.Do(func() { h.firstErr = err.Error() })
					continue
				}
				h.heartbeat.CompareAndSwap(0, c.Welcome().GetHeartbeatMs())
				h.conns[i] = c
				h.connected.Add(1)
			}
		}()
	}
	wg.Wait()
}

// keepAlive pings every connection once per heartbeat interval, spread evenly
// over the interval, until stop. The Pongs wait in the kernel's buffers and
// are read by checkAlive.
func (h *holder) keepAlive() {
	h.stopPing, h.pingDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(h.pingDone)
		hb := time.Duration(h.heartbeat.Load()) * time.Millisecond
		if hb <= 0 || len(h.conns) == 0 {
			return
		}
		const tick = 10 * time.Millisecond
		perTick := max(1, int(int64(len(h.conns))*int64(tick)/int64(hb)))
		t := time.NewTicker(tick)
		defer t.Stop()
		i := 0
		for {
			select {
			case <-h.stopPing:
				return
			case <-t.C:
			}
			for k := 0; k < perTick; k++ {
				c := h.conns[i%len(h.conns)]
				i++
				if c != nil {
					_ = c.Send(func(b []byte) []byte { return AppendPingFrame(b, 0, 0) })
				}
			}
		}
	}()
}

// checkAlive pings every connection and counts those that answer: still
// open and served after the idle phase.
func (h *holder) checkAlive(ctx context.Context) int64 {
	if h.stopPing != nil {
		close(h.stopPing)
		<-h.pingDone
		h.stopPing = nil
	}
	const pingID = 1 << 50
	var alive, next atomic.Int64
	var wg sync.WaitGroup
	n := len(h.conns)
	for range max(min(h.job.Concurrency, n), 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c := h.conns[i]
				if c == nil {
					continue
				}
				if c.Send(func(b []byte) []byte { return AppendPingFrame(b, pingID, 1) }) != nil {
					continue
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				for ctx.Err() == nil {
					id, kind, _, err := c.Next()
					if err != nil {
						break
					}
					if id == pingID && kind == fPong {
						alive.Add(1)
						break
					}
				}
				c.SetReadDeadline(time.Time{})
			}
		}()
	}
	wg.Wait()
	return alive.Load()
}

func (h *holder) close() {
	if h.stopPing != nil {
		close(h.stopPing)
		<-h.pingDone
		h.stopPing = nil
	}
	CloseAll(h.conns)
}

// RunConnsWorker is `pim bench conns-worker`: it holds one share of the
// connections for a parent `pim bench conns` (see the file comment).
func RunConnsWorker(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	RaiseFileLimit()
	in := bufio.NewReader(stdin)
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read job: %w", err)
	}
	var job ConnsJob
	if err := json.Unmarshal(line, &job); err != nil {
		return fmt.Errorf("decode job: %w", err)
	}
	h, err := newHolder(job)
	if err != nil {
		return err
	}
	defer h.close()
	enc := json.NewEncoder(stdout)
	var mu sync.Mutex
	report := func(m workerMsg) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(m)
	}
	// Stdin closing (the parent is gone or done) ends the worker.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmds := make(chan string)
	go func() {
		defer cancel()
		defer close(cmds)
		for {
			l, err := in.ReadString('\n')
			if l != "" {
				select {
				case cmds <- l:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				report(workerMsg{Event: "progress", Connected: h.connected.Load(), Failed: h.failed.Load()})
			}
		}
	}()
	h.connect(ctx)
	close(stop)
	if job.Ping {
		h.keepAlive()
	}
	report(workerMsg{Event: "connected", Connected: h.connected.Load(), Failed: h.failed.Load(), Error: h.firstErr, HeartbeatMs: h.heartbeat.Load()})
	for cmd := range cmds {
		switch cmd {
		case "check\n":
			report(workerMsg{Event: "alive", Alive: h.checkAlive(ctx)})
		case "close\n":
			return nil
		}
	}
	return nil
}

// RaiseFileLimit raises this process's open-file limit to its hard limit.
func RaiseFileLimit() {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err == nil && r.Cur < r.Max {
		r.Cur = r.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r)
	}
}

// connSet is the load side of a conns run: one holder in this process, or workers.
type connSet interface {
	progress() (connected, failed int64)
	wait(ctx context.Context) (workerMsg, error) // all connected (or failed)
	checkAlive(ctx context.Context) (int64, error)
	close() error
	pids() []int
}

type localSet struct {
	h    *holder
	done chan struct{}
}

func (l *localSet) progress() (int64, int64) { return l.h.connected.Load(), l.h.failed.Load() }
func (l *localSet) wait(ctx context.Context) (workerMsg, error) {
	select {
	case <-l.done:
	case <-ctx.Done():
		<-l.done
	}
	return workerMsg{Connected: l.h.connected.Load(), Failed: l.h.failed.Load(), Error: l.h.firstErr, HeartbeatMs: l.h.heartbeat.Load()}, nil
}
func (l *localSet) checkAlive(ctx context.Context) (int64, error) { return l.h.checkAlive(ctx), nil }
func (l *localSet) close() error                                  { l.h.close(); return nil }
func (l *localSet) pids() []int                                   { return nil }

type worker struct {
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	msgs      chan workerMsg
	connected atomic.Int64
	failed    atomic.Int64
	exited    chan struct{}
}

type workerSet struct{ ws []*worker }

func startWorker(exe string, job ConnsJob) (*worker, error) {
	cmd := exec.Command(exe, "bench", "conns-worker")
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
		return nil, fmt.Errorf("start a load worker: %w", err)
	}
	w := &worker{cmd: cmd, stdin: stdin, msgs: make(chan workerMsg, 16), exited: make(chan struct{})}
	go func() {
		defer close(w.exited)
		defer close(w.msgs)
		dec := json.NewDecoder(stdout)
		for {
			var m workerMsg
			if err := dec.Decode(&m); err != nil {
				break
			}
			if m.Event == "progress" || m.Event == "connected" {
				w.connected.Store(m.Connected)
				w.failed.Store(m.Failed)
			}
			if m.Event != "progress" {
				w.msgs <- m
			}
		}
		io.Copy(io.Discard, stdout)
		cmd.Wait()
	}()
	b, _ := json.Marshal(job)
	if _, err := stdin.Write(append(b, '\n')); err != nil {
		stdin.Close()
		<-w.exited
		return nil, fmt.Errorf("send the job to a load worker: %w", err)
	}
	return w, nil
}

func (s *workerSet) progress() (int64, int64) {
	var c, f int64
	for _, w := range s.ws {
		c += w.connected.Load()
		f += w.failed.Load()
	}
	return c, f
}

func (s *workerSet) next(ctx context.Context, w *worker, event string) (workerMsg, error) {
	for {
		select {
		case m, ok := <-w.msgs:
			if !ok {
				return workerMsg{}, fmt.Errorf("load worker %d exited", w.cmd.Process.Pid)
			}
			if m.Event == event {
				return m, nil
			}
		case <-ctx.Done():
			return workerMsg{}, ctx.Err()
		}
	}
}

func (s *workerSet) wait(ctx context.Context) (workerMsg, error) {
	var all workerMsg
	for _, w := range s.ws {
		m, err := s.next(ctx, w, "connected")
		if err != nil {
			return all, err
		}
		all.Connected += m.Connected
		all.Failed += m.Failed
		if all.Error == "" {
			all.Error = m.Error
		}
		if all.HeartbeatMs == 0 {
			all.HeartbeatMs = m.HeartbeatMs
		}
	}
	return all, nil
}

func (s *workerSet) checkAlive(ctx context.Context) (int64, error) {
	for _, w := range s.ws {
		if _, err := io.WriteString(w.stdin, "check\n"); err != nil {
			return 0, err
		}
	}
	var alive int64
	for _, w := range s.ws {
		m, err := s.next(ctx, w, "alive")
		if err != nil {
			return alive, err
		}
		alive += m.Alive
	}
	return alive, nil
}

func (s *workerSet) close() error {
	var errs []error
	for _, w := range s.ws {
		io.WriteString(w.stdin, "close\n")
		w.stdin.Close()
	}
	for _, w := range s.ws {
		t := time.NewTimer(30 * time.Second)
		select {
		case <-w.exited:
		case <-t.C:
			w.cmd.Process.Kill()
			<-w.exited
			errs = append(errs, fmt.Errorf("load worker %d did not exit; killed", w.cmd.Process.Pid))
		}
		t.Stop()
	}
	return errors.Join(errs...)
}

func (s *workerSet) pids() []int {
	var p []int
	for _, w := range s.ws {
		p = append(p, w.cmd.Process.Pid)
	}
	return p
}

// RunConns opens cfg.Clients idle connections and measures what they cost
// the server.
func RunConns(ctx context.Context, t *Target, cfg ConnsConfig, args []string, prog *Progress) (*ConnsResult, error) {
	if cfg.Clients <= 0 {
		return nil, errors.New("--clients must be positive")
	}
	if cfg.PerProc <= 0 {
		cfg.PerProc = 15000
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	res := &ConnsResult{Common: NewCommon("conns", args), Clients: cfg.Clients, TLS: t.TLS != nil,
		SourceIPs: len(cfg.SourceIPs), Ping: cfg.Ping}
	res.SetServer(t)
	run := RunID()
	users := make([]string, cfg.Clients)
	for i := range users {
		users[i] = fmt.Sprintf("%sc%d", run, i)
	}
	prog.Set(func() string { return "conns [tokens]" })
	toks, err := t.Tokens(ctx, users)
	if err != nil {
		prog.Stop()
		return nil, err
	}
	var ips []string
	for _, a := range cfg.SourceIPs {
		ips = append(ips, a.String())
	}
	job := ConnsJob{Addr: t.Addr, TLS: t.TLS != nil, TLSPin: t.TLSPin, TLSCA: t.TLSCA, Insecure: t.TLSInsecure,
		Device: "d", SourceIPs: ips, Concurrency: cfg.Concurrency, Ping: cfg.Ping}

	rss := startRSS(t)
	defer stopRSS(rss)
	settleMax := 3 * max(cfg.Settle, time.Second)
	prog.Set(func() string { return "conns [server RSS before: settling]" })
	metricNames := []string{"go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines",
		"go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes"}
	m0 := t.Metrics(ctx, metricNames...)
	readRSS := t.RSSReader()
	if readRSS != nil {
		res.RSSBeforeBytes, _ = StableRSS(ctx, readRSS, cfg.Settle, settleMax, 200*time.Millisecond)
		res.Server.RSSStartBytes = res.RSSBeforeBytes
	}

	procs := (cfg.Clients + cfg.PerProc - 1) / cfg.PerProc
	var set connSet
	meter := NewMeter(t)
	start := time.Now()
	a := meter.Snap()
	if procs <= 1 {
		procs = 1
		job.Tokens = toks
		h, err := newHolder(job)
		if err != nil {
			prog.Stop()
			return nil, err
		}
		ls := &localSet{h: h, done: make(chan struct{})}
		go func() {
			defer close(ls.done)
			h.connect(ctx)
			if cfg.Ping {
				h.keepAlive()
			}
		}()
		set = ls
	} else {
		exe := cfg.Exe
		if exe == "" {
			if exe, err = os.Executable(); err != nil {
				prog.Stop()
				return nil, err
			}
		}
		ws := &workerSet{}
		per := (cfg.Clients + procs - 1) / procs
		for p := range procs {
			lo, hi := p*per, min((p+1)*per, cfg.Clients)
			j := job
			j.Tokens, j.IPOffset = toks[lo:hi], lo
			j.Concurrency = max(cfg.Concurrency/procs, 4)
			w, err := startWorker(exe, j)
			if err != nil {
				ws.close()
				prog.Stop()
				return nil, err
			}
			ws.ws = append(ws.ws, w)
		}
		set = ws
	}
	defer set.close()
	meter.Workers = set.pids
	res.Procs = procs
	res.Loadgen.Procs = procs
	prog.Set(func() string {
		c, f := set.progress()
		el := time.Since(start)
		srv := ""
		if rss != nil {
			srv = " | server rss " + MiB(rss.Last())
		}
		return fmt.Sprintf("conns [connect %v] %s/%s (%s/s) failed %d%s", el.Round(100*time.Millisecond), count(c), count(int64(cfg.Clients)),
			count(int64(float64(c)/el.Seconds())), f, srv)
	})
	all, err := set.wait(ctx)
	connectTime := time.Since(start)
	b := meter.Snap()
	if err != nil {
		prog.Stop()
		return nil, err
	}
	res.Connected, res.Failed, res.FirstError, res.HeartbeatMs = all.Connected, all.Failed, all.Error, all.HeartbeatMs
	res.ConnectMs = roundTo(float64(connectTime.Microseconds())/1000, 1)
	res.ConnectsPerSec = rate(all.Connected, connectTime)
	if cu := UsageBetween(a, b); cu.ServerOK {
		res.ServerCPUUsPerConnect = perUnit(cu.Server, all.Connected)
	}

	// Idle: the measured phase.
	if rss != nil {
		rss.ResetPeak()
	}
	idleStart := time.Now()
	prog.Set(func() string {
		srv := ""
		if rss != nil {
			srv = " | server rss " + MiB(rss.Last())
		}
		return fmt.Sprintf("conns [idle %v/%v] %s connections%s", time.Since(idleStart).Round(100*time.Millisecond), cfg.Idle, count(all.Connected), srv)
	})
	t.PhaseStart(ctx)
	a = meter.Snap()
	sleep(ctx, cfg.Idle)
	b = meter.Snap()
	u := UsageBetween(a, b)
	res.SetUsage(u, procs)
	res.IdleS = roundTo(u.Wall.Seconds(), 3)
	res.IdleCPUPct = res.Server.CPUPct

	prog.Set(func() string { return "conns [server RSS after: settling]" })
	if readRSS != nil {
		res.RSSAfterBytes, res.RSSStable = StableRSS(ctx, readRSS, cfg.Settle, settleMax, 200*time.Millisecond)
		if res.Connected > 0 {
			res.BytesPerConn = roundTo(float64(res.RSSAfterBytes-res.RSSBeforeBytes)/float64(res.Connected), 0)
		}
	}
	t.PhaseEnd(ctx)
	if m1 := t.Metrics(ctx, metricNames...); m0 != nil && m1 != nil && res.Connected > 0 {
		per := func(k string) float64 { return roundTo((m1[k]-m0[k])/float64(res.Connected), 2) }
		res.HeapInuseBytesPerConn = per("go_memstats_heap_inuse_bytes")
		res.StackBytesPerConn = per("go_memstats_stack_inuse_bytes")
		res.GoroutinesPerConn = per("go_goroutines")
		res.HeapRetainedBytesPerConn = roundTo((m1["go_memstats_heap_idle_bytes"]-m1["go_memstats_heap_released_bytes"]-
			m0["go_memstats_heap_idle_bytes"]+m0["go_memstats_heap_released_bytes"])/float64(res.Connected), 2)
	}
	prog.Set(func() string { return "conns [checking every connection is alive]" })
	res.Alive, err = set.checkAlive(ctx)
	prog.Stop()
	if err != nil {
		res.Fail("alive check: %v", err)
	}
	if res.Connected < int64(cfg.Clients) {
		res.Fail("%d of %d connections failed (first: %s)", res.Failed, cfg.Clients, res.FirstError)
	}
	if res.Alive < res.Connected {
		res.Fail("%d of %d connections were not alive after the idle phase", res.Connected-res.Alive, res.Connected)
	}
	if ctx.Err() != nil {
		res.Fail("interrupted")
	}
	if err := set.close(); err != nil {
		res.Fail("%v", err)
	}
	res.Finish(t, rss)
	return res, nil
}

// Rows is the human summary.
func (r *ConnsResult) Rows() []Row {
	kind := "plaintext TCP"
	if r.TLS {
		kind = "TLS 1.3"
	}
	rows := []Row{
		{"load", fmt.Sprintf("%s idle %s connections from %d load process(es), %d source IPs, ping each %d ms: %v",
			count(int64(r.Clients)), kind, r.Procs, r.SourceIPs, r.HeartbeatMs, r.Ping)},
		{"connected", fmt.Sprintf("%s (failed %d, alive at the end %s) in %.0f ms: %s connects/s, %.0f us server CPU each",
			count(r.Connected), r.Failed, count(r.Alive), r.ConnectMs, count(int64(r.ConnectsPerSec)), r.ServerCPUUsPerConnect)},
		{"server memory", fmt.Sprintf("RSS %s -> %s (stable: %v): %s bytes per connection",
			MiB(r.RSSBeforeBytes), MiB(r.RSSAfterBytes), r.RSSStable, count(int64(r.BytesPerConn)))},
		{"of which", fmt.Sprintf("Go heap in use %s B, stacks %s B, free heap kept %s B, %.2f goroutines per connection",
			count(int64(r.HeapInuseBytesPerConn)), count(int64(r.StackBytesPerConn)), count(int64(r.HeapRetainedBytesPerConn)), r.GoroutinesPerConn)},
		{"idle CPU", fmt.Sprintf("server %.1f%% of a core over %.1f s", r.IdleCPUPct, r.IdleS)},
	}
	return append(rows, r.CommonRows()...)
}
