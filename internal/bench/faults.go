package bench

// `pim bench e2e --faults kill,cut`: 1:1 traffic between devices of the Go
// SDK while the server is killed with SIGKILL and restarted (same data dir,
// same port) and the devices' connections are cut by a fault-injecting
// proxy; then every acknowledged message must have reached its receiver and
// the sender's own device exactly once and in order.
//
// The devices are real SDK clients (sdk/go: durable outbox, resends with the
// same client_msg_id until acknowledged, reconnects with backoff, sync from
// the stored cursor, dedup), each with its own local store under a
// temporary directory: what this run proves is what an app gets.
//
// Goroutines: one per device (it reads the device's events and, for a
// sender, issues the sends: closed loop, a window of messages not yet
// acknowledged), one fault injector (kills and restarts the server, cuts
// the proxy's connections) during the measured phase only, and the progress
// line. A device's checker, histogram and acknowledged set belong to its
// goroutine and are read only after it ended.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pim-project/pim/internal/faultproxy"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	pim "github.com/pim-project/pim/sdk/go"
)

// Faults are the faults a run injects.
type Faults struct {
	// Kill: SIGKILL the spawned server every KillEvery and restart it on
	// the same data dir and port (the target must be spawned with a fixed
	// SpawnOptions.TCP).
	Kill      bool
	KillEvery time.Duration
	// Cut: the devices connect through a fault-injecting proxy that closes
	// every connection every CutEvery.
	Cut      bool
	CutEvery time.Duration
}

// ParseFaults reads a comma-separated list of faults ("kill", "cut").
func ParseFaults(s string) (Faults, error) {
	var f Faults
	for p := range strings.SplitSeq(s, ",") {
		switch strings.TrimSpace(p) {
		case "kill":
			f.Kill = true
		case "cut":
			f.Cut = true
		case "":
		default:
			return f, fmt.Errorf("unknown fault %q (want kill, cut)", strings.TrimSpace(p))
		}
	}
	if !f.Kill && !f.Cut {
		return f, errors.New("no fault given (want kill, cut or kill,cut)")
	}
	return f, nil
}

// List names the faults, e.g. ["kill", "cut"].
func (f Faults) List() []string {
	var l []string
	if f.Kill {
		l = append(l, "kill")
	}
	if f.Cut {
		l = append(l, "cut")
	}
	return l
}

// FaultsConfig configures RunE2EFaults.
type FaultsConfig struct {
	Faults
	Pairs        int
	Warmup       time.Duration // traffic without faults, not measured
	Duration     time.Duration // the measured phase: traffic and faults
	DrainTimeout time.Duration
	Window       int // messages not yet acknowledged per sender (closed loop)
	Size         int // message body bytes
	Ack          AckPolicy
	// Tuning, if set, replaces the devices' SDK tuning (FaultTuning).
	Tuning *pim.Tuning
}

// FaultsResult is the report of `pim bench e2e --faults` (docs/benchmarks.md).
type FaultsResult struct {
	Common
	Faults      []string `json:"faults"`
	Pairs       int      `json:"pairs"`
	Window      int      `json:"window"`
	Size        int      `json:"size"`
	WarmupS     float64  `json:"warmup_s"`
	KillEveryS  float64  `json:"kill_every_s,omitempty"`
	CutEveryS   float64  `json:"cut_every_s,omitempty"`
	Kills       int64    `json:"kills"`
	Cuts        int64    `json:"cuts"`
	RestartP50  float64  `json:"restart_p50_ms"`
	RestartMax  float64  `json:"restart_max_ms"`
	Reconnects  int64    `json:"reconnects"`
	ProxyConns  int      `json:"proxy_conns"`
	Resends     int64    `json:"resends"`
	Sent        int64    `json:"sent"`
	Acked       int64    `json:"acked"`
	SendErrors  int64    `json:"send_errors"`
	Delivered   int64    `json:"delivered"`
	Echoed      int64    `json:"echoed"`
	MeasAcked   int64    `json:"measured_acked"`
	MeasDeliv   int64    `json:"measured_delivered"`
	MsgsPerSec  float64  `json:"msgs_per_sec"`
	DelivPerSec float64  `json:"deliveries_per_sec"`
	DrainMs     float64  `json:"drain_ms"`
	AckLatency
	DeliverLatency
	Invariants
	ServerCPUUsPerMsg  float64 `json:"server_cpu_us_per_msg"`
	LoadgenCPUUsPerMsg float64 `json:"loadgen_cpu_us_per_msg"`
}

// FaultTuning is the SDK tuning of the devices: resend and reconnect fast
// (a fault run lives for seconds, not days), never give up on a message.
func FaultTuning(window int, ack AckPolicy) pim.Tuning {
	return pim.Tuning{
		Window:         window,
		SendTimeout:    5 * time.Second,
		MaxAttempts:    1 << 20,
		MaxSendAge:     24 * time.Hour,
		RequestTimeout: 5 * time.Second,
		ConnectTimeout: 5 * time.Second,
		AckEvery:       ack.Every,
		AckDelay:       ack.Delay,
		WriteTimeout:   5 * time.Second,
		Backoff:        pim.BackoffConfig{Base: 20 * time.Millisecond, Cap: 500 * time.Millisecond, HealthyAfter: time.Second},
		Heartbeat: pim.HeartbeatConfig{Min: 5 * time.Second, Max: 10 * time.Second, Step: time.Second,
			PongTimeout: 3 * time.Second, ProbeTimeout: 2 * time.Second},
	}
}

// RunE2EFaults runs 1:1 traffic between cfg.Pairs SDK sender/receiver
// pairs while it injects cfg.Faults, then checks the invariants.
func RunE2EFaults(ctx context.Context, t *Target, cfg FaultsConfig, args []string, prog *Progress) (*FaultsResult, error) {
	switch {
	case cfg.Pairs <= 0:
		return nil, errors.New("--pairs must be positive")
	case !cfg.Kill && !cfg.Cut:
		return nil, errors.New("no fault to inject")
	case cfg.Kill && cfg.KillEvery <= 0, cfg.Cut && cfg.CutEvery <= 0:
		return nil, errors.New("--kill-every and --cut-every must be positive")
	case cfg.Kill && t.Spawned == nil:
		return nil, errors.New("--faults kill needs a spawned server (--spawn)")
	}
	cfg.Window = max(cfg.Window, 1)
	if cfg.Ack.Every <= 0 {
		cfg.Ack = DefaultAckPolicy
	}
	tune := FaultTuning(cfg.Window, cfg.Ack)
	if cfg.Tuning != nil {
		tune = *cfg.Tuning
	}
	res := &FaultsResult{Common: NewCommon("e2e", args), Faults: cfg.List(), Pairs: cfg.Pairs, Window: cfg.Window,
		Size: cfg.Size, WarmupS: cfg.Warmup.Seconds()}
	if cfg.Kill {
		res.KillEveryS = cfg.KillEvery.Seconds()
	}
	if cfg.Cut {
		res.CutEveryS = cfg.CutEvery.Seconds()
	}
	res.SetServer(t)

	addr := t.Addr
	var px *faultproxy.Proxy
	if cfg.Cut {
		var err error
		if px, err = faultproxy.New(t.Addr); err != nil {
			return nil, err
		}
		defer px.Close()
		addr = px.Addr()
	}
	run := RunID()
	n := cfg.Pairs
	users := make([]string, 2*n) // senders, then receivers
	for i := range n {
		users[i] = fmt.Sprintf("%ss%d", run, i)
		users[n+i] = fmt.Sprintf("%sr%d", run, i)
	}
	toks, err := t.Tokens(ctx, users)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pim-bench-devices-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	fr := &faultRun{cfg: cfg, startSend: make(chan struct{}), stopSend: make(chan struct{})}
	fr.sendCtx, fr.cancelSend = context.WithCancel(context.WithoutCancel(ctx))
	defer fr.cancelSend()
	for i, u := range users {
		o := pim.Options{Servers: []string{addr}, Token: toks[i], User: u, DeviceID: "d",
			DataDir: filepath.Join(dir, u), Tuning: tune}
		if t.TLS != nil {
			o.TLS = pim.TLSOptions{Config: t.TLS}
		}
		cl, err := pim.Connect(ctx, o)
		if err != nil {
			fr.closeAll()
			return nil, fmt.Errorf("device %s: %w", u, err)
		}
		d := &faultDev{fr: fr, idx: i % n, sender: i < n, cl: cl, chk: NewChecker(0), up: make(chan struct{})}
		if d.sender {
			// A sender's timeline also gets the delivery receipts of its
			// messages, which the SDK does not surface as events: its
			// MessageEvents skip their user seqs.
			d.chk.AllowGaps = true
			d.peer = users[n+i]
			d.pending, d.early = make(map[string]pendingMsg), make(map[string]earlyState)
			d.slot = make(chan struct{}, 1)
		}
		fr.devs = append(fr.devs, d)
	}
	defer fr.closeAll()
	for _, d := range fr.devs {
		fr.wg.Add(1)
		go d.run()
		if d.sender {
			fr.wg.Add(1)
			go d.sendLoop()
		}
	}
	if err := fr.waitUp(ctx, 30*time.Second); err != nil {
		return nil, err
	}

	// Phases: warm-up, then the measured phase with the faults, then the drain.
	fl := &faulter{t: t, px: px, cfg: cfg.Faults, stop: make(chan struct{}), done: make(chan struct{})}
	fl.cpu.setPID(t.PID)
	start := time.Now()
	var state atomic.Value
	state.Store("warm-up")
	var phaseStart atomic.Int64
	var lastAcks, lastDel int64
	lastT := start
	prog.Set(func() string {
		now := time.Now()
		acks, del := fr.acked(), fr.delivered.Load()
		dt := now.Sub(lastT).Seconds()
		ar, dr := float64(acks-lastAcks)/dt, float64(del-lastDel)/dt
		lastAcks, lastDel, lastT = acks, del, now
		st := state.Load().(string)
		el := now.Sub(start).Round(100 * time.Millisecond).String()
		if st == "measure" {
			el = now.Sub(time.Unix(0, phaseStart.Load())).Round(100*time.Millisecond).String() + "/" + cfg.Duration.String()
		}
		down := ""
		if fl.down.Load() {
			down = " (server down)"
		}
		return fmt.Sprintf("e2e faults [%s %v] acked %s (%s/s) delivered %s (%s/s) | kills %d%s cuts %d reconnects %d",
			st, el, count(acks), count(int64(ar)), count(del), count(int64(dr)), fl.kills.Load(), down, fl.cuts.Load(), fr.reconnects())
	})
	fr.startSending()
	sleep(ctx, cfg.Warmup)

	meter := &Meter{}
	state.Store("measure")
	phaseStart.Store(time.Now().UnixNano())
	cpuA, okA := fl.cpu.read()
	a := meter.Snap()
	fr.phase.Begin()
	go fl.run(ctx)
	sleep(ctx, cfg.Duration)
	close(fl.stop)
	<-fl.done // a restart in progress completes: the server is up for the drain
	fr.phase.End()
	b := meter.Snap()
	cpuB, okB := fl.cpu.read()

	state.Store("drain")
	fr.stopSending()
	dctx, drainFor := ctx, cfg.DrainTimeout
	if ctx.Err() != nil {
		dctx, drainFor = context.WithoutCancel(ctx), min(drainFor, 5*time.Second)
	}
	ds := time.Now()
	drained := fr.waitDrained(dctx, drainFor)
	drain := time.Since(ds)
	prog.Stop()
	fr.closeAll()

	// The report.
	u := UsageBetween(a, b)
	u.Server, u.ServerOK = max(cpuB-cpuA, 0), okA && okB
	res.SetUsage(u, 1)
	res.Kills, res.Cuts = fl.kills.Load(), fl.cuts.Load()
	rs := fl.restart.Summary()
	res.RestartP50, res.RestartMax = rs.P50, rs.Max
	if px != nil {
		res.ProxyConns, _ = px.Stats()
	}
	var ack, del Histogram
	var errs []string
	for _, d := range fr.devs {
		res.Reconnects += max(d.connects.Load()-1, 0)
		if d.err == nil && len(d.early) > 0 {
			d.err = fmt.Errorf("%d send states for messages never sent", len(d.early))
		}
		if d.err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", d.cl.User(), d.err))
		}
		if !d.sender {
			continue
		}
		rcv := fr.devs[n+d.idx]
		res.Sent += d.sent.Load()
		res.Acked += d.ackN.Load()
		res.SendErrors += d.failed.Load()
		res.Resends += d.resends
		res.Delivered += rcv.fresh.Load()
		res.Echoed += d.fresh.Load()
		res.MeasAcked += d.phaseN.Load()
		res.MeasDeliv += rcv.phaseN.Load()
		ack.Merge(&d.hist)
		del.Merge(&rcv.hist)
		res.Lost += int64(rcv.chk.Lost(0, &d.acked) + d.chk.Lost(0, &d.acked))
		res.Duplicated += rcv.chk.Duplicated + d.chk.Duplicated
		res.OutOfOrder += rcv.chk.OutOfOrder + d.chk.OutOfOrder
	}
	wall := u.Wall
	res.MsgsPerSec, res.DelivPerSec = rate(res.MeasAcked, wall), rate(res.MeasDeliv, wall)
	res.DrainMs = roundTo(float64(drain.Microseconds())/1000, 1)
	res.AckLatency, res.DeliverLatency = ackLatency(ack.Summary()), deliverLatency(del.Summary())
	if u.ServerOK {
		res.ServerCPUUsPerMsg = perUnit(u.Server, res.MeasAcked)
	}
	res.LoadgenCPUUsPerMsg = perUnit(u.Loadgen, res.MeasAcked)

	c := &res.Common
	if ctx.Err() != nil {
		c.Fail("interrupted")
	}
	if fl.err != nil {
		c.Fail("%v", fl.err)
	}
	if res.Acked == 0 {
		c.Fail("nothing was acknowledged")
	}
	if res.SendErrors > 0 {
		c.Fail("%d messages failed (retry budget spent or refused)", res.SendErrors)
	}
	if !drained {
		c.Fail("not everything was acknowledged and delivered within the drain timeout (%.0f ms)", res.DrainMs)
	}
	if cfg.Kill && res.Kills == 0 {
		c.Fail("the server was never killed (--duration shorter than --kill-every?)")
	}
	if cfg.Cut && res.Cuts == 0 {
		c.Fail("no connection was cut (--duration shorter than --cut-every?)")
	}
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Sprintf("... and %d more", len(errs)-5))
	}
	for _, e := range errs {
		c.Fail("%s", e)
	}
	res.Invariants.check(c)
	res.Finish(t, nil)
	if p := fl.cpu.peak(); p > res.Server.PeakRSSBytes {
		res.Server.PeakRSSBytes = p
	}
	res.Server.PID = t.PID
	return res, nil
}

// Rows is the human summary.
func (r *FaultsResult) Rows() []Row {
	var f []string
	if r.KillEveryS > 0 {
		f = append(f, fmt.Sprintf("server SIGKILLed and restarted every %gs", r.KillEveryS))
	}
	if r.CutEveryS > 0 {
		f = append(f, fmt.Sprintf("connections cut every %gs", r.CutEveryS))
	}
	return append([]Row{
		{"load", fmt.Sprintf("%d SDK pairs, %d-byte messages, closed loop, window %d per sender, %.1f s measured", r.Pairs, r.Size, r.Window, r.DurationS)},
		{"faults", strings.Join(f, "; ")},
		{"injected", fmt.Sprintf("%d kills (restart p50 %.0f ms, max %.0f ms), %d cuts; %d reconnects, %d resends", r.Kills, r.RestartP50, r.RestartMax, r.Cuts, r.Reconnects, r.Resends)},
		{"messages", fmt.Sprintf("sent %s, acked %s, delivered %s, echoed %s, failed %d", count(r.Sent), count(r.Acked), count(r.Delivered), count(r.Echoed), r.SendErrors)},
		{"throughput", fmt.Sprintf("%s msg/s acked, %s deliveries/s (faults included)", count(int64(r.MsgsPerSec)), count(int64(r.DelivPerSec)))},
		latRow("send -> ack", Latency{P50: r.AckP50Ms, P90: r.AckP90Ms, P99: r.AckP99Ms, P999: r.AckP999Ms, Max: r.AckMaxMs, Count: uint64(r.MeasAcked)}),
		latRow("send -> deliver", Latency{P50: r.DeliverP50Ms, P90: r.DeliverP90Ms, P99: r.DeliverP99Ms, P999: r.DeliverP999Ms, Max: r.DeliverMaxMs, Count: uint64(r.MeasDeliv)}),
		{"drain", fmt.Sprintf("%.0f ms from the last send to the last ack and delivery", r.DrainMs)},
		{"invariants", fmt.Sprintf("lost %d, duplicated %d, out of order %d", r.Lost, r.Duplicated, r.OutOfOrder)},
	}, r.CommonRows()...)
}

// faultRun is the devices of a run.
type faultRun struct {
	cfg        FaultsConfig
	devs       []*faultDev // senders 0..n-1, then receivers
	wg         sync.WaitGroup
	phase      Phase
	delivered  atomic.Int64 // fresh messages at the receivers
	sending    atomic.Bool
	startSend  chan struct{} // closed when sending starts
	stopSend   chan struct{} // closed when it stops
	sendCtx    context.Context
	cancelSend context.CancelFunc
	stopOnce   sync.Once
	closeOnce  sync.Once
}

// faultDev is one SDK device: a sender (s_i, sending to r_i) or a receiver.
type faultDev struct {
	fr     *faultRun
	idx    int // pair index
	sender bool
	peer   string
	cl     *pim.Client
	up     chan struct{} // closed at the first Connected
	upOnce sync.Once

	// Owned by the event goroutine; read after it ended.
	chk *Checker // the device's timeline: the receiver's, or the sender's own echoes
	// A receiver's deliver latencies are owned by its event goroutine;
	// a sender's ack latencies and everything below are under mu.
	hist Histogram

	mu      sync.Mutex
	acked   Bitset
	pending map[string]pendingMsg // client_msg_id -> message, until Sent or Failed
	early   map[string]earlyState // a final state seen before SendTo returned
	next    uint64
	resends int64
	err     error
	slot    chan struct{} // a message left the window

	sent, ackN, failed, outstanding atomic.Int64
	fresh, phaseN, connects         atomic.Int64
}

type pendingMsg struct {
	n  uint64
	at int64
}

type earlyState struct {
	pim.SendStateEvent
	at int64
}

func (fr *faultRun) startSending() {
	fr.sending.Store(true)
	close(fr.startSend)
}

// stopSending stops it for good.
func (fr *faultRun) stopSending() {
	fr.stopOnce.Do(func() {
		fr.sending.Store(false)
		close(fr.stopSend)
	})
}

// closeAll closes every device (and waits for their goroutines).
func (fr *faultRun) closeAll() {
	fr.closeOnce.Do(func() {
		fr.stopSending()
		fr.cancelSend()
		for _, d := range fr.devs {
			_ = d.cl.Close()
		}
		fr.wg.Wait()
	})
}

func (fr *faultRun) acked() int64 {
	var a int64
	for _, d := range fr.devs {
		a += d.ackN.Load()
	}
	return a
}

func (fr *faultRun) reconnects() int64 {
	var r int64
	for _, d := range fr.devs {
		r += max(d.connects.Load()-1, 0)
	}
	return r
}

// waitUp waits until every device has connected once.
func (fr *faultRun) waitUp(ctx context.Context, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, d := range fr.devs {
		select {
		case <-d.up:
		case <-t.C:
			return fmt.Errorf("device %s did not connect within %v", d.cl.User(), timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// waitDrained waits until every sent message is acknowledged (or failed)
// and every acknowledged one reached its receiver and its sender's device,
// at most timeout. It reports whether that happened.
func (fr *faultRun) waitDrained(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	n := len(fr.devs) / 2
	for {
		done := true
		for _, s := range fr.devs[:n] {
			acked := s.ackN.Load()
			if s.outstanding.Load() > 0 || s.fresh.Load() < acked || fr.devs[n+s.idx].fresh.Load() < acked {
				done = false
				break
			}
		}
		if done {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// run is the device's event goroutine.
func (d *faultDev) run() {
	defer d.fr.wg.Done()
	for ev := range d.cl.Events() {
		d.handle(ev)
	}
}

// sendLoop is a sender's sending goroutine: closed loop, at most Window
// messages not yet acknowledged.
func (d *faultDev) sendLoop() {
	defer d.fr.wg.Done()
	select {
	case <-d.fr.startSend:
	case <-d.fr.stopSend:
		return
	}
	var body []byte
	for d.fr.sending.Load() {
		if d.outstanding.Load() >= int64(d.fr.cfg.Window) {
			select {
			case <-d.slot:
			case <-d.fr.stopSend:
			}
			continue
		}
		at := time.Now().UnixNano()
		body = AppendBody(body[:0], d.idx, d.next, at, d.fr.cfg.Size)
		o, err := d.cl.SendTo(d.fr.sendCtx, d.peer, string(body))
		d.mu.Lock()
		if err != nil {
			if d.fr.sending.Load() {
				d.fail(fmt.Errorf("send: %w", err))
			}
			d.mu.Unlock()
			return
		}
		p := pendingMsg{n: d.next, at: at}
		d.next++
		d.outstanding.Add(1)
		d.sent.Add(1)
		if e, ok := d.early[o.ClientMsgID()]; ok { // its state changed before SendTo returned
			delete(d.early, o.ClientMsgID())
			d.sendState(p, e.SendStateEvent, e.at)
		} else {
			d.pending[o.ClientMsgID()] = p
		}
		d.mu.Unlock()
	}
}

// fail records the device's first error (d.mu held, or after the device's
// goroutines ended).
func (d *faultDev) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

// sendState applies the final state of message p (d.mu held).
func (d *faultDev) sendState(p pendingMsg, e pim.SendStateEvent, now int64) {
	switch e.State {
	case pim.Sent:
		d.outstanding.Add(-1)
		if d.acked.Set(p.n) {
			d.fail(fmt.Errorf("message %d acknowledged twice", p.n))
			return
		}
		d.resends += int64(max(e.Attempts-1, 0))
		d.ackN.Add(1)
		if d.fr.phase.In(p.at) {
			d.hist.RecordMicros(uint64(max(now-p.at, 0) / 1000))
		}
		if d.fr.phase.In(now) {
			d.phaseN.Add(1)
		}
	case pim.Failed:
		d.outstanding.Add(-1)
		d.failed.Add(1)
		d.fail(fmt.Errorf("message %d failed: %v", p.n, e.Err))
	}
	select { // a free slot in the window
	case d.slot <- struct{}{}:
	default:
	}
}

func (d *faultDev) handle(ev pim.Event) {
	now := time.Now().UnixNano()
	switch e := ev.(type) {
	case pim.ConnStateEvent:
		if e.State == pim.Connected {
			d.connects.Add(1)
			d.upOnce.Do(func() { close(d.up) })
		}
	case pim.SendStateEvent:
		if !d.sender || (e.State != pim.Sent && e.State != pim.Failed) {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		p, ok := d.pending[e.ClientMsgID]
		if !ok {
			if _, dup := d.early[e.ClientMsgID]; dup {
				d.fail(fmt.Errorf("message %s reached a final state twice", e.ClientMsgID))
				return
			}
			d.early[e.ClientMsgID] = earlyState{e, now}
			return
		}
		delete(d.pending, e.ClientMsgID)
		d.sendState(p, e, now)
	case pim.MessageEvent:
		m := e.Message
		sender, n, sent, ok := ParseBody(m.GetBody())
		ok = ok && m.GetType() == pimv1.MessageType_MESSAGE_TYPE_TEXT && sender == d.idx
		if !d.chk.Observe(e.UserSeq, []byte(m.GetConv()), m.GetSeq(), ok, 0, n) {
			return
		}
		d.fresh.Add(1)
		if d.sender {
			return
		}
		d.fr.delivered.Add(1)
		if d.fr.phase.In(sent) {
			d.hist.RecordMicros(uint64(max(now-sent, 0) / 1000))
		}
		if d.fr.phase.In(now) {
			d.phaseN.Add(1)
		}
	case pim.ResyncEvent:
		d.mu.Lock()
		defer d.mu.Unlock()
		d.fail(fmt.Errorf("the server's data set changed (epoch %s -> %s): it lost its data", e.OldEpoch, e.NewEpoch))
	}
}

// faulter injects the faults during the measured phase.
type faulter struct {
	t    *Target
	px   *faultproxy.Proxy
	cfg  Faults
	stop chan struct{}
	done chan struct{}
	cpu  serverCPU

	kills, cuts atomic.Int64
	down        atomic.Bool
	// Owned by run; read after done.
	restart Histogram
	err     error
}

func (f *faulter) run(ctx context.Context) {
	defer close(f.done)
	var killC, cutC <-chan time.Time
	if f.cfg.Kill {
		t := time.NewTicker(f.cfg.KillEvery)
		defer t.Stop()
		killC = t.C
	}
	if f.cfg.Cut {
		t := time.NewTicker(f.cfg.CutEvery)
		defer t.Stop()
		cutC = t.C
	}
	for {
		select {
		case <-f.stop:
			return
		case <-ctx.Done():
			return
		case <-killC:
			if err := f.killRestart(ctx); err != nil {
				f.err = err
				return
			}
		case <-cutC:
			f.px.Cut()
			f.cuts.Add(1)
		}
	}
}

// killRestart kills the server with SIGKILL and restarts it on the same
// data dir and port (a few tries: the port may be busy for a moment).
func (f *faulter) killRestart(ctx context.Context) error {
	s := f.t.Spawned
	want := s.TCP
	f.cpu.retire()
	f.down.Store(true)
	start := time.Now()
	s.Kill()
	f.kills.Add(1)
	rctx := context.WithoutCancel(ctx) // even when interrupted: the drain needs the server
	var err error
	for try := 0; try < 10; try++ {
		if err = s.Restart(rctx); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("the server did not come back after kill %d: %v", f.kills.Load(), err)
	}
	f.restart.Record(time.Since(start))
	f.down.Store(false)
	f.cpu.setPID(s.PID)
	f.t.PID, f.t.HTTPBase = s.PID, s.HTTPBase
	if s.TCP != want {
		return fmt.Errorf("the restarted server listens on %s, not %s: spawn it on a fixed port (SpawnOptions.TCP)", s.TCP, want)
	}
	return nil
}

// serverCPU adds up the CPU time of the server's successive processes.
type serverCPU struct {
	mu      sync.Mutex
	pid     int
	base    time.Duration // CPU of the processes killed so far
	peakRSS int64
}

func (c *serverCPU) setPID(pid int) {
	c.mu.Lock()
	c.pid = pid
	c.mu.Unlock()
}

// read is the CPU time of all the processes so far.
func (c *serverCPU) read() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pid <= 0 {
		return 0, false
	}
	st, err := ReadProcStat(c.pid)
	if err != nil {
		return 0, false
	}
	return c.base + st.CPU(), true
}

// retire records the current process's CPU and peak RSS before it is killed.
func (c *serverCPU) retire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pid <= 0 {
		return
	}
	if st, err := ReadProcStat(c.pid); err == nil {
		c.base += st.CPU()
	}
	if st, err := ReadProcStatus(c.pid); err == nil {
		c.peakRSS = max(c.peakRSS, st.PeakRSS)
	}
}

func (c *serverCPU) peak() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peakRSS
}
