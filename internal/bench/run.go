package bench

import (
	"context"
	"fmt"
	"time"
)

// AckLatency and DeliverLatency are the flat latency fields of the reports.
type AckLatency struct {
	AckP50Ms  float64 `json:"ack_p50_ms"`
	AckP90Ms  float64 `json:"ack_p90_ms"`
	AckP99Ms  float64 `json:"ack_p99_ms"`
	AckP999Ms float64 `json:"ack_p999_ms"`
	AckMaxMs  float64 `json:"ack_max_ms"`
	AckMeanMs float64 `json:"ack_mean_ms"`
}

type DeliverLatency struct {
	DeliverP50Ms  float64 `json:"deliver_p50_ms"`
	DeliverP90Ms  float64 `json:"deliver_p90_ms"`
	DeliverP99Ms  float64 `json:"deliver_p99_ms"`
	DeliverP999Ms float64 `json:"deliver_p999_ms"`
	DeliverMaxMs  float64 `json:"deliver_max_ms"`
	DeliverMeanMs float64 `json:"deliver_mean_ms"`
}

func ackLatency(l Latency) AckLatency {
	return AckLatency{l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean}
}

func deliverLatency(l Latency) DeliverLatency {
	return DeliverLatency{l.P50, l.P90, l.P99, l.P999, l.Max, l.Mean}
}

// Invariants are the correctness fields every messaging benchmark reports.
type Invariants struct {
	Lost       int64 `json:"lost"`
	Duplicated int64 `json:"duplicated"`
	OutOfOrder int64 `json:"out_of_order"`
}

// check records a failure for every broken invariant.
func (inv Invariants) check(c *Common) {
	if inv.Lost != 0 || inv.Duplicated != 0 || inv.OutOfOrder != 0 {
		c.Fail("invariants broken: %d lost, %d duplicated, %d out of order", inv.Lost, inv.Duplicated, inv.OutOfOrder)
	}
}

// phases are the timings of a traffic run.
type phases struct {
	Warmup, Duration, Drain time.Duration
}

// trafficOutcome is what runTraffic measured.
type trafficOutcome struct {
	Usage   Usage
	Result  TrafficResult
	DrainMs float64
	Drained bool
}

// runTraffic runs tr through warm-up, the measured phase and the drain,
// with a live progress line, and closes it.
func runTraffic(ctx context.Context, tgt *Target, name string, tr *Traffic, ph phases, meter *Meter, rss *RSSSampler, prog *Progress) trafficOutcome {
	start := time.Now()
	state := "warm-up"
	var lastAcks, lastDel int64
	lastT := start
	phaseStart := time.Time{}
	stateCh := make(chan string, 4)
	prog.Set(func() string {
		for more := true; more; {
			select {
			case s := <-stateCh:
				state = s
				if s == "measure" {
					phaseStart = time.Now()
				}
			default:
				more = false
			}
		}
		now := time.Now()
		var acks int64
		for _, s := range tr.Senders {
			acks += s.ackN.Load()
		}
		del := tr.delivered.Load()
		dt := now.Sub(lastT).Seconds()
		ar, dr := float64(acks-lastAcks)/dt, float64(del-lastDel)/dt
		lastAcks, lastDel, lastT = acks, del, now
		el := now.Sub(start).Round(100 * time.Millisecond).String()
		if state == "measure" {
			el = now.Sub(phaseStart).Round(100*time.Millisecond).String() + "/" + ph.Duration.String()
		}
		srv := ""
		if rss != nil {
			srv = " | server rss " + MiB(rss.Last())
		}
		return fmt.Sprintf("%s [%s %v] acked %s (%s/s) delivered %s (%s/s)%s", name, state, el,
			count(acks), count(int64(ar)), count(del), count(int64(dr)), srv)
	})
	tr.Start()
	sleep(ctx, ph.Warmup)
	if rss != nil {
		rss.ResetPeak()
	}
	stateCh <- "measure"
	tgt.PhaseStart(ctx)
	a := meter.Snap()
	tr.Phase.Begin()
	sleep(ctx, ph.Duration)
	tr.Phase.End()
	b := meter.Snap()
	tgt.PhaseEnd(ctx)
	stateCh <- "drain"
	tr.StopSending()
	// Interrupted: still drain (briefly), so that the invariant check
	// judges what was delivered, not what had no time to arrive.
	dctx, drainFor := ctx, ph.Drain
	if ctx.Err() != nil {
		dctx, drainFor = context.WithoutCancel(ctx), min(drainFor, 5*time.Second)
	}
	ds := time.Now()
	acked := tr.WaitAcked(dctx, drainFor)
	delivered := tr.WaitDelivered(dctx, max(drainFor-time.Since(ds), 0))
	drain := time.Since(ds)
	prog.Stop()
	tr.Close()
	return trafficOutcome{Usage: UsageBetween(a, b), Result: tr.Result(),
		DrainMs: roundTo(float64(drain.Microseconds())/1000, 1), Drained: acked && delivered}
}

// sleep waits for d or ctx.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// startRSS starts sampling the target's RSS (nil if it cannot be read):
// every 100 ms from /proc, every 500 ms from /metrics.
func startRSS(t *Target) *RSSSampler {
	read := t.RSSReader()
	if read == nil {
		return nil
	}
	every := 100 * time.Millisecond
	if t.PID <= 0 {
		every = 500 * time.Millisecond
	}
	return StartRSSSampler(read, every)
}

func stopRSS(s *RSSSampler) {
	if s != nil {
		s.Stop()
	}
}
