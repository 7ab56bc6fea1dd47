package netem_test

// The client side of TestLossAndDelay: this test binary, re-executed inside
// the client namespace (`ip netns exec NS /proc/self/exe
// -test.run=^TestHelperClient$`, told what to do by PIM_NETEM_* variables),
// is one device. With PIM_NETEM_CLIENT=sdk (the default) the device is the Go
// SDK (sdkclient_test.go). With PIM_NETEM_CLIENT=lean it is this file's
// device: internal/client (the lean protocol client) with retry logic of its
// own, which measures the protocol and the server without the SDK:
//
//   - one connection at a time, redialled with capped exponential backoff and
//     full jitter (seeded: the seed is in the test log) whenever it ends;
//   - sends its messages in order with a window of up to `window` in
//     flight (written with Conn.WriteFrame, so they leave in order; the
//     server sequences one connection's sends in the order received). A
//     message counts as acknowledged when the device's own copy arrives in
//     its timeline: the server's SendAck only says the same, earlier, and the
//     lean client cannot pipeline Calls in a guaranteed order. After a
//     reconnect, or when the oldest message in flight has waited sendTimeout
//     (the connection is then taken as dead and ended), every unacknowledged
//     message is written again, in order, with the same client_msg_id: the
//     server deduplicates, and since it stored a prefix of them, order holds;
//   - receives pushes, drops events at or below its cursor (redeliveries
//     after a reconnect), treats a gap as a protocol violation, acknowledges
//     its cursor periodically and says Hello with it after a reconnect;
//   - pings every pingEvery; a request that times out ends the connection.
//
// It reports on standard output, one JSON object per line after the prefix
// "@netem ": ready (first Welcome), sent (acknowledged, with the time the app
// handed it over and the ack time), recv (a new message of the conversation, with its arrival
// time), conn (a connection ended or a dial failed), violation, done. It
// starts sending when a line arrives on standard input (the parent's barrier,
// once every device is connected), handing message i to the client at start
// + i*every (like a person chatting), and exits when it has sent its messages
// and received the expected number, or at the deadline.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

const (
	eventPrefix = "@netem "
	dialTimeout = 20 * time.Second
	sendTimeout = 15 * time.Second
	window      = 8
	reqIDBase   = 1 << 40 // request ids of pipelined sends, far above the Conn's own
	pingEvery   = 10 * time.Second
	pingTimeout = 15 * time.Second
	ackEvery    = 250 * time.Millisecond
	backoffMin  = 250 * time.Millisecond
	backoffMax  = 4 * time.Second
)

// event is one line of a helper's report.
type event struct {
	K        string `json:"k"`
	ID       string `json:"id,omitempty"`
	Sender   string `json:"sender,omitempty"` // user/device
	CSeq     uint64 `json:"cseq,omitempty"`
	Seq      uint64 `json:"seq,omitempty"`
	T0       int64  `json:"t0,omitempty"` // unix ns: message handed to the client
	T        int64  `json:"t,omitempty"`  // unix ns: acknowledged (own copy arrived) or arrived
	Attempts int    `json:"attempts,omitempty"`
	Msg      string `json:"msg,omitempty"`
	// done: counters
	Conns, DialFails, Redelivered int `json:",omitempty"`
}

type helperConfig struct {
	client                              string // "sdk" or "lean"
	addr, token, user, device, to, conv string
	n, expect                           int
	every                               time.Duration
	seed                                uint64
	deadline                            time.Time
}

func helperEnv(c helperConfig) []string {
	return []string{
		"PIM_NETEM_HELPER=1", "PIM_NETEM_CLIENT=" + c.client,
		"PIM_NETEM_ADDR=" + c.addr, "PIM_NETEM_TOKEN=" + c.token,
		"PIM_NETEM_USER=" + c.user, "PIM_NETEM_DEVICE=" + c.device, "PIM_NETEM_TO=" + c.to,
		"PIM_NETEM_N=" + strconv.Itoa(c.n), "PIM_NETEM_EXPECT=" + strconv.Itoa(c.expect),
		"PIM_NETEM_EVERY=" + c.every.String(),
		"PIM_NETEM_SEED=" + strconv.FormatUint(c.seed, 10),
		"PIM_NETEM_DEADLINE=" + strconv.FormatInt(c.deadline.UnixMilli(), 10),
	}
}

func helperConfigFromEnv() (helperConfig, error) {
	c := helperConfig{
		client: os.Getenv("PIM_NETEM_CLIENT"),
		addr:   os.Getenv("PIM_NETEM_ADDR"), token: os.Getenv("PIM_NETEM_TOKEN"),
		user: os.Getenv("PIM_NETEM_USER"), device: os.Getenv("PIM_NETEM_DEVICE"), to: os.Getenv("PIM_NETEM_TO"),
	}
	c.conv = store.DirectConv(c.user, c.to)
	var err error
	if c.n, err = strconv.Atoi(os.Getenv("PIM_NETEM_N")); err != nil {
		return c, err
	}
	if c.expect, err = strconv.Atoi(os.Getenv("PIM_NETEM_EXPECT")); err != nil {
		return c, err
	}
	if c.every, err = time.ParseDuration(os.Getenv("PIM_NETEM_EVERY")); err != nil {
		return c, err
	}
	if c.seed, err = strconv.ParseUint(os.Getenv("PIM_NETEM_SEED"), 10, 64); err != nil {
		return c, err
	}
	ms, err := strconv.ParseInt(os.Getenv("PIM_NETEM_DEADLINE"), 10, 64)
	if err != nil {
		return c, err
	}
	c.deadline = time.UnixMilli(ms)
	return c, nil
}

// TestHelperClient is not a test: it is the device process of
// TestLossAndDelay, and skips when run directly.
func TestHelperClient(t *testing.T) {
	if os.Getenv("PIM_NETEM_HELPER") != "1" {
		t.Skip("helper process of TestLossAndDelay")
	}
	cfg, err := helperConfigFromEnv()
	if err != nil {
		t.Fatalf("helper config: %v", err)
	}
	if cfg.client == "sdk" {
		d := &sdkDevice{cfg: cfg, dir: t.TempDir()}
		if err := d.run(); err != nil {
			d.emit(event{K: "error", Msg: err.Error()})
			t.Fatal(err)
		}
		return
	}
	d := &device{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.seed, cfg.seed^0x9e3779b97f4a7c15)),
		changed: make(chan struct{}), echo: make(chan echo, cfg.n)}
	if err := d.run(); err != nil {
		d.emit(event{K: "error", Msg: err.Error()})
		t.Fatal(err)
	}
}

type device struct {
	cfg helperConfig

	outMu sync.Mutex
	rngMu sync.Mutex
	rng   *rand.Rand

	last        atomic.Uint64 // receive cursor: every user seq up to it was handled
	conns       atomic.Int64
	dialFails   atomic.Int64
	redelivered atomic.Int64

	echo chan echo // the device's own messages as they arrive, in order

	mu      sync.Mutex
	conn    *client.Conn
	changed chan struct{} // closed and replaced whenever conn changes
}

func (d *device) emit(e event) {
	b, _ := json.Marshal(e)
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(os.Stdout, "%s%s\n", eventPrefix, b)
}

func (d *device) jitter(max time.Duration) time.Duration {
	d.rngMu.Lock()
	defer d.rngMu.Unlock()
	return time.Duration(d.rng.Int64N(int64(max)) + 1)
}

func (d *device) setConn(c *client.Conn) {
	d.mu.Lock()
	d.conn = c
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// current waits for a live connection other than not (nil if ctx ends).
func (d *device) current(ctx context.Context, not *client.Conn) *client.Conn {
	for {
		d.mu.Lock()
		c, ch := d.conn, d.changed
		d.mu.Unlock()
		if c != nil && c != not && c.Err() == nil {
			return c
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

// fatalCode reports errors that no retry can fix: the ones the SDK also
// stops on (core.ServerError.stops). Anything else, including the server's
// "no Hello within 10s" (PROTOCOL) when the Hello frame was lost and
// retransmitted too late, is the network's doing: dial again.
func fatalCode(err error) bool {
	var ce *errcode.Error
	if !errors.As(err, &ce) {
		return false
	}
	switch ce.Code {
	case pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, pimv1.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION,
		pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST:
		return true
	}
	return false
}

func (d *device) run() error {
	ctx, cancel := context.WithDeadline(context.Background(), d.cfg.deadline)
	defer cancel()
	fatal := make(chan error, 4)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	ready := make(chan struct{})
	wg.Add(3)
	go func() { defer wg.Done(); d.connLoop(ctx, ready, fatal) }()
	recvDone := make(chan struct{})
	go func() { defer wg.Done(); d.receive(ctx, recvDone) }()
	go func() { defer wg.Done(); d.pinger(ctx) }()

	select {
	case <-ready:
	case err := <-fatal:
		return err
	case <-ctx.Done():
		d.emit(event{K: "timeout", Msg: "never connected"})
		return nil
	}
	d.emit(event{K: "ready"})
	goLine := make(chan struct{})
	go func() { // the barrier: the parent writes a line once every device is ready
		bufio.NewReader(os.Stdin).ReadString('\n')
		close(goLine)
	}()
	select {
	case <-goLine:
	case <-ctx.Done():
		d.emit(event{K: "timeout", Msg: "no go from the parent"})
		return nil
	}
	sendErr := make(chan error, 1)
	go func() { sendErr <- d.send(ctx) }()
	sent := false
	for !sent {
		select {
		case err := <-sendErr:
			if err != nil {
				if ctx.Err() != nil {
					d.emit(event{K: "timeout", Msg: err.Error()})
					return nil
				}
				return err
			}
			sent = true
		case err := <-fatal:
			return err
		}
	}
	select {
	case <-recvDone:
	case err := <-fatal:
		return err
	case <-ctx.Done():
		d.emit(event{K: "timeout", Msg: "not every message arrived"})
		return nil
	}
	d.emit(event{K: "done", Conns: int(d.conns.Load()), DialFails: int(d.dialFails.Load()), Redelivered: int(d.redelivered.Load())})
	return nil
}

// connLoop keeps one connection up until ctx ends.
func (d *device) connLoop(ctx context.Context, ready chan struct{}, fatal chan<- error) {
	backoff := backoffMin
	first := true
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, dialTimeout)
		c, err := client.Dial(dctx, client.Options{Addr: d.cfg.addr, Token: d.cfg.token, Device: d.cfg.device, LastUserSeq: d.last.Load()})
		cancel()
		if err != nil {
			if fatalCode(err) {
				fatal <- fmt.Errorf("dial: %w", err)
				return
			}
			d.dialFails.Add(1)
			d.emit(event{K: "conn", Msg: "dial: " + err.Error()})
			select { // full jitter
			case <-time.After(d.jitter(backoff)):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		backoff = backoffMin
		d.conns.Add(1)
		d.setConn(c)
		if first {
			close(ready)
			first = false
		}
		select {
		case <-c.Done():
			d.emit(event{K: "conn", Msg: "ended: " + c.Err().Error()})
		case <-ctx.Done():
		}
		d.setConn(nil)
		c.Close()
	}
}

// broken ends c (if it is still up), so connLoop dials again.
func (d *device) broken(c *client.Conn) { c.Close() }

func (d *device) msgID(i int) string { return fmt.Sprintf("%s.%s.%03d", d.cfg.user, d.cfg.device, i) }

// echo is one of the device's own messages arriving in its timeline.
type echo struct {
	index int // message index (client seq - 1)
	seq   uint64
	at    time.Time
}

// send sends the device's messages in order, each until acknowledged.
func (d *device) send(ctx context.Context) error {
	type msg struct {
		t0        time.Time // handed to the client
		lastWrite time.Time
		writes    int
	}
	msgs := make([]msg, d.cfg.n)
	start := time.Now()
	for i := range msgs {
		msgs[i].t0 = start.Add(time.Duration(i) * d.cfg.every)
	}
	var (
		c           *client.Conn
		acked, next int    // msgs[:acked] acknowledged, msgs[acked:next] written on c
		reqID       uint64 = reqIDBase
	)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for acked < len(msgs) {
		if c == nil || c.Err() != nil {
			if c = d.current(ctx, nil); c == nil {
				return fmt.Errorf("%d of %d messages acknowledged: %w", acked, len(msgs), ctx.Err())
			}
			next = acked // write every unacknowledged message again, in order
		}
		now := time.Now()
		for next < len(msgs) && next-acked < window && !msgs[next].t0.After(now) {
			id := d.msgID(next)
			reqID++
			err := c.WriteFrame(&pimv1.Frame{RequestId: reqID, Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
				ClientMsgId: id, ToUser: d.cfg.to, Type: pimv1.MessageType_MESSAGE_TYPE_TEXT,
				Body: []byte(id), ClientSeq: uint64(next + 1), ClientTime: msgs[next].t0.UnixMilli()}}})
			if err != nil {
				d.broken(c)
				break
			}
			msgs[next].writes++
			msgs[next].lastWrite = now
			next++
		}
		// Wake for the next message due, or when the oldest in flight times out.
		wake := time.Hour
		if next < len(msgs) && next-acked < window {
			wake = min(wake, time.Until(msgs[next].t0))
		}
		if next > acked {
			wake = min(wake, time.Until(msgs[acked].lastWrite.Add(sendTimeout)))
		}
		timer.Reset(max(wake, time.Millisecond))
		select {
		case e := <-d.echo:
			switch {
			case e.index == acked:
				m := msgs[acked]
				d.emit(event{K: "sent", ID: d.msgID(acked), Seq: e.seq, T0: m.t0.UnixNano(), T: e.at.UnixNano(), Attempts: m.writes})
				acked++
				if next < acked { // acknowledged before it was written on this connection
					next = acked
				}
			case e.index > acked:
				d.emit(event{K: "violation", Msg: fmt.Sprintf("own message %d stored before %d", e.index, acked)})
			}
		case <-timer.C:
			if next > acked && time.Since(msgs[acked].lastWrite) >= sendTimeout {
				d.broken(c) // no progress: take the connection as dead
			}
		case <-c.Done():
		case <-ctx.Done():
			return fmt.Errorf("%d of %d messages acknowledged: %w", acked, len(msgs), ctx.Err())
		}
	}
	return nil
}

// receive handles pushed events of every connection in turn and closes done
// once the conversation has the expected number of messages.
func (d *device) receive(ctx context.Context, done chan<- struct{}) {
	seen := map[string]uint64{} // client_msg_id -> conv seq
	ticker := time.NewTicker(ackEvery)
	defer ticker.Stop()
	var prev *client.Conn
	complete := false
	for {
		c := d.current(ctx, prev)
		if c == nil {
			return
		}
		prev = c
		acked := uint64(0)
	events:
		for {
			select {
			case ev, ok := <-c.Pushes():
				if !ok {
					break events
				}
				last := d.last.Load()
				switch {
				case ev.UserSeq <= last:
					d.redelivered.Add(1)
					continue
				case ev.UserSeq > last+1:
					d.emit(event{K: "violation", Msg: fmt.Sprintf("push gap: user seq %d after %d", ev.UserSeq, last)})
					d.broken(c)
					break events
				}
				d.last.Store(ev.UserSeq)
				m := ev.GetMessage()
				if m == nil || m.Conv != d.cfg.conv {
					continue
				}
				if s, dup := seen[m.ClientMsgId]; dup {
					d.emit(event{K: "violation", Msg: fmt.Sprintf("%s delivered twice: seq %d and %d", m.ClientMsgId, s, m.Seq)})
				}
				seen[m.ClientMsgId] = m.Seq
				if m.Sender == d.cfg.user && m.SenderDevice == d.cfg.device {
					select {
					case d.echo <- echo{index: int(m.ClientSeq) - 1, seq: m.Seq, at: time.Now()}:
					default: // more own messages than sent: reported as a violation above
					}
				}
				d.emit(event{K: "recv", ID: m.ClientMsgId, Sender: m.Sender + "/" + m.SenderDevice, CSeq: m.ClientSeq, Seq: m.Seq, T: time.Now().UnixNano()})
				if !complete && len(seen) >= d.cfg.expect {
					complete = true
					c.PushAck(d.last.Load()) // best effort: the cursor is in the next Hello anyway
					close(done)
				}
			case <-ticker.C:
				if l := d.last.Load(); l > acked {
					if err := c.PushAck(l); err != nil {
						d.broken(c)
						break events
					}
					acked = l
				}
			case <-ctx.Done():
				return
			}
		}
	}
}

// pinger pings the current connection; one that does not answer is ended.
func (d *device) pinger(ctx context.Context) {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		d.mu.Lock()
		c := d.conn
		d.mu.Unlock()
		if c == nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, pingTimeout)
		_, err := c.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil && !fatalCode(err) {
			d.broken(c)
		}
	}
}
