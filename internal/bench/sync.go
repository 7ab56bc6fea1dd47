package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// SyncConfig configures RunSync.
type SyncConfig struct {
	Missed    int
	Window    int // the filling sender's sends in flight
	Size      int
	Timeout   time.Duration // for the fill and for the catch-up each
	SourceIPs []netip.Addr
	Ack       AckPolicy // the device's PushAck batching (zero: DefaultAckPolicy)
}

// SyncResult is the report of `pim bench sync` (docs/benchmarks.md).
type SyncResult struct {
	Common
	Missed   int     `json:"missed"`
	Size     int     `json:"size"`
	Received int64   `json:"received"`
	FillMs   float64 `json:"fill_ms"`
	// FillMsgsPerSec is the rate of the (pipelined, one connection) fill.
	FillMsgsPerSec    float64 `json:"fill_msgs_per_sec"`
	WelcomeMs         float64 `json:"welcome_ms"`
	CatchUpMs         float64 `json:"catch_up_ms"`
	CatchUpMsgsPerSec float64 `json:"catch_up_msgs_per_sec"`
	Bytes             int64   `json:"bytes"`
	BytesIn           int64   `json:"bytes_in"`
	BytesOut          int64   `json:"bytes_out"`
	BytesPerMsg       float64 `json:"bytes_per_msg"`
	PushFrames        int64   `json:"push_frames"`
	Invariants
	ServerCPUUsPerMsg float64 `json:"server_cpu_us_per_msg"`
}

// RunSync fills an offline device's timeline with cfg.Missed messages, then
// connects it and times how long it takes to receive them all.
func RunSync(ctx context.Context, t *Target, cfg SyncConfig, args []string, prog *Progress) (*SyncResult, error) {
	if cfg.Missed <= 0 {
		return nil, errors.New("--missed must be positive")
	}
	if cfg.Ack.Every <= 0 {
		cfg.Ack = DefaultAckPolicy
	}
	res := &SyncResult{Common: NewCommon("sync", args), Missed: cfg.Missed, Size: cfg.Size}
	res.SetServer(t)
	run := RunID()
	from, to := run+"a", run+"b"
	toks, err := t.Tokens(ctx, []string{from, to})
	if err != nil {
		return nil, err
	}
	rss := startRSS(t)
	defer stopRSS(rss)
	if rss != nil {
		res.Server.RSSStartBytes = rss.Last()
	}

	// Fill: one pipelined sender while the receiving device is offline.
	sc, err := Dial(ctx, DialOptions{Addr: t.Addr, TLS: t.TLS, LocalIP: sourceIP(cfg.SourceIPs, 0), Token: toks[0], Device: "d"})
	if err != nil {
		return nil, fmt.Errorf("connect the sender: %w", err)
	}
	tr := NewTraffic(TrafficConfig{Window: cfg.Window, Size: cfg.Size, Limit: uint64(cfg.Missed), Ack: cfg.Ack},
		[]*Conn{sc}, nil, func(int) SendFields { return SendFields{ToUser: to, Type: 1} }, func(int) []int { return nil })
	s := tr.Senders[0]
	prog.Set(func() string {
		return fmt.Sprintf("sync [fill] acked %s/%s", count(s.ackN.Load()), count(int64(cfg.Missed)))
	})
	fillStart := time.Now()
	tr.Phase.Begin()
	tr.Start()
	filled := tr.WaitAcked(ctx, cfg.Timeout)
	fill := time.Since(fillStart)
	tr.Phase.End()
	prog.Stop()
	tr.Close()
	fr := tr.Result()
	res.FillMs = roundTo(float64(fill.Microseconds())/1000, 1)
	res.FillMsgsPerSec = rate(fr.Acked, fill)
	if !filled || fr.Acked != int64(cfg.Missed) {
		return nil, fmt.Errorf("fill: %d of %d messages acknowledged in %v: %v", fr.Acked, cfg.Missed, fill.Round(time.Millisecond), fr.Errors)
	}

	// Catch up: the device connects and takes the push stream.
	meter := NewMeter(t)
	if rss != nil {
		rss.ResetPeak()
	}
	var got atomic.Int64
	prog.Set(func() string {
		return fmt.Sprintf("sync [catch-up] received %s/%s", count(got.Load()), count(int64(cfg.Missed)))
	})
	t.PhaseStart(ctx)
	a := meter.Snap()
	start := time.Now()
	rc, err := Dial(ctx, DialOptions{Addr: t.Addr, TLS: t.TLS, LocalIP: sourceIP(cfg.SourceIPs, 1), Token: toks[1], Device: "offline"})
	if err != nil {
		prog.Stop()
		return nil, fmt.Errorf("connect the offline device: %w", err)
	}
	defer rc.Close()
	res.WelcomeMs = roundTo(float64(time.Since(start).Microseconds())/1000, 2)
	chk := NewChecker(rc.Welcome().GetPushFromUserSeq())
	var last uint64
	var ack ackState
	var lastAt time.Time
	deadline := time.Now().Add(cfg.Timeout)
	rc.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { rc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var readErr error
	for chk.Delivered < int64(cfg.Missed) {
		_, kind, body, err := rc.Next()
		if err != nil {
			readErr = err
			break
		}
		if kind == fPush {
			res.PushFrames++
			now := time.Now()
			err := ScanPush(body, func(ev *PushEvent) {
				last = ev.UserSeq
				sender, n, _, ok := 0, uint64(0), int64(0), false
				if ev.Type == int32(pimv1.MessageType_MESSAGE_TYPE_TEXT) {
					sender, n, _, ok = ParseBody(ev.Body)
					ok = ok && sender == 0
				}
				if chk.Observe(ev.UserSeq, ev.Conv, ev.Seq, ok, sender, n) {
					lastAt = now
				}
			})
			if err != nil {
				readErr = frameErr("push", err)
				break
			}
			got.Store(chk.Delivered)
		}
		if kind == fPush {
			if seq := ack.seen(last, time.Now().UnixNano(), cfg.Ack); seq > 0 {
				if err := rc.Send(func(b []byte) []byte { return AppendPushAckFrame(b, seq) }); err != nil {
					readErr = err
					break
				}
			}
		}
	}
	b := meter.Snap()
	t.PhaseEnd(ctx)
	prog.Stop()
	if lastAt.IsZero() {
		lastAt = time.Now()
	}
	catchUp := lastAt.Sub(start)
	u := UsageBetween(a, b)
	u.Wall = catchUp
	res.SetUsage(u, 1)
	res.Received = chk.Delivered
	res.CatchUpMs = roundTo(float64(catchUp.Microseconds())/1000, 1)
	res.CatchUpMsgsPerSec = rate(chk.Delivered, catchUp)
	res.BytesIn, res.BytesOut = rc.BytesIn(), rc.BytesOut()
	res.Bytes = res.BytesIn + res.BytesOut
	if chk.Delivered > 0 {
		res.BytesPerMsg = roundTo(float64(res.Bytes)/float64(chk.Delivered), 1)
	}
	res.Invariants = Invariants{Lost: int64(chk.Lost(0, &s.acked)), Duplicated: chk.Duplicated, OutOfOrder: chk.OutOfOrder}
	if u.ServerOK {
		res.ServerCPUUsPerMsg = perUnit(u.Server, chk.Delivered)
	}
	if readErr != nil {
		res.Fail("catch-up: %v after %d of %d messages", readErr, chk.Delivered, cfg.Missed)
	}
	if ctx.Err() != nil {
		res.Fail("interrupted")
	}
	res.Invariants.check(&res.Common)
	res.Finish(t, rss)
	return res, nil
}

// Rows is the human summary.
func (r *SyncResult) Rows() []Row {
	rows := []Row{
		{"load", fmt.Sprintf("%s messages of %d bytes sent to an offline device (fill %.0f ms, %s msg/s on one connection)",
			count(int64(r.Missed)), r.Size, r.FillMs, count(int64(r.FillMsgsPerSec)))},
		{"catch-up", fmt.Sprintf("received %s in %.1f ms (%s msg/s; Welcome after %.2f ms) in %d push frames",
			count(r.Received), r.CatchUpMs, count(int64(r.CatchUpMsgsPerSec)), r.WelcomeMs, r.PushFrames)},
		{"bytes", fmt.Sprintf("%s on the wire (%s in, %s out), %.1f per message", count(r.Bytes), count(r.BytesIn), count(r.BytesOut), r.BytesPerMsg)},
		{"server CPU", fmt.Sprintf("%.2f us per message caught up", r.ServerCPUUsPerMsg)},
		{"invariants", fmt.Sprintf("lost %d, duplicated %d, out of order %d", r.Lost, r.Duplicated, r.OutOfOrder)},
	}
	return append(rows, r.CommonRows()...)
}
