package bench

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"
)

// E2EConfig configures RunE2E.
type E2EConfig struct {
	Pairs        int
	Warmup       time.Duration
	Duration     time.Duration
	DrainTimeout time.Duration
	Traffic      TrafficConfig
	Concurrency  int // connections dialled at once
	SourceIPs    []netip.Addr
}

// E2EResult is the report of `pim bench e2e` (docs/benchmarks.md).
type E2EResult struct {
	Common
	Pairs   int     `json:"pairs"`
	Rate    float64 `json:"rate"`
	Window  int     `json:"window"`
	Size    int     `json:"size"`
	WarmupS float64 `json:"warmup_s"`

	Sent              int64   `json:"sent"`
	Acked             int64   `json:"acked"`
	SendErrors        int64   `json:"send_errors"`
	Delivered         int64   `json:"delivered"`
	MeasuredAcked     int64   `json:"measured_acked"`
	MeasuredDelivered int64   `json:"measured_delivered"`
	MsgsPerSec        float64 `json:"msgs_per_sec"`
	DeliveriesPerSec  float64 `json:"deliveries_per_sec"`
	RateSkipped       int64   `json:"rate_skipped"`
	DrainMs           float64 `json:"drain_ms"`
	AckLatency
	DeliverLatency
	Invariants
	ServerCPUUsPerMsg      float64 `json:"server_cpu_us_per_msg"`
	ServerCPUUsPerDelivery float64 `json:"server_cpu_us_per_delivery"`
	LoadgenCPUUsPerMsg     float64 `json:"loadgen_cpu_us_per_msg"`
}

// RunE2E runs 1:1 traffic between cfg.Pairs sender/receiver pairs.
func RunE2E(ctx context.Context, t *Target, cfg E2EConfig, args []string, prog *Progress) (*E2EResult, error) {
	if cfg.Pairs <= 0 {
		return nil, fmt.Errorf("--pairs must be positive")
	}
	res := &E2EResult{Common: NewCommon("e2e", args), Pairs: cfg.Pairs, Rate: cfg.Traffic.Rate,
		Window: cfg.Traffic.Window, Size: cfg.Traffic.Size, WarmupS: cfg.Warmup.Seconds()}
	if cfg.Traffic.Rate > 0 {
		res.Window = 0
	}
	res.SetServer(t)
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
	var dialled atomic.Int64
	prog.Set(func() string { return fmt.Sprintf("e2e [connect] %s/%s", count(dialled.Load()), count(int64(2*n))) })
	// Receivers first: nothing is sent before every receiver is online.
	conns, err := DialAll(ctx, 2*n, cfg.Concurrency, func(i int) DialOptions {
		j := (i + n) % (2 * n)
		return DialOptions{Addr: t.Addr, TLS: t.TLS, LocalIP: sourceIP(cfg.SourceIPs, i), Token: toks[j], Device: "d"}
	}, &dialled)
	prog.Stop()
	if err != nil {
		return nil, err
	}
	receivers, senders := conns[:n], conns[n:]
	tr := NewTraffic(cfg.Traffic, senders, receivers,
		func(i int) SendFields { return SendFields{ToUser: users[n+i], Type: 1} },
		func(i int) []int { return []int{i} })
	meter := NewMeter(t)
	rss := startRSS(t)
	defer stopRSS(rss)
	if rss != nil {
		res.Server.RSSStartBytes = rss.Last()
	}
	out := runTraffic(ctx, t, "e2e", tr, phases{cfg.Warmup, cfg.Duration, cfg.DrainTimeout}, meter, rss, prog)
	r := out.Result
	res.SetUsage(out.Usage, 1)
	wall := out.Usage.Wall
	res.Sent, res.Acked, res.SendErrors, res.Delivered = r.Sent, r.Acked, r.SendErrors, r.Delivered
	res.MeasuredAcked, res.MeasuredDelivered = r.PhaseAcks, r.PhaseDeliveries
	res.MsgsPerSec, res.DeliveriesPerSec = rate(r.PhaseAcks, wall), rate(r.PhaseDeliveries, wall)
	res.RateSkipped, res.DrainMs = r.Skipped, out.DrainMs
	res.AckLatency, res.DeliverLatency = ackLatency(r.Ack), deliverLatency(r.Deliver)
	res.Invariants = Invariants{r.Lost, r.Duplicated, r.OutOfOrder}
	if out.Usage.ServerOK {
		res.ServerCPUUsPerMsg = perUnit(out.Usage.Server, r.PhaseAcks)
		res.ServerCPUUsPerDelivery = perUnit(out.Usage.Server, r.PhaseDeliveries)
	}
	res.LoadgenCPUUsPerMsg = perUnit(out.Usage.Loadgen, r.PhaseAcks)
	failTraffic(&res.Common, r, out, ctx)
	res.Invariants.check(&res.Common)
	res.Finish(t, rss)
	return res, nil
}

// failTraffic records the failures a traffic run can have besides the invariants.
func failTraffic(c *Common, r TrafficResult, out trafficOutcome, ctx context.Context) {
	if ctx.Err() != nil {
		c.Fail("interrupted")
	}
	if r.Acked == 0 {
		c.Fail("nothing was acknowledged")
	}
	if r.SendErrors > 0 {
		c.Fail("%d sends were refused", r.SendErrors)
	}
	if !out.Drained {
		c.Fail("not everything was acknowledged and delivered within the drain timeout (%.0f ms)", out.DrainMs)
	}
	for _, e := range r.Errors {
		c.Fail("%s", e)
	}
}

// Rows is the human summary.
func (r *E2EResult) Rows() []Row {
	mode := fmt.Sprintf("closed loop, window %d per sender", r.Window)
	if r.Rate > 0 {
		mode = fmt.Sprintf("paced at %s msg/s in all (open loop)", count(int64(r.Rate)))
	}
	rows := []Row{
		{"load", fmt.Sprintf("%d pairs, %d-byte messages, %s, %.1f s measured", r.Pairs, r.Size, mode, r.DurationS)},
		{"messages", fmt.Sprintf("sent %s, acked %s, delivered %s, refused %d", count(r.Sent), count(r.Acked), count(r.Delivered), r.SendErrors)},
		{"throughput", fmt.Sprintf("%s msg/s acked, %s deliveries/s", count(int64(r.MsgsPerSec)), count(int64(r.DeliveriesPerSec)))},
		latRow("send -> ack", Latency{P50: r.AckP50Ms, P90: r.AckP90Ms, P99: r.AckP99Ms, P999: r.AckP999Ms, Max: r.AckMaxMs, Count: uint64(r.MeasuredAcked)}),
		latRow("send -> deliver", Latency{P50: r.DeliverP50Ms, P90: r.DeliverP90Ms, P99: r.DeliverP99Ms, P999: r.DeliverP999Ms, Max: r.DeliverMaxMs, Count: uint64(r.MeasuredDelivered)}),
		{"server CPU", fmt.Sprintf("%.1f us per message, %.1f us per delivery", r.ServerCPUUsPerMsg, r.ServerCPUUsPerDelivery)},
		{"invariants", fmt.Sprintf("lost %d, duplicated %d, out of order %d", r.Lost, r.Duplicated, r.OutOfOrder)},
	}
	if r.RateSkipped > 0 {
		rows = append(rows, Row{"rate", fmt.Sprintf("%s sends skipped: the server fell behind the rate", count(r.RateSkipped))})
	}
	return append(rows, r.CommonRows()...)
}
