package bench

// `pim bench wire`: bytes on the wire per message and per idle hour of
// heartbeats, counted on real sockets. Three Go SDK devices (default
// tuning, their own stores) each connect through their own faultproxy with
// a wire tap (wiretap.go): a sender, a receiver, and an idle device whose
// heartbeat is set short so that a few seconds show its ping/pong exchange.
//
//   - Sparse messages: the sender sends --messages messages to the receiver,
//     one at a time, each followed by --gap of quiet (longer than twice the
//     SDK's ack delay, so each message's PushAcks are its own): every byte
//     of SendReq, SendAck, the Push to the receiver, the Push of the echo to
//     the sender's own device, the Push of the delivery receipt to the
//     sender, the PushAcks, and on TLS the record overhead, divided by the
//     messages.
//   - A burst: --burst messages queued at once (the SDK pipelines them;
//     pushes and acks batch), the same division.
//   - Heartbeats: the bytes of one ping/pong exchange, measured over --idle
//     on the idle device, times the number of pings an idle hour takes in
//     the SDK's default schedule, which HeartbeatSchedule derives from the
//     SDK's own state machine with simulated time, against the heartbeat
//     the server announces (read from its Welcome).
//
// TCP/IP headers are not seen by a proxy: the report estimates them from
// the segments it counted (52 bytes each for IPv4 + TCP with timestamps,
// and up to one pure ACK of 52 bytes per segment).
//
// Invariants:
//   - Goroutines: one event reader per device (wireDev.run, ends when its
//     client is closed) and the progress line; RunWire closes every client
//     and proxy on every path.
//   - The run fails on any lost, duplicated or out-of-order message (the
//     receiver's stream and the sender's echo), a message not Sent, or a
//     stream the tap could not parse.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/pim-project/pim/internal/faultproxy"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	pim "github.com/pim-project/pim/sdk/go"
)

// Estimates of what the proxy cannot see (IPv4; IPv6 adds 20 per segment).
const (
	TCPIPHeaderBytes = 52 // IPv4 20 + TCP 20 + timestamp option 12
	TLSRecordBytes   = 22 // TLS 1.3 AEAD record: 5 header + 1 content type + 16 tag
)

// WireConfig configures RunWire.
type WireConfig struct {
	Messages  int           // sparse messages, one at a time
	Burst     int           // messages queued at once (0: no burst)
	Size      int           // body bytes
	Gap       time.Duration // quiet after each sparse message (> the SDK's AckDelay)
	Idle      time.Duration // the heartbeat window
	PingEvery time.Duration // the idle device's heartbeat interval in that window
	Timeout   time.Duration // for each message, and for connecting
}

// WireDir is what one device sent (up) or received (down), per message.
type WireDir struct {
	Bytes    float64 `json:"bytes"`
	Segments float64 `json:"segments"`
	Units    float64 `json:"units"` // frames (plaintext) or TLS records
}

// WireFrames is one kind of unit in one direction of one device: frames
// of a type (plaintext) or TLS records of a content type.
type WireFrames struct {
	Device string  `json:"device"` // sender or receiver
	Dir    string  `json:"dir"`    // up (device to server) or down
	Kind   string  `json:"kind"`   // e.g. send_req, push, push_ack; application_data
	Count  int64   `json:"count"`
	Bytes  int64   `json:"bytes"`
	Each   float64 `json:"bytes_each"`
}

// WirePhase is the per-message bytes of one phase.
type WirePhase struct {
	Messages     int     `json:"messages"`
	SenderUp     WireDir `json:"sender_up"`
	SenderDown   WireDir `json:"sender_down"`
	ReceiverUp   WireDir `json:"receiver_up"`
	ReceiverDown WireDir `json:"receiver_down"`
	// BytesPerMsg: the four directions together: what one message costs
	// the sending and the receiving device (TCP payload: frames, and TLS
	// records on TLS).
	BytesPerMsg float64 `json:"bytes_per_msg"`
	// OverheadPerMsg: BytesPerMsg minus the three copies of the body (in
	// SendReq, the Push to the receiver, the echo to the sender).
	OverheadPerMsg float64 `json:"overhead_per_msg"`
	// TLSOverheadPerMsg: TLS records per message x 22 bytes (TLS only).
	TLSOverheadPerMsg float64 `json:"tls_overhead_per_msg"`
	SegmentsPerMsg    float64 `json:"segments_per_msg"`
	// TCP/IP headers, estimated: 52 bytes per segment, and at most one
	// pure ACK (52 bytes) per segment.
	TCPIPPerMsgMin float64      `json:"tcpip_per_msg_min"`
	TCPIPPerMsgMax float64      `json:"tcpip_per_msg_max"`
	Units          []WireFrames `json:"units"`
}

// WireHeartbeat is the heartbeat's cost.
type WireHeartbeat struct {
	HeartbeatFigures
	// Measured over the idle window: pings seen, and the bytes of each way.
	Pings         int64   `json:"pings"`
	PingBytes     float64 `json:"ping_bytes"`
	PongBytes     float64 `json:"pong_bytes"`
	ExchangeBytes float64 `json:"exchange_bytes"`
	// Estimated: ping, pong, and the pure ACK of the pong.
	TCPIPPerExchange float64 `json:"tcpip_per_exchange"`
	// ExchangeBytes x pings per hour (TCP payload), and with the TCP/IP
	// estimate.
	BytesHourForeground          float64 `json:"bytes_per_hour_foreground"`
	BytesFirstHourBackground     float64 `json:"bytes_first_hour_background"`
	BytesHourBackground          float64 `json:"bytes_per_hour_background"`
	WireBytesHourForeground      float64 `json:"wire_bytes_per_hour_foreground"`
	WireBytesFirstHourBackground float64 `json:"wire_bytes_first_hour_background"`
	WireBytesHourBackground      float64 `json:"wire_bytes_per_hour_background"`
}

// WireResult is the report of `pim bench wire` (docs/benchmarks.md).
type WireResult struct {
	Common
	Size        int           `json:"size"`
	GapMs       int64         `json:"gap_ms"`
	ConnectUp   int64         `json:"connect_bytes_up"` // the receiver's connection: Hello (and the TLS handshake)
	ConnectDown int64         `json:"connect_bytes_down"`
	Sparse      WirePhase     `json:"sparse"`
	Burst       *WirePhase    `json:"burst,omitempty"`
	Heartbeat   WireHeartbeat `json:"heartbeat"`
	Sent        int64         `json:"sent"`
	Delivered   int64         `json:"delivered"`
	Echoed      int64         `json:"echoed"`
	Invariants
}

// wireDev is one SDK device and its tap.
type wireDev struct {
	name string
	cl   *pim.Client
	px   *faultproxy.Proxy
	tap  *wireTap
	up   chan struct{} // closed at the first CaughtUpEvent
	done chan struct{} // closed when run ends

	fresh atomic.Int64
	// Owned by run; read after done.
	chk  *Checker
	errs []string
}

func (d *wireDev) run() {
	defer close(d.done)
	upOnce := false
	for ev := range d.cl.Events() {
		switch e := ev.(type) {
		case pim.MessageEvent:
			m := e.Message
			s, n, _, ok := ParseBody(m.GetBody())
			ok = ok && s == 0 && m.GetType() == pimv1.MessageType_MESSAGE_TYPE_TEXT
			if d.chk.Observe(e.UserSeq, []byte(m.GetConv()), m.GetSeq(), ok, 0, n) {
				d.fresh.Add(1)
			}
		case pim.ReadEvent:
			d.chk.ObserveOther(e.UserSeq)
		case pim.CaughtUpEvent:
			if !upOnce {
				upOnce = true
				close(d.up)
			}
		case pim.ResyncEvent:
			d.errs = append(d.errs, "the server's data set changed")
		}
	}
}

// RunWire measures (see the file comment).
func RunWire(ctx context.Context, t *Target, cfg WireConfig, args []string, prog *Progress) (*WireResult, error) {
	switch {
	case cfg.Messages <= 0 || cfg.Size <= 0 || cfg.Burst < 0:
		return nil, errors.New("--messages and --size must be positive, --burst not negative")
	case cfg.Gap <= 0 || cfg.Idle <= 0 || cfg.PingEvery <= 0 || cfg.Timeout <= 0:
		return nil, errors.New("--gap, --idle, --ping-every and --timeout must be positive")
	}
	res := &WireResult{Common: NewCommon("wire", args), Size: cfg.Size, GapMs: cfg.Gap.Milliseconds()}
	res.SetServer(t)
	tlsOn := t.TLS != nil
	run := RunID()
	users := []string{run + "a", run + "b", run + "h"}
	toks, err := t.Tokens(ctx, users)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pim-bench-wire-")
	if err != nil {
		return nil, fmt.Errorf("device data dir: %w", err)
	}
	defer os.RemoveAll(dir)

	// The server's announced heartbeat, from a Welcome.
	hc, err := Dial(ctx, DialOptions{Addr: t.Addr, TLS: t.TLS, Token: toks[2], Device: "probe"})
	if err != nil {
		return nil, fmt.Errorf("read the server's heartbeat: %w", err)
	}
	serverHB := time.Duration(hc.Welcome().GetHeartbeatMs()) * time.Millisecond
	hc.Close()

	var devs []*wireDev
	defer func() {
		for _, d := range devs {
			_ = d.cl.Close()
			<-d.done
			d.px.Close()
		}
	}()
	open := func(name string, i int, tune pim.Tuning) (*wireDev, error) {
		px, err := faultproxy.New(t.Addr)
		if err != nil {
			return nil, err
		}
		tap := newWireTap(tlsOn)
		px.SetTap(tap.tap)
		o := pim.Options{Servers: []string{px.Addr()}, Token: toks[i], User: users[i], DeviceID: "d",
			DataDir: filepath.Join(dir, name), Tuning: tune}
		if tlsOn {
			o.TLS = pim.TLSOptions{Config: t.TLS}
		}
		cl, err := pim.Connect(ctx, o)
		if err != nil {
			px.Close()
			return nil, fmt.Errorf("connect the %s: %w", name, err)
		}
		d := &wireDev{name: name, cl: cl, px: px, tap: tap, up: make(chan struct{}), done: make(chan struct{}), chk: NewChecker(0)}
		// The sender's timeline also gets delivery receipts, which the SDK
		// does not surface as events: its MessageEvents skip their user seqs.
		d.chk.AllowGaps = name == "sender"
		devs = append(devs, d)
		go d.run()
		if err := waitChan(ctx, d.up, cfg.Timeout); err != nil {
			return nil, fmt.Errorf("the %s did not connect: %w", name, err)
		}
		return d, nil
	}
	snd, err := open("sender", 0, pim.Tuning{})
	if err != nil {
		return nil, err
	}
	rcv, err := open("receiver", 1, pim.Tuning{})
	if err != nil {
		return nil, err
	}
	sleep(ctx, cfg.Gap) // anything the connects owe goes out
	r0 := rcv.tap.snap()
	res.ConnectUp, res.ConnectDown = r0.up.Bytes, r0.down.Bytes
	meter := NewMeter(t)
	ua := meter.Snap()

	var sent atomic.Int64
	var state atomic.Value
	state.Store("sparse")
	prog.Set(func() string {
		return fmt.Sprintf("wire [%s] sent %d, delivered %d", state.Load(), sent.Load(), rcv.fresh.Load())
	})
	var acked Bitset
	var body []byte
	var next uint64
	send := func(n int) error {
		outs := make([]*pim.Outgoing, 0, n)
		for range n {
			body = AppendBody(body[:0], 0, next, time.Now().UnixNano(), cfg.Size)
			o, err := snd.cl.SendTo(ctx, users[1], string(body))
			if err != nil {
				return fmt.Errorf("send: %w", err)
			}
			outs = append(outs, o)
			next++
			sent.Add(1)
		}
		wctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		for i, o := range outs {
			if err := o.Wait(wctx); err != nil {
				return fmt.Errorf("message %d not sent: %w", int(next)-n+i, err)
			}
			acked.Set(next - uint64(n) + uint64(i))
		}
		if !waitFor(wctx, cfg.Timeout, func() bool {
			return rcv.fresh.Load() >= int64(next) && snd.fresh.Load() >= int64(next)
		}) {
			return fmt.Errorf("messages up to %d not delivered and echoed within %v", next, cfg.Timeout)
		}
		sleep(ctx, cfg.Gap) // the PushAcks go out
		return nil
	}
	phase := func(n, each int) (WirePhase, error) {
		sa, ra := snd.tap.snap(), rcv.tap.snap()
		for sent := 0; sent < n; sent += each {
			if err := send(min(each, n-sent)); err != nil {
				return WirePhase{}, err
			}
		}
		return wirePhase(n, cfg.Size, tlsOn, snd.tap.snap().sub(sa), rcv.tap.snap().sub(ra)), nil
	}
	var runErr error
	if res.Sparse, runErr = phase(cfg.Messages, 1); runErr == nil && cfg.Burst > 0 {
		state.Store("burst")
		var b WirePhase
		if b, runErr = phase(cfg.Burst, cfg.Burst); runErr == nil {
			res.Burst = &b
		}
	}

	// Heartbeats: an idle device pinging every PingEvery.
	if runErr == nil {
		state.Store("idle")
		hb := pim.HeartbeatConfig{Min: cfg.PingEvery, Max: cfg.PingEvery, Step: time.Second, PongTimeout: cfg.Timeout, ProbeTimeout: cfg.Timeout}
		var idle *wireDev
		if idle, runErr = open("idle device", 2, pim.Tuning{Heartbeat: hb}); runErr == nil {
			sleep(ctx, cfg.Gap)
			a := idle.tap.snap()
			sleep(ctx, cfg.Idle)
			res.Heartbeat, runErr = wireHeartbeat(idle.tap.snap().sub(a), tlsOn, serverHB)
		}
	}
	prog.Stop()
	res.SetUsage(UsageBetween(ua, meter.Snap()), 1)
	for _, d := range devs {
		_ = d.cl.Close()
		<-d.done
	}
	res.Sent = sent.Load()
	res.Delivered, res.Echoed = rcv.chk.Delivered, snd.chk.Delivered
	res.Lost = int64(rcv.chk.Lost(0, &acked) + snd.chk.Lost(0, &acked))
	res.Duplicated = rcv.chk.Duplicated + snd.chk.Duplicated
	res.OutOfOrder = rcv.chk.OutOfOrder + snd.chk.OutOfOrder

	c := &res.Common
	if ctx.Err() != nil {
		c.Fail("interrupted")
	}
	if runErr != nil {
		c.Fail("%v", runErr)
	}
	for _, d := range devs {
		for _, e := range d.errs {
			c.Fail("%s: %s", d.name, e)
		}
		if n := d.tap.broken(); n > 0 {
			c.Fail("%s: %d streams the tap could not parse", d.name, n)
		}
	}
	res.Invariants.check(c)
	res.Finish(t, nil)
	return res, nil
}

// wirePhase turns the taps' differences over a phase into per-message figures.
func wirePhase(n, size int, tlsOn bool, s, r tapSnap) WirePhase {
	per := func(c WireCount) WireDir {
		return WireDir{Bytes: roundTo(float64(c.Bytes)/float64(n), 1), Segments: roundTo(float64(c.Chunks)/float64(n), 2),
			Units: roundTo(float64(c.Units)/float64(n), 2)}
	}
	p := WirePhase{Messages: n, SenderUp: per(s.up), SenderDown: per(s.down), ReceiverUp: per(r.up), ReceiverDown: per(r.down)}
	bytes := s.up.Bytes + s.down.Bytes + r.up.Bytes + r.down.Bytes
	segs := s.up.Chunks + s.down.Chunks + r.up.Chunks + r.down.Chunks
	units := s.up.Units + s.down.Units + r.up.Units + r.down.Units
	p.BytesPerMsg = roundTo(float64(bytes)/float64(n), 1)
	p.OverheadPerMsg = roundTo(p.BytesPerMsg-3*float64(size), 1)
	if tlsOn {
		p.TLSOverheadPerMsg = roundTo(float64(units*TLSRecordBytes)/float64(n), 1)
	}
	p.SegmentsPerMsg = roundTo(float64(segs)/float64(n), 2)
	p.TCPIPPerMsgMin = roundTo(float64(segs*TCPIPHeaderBytes)/float64(n), 1)
	p.TCPIPPerMsgMax = 2 * p.TCPIPPerMsgMin
	for _, dv := range []struct {
		name string
		snap tapSnap
	}{{"sender", s}, {"receiver", r}} {
		for k, v := range dv.snap.kinds {
			dir := "down"
			if k.up {
				dir = "up"
			}
			p.Units = append(p.Units, WireFrames{Device: dv.name, Dir: dir, Kind: k.kind, Count: v.Units, Bytes: v.Bytes,
				Each: roundTo(float64(v.Bytes)/float64(max(v.Units, 1)), 1)})
		}
	}
	slices.SortFunc(p.Units, func(a, b WireFrames) int {
		for _, c := range [][2]string{{a.Device, b.Device}, {b.Dir, a.Dir}, {a.Kind, b.Kind}} {
			if c[0] != c[1] {
				if c[0] < c[1] {
					return -1
				}
				return 1
			}
		}
		return 0
	})
	return p
}

// wireHeartbeat turns the idle window's difference into the heartbeat's
// cost, with the SDK's schedule against serverHB.
func wireHeartbeat(d tapSnap, tlsOn bool, serverHB time.Duration) (WireHeartbeat, error) {
	var h WireHeartbeat
	f, err := HeartbeatSchedule(serverHB)
	if err != nil {
		return h, err
	}
	h.HeartbeatFigures = f
	if !tlsOn {
		for k := range d.kinds {
			if k.kind != "ping" && k.kind != "pong" {
				return h, fmt.Errorf("the idle device sent or got %q frames: not idle", k.kind)
			}
		}
	}
	if d.up.Units == 0 || d.down.Units == 0 {
		return h, errors.New("the idle device did not ping: window too short for --ping-every")
	}
	h.Pings = d.up.Units
	h.PingBytes = roundTo(float64(d.up.Bytes)/float64(d.up.Units), 1)
	h.PongBytes = roundTo(float64(d.down.Bytes)/float64(d.down.Units), 1)
	h.ExchangeBytes = h.PingBytes + h.PongBytes
	h.TCPIPPerExchange = 3 * TCPIPHeaderBytes
	wireEx := h.ExchangeBytes + h.TCPIPPerExchange
	h.BytesHourForeground = roundTo(f.PingsHourForeground*h.ExchangeBytes, 0)
	h.BytesFirstHourBackground = roundTo(f.PingsFirstHourBackground*h.ExchangeBytes, 0)
	h.BytesHourBackground = roundTo(f.PingsHourBackground*h.ExchangeBytes, 0)
	h.WireBytesHourForeground = roundTo(f.PingsHourForeground*wireEx, 0)
	h.WireBytesFirstHourBackground = roundTo(f.PingsFirstHourBackground*wireEx, 0)
	h.WireBytesHourBackground = roundTo(f.PingsHourBackground*wireEx, 0)
	return h, nil
}

// Rows is the human summary.
func (r *WireResult) Rows() []Row {
	tr := "plaintext TCP"
	if r.Server.TLS {
		tr = "TLS 1.3"
	}
	phase := func(name string, p *WirePhase) Row {
		v := fmt.Sprintf("%.0f bytes per message (%.0f over the 3 copies of the body; sender %.0f up + %.0f down, receiver %.0f up + %.0f down), %.1f segments: + %.0f-%.0f bytes TCP/IP (est.)",
			p.BytesPerMsg, p.OverheadPerMsg, p.SenderUp.Bytes, p.SenderDown.Bytes, p.ReceiverUp.Bytes, p.ReceiverDown.Bytes,
			p.SegmentsPerMsg, p.TCPIPPerMsgMin, p.TCPIPPerMsgMax)
		if p.TLSOverheadPerMsg > 0 {
			v += fmt.Sprintf("; TLS records %.0f of it", p.TLSOverheadPerMsg)
		}
		return Row{name, v}
	}
	rows := []Row{
		{"transport", fmt.Sprintf("%s, %d-byte messages, 2 SDK devices (sender, receiver), %d ms between sparse messages", tr, r.Size, r.GapMs)},
		{"connect", fmt.Sprintf("%s up, %s down (the receiver: Hello/Welcome, TLS handshake)", count(r.ConnectUp), count(r.ConnectDown))},
		phase(fmt.Sprintf("sparse (%d)", r.Sparse.Messages), &r.Sparse),
	}
	if r.Burst != nil {
		rows = append(rows, phase(fmt.Sprintf("burst (%d)", r.Burst.Messages), r.Burst))
	}
	h := r.Heartbeat
	rows = append(rows,
		Row{"ping/pong", fmt.Sprintf("%.0f + %.0f = %.0f bytes per exchange (%d measured), + %.0f TCP/IP (est.)", h.PingBytes, h.PongBytes, h.ExchangeBytes, h.Pings, h.TCPIPPerExchange)},
		Row{"idle hour", fmt.Sprintf("foreground %.0f pings: %s bytes; background %.0f pings in the first hour: %s, then %.1f/h: %s (server heartbeat %d s)",
			h.PingsHourForeground, count(int64(h.BytesHourForeground)), h.PingsFirstHourBackground, count(int64(h.BytesFirstHourBackground)),
			h.PingsHourBackground, count(int64(h.BytesHourBackground)), h.ServerHBMs/1000)},
		Row{"invariants", fmt.Sprintf("sent %d, delivered %d, echoed %d; lost %d, duplicated %d, out of order %d", r.Sent, r.Delivered, r.Echoed, r.Lost, r.Duplicated, r.OutOfOrder)},
	)
	return append(rows, r.CommonRows()...)
}
