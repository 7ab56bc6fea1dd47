// Test doubles and helpers: a tiny in-memory Logic (just enough business
// rules to drive the session state machine), a token checker, and a test
// client speaking the stream framing.
//
// Invariants: the fake's timelines are gap-free per user (seq = index+1); it
// publishes to the bus only after appending (like logic.Service); helpers
// never sleep to synchronize, they block on frames or on the session's end,
// with a generous failsafe timeout.
package gateway

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/bus"
	"github.com/pim-project/pim/internal/bus/local"
	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

const failsafe = 10 * time.Second

var testNow = time.UnixMilli(1_700_000_000_000)

type sendCall struct{ user, device, clientMsgID string }

type fakeLogic struct {
	bus   bus.Bus
	epoch string

	// sendHook, if set, runs before a send is applied; it may block.
	sendHook   func(ctx context.Context, user string, req *pimv1.SendReq) error
	sessionErr error
	// sessionHook, if set, runs first in Session; timelineHook runs in
	// Timeline after it read the timeline. They may block.
	timelineHook func()
	sessionHook  func()

	timelineCalls atomic.Int64
	sessionCalls  atomic.Int64
	inflight      atomic.Int64 // SendAsync goroutines running

	mu        sync.Mutex
	timelines map[string][]*pimv1.Event
	cursors   map[string]uint64
	sends     []sendCall
}

func newFakeLogic(b bus.Bus) *fakeLogic {
	return &fakeLogic{bus: b, epoch: "epoch-1", timelines: map[string][]*pimv1.Event{}, cursors: map[string]uint64{}}
}

func (l *fakeLogic) Epoch() string { return l.epoch }

func (l *fakeLogic) Session(_ context.Context, user, device string) (uint64, uint64, error) {
	l.sessionCalls.Add(1)
	if l.sessionHook != nil {
		l.sessionHook()
	}
	if l.sessionErr != nil {
		return 0, 0, l.sessionErr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cursors[user+"/"+device], uint64(len(l.timelines[user])), nil
}

// appendEvent adds a message event to user's timeline (not published).
func (l *fakeLogic) appendEvent(user, sender, body string) *pimv1.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.appendLocked(user, sender, "dev", "", body)
}

func (l *fakeLogic) appendLocked(user, sender, device, cmid, body string) *pimv1.Event {
	seq := uint64(len(l.timelines[user]) + 1)
	ev := &pimv1.Event{UserSeq: seq, Kind: &pimv1.Event_Message{Message: &pimv1.Message{
		Conv: store.DirectConv(user, sender), Seq: seq, Sender: sender, SenderDevice: device,
		ClientMsgId: cmid, Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte(body)}}}
	l.timelines[user] = append(l.timelines[user], ev)
	return ev
}

// deliver appends an event for user and publishes it.
func (l *fakeLogic) deliver(user, body string) *pimv1.Event {
	ev := l.appendEvent(user, "bot", body)
	l.bus.Publish(user, ev)
	return ev
}

func (l *fakeLogic) Send(ctx context.Context, user, device string, req *pimv1.SendReq) (*pimv1.SendAck, error) {
	if l.sendHook != nil {
		if err := l.sendHook(ctx, user, req); err != nil {
			return nil, err
		}
	}
	if req.ToUser == "" || string(req.Body) == "fail" {
		return nil, errcode.New(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "refused")
	}
	l.mu.Lock()
	l.sends = append(l.sends, sendCall{user, device, req.ClientMsgId})
	evs := map[string]*pimv1.Event{req.ToUser: l.appendLocked(req.ToUser, user, device, req.ClientMsgId, string(req.Body))}
	if req.ToUser != user {
		evs[user] = l.appendLocked(user, user, device, req.ClientMsgId, string(req.Body))
	}
	n := len(l.sends)
	l.mu.Unlock()
	for u, ev := range evs {
		l.bus.Publish(u, ev)
	}
	return &pimv1.SendAck{ClientMsgId: req.ClientMsgId, Conv: store.DirectConv(user, req.ToUser), Seq: uint64(n)}, nil
}

// fakePending is a send of the fake in flight: a goroutine per send, which
// waits for the send before it in the chain (so a chain is applied in
// order) and applies nothing after a send that failed with a retryable code
// (the store's contract 10).
type fakePending struct {
	done chan struct{}
	ack  *pimv1.SendAck
	err  error
}

func (p *fakePending) Wait(ctx context.Context) (*pimv1.SendAck, error) {
	select {
	case <-p.done:
		return p.ack, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *fakeLogic) SendAsync(ctx context.Context, user, device string, req *pimv1.SendReq, after store.Future[*pimv1.SendAck]) (store.Future[*pimv1.SendAck], error) {
	if req.ToUser == "" {
		return nil, errcode.New(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "missing to_user") // validation: at once
	}
	p := &fakePending{done: make(chan struct{})}
	prev, _ := after.(*fakePending)
	l.inflight.Add(1)
	go func() {
		defer l.inflight.Add(-1)
		defer close(p.done)
		if prev != nil {
			<-prev.done
			if prev.err != nil && retryable(errcode.Code(prev.err)) {
				p.err = errcode.New(pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "an earlier send failed")
				return
			}
		}
		p.ack, p.err = l.Send(ctx, user, device, req)
	}()
	return p, nil
}

func (l *fakeLogic) Ack(_ context.Context, user, device string, seq uint64) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := user + "/" + device
	l.cursors[k] = max(l.cursors[k], min(seq, uint64(len(l.timelines[user]))))
	return l.cursors[k], nil
}

func (l *fakeLogic) cursor(user, device string) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cursors[user+"/"+device]
}

func (l *fakeLogic) sendLog() []sendCall {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]sendCall(nil), l.sends...)
}

func (l *fakeLogic) Timeline(ctx context.Context, user string, after uint64, limit int) ([]*pimv1.Event, uint64, error) {
	l.timelineCalls.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	l.mu.Lock()
	tl := l.timelines[user]
	var page []*pimv1.Event
	if after < uint64(len(tl)) {
		page = append(page, tl[after:min(uint64(len(tl)), after+uint64(limit))]...)
	}
	l.mu.Unlock()
	if l.timelineHook != nil {
		l.timelineHook() // after the read: a blocked call returns what it saw
	}
	return page, uint64(len(tl)), nil
}

func (l *fakeLogic) Sync(ctx context.Context, user, device string, req *pimv1.SyncReq) (*pimv1.SyncResp, error) {
	if req.AfterUserSeq > 0 {
		l.Ack(ctx, user, device, req.AfterUserSeq)
	}
	limit := int(req.Limit)
	if limit == 0 {
		limit = 256
	}
	evs, head, err := l.Timeline(ctx, user, req.AfterUserSeq, limit)
	if err != nil {
		return nil, err
	}
	more := len(evs) > 0 && evs[len(evs)-1].UserSeq < head
	return &pimv1.SyncResp{Events: evs, HasMore: more, UserSeq: head}, nil
}

func (l *fakeLogic) History(_ context.Context, user string, req *pimv1.HistoryReq) (*pimv1.HistoryResp, error) {
	if req.Conv == "" {
		return nil, errcode.New(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "no conv")
	}
	return &pimv1.HistoryResp{Messages: []*pimv1.Message{{Conv: req.Conv, Seq: 1, Sender: user}}}, nil
}

func (l *fakeLogic) Group(_ context.Context, user, _ string, req *pimv1.GroupReq) (*pimv1.GroupResp, error) {
	return &pimv1.GroupResp{Group: req.Group, Members: []*pimv1.Member{{User: user, Role: "owner"}}}, nil
}

func (l *fakeLogic) Read(_ context.Context, _, _ string, req *pimv1.ReadReq) (*pimv1.ReadResp, error) {
	return &pimv1.ReadResp{Conv: req.Conv, ReadSeq: req.Seq}, nil
}

func (l *fakeLogic) Hide(_ context.Context, _, _ string, req *pimv1.HideReq) (*pimv1.HideResp, error) {
	return &pimv1.HideResp{Conv: req.Conv, Seq: req.Seq}, nil
}

func (l *fakeLogic) Conversations(context.Context, string, *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
	return &pimv1.ConvListResp{}, nil
}

func (l *fakeLogic) Receipts(_ context.Context, _ string, req *pimv1.ReceiptsReq) (*pimv1.ReceiptsResp, error) {
	return &pimv1.ReceiptsResp{Conv: req.Conv, Seq: req.Seq}, nil
}

func (l *fakeLogic) Settings(context.Context, string, *pimv1.SettingsReq) (*pimv1.SettingsResp, error) {
	return &pimv1.SettingsResp{ReadReceipts: true}, nil
}

// fakeAuth accepts "tok:<user>"; "expired" is expired; anything else is invalid.
type fakeAuth struct{}

func (fakeAuth) Verify(token string) (string, error) {
	if token == "expired" {
		return "", fmt.Errorf("verify: %w", auth.ErrExpired)
	}
	if u, ok := cutPrefix(token, "tok:"); ok {
		return u, nil
	}
	return "", fmt.Errorf("verify: %w", auth.ErrInvalidToken)
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// newTestGateway returns a gateway over a fake logic and a local bus; it is
// shut down when the test ends. PIM_TEST_LOG=1 logs to stderr.
func newTestGateway(t testing.TB, mod func(*Config)) (*Gateway, *fakeLogic, *prometheus.Registry) {
	t.Helper()
	b := local.New()
	l := newFakeLogic(b)
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("PIM_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := Config{Logic: l, Bus: b, Auth: fakeAuth{}, Logger: logger, Registerer: reg,
		Now: func() time.Time { return testNow }}
	if mod != nil {
		mod(&cfg)
	}
	g := New(cfg)
	g.onPanic = func(v any) { t.Errorf("panic in session: %v", v) }
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), failsafe)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("shutdown at cleanup: %v", err)
		}
		// Every queued byte was written or dropped with its session.
		if n := g.buffered.Load(); n != 0 {
			t.Errorf("%d bytes still counted as buffered after shutdown", n)
		}
	})
	return g, l, reg
}

// client is a test client on a stream connection. A goroutine reads every
// frame the server sends into in, which is closed when the stream ends.
type client struct {
	t    testing.TB
	conn net.Conn
	in   chan *pimv1.Frame
	err  error // read error, valid after in is closed
	rid  uint64
	wmu  sync.Mutex

	delivered  atomic.Int64  // frames handed to in
	pauseAfter atomic.Int64  // > 0: stop reading once this many were handed over
	unpause    chan struct{} // closed at cleanup
}

func newClient(t testing.TB, conn net.Conn) *client {
	c := &client{t: t, conn: conn, in: make(chan *pimv1.Frame, 4096), unpause: make(chan struct{})}
	go func() {
		defer close(c.in)
		rd := wire.NewReader(conn, 64<<20)
		for {
			f := new(pimv1.Frame)
			if err := rd.ReadFrame(f); err != nil {
				c.err = err
				return
			}
			d := c.delivered.Add(1)
			c.in <- f
			if pa := c.pauseAfter.Load(); pa > 0 && d >= pa {
				<-c.unpause
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		close(c.unpause)
	})
	return c
}

// stopReading makes the client stop reading from the connection after the
// next frame (which is still delivered): counted from the frames already
// handed over, so it cannot take effect on one the test has received already.
// Do not call closed after it.
func (c *client) stopReading() { c.pauseAfter.Store(c.delivered.Load() + 1) }

// pipeSession starts a session over net.Pipe; done is closed when it has ended.
func pipeSession(t testing.TB, g *Gateway) (c *client, done <-chan struct{}) {
	srv, cli := net.Pipe()
	done = g.serveConn(srv)
	return newClient(t, cli), done
}

func (c *client) write(f *pimv1.Frame) error {
	b, err := wire.AppendFrame(nil, f)
	if err != nil {
		c.t.Fatalf("marshal: %v", err)
	}
	return c.writeRaw(b)
}

func (c *client) writeRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.conn.Write(b)
	return err
}

func (c *client) send(f *pimv1.Frame) {
	c.t.Helper()
	if err := c.write(f); err != nil {
		c.t.Fatalf("write %v: %v", f, err)
	}
}

// request sends a request with the next request id and returns the id.
func (c *client) request(f *pimv1.Frame) uint64 {
	c.t.Helper()
	c.rid++
	f.RequestId = c.rid
	c.send(f)
	return c.rid
}

func (c *client) recv() *pimv1.Frame {
	c.t.Helper()
	select {
	case f, ok := <-c.in:
		if !ok {
			c.t.Fatalf("connection closed: %v", c.err)
		}
		return f
	case <-time.After(failsafe):
		c.t.Fatalf("no frame within %v", failsafe)
	}
	return nil
}

// recvNonPush returns the next frame that is not a Push, collecting pushed events.
func (c *client) recvNonPush(pushed *[]*pimv1.Event) *pimv1.Frame {
	c.t.Helper()
	for {
		f := c.recv()
		if p := f.GetPush(); p != nil {
			if pushed != nil {
				*pushed = append(*pushed, p.Events...)
			}
			continue
		}
		return f
	}
}

// closed waits for the server to close the connection and returns the
// frames it sent before.
func (c *client) closed() []*pimv1.Frame {
	c.t.Helper()
	var fs []*pimv1.Frame
	timeout := time.After(failsafe)
	for {
		select {
		case f, ok := <-c.in:
			if !ok {
				return fs
			}
			fs = append(fs, f)
		case <-timeout:
			c.t.Fatalf("connection not closed within %v; got %v", failsafe, fs)
		}
	}
}

func hello(user, device string) *pimv1.Frame {
	return &pimv1.Frame{Body: &pimv1.Frame_Hello{Hello: &pimv1.Hello{
		Token: "tok:" + user, DeviceId: device, ProtocolVersion: 1}}}
}

// login sends Hello and returns the Welcome.
func (c *client) login(user, device string) *pimv1.Welcome {
	c.t.Helper()
	id := c.request(hello(user, device))
	f := c.recv()
	w := f.GetWelcome()
	if w == nil || f.RequestId != id {
		c.t.Fatalf("want Welcome for request %d, got %v", id, f)
	}
	return w
}

// ping round-trips a Ping; pushes before the Pong are appended to pushed.
func (c *client) ping(pushed *[]*pimv1.Event) {
	c.t.Helper()
	id := c.request(&pimv1.Frame{Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{ClientTime: 42}}})
	f := c.recvNonPush(pushed)
	if f.GetPong() == nil || f.RequestId != id || f.GetPong().ClientTime != 42 {
		c.t.Fatalf("want Pong for %d, got %v", id, f)
	}
}

// events collects pushed events until n have arrived.
func (c *client) events(n int) []*pimv1.Event {
	c.t.Helper()
	var evs []*pimv1.Event
	for len(evs) < n {
		f := c.recv()
		p := f.GetPush()
		if p == nil {
			c.t.Fatalf("want Push, got %v", f)
		}
		evs = append(evs, p.Events...)
	}
	return evs
}

func waitDone(t testing.TB, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(failsafe):
		t.Fatalf("session did not end within %v", failsafe)
	}
}

// checkSeqs fails unless evs are exactly the user seqs from..to in order.
func checkSeqs(t testing.TB, evs []*pimv1.Event, from, to uint64) {
	t.Helper()
	if len(evs) != int(to-from+1) {
		t.Fatalf("got %d events, want %d..%d: %v", len(evs), from, to, seqs(evs))
	}
	for i, ev := range evs {
		if ev.UserSeq != from+uint64(i) {
			t.Fatalf("event %d has user seq %d, want %d: %v", i, ev.UserSeq, from+uint64(i), seqs(evs))
		}
	}
}

func seqs(evs []*pimv1.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.UserSeq
	}
	return out
}

func errOf(t testing.TB, f *pimv1.Frame) *pimv1.Error {
	t.Helper()
	e := f.GetError()
	if e == nil {
		t.Fatalf("want Error, got %v", f)
	}
	return e
}

func protoAppend(f *pimv1.Frame) ([]byte, error) { return wire.AppendFrame(nil, f) }

func protoSize(m proto.Message) int { return proto.Size(m) }

func lengthPrefixed(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// metricValue returns the value of the series of name with label=value
// (the first series if label is empty), or -1 if there is none.
func metricValue(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
