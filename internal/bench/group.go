package bench

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// GroupConfig configures RunGroup.
type GroupConfig struct {
	Members      int // group size, senders included
	Online       int // members connected as receivers
	Senders      int
	Batch        int // members added per request
	Warmup       time.Duration
	Duration     time.Duration
	DrainTimeout time.Duration
	Traffic      TrafficConfig
	Concurrency  int
	SourceIPs    []netip.Addr
}

// GroupResult is the report of `pim bench group` (docs/benchmarks.md).
type GroupResult struct {
	Common
	Members int     `json:"members"`
	Online  int     `json:"online"`
	Senders int     `json:"senders"`
	Rate    float64 `json:"rate"`
	Window  int     `json:"window"`
	Size    int     `json:"size"`
	WarmupS float64 `json:"warmup_s"`
	SetupMs float64 `json:"setup_ms"`

	Sent                 int64   `json:"sent"`
	Acked                int64   `json:"acked"`
	SendErrors           int64   `json:"send_errors"`
	Delivered            int64   `json:"delivered"`
	MeasuredAcked        int64   `json:"measured_acked"`
	MeasuredDelivered    int64   `json:"measured_delivered"`
	MsgsPerSec           float64 `json:"msgs_per_sec"`
	DeliveriesPerSec     float64 `json:"deliveries_per_sec"`
	TimelineWritesPerSec float64 `json:"timeline_writes_per_sec"`
	RateSkipped          int64   `json:"rate_skipped"`
	DrainMs              float64 `json:"drain_ms"`
	AckLatency
	DeliverLatency
	Invariants
	ServerCPUUsPerDelivery  float64 `json:"server_cpu_us_per_delivery"`
	ServerCPUUsPerMsg       float64 `json:"server_cpu_us_per_msg"`
	LoadgenCPUUsPerDelivery float64 `json:"loadgen_cpu_us_per_delivery"`
}

// RunGroup runs fan-out traffic: cfg.Senders members send to one group of
// cfg.Members, of which cfg.Online are connected receivers.
func RunGroup(ctx context.Context, t *Target, cfg GroupConfig, args []string, prog *Progress) (*GroupResult, error) {
	switch {
	case cfg.Senders <= 0:
		return nil, fmt.Errorf("--senders must be positive")
	case cfg.Online < 0 || cfg.Senders+cfg.Online > cfg.Members:
		return nil, fmt.Errorf("--senders (%d) plus --online (%d) must be at most --members (%d)", cfg.Senders, cfg.Online, cfg.Members)
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	res := &GroupResult{Common: NewCommon("group", args), Members: cfg.Members, Online: cfg.Online, Senders: cfg.Senders,
		Rate: cfg.Traffic.Rate, Window: cfg.Traffic.Window, Size: cfg.Traffic.Size, WarmupS: cfg.Warmup.Seconds()}
	if cfg.Traffic.Rate > 0 {
		res.Window = 0
	}
	res.SetServer(t)
	run := RunID()
	members := make([]string, cfg.Members) // senders first, then the online receivers
	for i := range members {
		members[i] = fmt.Sprintf("%sm%d", run, i)
	}
	online := cfg.Senders + cfg.Online
	toks, err := t.Tokens(ctx, members[:online])
	if err != nil {
		return nil, err
	}
	setup := time.Now()
	owner, err := Dial(ctx, DialOptions{Addr: t.Addr, TLS: t.TLS, LocalIP: sourceIP(cfg.SourceIPs, 0), Token: toks[0], Device: "d"})
	if err != nil {
		return nil, fmt.Errorf("connect the group owner: %w", err)
	}
	group := "g:" + run
	var added atomic.Int64
	prog.Set(func() string {
		return fmt.Sprintf("group [members] %s/%s", count(added.Load()+1), count(int64(cfg.Members)))
	})
	id := uint64(1 << 40)
	for lo := 1; lo < cfg.Members; lo += cfg.Batch {
		hi := min(lo+cfg.Batch, cfg.Members)
		op := pimv1.GroupOp_GROUP_OP_ADD
		if lo == 1 {
			op = pimv1.GroupOp_GROUP_OP_CREATE
		}
		id++
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		_, err := owner.Call(cctx, &pimv1.Frame{RequestId: id, Body: &pimv1.Frame_GroupReq{GroupReq: &pimv1.GroupReq{
			Op: op, Group: group, Users: members[lo:hi], Name: "bench " + run}}})
		cancel()
		if err != nil {
			prog.Stop()
			owner.Close()
			return nil, fmt.Errorf("%v members %d-%d: %w", op, lo, hi-1, err)
		}
		added.Store(int64(hi - 1))
	}
	if cfg.Members == 1 {
		id++
		if _, err := owner.Call(ctx, &pimv1.Frame{RequestId: id, Body: &pimv1.Frame_GroupReq{GroupReq: &pimv1.GroupReq{
			Op: pimv1.GroupOp_GROUP_OP_CREATE, Group: group}}}); err != nil {
			prog.Stop()
			owner.Close()
			return nil, fmt.Errorf("create the group: %w", err)
		}
	}
	var dialled atomic.Int64
	prog.Set(func() string {
		return fmt.Sprintf("group [connect] %s/%s", count(dialled.Load()+1), count(int64(online)))
	})
	rest, err := DialAll(ctx, online-1, cfg.Concurrency, func(i int) DialOptions {
		j := online - 1 - i // receivers first, then senders 1..S-1
		return DialOptions{Addr: t.Addr, TLS: t.TLS, LocalIP: sourceIP(cfg.SourceIPs, j), Token: toks[j], Device: "d"}
	}, &dialled)
	prog.Stop()
	if err != nil {
		owner.Close()
		return nil, err
	}
	conns := make([]*Conn, online)
	conns[0] = owner
	for i, c := range rest {
		conns[online-1-i] = c
	}
	res.SetupMs = roundTo(float64(time.Since(setup).Microseconds())/1000, 1)
	receivers := make([]int, cfg.Online)
	for i := range receivers {
		receivers[i] = i
	}
	tr := NewTraffic(cfg.Traffic, conns[:cfg.Senders], conns[cfg.Senders:],
		func(int) SendFields { return SendFields{Conv: group, Type: 1} },
		func(int) []int { return receivers })
	meter := NewMeter(t)
	rss := startRSS(t)
	defer stopRSS(rss)
	if rss != nil {
		res.Server.RSSStartBytes = rss.Last()
	}
	out := runTraffic(ctx, t, "group", tr, phases{cfg.Warmup, cfg.Duration, cfg.DrainTimeout}, meter, rss, prog)
	r := out.Result
	res.SetUsage(out.Usage, 1)
	wall := out.Usage.Wall
	res.Sent, res.Acked, res.SendErrors, res.Delivered = r.Sent, r.Acked, r.SendErrors, r.Delivered
	res.MeasuredAcked, res.MeasuredDelivered = r.PhaseAcks, r.PhaseDeliveries
	res.MsgsPerSec, res.DeliveriesPerSec = rate(r.PhaseAcks, wall), rate(r.PhaseDeliveries, wall)
	res.TimelineWritesPerSec = roundTo(res.MsgsPerSec*float64(cfg.Members), 1)
	res.RateSkipped, res.DrainMs = r.Skipped, out.DrainMs
	res.AckLatency, res.DeliverLatency = ackLatency(r.Ack), deliverLatency(r.Deliver)
	res.Invariants = Invariants{r.Lost, r.Duplicated, r.OutOfOrder}
	if out.Usage.ServerOK {
		res.ServerCPUUsPerDelivery = perUnit(out.Usage.Server, r.PhaseDeliveries)
		res.ServerCPUUsPerMsg = perUnit(out.Usage.Server, r.PhaseAcks)
	}
	res.LoadgenCPUUsPerDelivery = perUnit(out.Usage.Loadgen, r.PhaseDeliveries)
	failTraffic(&res.Common, r, out, ctx)
	if cfg.Online > 0 && r.Delivered == 0 {
		res.Fail("nothing was delivered")
	}
	res.Invariants.check(&res.Common)
	res.Finish(t, rss)
	return res, nil
}

// Rows is the human summary.
func (r *GroupResult) Rows() []Row {
	mode := fmt.Sprintf("closed loop, window %d per sender", r.Window)
	if r.Rate > 0 {
		mode = fmt.Sprintf("paced at %s msg/s in all (open loop)", count(int64(r.Rate)))
	}
	rows := []Row{
		{"load", fmt.Sprintf("group of %d, %d online receivers, %d senders, %d-byte messages, %s, %.1f s measured",
			r.Members, r.Online, r.Senders, r.Size, mode, r.DurationS)},
		{"messages", fmt.Sprintf("sent %s, acked %s, delivered %s, refused %d", count(r.Sent), count(r.Acked), count(r.Delivered), r.SendErrors)},
		{"throughput", fmt.Sprintf("%s deliveries/s to online members (%s msg/s, %s timeline writes/s)",
			count(int64(r.DeliveriesPerSec)), count(int64(r.MsgsPerSec)), count(int64(r.TimelineWritesPerSec)))},
		latRow("send -> ack", Latency{P50: r.AckP50Ms, P90: r.AckP90Ms, P99: r.AckP99Ms, P999: r.AckP999Ms, Max: r.AckMaxMs, Count: uint64(r.MeasuredAcked)}),
		latRow("send -> deliver", Latency{P50: r.DeliverP50Ms, P90: r.DeliverP90Ms, P99: r.DeliverP99Ms, P999: r.DeliverP999Ms, Max: r.DeliverMaxMs, Count: uint64(r.MeasuredDelivered)}),
		{"server CPU", fmt.Sprintf("%.2f us per delivery, %.0f us per group message", r.ServerCPUUsPerDelivery, r.ServerCPUUsPerMsg)},
		{"invariants", fmt.Sprintf("lost %d, duplicated %d, out of order %d (per member)", r.Lost, r.Duplicated, r.OutOfOrder)},
	}
	return append(rows, r.CommonRows()...)
}
