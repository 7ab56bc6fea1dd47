package bench

// `pim bench catchup`: how long a Go SDK device takes to catch up after its
// network was gone for a while. The device (sdk/go, default tuning, its own
// store) is connected through a fault-injecting proxy and receiving; other
// users keep sending to it at --rate (lean protocol clients, connected
// directly); then its network is cut for --outage (the proxy drops its
// connection and refuses new ones, or black-holes everything), and comes
// back. The figure is the time from the network's return to the moment
// every message acknowledged to its sender before the return has been
// delivered to the app (MessageEvent), with the SDK's own CaughtUpEvent
// beside it.
//
// Invariants:
//   - Goroutines: the device's event goroutine (catchDev.run, ends when the
//     client is closed), the traffic engine's (ended by Traffic.Close), and
//     the progress line; RunCatchUp closes all of them on every path.
//   - The run fails (ok false, exit status 1) on any lost, duplicated or
//     out-of-order message, on a CaughtUpEvent that came before every
//     message of the outage, and if the device is not caught up within
//     --timeout after the return.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/pim-project/pim/internal/faultproxy"
	pim "github.com/pim-project/pim/sdk/go"
)

// How the device's network is cut.
const (
	CutDrop      = "drop"      // the connection is closed and new ones refused (the network is gone)
	CutBlackhole = "blackhole" // everything stalls, nobody is told (a dead path)
)

// CatchUpConfig configures RunCatchUp.
type CatchUpConfig struct {
	Outage  time.Duration
	Rate    float64 // messages per second in all, from Senders users
	Senders int
	Size    int
	Warmup  time.Duration // receiving online before the outage
	Cut     string        // CutDrop (default) or CutBlackhole
	// NetworkChanged: when the network returns, tell the SDK
	// (Client.NetworkChanged), as an app does on a connectivity change.
	NetworkChanged bool
	Timeout        time.Duration // to catch up after the return
	DrainTimeout   time.Duration
	// Tuning, if set, replaces the device's SDK tuning (default: the SDK's
	// defaults, what an app gets).
	Tuning *pim.Tuning
}

// CatchUpResult is the report of `pim bench catchup` (docs/benchmarks.md).
type CatchUpResult struct {
	Common
	OutageS        float64 `json:"outage_s"`
	Rate           float64 `json:"rate"`
	Senders        int     `json:"senders"`
	Size           int     `json:"size"`
	Cut            string  `json:"cut"`
	NetworkChanged bool    `json:"network_changed"`
	WarmupS        float64 `json:"warmup_s"`
	Sent           int64   `json:"sent"`
	Acked          int64   `json:"acked"`
	SendErrors     int64   `json:"send_errors"`
	Delivered      int64   `json:"delivered"`
	// Missed: messages acknowledged to their senders before the network
	// returned that the device had not received then.
	Missed      int64 `json:"missed"`
	OutageDials int   `json:"outage_dials"`
	Reconnected bool  `json:"reconnected"`
	// Times from the network's return.
	ReconnectMs       float64 `json:"reconnect_ms"`
	NextDialMs        float64 `json:"next_dial_ms"`
	CaughtUpMs        float64 `json:"caught_up_ms"`
	SDKCaughtUp       bool    `json:"sdk_caught_up"`
	SDKCaughtUpMs     float64 `json:"sdk_caught_up_ms"`
	CatchUpMsgsPerSec float64 `json:"catch_up_msgs_per_sec"`
	Invariants
	ServerCPUUsPerMsg float64 `json:"server_cpu_us_per_msg"`
}

// RunCatchUp runs one outage (see the file comment).
func RunCatchUp(ctx context.Context, t *Target, cfg CatchUpConfig, args []string, prog *Progress) (*CatchUpResult, error) {
	if cfg.Cut == "" {
		cfg.Cut = CutDrop
	}
	switch {
	case cfg.Outage <= 0 || cfg.Rate <= 0 || cfg.Senders <= 0 || cfg.Size <= 0:
		return nil, errors.New("--outage, --rate, --senders and --size must be positive")
	case cfg.Cut != CutDrop && cfg.Cut != CutBlackhole:
		return nil, fmt.Errorf("--cut must be %q or %q", CutDrop, CutBlackhole)
	case cfg.Timeout <= 0 || cfg.DrainTimeout <= 0:
		return nil, errors.New("--timeout and --drain-timeout must be positive")
	}
	res := &CatchUpResult{Common: NewCommon("catchup", args), OutageS: cfg.Outage.Seconds(), Rate: cfg.Rate,
		Senders: cfg.Senders, Size: cfg.Size, Cut: cfg.Cut, NetworkChanged: cfg.NetworkChanged, WarmupS: cfg.Warmup.Seconds()}
	res.SetServer(t)

	px, err := faultproxy.New(t.Addr)
	if err != nil {
		return nil, err
	}
	defer px.Close()
	run := RunID()
	users := []string{run + "r"}
	for i := range cfg.Senders {
		users = append(users, fmt.Sprintf("%ss%d", run, i))
	}
	toks, err := t.Tokens(ctx, users)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pim-bench-catchup-")
	if err != nil {
		return nil, fmt.Errorf("device data dir: %w", err)
	}
	defer os.RemoveAll(dir)

	// The device, through the proxy.
	o := pim.Options{Servers: []string{px.Addr()}, Token: toks[0], User: users[0], DeviceID: "d", DataDir: dir}
	if cfg.Tuning != nil {
		o.Tuning = *cfg.Tuning
	}
	if t.TLS != nil {
		o.TLS = pim.TLSOptions{Config: t.TLS}
	}
	cl, err := pim.Connect(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("connect the device: %w", err)
	}
	dev := newCatchDev(cl, cfg.Senders)
	go dev.run()
	closeDev := func() { _ = cl.Close(); <-dev.done }
	defer closeDev()

	// The senders, directly to the server.
	conns := make([]*Conn, 0, cfg.Senders)
	for i := range cfg.Senders {
		c, err := Dial(ctx, DialOptions{Addr: t.Addr, TLS: t.TLS, Token: toks[1+i], Device: "d"})
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("connect sender %d: %w", i, err)
		}
		conns = append(conns, c)
	}
	tr := NewTraffic(TrafficConfig{Rate: cfg.Rate, Size: cfg.Size, Ack: DefaultAckPolicy}, conns, nil,
		func(int) SendFields { return SendFields{ToUser: users[0], Type: 1} }, func(int) []int { return nil })
	trClosed := false
	closeTraffic := func() {
		if !trClosed {
			trClosed = true
			tr.Close()
		}
	}
	defer closeTraffic()

	if err := waitChan(ctx, dev.up, 30*time.Second); err != nil {
		return nil, fmt.Errorf("the device did not connect and catch up: %w", err)
	}
	var state atomic.Value
	state.Store("online")
	start := time.Now()
	prog.Set(func() string {
		return fmt.Sprintf("catchup [%s %v] acked %s, delivered %s", state.Load(),
			time.Since(start).Round(100*time.Millisecond), count(ackedSum(tr)), count(dev.fresh.Load()))
	})
	tr.Start()
	sleep(ctx, cfg.Warmup)
	if dev.fresh.Load() == 0 {
		res.Fail("nothing was delivered before the outage (warm-up %v)", cfg.Warmup)
	}

	// The outage.
	state.Store("outage")
	accepted, _ := px.Stats()
	refused := px.Refused()
	if cfg.Cut == CutBlackhole {
		px.SetBlackhole(true)
	} else {
		px.SetRefuse(true)
		px.Cut()
	}
	sleep(ctx, cfg.Outage)
	acceptedOut, _ := px.Stats()
	res.OutageDials = acceptedOut - accepted + px.Refused() - refused

	// The return: what was acknowledged by now is the backlog.
	want := make([]uint64, cfg.Senders)
	var total int64
	for i, s := range tr.Senders {
		want[i] = uint64(s.ackN.Load())
		total += int64(want[i])
	}
	meter := NewMeter(t)
	a := meter.Snap()
	retAt := time.Now()
	had := dev.setTargets(retAt, want)
	res.Missed = total - had
	if cfg.Cut == CutBlackhole {
		px.SetBlackhole(false)
	} else {
		px.SetRefuse(false)
	}
	if cfg.NetworkChanged {
		cl.NetworkChanged("")
	}
	state.Store("catch-up")
	caughtErr := waitChan(ctx, dev.caught, cfg.Timeout)
	b := meter.Snap()
	state.Store("drain")
	sleep(ctx, 500*time.Millisecond) // live traffic flows again
	tr.StopSending()
	dctx := ctx
	if ctx.Err() != nil {
		dctx = context.WithoutCancel(ctx)
	}
	drained := tr.WaitAcked(dctx, cfg.DrainTimeout) && waitFor(dctx, cfg.DrainTimeout, func() bool {
		return dev.fresh.Load() >= ackedSum(tr)
	})
	prog.Stop()
	closeTraffic()
	tt := dev.times()
	closeDev()

	// The report.
	tres := tr.Result()
	res.Sent, res.Acked, res.SendErrors = tres.Sent, tres.Acked, tres.SendErrors
	res.Delivered = dev.chk.Delivered
	for i, s := range tr.Senders {
		res.Lost += int64(dev.chk.Lost(i, &s.acked))
	}
	res.Duplicated, res.OutOfOrder = dev.chk.Duplicated, dev.chk.OutOfOrder
	ms := func(d time.Duration) float64 { return roundTo(float64(d.Microseconds())/1000, 1) }
	res.Reconnected, res.ReconnectMs = tt.reconnOK, ms(tt.reconn)
	res.SDKCaughtUp, res.SDKCaughtUpMs = tt.sdkOK, ms(tt.sdk)
	if tt.nextDialOK {
		res.NextDialMs = ms(tt.nextDial)
	}
	if tt.caughtOK {
		res.CaughtUpMs = ms(tt.caught)
		from := time.Duration(0)
		if tt.reconnOK && tt.reconn < tt.caught {
			from = tt.reconn
		}
		res.CatchUpMsgsPerSec = rate(res.Missed, tt.caught-from)
	}
	u := UsageBetween(a, b)
	res.SetUsage(u, 1)
	if u.ServerOK {
		res.ServerCPUUsPerMsg = perUnit(u.Server, res.Missed)
	}

	c := &res.Common
	if ctx.Err() != nil {
		c.Fail("interrupted")
	}
	if caughtErr != nil {
		c.Fail("not caught up within %v of the network's return: %v", cfg.Timeout, caughtErr)
	}
	if res.Missed == 0 {
		c.Fail("the device missed nothing: no message was acknowledged during the outage")
	}
	if !drained {
		c.Fail("not every message was acknowledged and delivered within --drain-timeout")
	}
	if cfg.Cut == CutDrop && !tt.reconnOK {
		c.Fail("the device never reconnected")
	}
	for _, e := range tres.Errors {
		c.Fail("%s", e)
	}
	for _, e := range dev.errs {
		c.Fail("device: %s", e)
	}
	res.Invariants.check(c)
	res.Finish(t, nil)
	return res, nil
}

// Rows is the human summary.
func (r *CatchUpResult) Rows() []Row {
	how := "its connection dropped and new ones refused"
	if r.Cut == CutBlackhole {
		how = "everything black-holed"
	}
	back := "the SDK finds out by itself"
	if r.NetworkChanged {
		back = "the app calls NetworkChanged"
	}
	reconn := "kept its connection"
	if r.Reconnected {
		reconn = fmt.Sprintf("reconnected after %.0f ms", r.ReconnectMs)
		if r.NextDialMs > 0 && !r.NetworkChanged {
			reconn += fmt.Sprintf(" (its backoff had planned the next dial at %.0f ms)", r.NextDialMs)
		}
	}
	sdk := "no CaughtUpEvent (same connection)"
	if r.SDKCaughtUp {
		sdk = fmt.Sprintf("CaughtUpEvent after %.0f ms", r.SDKCaughtUpMs)
	}
	return append([]Row{
		{"load", fmt.Sprintf("%d senders, %s msg/s in all, %d-byte messages, to one SDK device", r.Senders, count(int64(r.Rate)), r.Size)},
		{"outage", fmt.Sprintf("%gs, %s; %d dials meanwhile; on return %s", r.OutageS, how, r.OutageDials, back)},
		{"missed", fmt.Sprintf("%s messages acknowledged during the outage", count(r.Missed))},
		{"catch-up", fmt.Sprintf("all delivered %.0f ms after the return (%s msg/s); %s; %s", r.CaughtUpMs, count(int64(r.CatchUpMsgsPerSec)), reconn, sdk)},
		{"messages", fmt.Sprintf("sent %s, acked %s, delivered %s, send errors %d", count(r.Sent), count(r.Acked), count(r.Delivered), r.SendErrors)},
		{"invariants", fmt.Sprintf("lost %d, duplicated %d, out of order %d", r.Lost, r.Duplicated, r.OutOfOrder)},
	}, r.CommonRows()...)
}

func ackedSum(tr *Traffic) int64 {
	var n int64
	for _, s := range tr.Senders {
		n += s.ackN.Load()
	}
	return n
}

// waitChan waits for ch to close, at most timeout.
func waitChan(ctx context.Context, ch <-chan struct{}, timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-ch:
		return nil
	case <-t.C:
		return fmt.Errorf("timed out after %v", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitFor polls cond every 10 ms, at most timeout; it reports whether cond
// held.
func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return cond()
		case <-t.C:
		}
	}
	return true
}
