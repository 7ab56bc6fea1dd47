// Package storm is `pim bench storm`: N clients connected to a server and
// exchanging messages; the server is killed and restarted (or drained and
// restarted); the clients reconnect as the SDK does (sdk/go/core's own
// FullJitter and HintDelay, its rules for the failure count, and by default
// its base, cap and healthy-after: backoff.go); the benchmark reports how
// long reconnecting and catching up took, the peak rate of accepted
// connections against the configured rate, the server's peak memory and
// CPU, and whether every message sent during the storm was delivered
// exactly once and in order.
//
// It builds on internal/bench (spawning, /proc measuring, frame codecs, the
// delivery checker, the report's common fields) and adds what a storm needs:
// clients that reconnect (client.go), fleets in worker processes past
// PerProc clients (fleet.go, worker.go) and a server that can be killed and
// restarted on the same data and addresses (server.go).
//
// Invariants of this file:
//   - The run fails (Result.OK false, so `pim bench storm` exits non-zero)
//     when a message acknowledged to its sender is lost, duplicated or out
//     of order, when a message stays unacknowledged, or when the clients do
//     not all reconnect and catch up within Timeout.
//   - Every process and goroutine started is stopped before Run returns.
package storm

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/pim-project/pim/internal/bench"
	"github.com/pim-project/pim/sdk/go/core"
)

// Client reconnect policies (backoff.go).
const (
	// BackoffSDK is sdk/go/core's: a failure waits core.FullJitter and
	// doubles the ceiling; a refusal with retry_after and a GoAway wait
	// core.HintDelay(retry_after) (the hint plus at most a tenth, at most
	// 1 s) without doubling.
	BackoffSDK = "sdk"
	// BackoffDouble is the SDK before hinted refusals stopped raising its
	// exponent: every failure, refusals with retry_after included, waits
	// max(full jitter, retry_after) and doubles the ceiling; a GoAway waits
	// exactly its retry_after.
	BackoffDouble = "double"
	// BackoffHint is an old name of BackoffSDK: it waited exactly a
	// refusal's retry_after without doubling, which is what the SDK now does
	// but for HintDelay's jitter.
	BackoffHint = "hint"
)

// Modes of the storm.
const (
	ModeKill  = "kill"  // SIGKILL, then restart
	ModeDrain = "drain" // SIGTERM (the server drains), then restart
)

// Config configures a storm.
type Config struct {
	Clients      int
	Mode         string
	Rate         float64       // messages per second in all while connected
	Size         int           // message body bytes
	Before       time.Duration // traffic before the trigger
	Down         time.Duration // kill mode: time the server stays down
	Timeout      time.Duration // every client must reconnect and catch up within this of the trigger
	After        time.Duration // traffic after the storm settled
	DrainTimeout time.Duration // at the end, the wait for every ack and delivery
	BackoffBase  time.Duration // default core.DefaultBackoffBase
	BackoffCap   time.Duration // default core.DefaultBackoffCap
	HealthyAfter time.Duration // a connection up this long resets the failure count; default core.DefaultHealthyAfter
	Backoff      string        // BackoffSDK (default) or BackoffDouble; BackoffHint is BackoffSDK
	DialTimeout  time.Duration
	Concurrency  int // initial connections set up at once
	SourceIPs    []netip.Addr
	PerProc      int    // clients per load process
	Exe          string // the pim binary for workers (default: this executable)
	Seed         uint64
	// ConfiguredAcceptRate/Burst are reported when the server's metrics do
	// not say (the caller knows the flags it gave).
	ConfiguredAcceptRate  float64
	ConfiguredAcceptBurst int
}

func (c *Config) defaults() error {
	if c.Clients <= 0 {
		return errors.New("storm: --clients must be positive")
	}
	c.Clients += c.Clients % 2 // whole pairs
	switch c.Mode {
	case "":
		c.Mode = ModeKill
	case ModeKill, ModeDrain:
	default:
		return fmt.Errorf("storm: --mode must be %q or %q", ModeKill, ModeDrain)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	switch c.Backoff {
	case "", BackoffHint:
		c.Backoff = BackoffSDK
	case BackoffSDK, BackoffDouble:
	default:
		return fmt.Errorf("storm: --backoff must be %q or %q", BackoffSDK, BackoffDouble)
	}
	def(&c.Before, 5*time.Second)
	def(&c.Timeout, 90*time.Second)
	def(&c.After, 2*time.Second)
	def(&c.DrainTimeout, 60*time.Second)
	def(&c.BackoffBase, core.DefaultBackoffBase)
	def(&c.BackoffCap, core.DefaultBackoffCap)
	def(&c.HealthyAfter, core.DefaultHealthyAfter)
	def(&c.DialTimeout, 10*time.Second)
	if c.Size <= 0 {
		c.Size = 64
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 64
	}
	if c.PerProc <= 0 {
		c.PerProc = 15000
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	return nil
}

// Result is the report of `pim bench storm` (docs/benchmarks.md, "storm").
type Result struct {
	bench.Common
	Clients       int     `json:"clients"`
	Mode          string  `json:"mode"`
	Backoff       string  `json:"backoff"`
	BackoffBaseS  float64 `json:"backoff_base_s"`
	BackoffCapS   float64 `json:"backoff_cap_s"`
	HealthyAfterS float64 `json:"healthy_after_s"`
	Procs         int     `json:"procs"`
	SourceIPs     int     `json:"source_ips"`
	TLS           bool    `json:"tls"`
	Rate          float64 `json:"rate"`

	Connected       int64   `json:"connected"`         // before the storm
	InitialConnectS float64 `json:"initial_connect_s"` // to connect them all
	Disconnected    int64   `json:"disconnected"`      // lost their connection in the storm
	Reconnected     int64   `json:"reconnected"`
	CaughtUp        int64   `json:"caught_up"`
	Settled         bool    `json:"settled"`
	SettleS         float64 `json:"settle_s"`       // trigger to the last client caught up
	ServerDownS     float64 `json:"server_down_s"`  // trigger to the restarted server listening
	ServerDrainS    float64 `json:"server_drain_s"` // drain mode: SIGTERM to exit

	ReconnectP50Ms float64 `json:"reconnect_p50_ms"`
	ReconnectP90Ms float64 `json:"reconnect_p90_ms"`
	ReconnectP99Ms float64 `json:"reconnect_p99_ms"`
	ReconnectMaxMs float64 `json:"reconnect_max_ms"`
	CatchUpP50Ms   float64 `json:"catch_up_p50_ms"`
	CatchUpP90Ms   float64 `json:"catch_up_p90_ms"`
	CatchUpP99Ms   float64 `json:"catch_up_p99_ms"`
	CatchUpMaxMs   float64 `json:"catch_up_max_ms"`

	// PeakAcceptsPerSec is the server's own count: the most connections it
	// admitted within one second (100 ms-aligned windows) since the restart
	// (pim_accepted_peak_per_second; if the server does not export it, the
	// most over windows of 1 s or more between reads of
	// pim_accepted_connections_total every 250 ms). PeakWelcomesPerSec is the
	// clients' view: the most Welcomes received in any 1 s window, skewed by
	// when the clients get the CPU to read them. AcceptedGone counts
	// connections the server dropped at accept because their client had
	// given up while they were queued.
	PeakAcceptsPerSec       float64          `json:"peak_accepts_per_sec"`
	PeakWelcomesPerSec      float64          `json:"peak_welcomes_per_sec"`
	ConfiguredAcceptsPerSec float64          `json:"configured_accepts_per_sec"`
	ConfiguredAcceptBurst   int              `json:"configured_accept_burst"`
	AcceptsPerSecond        []int            `json:"accepts_per_second"`  // server: connections admitted in each second after the restart
	WelcomesPerSecond       []int            `json:"welcomes_per_second"` // clients: Welcomes in each second after the trigger
	AcceptedGone            int64            `json:"accepted_gone"`
	DialAttempts            int64            `json:"dial_attempts"`
	DialErrors              int64            `json:"dial_errors"` // refused, reset, timed out
	Refusals                map[string]int64 `json:"refusals"`    // Error frames at accept/Hello, by code
	SendRefusals            int64            `json:"send_refusals"`

	// Send-to-ack latency (first attempt to ack) of the messages acked
	// before the storm, and of those sent on connections made after it began
	// (the reconnected clients'): what the storm costs the clients that are
	// connected. Messages interrupted by the storm (sent on a connection it
	// broke) are in neither.
	AckBeforeP50Ms float64 `json:"ack_before_p50_ms"`
	AckBeforeP99Ms float64 `json:"ack_before_p99_ms"`
	AckStormP50Ms  float64 `json:"ack_storm_p50_ms"`
	AckStormP99Ms  float64 `json:"ack_storm_p99_ms"`

	ServerPeakRSSBytes  int64   `json:"server_peak_rss_bytes"`
	ServerStormCPUS     float64 `json:"server_storm_cpu_s"`   // the restarted server, trigger to settled
	ServerStormCPUPct   float64 `json:"server_storm_cpu_pct"` // of one core
	ServerMaxConfigured float64 `json:"server_max_connections"`

	Sent      int64 `json:"sent"`
	Acked     int64 `json:"acked"`
	Unacked   int64 `json:"unacked"`
	Expected  int64 `json:"expected_deliveries"`
	Delivered int64 `json:"delivered"`
	// Undelivered counts acknowledged messages not delivered to a receiver
	// that was not connected at the end (it never came back), or while
	// deliveries were still due (the run did not settle or drain): not
	// delivered, but not proven lost. Lost counts those whose receiver was
	// connected at the end of a run that settled and drained.
	Undelivered int64 `json:"undelivered"`
	bench.Invariants
	Errors []string `json:"errors,omitempty"`

	notDrained bool // the final wait for acks and deliveries timed out
}

// Run runs a storm against srv.
func Run(ctx context.Context, srv Server, cfg Config, args []string, prog *bench.Progress) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	res := &Result{Common: bench.NewCommon("storm", args), Clients: cfg.Clients, Mode: cfg.Mode, Backoff: cfg.Backoff,
		BackoffBaseS: cfg.BackoffBase.Seconds(), BackoffCapS: cfg.BackoffCap.Seconds(), HealthyAfterS: cfg.HealthyAfter.Seconds(),
		SourceIPs: len(cfg.SourceIPs), Rate: cfg.Rate, Refusals: map[string]int64{}}
	res.Server.Addr, res.Server.PID, res.Server.Spawned = srv.Addr(), srv.PID(), srv.PID() != 0
	if sp, ok := srv.(*Spawned); ok {
		res.Server.Args = sp.Args()
		res.Server.TLS = sp.first.TLS
	}
	res.TLS = res.Server.TLS

	run := bench.RunID()
	users := make([]string, cfg.Clients)
	for i := range users {
		users[i] = fmt.Sprintf("%ss%d", run, i)
	}
	prog.Set(func() string { return "storm [tokens]" })
	toks, err := srv.Tokens(ctx, users)
	if err != nil {
		return nil, err
	}
	fleets, err := startFleets(srv, cfg, users, toks)
	if err != nil {
		return nil, err
	}
	res.Procs = len(fleets)
	res.Loadgen.Procs = len(fleets)
	closed := false
	defer func() {
		if !closed {
			for _, f := range fleets {
				f.close()
			}
		}
	}()
	rss := newRSSWatch(srv.PID())
	defer rss.stop()
	all := func() Progress {
		var p Progress
		for _, f := range fleets {
			p.add(f.progress())
		}
		return p
	}
	phase := "connect"
	start := time.Now()
	prog.Set(func() string {
		p := all()
		return fmt.Sprintf("storm [%s %v] connected %s/%d, reconnected %d, caught up %d, acked %d, delivered %d/%d | server rss %s",
			phase, time.Since(start).Round(100*time.Millisecond), fmtN(p.Connected), cfg.Clients, p.Reconnected, p.CaughtUp,
			p.Acked, p.Delivered, p.Expected, bench.MiB(rss.last()))
	})

	// 1. Everyone connects.
	if !waitFor(ctx, 5*time.Minute, func() bool { return all().Connected >= int64(cfg.Clients) }) {
		res.Fail("only %d of %d clients connected within 5 minutes", all().Connected, cfg.Clients)
		return finish(ctx, res, fleets, &closed, srv, rss, prog)
	}
	res.Connected = all().Connected
	res.InitialConnectS = round(time.Since(start).Seconds(), 2)

	// 2. Traffic.
	phase = "traffic"
	for _, f := range fleets {
		if err := f.traffic(true); err != nil {
			return nil, err
		}
	}
	sleep(ctx, cfg.Before)

	// 3. The trigger.
	phase = cfg.Mode
	stormAt := time.Now()
	for _, f := range fleets {
		if err := f.storm(stormAt.UnixNano()); err != nil {
			return nil, err
		}
	}
	switch cfg.Mode {
	case ModeKill:
		err = srv.Kill(ctx)
		sleep(ctx, cfg.Down)
	case ModeDrain:
		err = srv.Drain(ctx)
		res.ServerDrainS = round(time.Since(stormAt).Seconds(), 2)
	}
	if err != nil {
		res.Fail("%s: %v", cfg.Mode, err)
		return finish(ctx, res, fleets, &closed, srv, rss, prog)
	}
	phase = "restart"
	if err := srv.Restart(ctx); err != nil {
		res.Fail("%v", err)
		return finish(ctx, res, fleets, &closed, srv, rss, prog)
	}
	restartAt := time.Now()
	res.ServerDownS = round(restartAt.Sub(stormAt).Seconds(), 2)
	rss.follow(srv.PID())
	res.Server.PID = srv.PID()
	acc := watchAccepts(ctx, srv)

	// 4. The storm settles: everyone reconnected and caught up.
	phase = "storm"
	res.Settled = waitFor(ctx, max(cfg.Timeout-time.Since(stormAt), 0), func() bool {
		p := all()
		return p.CaughtUp >= int64(cfg.Clients) && p.Reconnected >= p.StormLost
	})
	settleAt := time.Now()
	res.SettleS = round(settleAt.Sub(stormAt).Seconds(), 2)
	res.PeakAcceptsPerSec, res.AcceptsPerSecond = acc.stop()
	if pid := srv.PID(); pid > 0 {
		if st, err := bench.ReadProcStat(pid); err == nil {
			res.ServerStormCPUS = round(st.CPU().Seconds(), 2)
			res.ServerStormCPUPct = bench.Pct(st.CPU(), settleAt.Sub(restartAt))
		}
	}
	if !res.Settled {
		p := all()
		res.Fail("the storm did not settle within %v: %d of %d clients reconnected, %d caught up", cfg.Timeout, p.Reconnected, cfg.Clients, p.CaughtUp)
	}

	// 5. Traffic after the storm, then stop and wait for every ack and delivery.
	phase = "after"
	sleep(ctx, cfg.After)
	for _, f := range fleets {
		_ = f.traffic(false)
	}
	phase = "drain"
	drained := waitFor(ctx, cfg.DrainTimeout, func() bool { return drained(fleets) })
	if !drained {
		p := all()
		res.Fail("after %v: %d messages unacknowledged, %d of %d deliveries", cfg.DrainTimeout, p.Inflight, p.Delivered, p.Expected)
		res.notDrained = true
	}
	if m := srv.Metrics(ctx, "pim_admission_accept_rate", "pim_admission_accept_burst", "pim_admission_max_connections",
		"pim_accepted_peak_per_second", "pim_accepted_gone_total"); m != nil {
		if v, ok := m["pim_admission_accept_rate"]; ok {
			cfg.ConfiguredAcceptRate, cfg.ConfiguredAcceptBurst = v, int(m["pim_admission_accept_burst"])
			res.ServerMaxConfigured = m["pim_admission_max_connections"]
		}
		if v, ok := m["pim_accepted_peak_per_second"]; ok {
			res.PeakAcceptsPerSec = v // exact, kept by the server since its restart
		}
		res.AcceptedGone = int64(m["pim_accepted_gone_total"])
	}
	res.ConfiguredAcceptsPerSec, res.ConfiguredAcceptBurst = cfg.ConfiguredAcceptRate, cfg.ConfiguredAcceptBurst
	return finish(ctx, res, fleets, &closed, srv, rss, prog, stormAt)
}

// drained reports whether every message sent was acknowledged and every
// acknowledged one delivered, by counts each fleet read after it carried out
// the last "traffic off" it was given. A worker's last report may be older
// than that command (up to 200 ms, taken while its pacer still sent): with
// bursty sends and quick acks it can show nothing in flight while messages
// are, and finish would close the fleets on them.
func drained(fleets []fleetHandle) bool {
	var sum Progress
	for _, f := range fleets {
		p := f.progress()
		if p.TrafficOffs < f.trafficOffs() {
			return false
		}
		sum.add(p)
	}
	return sum.Inflight == 0 && sum.Delivered >= sum.Expected
}

// finish collects the fleets' reports into res.
func finish(ctx context.Context, res *Result, fleets []fleetHandle, closed *bool, srv Server, rss *rssWatch, prog *bench.Progress, stormAt ...time.Time) (*Result, error) {
	prog.Set(func() string { return "storm [collecting reports]" })
	var reps []FleetReport
	for _, f := range fleets {
		r, err := f.finish(ctx)
		if err != nil {
			res.Fail("load process: %v", err)
			continue
		}
		reps = append(reps, r)
	}
	for _, f := range fleets {
		if err := f.close(); err != nil {
			res.Fail("%v", err)
		}
	}
	*closed = true
	prog.Stop()
	var reconn, catch, ackPre, ackStorm []float64
	var welcomes []int64
	for _, r := range reps {
		res.Disconnected += r.StormLost
		res.Reconnected += r.Reconnected
		res.CaughtUp += r.CaughtUp
		res.Sent += r.Sent
		res.Acked += r.Acked
		res.Unacked += r.Inflight
		res.Expected += r.Expected
		res.Delivered += r.Delivered
		res.Lost += r.Lost
		res.Undelivered += r.Undelivered
		res.Duplicated += r.Duplicated
		res.OutOfOrder += r.OutOfOrder
		res.DialAttempts += r.Attempts
		res.DialErrors += r.DialErrors
		res.SendRefusals += r.SendRefused
		for k, v := range r.Refused {
			res.Refusals[k] += v
		}
		reconn = append(reconn, r.ReconnectMs...)
		ackPre = append(ackPre, r.AckBeforeMs...)
		ackStorm = append(ackStorm, r.AckStormMs...)
		catch = append(catch, r.CatchUpMs...)
		welcomes = append(welcomes, r.WelcomesMs...)
		for _, e := range r.Errors {
			if len(res.Errors) < 10 {
				res.Errors = append(res.Errors, e)
			}
		}
	}
	slices.Sort(reconn)
	slices.Sort(catch)
	res.ReconnectP50Ms, res.ReconnectP90Ms, res.ReconnectP99Ms, res.ReconnectMaxMs =
		quantile(reconn, .5), quantile(reconn, .9), quantile(reconn, .99), quantile(reconn, 1)
	res.CatchUpP50Ms, res.CatchUpP90Ms, res.CatchUpP99Ms, res.CatchUpMaxMs =
		quantile(catch, .5), quantile(catch, .9), quantile(catch, .99), quantile(catch, 1)
	slices.Sort(ackPre)
	slices.Sort(ackStorm)
	res.AckBeforeP50Ms, res.AckBeforeP99Ms = quantile(ackPre, .5), quantile(ackPre, .99)
	res.AckStormP50Ms, res.AckStormP99Ms = quantile(ackStorm, .5), quantile(ackStorm, .99)
	slices.Sort(welcomes)
	res.PeakWelcomesPerSec = float64(peakWindow(welcomes, 1000))
	if len(stormAt) > 0 {
		res.WelcomesPerSecond = perSecond(welcomes, stormAt[0].UnixMilli())
	}
	if res.notDrained || !res.Settled {
		// Deliveries were still due when the run ended: what is missing is
		// undelivered, it cannot be told lost.
		res.Undelivered += res.Lost
		res.Lost = 0
	}
	if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 {
		res.Fail("invariants broken: %d lost, %d duplicated, %d out of order", res.Lost, res.Duplicated, res.OutOfOrder)
	}
	if res.Unacked > 0 {
		res.Fail("%d messages never acknowledged", res.Unacked)
	}
	if res.Undelivered > 0 {
		res.Fail("%d acknowledged messages not delivered: their receivers never came back", res.Undelivered)
	}
	res.ServerPeakRSSBytes = rss.peak()
	res.Server.PeakRSSBytes = res.ServerPeakRSSBytes
	res.Env.LoadAvgEnd = bench.ReadLoadAvg()
	if ctx.Err() != nil {
		res.Fail("interrupted")
	}
	res.OK = len(res.Failures) == 0
	return res, nil
}

// startFleets splits the clients over this process and workers.
func startFleets(srv Server, cfg Config, users, toks []string) ([]fleetHandle, error) {
	procs := (cfg.Clients + cfg.PerProc - 1) / cfg.PerProc
	per := (cfg.Clients/procs + 1) &^ 1 // even shares
	var ips []string
	for _, a := range cfg.SourceIPs {
		ips = append(ips, a.String())
	}
	var out []fleetHandle
	fail := func(err error) ([]fleetHandle, error) {
		for _, f := range out {
			f.close()
		}
		return nil, err
	}
	for p := 0; p < procs; p++ {
		lo, hi := p*per, min((p+1)*per, cfg.Clients)
		if lo >= hi {
			break
		}
		job := FleetConfig{Addr: srv.Addr(), Users: users[lo:hi], Tokens: toks[lo:hi], First: lo, SourceIPs: ips,
			Rate: cfg.Rate * float64(hi-lo) / float64(cfg.Clients), Size: cfg.Size,
			Concurrency: max(cfg.Concurrency/procs, 4), Backoff: cfg.Backoff, BackoffBase: cfg.BackoffBase,
			BackoffCap: cfg.BackoffCap, HealthyAfter: cfg.HealthyAfter, DialTimeout: cfg.DialTimeout, Seed: cfg.Seed + uint64(p)}
		srv.ClientTLS(&job)
		if procs == 1 {
			tc, err := clientTLS(job)
			if err != nil {
				return fail(err)
			}
			f, err := newFleet(job, tc)
			if err != nil {
				return fail(err)
			}
			f.start()
			out = append(out, localFleet{f})
			continue
		}
		exe := cfg.Exe
		if exe == "" {
			var err error
			if exe, err = os.Executable(); err != nil {
				return fail(err)
			}
		}
		w, err := startWorker(exe, job)
		if err != nil {
			return fail(err)
		}
		out = append(out, w)
	}
	return out, nil
}

// acceptWatch reads the server's count of admitted connections every
// 250 ms; its goroutine ends with stop.
type acceptWatch struct {
	stp     chan struct{}
	done    chan struct{}
	samples []acceptSample // owned by the goroutine until done
}

type acceptSample struct {
	at time.Time
	n  float64
}

// watchAccepts starts at the restart: the counter of a fresh process is 0.
func watchAccepts(ctx context.Context, srv Server) *acceptWatch {
	w := &acceptWatch{stp: make(chan struct{}), done: make(chan struct{}),
		samples: []acceptSample{{time.Now(), 0}}}
	go func() {
		defer close(w.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if m := srv.Metrics(ctx, "pim_accepted_connections_total"); m != nil {
				if n, ok := m["pim_accepted_connections_total"]; ok {
					w.samples = append(w.samples, acceptSample{time.Now(), n})
				}
			}
			select {
			case <-w.stp:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// stop ends the watch and returns the peak rate over windows of at least
// 1 s, and the admissions in each second (between the samples closest to
// whole seconds after the first).
func (w *acceptWatch) stop() (float64, []int) {
	close(w.stp)
	<-w.done
	ss := w.samples
	peak := 0.0
	j := 0
	for i := range ss {
		for j < len(ss) && ss[j].at.Sub(ss[i].at) < time.Second {
			j++
		}
		if j == len(ss) {
			break
		}
		peak = max(peak, (ss[j].n-ss[i].n)/ss[j].at.Sub(ss[i].at).Seconds())
	}
	var per []int
	if len(ss) > 0 {
		k := 0
		for sec := 1; ; sec++ {
			at := ss[0].at.Add(time.Duration(sec) * time.Second)
			for k < len(ss) && ss[k].at.Before(at) {
				k++
			}
			if k == len(ss) {
				break
			}
			prev := ss[0].n
			if len(per) > 0 {
				prev = float64(sumInts(per)) + ss[0].n
			}
			per = append(per, int(ss[k].n-prev))
		}
	}
	return math.Round(peak), per
}

func sumInts(xs []int) int {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s
}

// waitFor polls cond every 100 ms until it holds (true) or d passes.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		if cond() {
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

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// quantile returns the q-quantile of sorted xs (nearest rank; 0 if empty).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return round(xs[min(max(i, 0), len(xs)-1)], 1)
}

// peakWindow is the most timestamps (sorted, ms) within any window of w ms.
func peakWindow(ts []int64, w int64) int {
	best, j := 0, 0
	for i := range ts {
		for ts[i]-ts[j] >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

// perSecond counts sorted timestamps (ms) per second from start.
func perSecond(ts []int64, start int64) []int {
	var out []int
	for _, t := range ts {
		s := int((t - start) / 1000)
		if s < 0 {
			continue
		}
		for len(out) <= s {
			out = append(out, 0)
		}
		out[s]++
	}
	return out
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

func fmtN(n int64) string { return fmt.Sprintf("%d", n) }

// rssWatch samples the server's RSS across restarts (every 50 ms, and the
// kernel's high-water mark of each process) and keeps the peak. Its
// goroutine ends with stop.
type rssWatch struct {
	mu   sync.Mutex
	pid  int
	lst  int64
	pk   int64
	stp  chan struct{}
	done chan struct{}
}

func newRSSWatch(pid int) *rssWatch {
	w := &rssWatch{pid: pid, stp: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			w.sample()
			select {
			case <-w.stp:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func (w *rssWatch) sample() {
	w.mu.Lock()
	pid := w.pid
	w.mu.Unlock()
	if pid <= 0 {
		return
	}
	st, err := bench.ReadProcStatus(pid)
	if err != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if pid == w.pid {
		w.lst = st.RSS
		w.pk = max(w.pk, st.RSS, st.PeakRSS)
	}
}

// follow switches to a new server process (the old one is gone: its last
// samples and high-water mark are in the peak already).
func (w *rssWatch) follow(pid int) {
	w.mu.Lock()
	w.pid, w.lst = pid, 0
	w.mu.Unlock()
}

func (w *rssWatch) last() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lst
}

func (w *rssWatch) peak() int64 {
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pk
}

func (w *rssWatch) stop() {
	select {
	case <-w.stp:
	default:
		close(w.stp)
	}
	<-w.done
}

// Rows is the human summary.
func (r *Result) Rows() []bench.Row {
	kind := "plaintext TCP"
	if r.TLS {
		kind = "TLS 1.3"
	}
	trigger := "SIGKILL, restart"
	if r.Mode == ModeDrain {
		trigger = fmt.Sprintf("SIGTERM (drain: %.1f s to exit), restart", r.ServerDrainS)
	}
	rate := "unlimited"
	if r.ConfiguredAcceptsPerSec > 0 {
		rate = fmt.Sprintf("%g/s (burst %d)", r.ConfiguredAcceptsPerSec, r.ConfiguredAcceptBurst)
	}
	refused := int64(0)
	for _, v := range r.Refusals {
		refused += v
	}
	rows := []bench.Row{
		{Name: "load", Value: fmt.Sprintf("%d %s clients (%d process(es), %d source IPs), %g msg/s in all", r.Clients, kind, r.Procs, r.SourceIPs, r.Rate)},
		{Name: "backoff", Value: fmt.Sprintf("%s (base %g s, cap %g s, healthy after %g s)", r.Backoff, r.BackoffBaseS, r.BackoffCapS, r.HealthyAfterS)},
		{Name: "storm", Value: fmt.Sprintf("%s; server back after %.2f s", trigger, r.ServerDownS)},
		{Name: "settled", Value: fmt.Sprintf("%v after %.1f s: %d of %d disconnected clients reconnected, %d caught up",
			r.Settled, r.SettleS, r.Reconnected, r.Disconnected, r.CaughtUp)},
		{Name: "reconnect", Value: fmt.Sprintf("p50 %.0f  p90 %.0f  p99 %.0f  max %.0f ms", r.ReconnectP50Ms, r.ReconnectP90Ms, r.ReconnectP99Ms, r.ReconnectMaxMs)},
		{Name: "catch up", Value: fmt.Sprintf("p50 %.0f  p90 %.0f  p99 %.0f  max %.0f ms", r.CatchUpP50Ms, r.CatchUpP90Ms, r.CatchUpP99Ms, r.CatchUpMaxMs)},
		{Name: "accepts", Value: fmt.Sprintf("server admitted at most %.0f in a second, configured %s; clients saw up to %.0f Welcomes/s; %d dropped at accept (client gone)",
			r.PeakAcceptsPerSec, rate, r.PeakWelcomesPerSec, r.AcceptedGone)},
		{Name: "dials", Value: fmt.Sprintf("%d: %d refused by the server (%v), %d failed (refused, reset, timed out)",
			r.DialAttempts, refused, r.Refusals, r.DialErrors)},
		{Name: "send to ack", Value: fmt.Sprintf("before the storm p50 %.1f  p99 %.1f ms; during it p50 %.1f  p99 %.1f ms",
			r.AckBeforeP50Ms, r.AckBeforeP99Ms, r.AckStormP50Ms, r.AckStormP99Ms)},
		{Name: "server", Value: fmt.Sprintf("peak RSS %s; %.1f s CPU (%.0f%% of a core) from restart to settled",
			bench.MiB(r.ServerPeakRSSBytes), r.ServerStormCPUS, r.ServerStormCPUPct)},
		{Name: "messages", Value: fmt.Sprintf("%d sent, %d acked, %d unacked; %d of %d deliveries (%d to clients that never came back); lost %d, duplicated %d, out of order %d (%d sends refused and retried)",
			r.Sent, r.Acked, r.Unacked, r.Delivered, r.Expected, r.Undelivered, r.Lost, r.Duplicated, r.OutOfOrder, r.SendRefusals)},
	}
	if len(r.Errors) > 0 {
		rows = append(rows, bench.Row{Name: "errors", Value: fmt.Sprintf("%v", r.Errors)})
	}
	verdict := "PASS"
	if !r.OK {
		verdict = fmt.Sprintf("FAIL: %v", r.Failures)
	}
	return append(rows, bench.Row{Name: "result", Value: verdict})
}
