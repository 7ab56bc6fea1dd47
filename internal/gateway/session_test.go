// Session state machine tests over net.Pipe with the fake logic: Hello and
// its failures, request/response order, fatal and non-fatal errors,
// heartbeats, slow clients and shutdown.
//
// Invariant: no test sleeps to synchronize; each waits for frames or for the
// session's end (with a failsafe timeout).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func TestHelloErrors(t *testing.T) {
	ping := &pimv1.Frame{Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{}}}
	withHello := func(mod func(h *pimv1.Hello)) *pimv1.Frame {
		f := hello("alice", "d1")
		mod(f.GetHello())
		return f
	}
	cases := []struct {
		name     string
		first    *pimv1.Frame
		code     pimv1.ErrorCode
		msg      string
		sessErr  error
		retryOut uint32
	}{
		{name: "not hello", first: ping, code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL, msg: "first frame"},
		{name: "empty frame", first: &pimv1.Frame{}, code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL},
		{name: "version", first: withHello(func(h *pimv1.Hello) { h.ProtocolVersion = 2 }),
			code: pimv1.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION},
		{name: "no device", first: withHello(func(h *pimv1.Hello) { h.DeviceId = "" }),
			code: pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, msg: "device_id"},
		{name: "bad device", first: withHello(func(h *pimv1.Hello) { h.DeviceId = "a b" }),
			code: pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{name: "bad token", first: withHello(func(h *pimv1.Hello) { h.Token = "forged" }),
			code: pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, msg: "invalid token"},
		{name: "no token", first: withHello(func(h *pimv1.Hello) { h.Token = "" }),
			code: pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
		{name: "expired", first: withHello(func(h *pimv1.Hello) { h.Token = "expired" }),
			code: pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, msg: "expired"},
		{name: "invalid user in token", first: withHello(func(h *pimv1.Hello) { h.Token = "tok:a:b" }),
			code: pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
		{name: "store down", first: hello("alice", "d1"), code: pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE,
			sessErr: &errcode.Error{Code: pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, Msg: "down", RetryAfter: 1000}, retryOut: 1000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, l, _ := newTestGateway(t, nil)
			l.sessionErr = tc.sessErr
			c, done := pipeSession(t, g)
			tc.first.RequestId = 7
			c.send(tc.first)
			fs := c.closed()
			if len(fs) != 1 {
				t.Fatalf("want exactly one Error before close, got %v", fs)
			}
			e := errOf(t, fs[0])
			if e.Code != tc.code || !e.Fatal || fs[0].RequestId != 7 || !strings.Contains(e.Message, tc.msg) ||
				e.RetryAfterMs != tc.retryOut {
				t.Fatalf("got %v (request %d), want code %v fatal, message containing %q", e, fs[0].RequestId, tc.code, tc.msg)
			}
			waitDone(t, done)
			if n := g.Sessions(); n != 0 {
				t.Fatalf("%d sessions left", n)
			}
		})
	}
}

func TestHelloTimeout(t *testing.T) {
	g, _, _ := newTestGateway(t, func(c *Config) { c.HelloTimeout = 20 * time.Millisecond })
	c, done := pipeSession(t, g)
	fs := c.closed()
	if len(fs) != 1 || errOf(t, fs[0]).Code != pimv1.ErrorCode_ERROR_CODE_PROTOCOL || !fs[0].GetError().Fatal {
		t.Fatalf("want one fatal PROTOCOL error, got %v", fs)
	}
	waitDone(t, done)
}

func TestWelcomeAndPushFrom(t *testing.T) {
	cases := []struct {
		name           string
		last           uint64
		epoch          string
		cursor         uint64
		wantFrom       uint64
		wantPushedFrom uint64
	}{
		{name: "client ahead of cursor", last: 5, cursor: 3, wantFrom: 5},
		{name: "cursor ahead of client", last: 1, cursor: 3, wantFrom: 3},
		{name: "client beyond head", last: 50, cursor: 3, wantFrom: 10},
		{name: "same epoch", last: 6, epoch: "epoch-1", cursor: 3, wantFrom: 6},
		{name: "other epoch", last: 8, epoch: "old", cursor: 3, wantFrom: 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, l, _ := newTestGateway(t, func(c *Config) { c.Heartbeat = 7 * time.Second; c.MaxFrame = 100000 })
			for i := 0; i < 10; i++ {
				l.appendEvent("alice", "bob", fmt.Sprint(i))
			}
			l.cursors["alice/d1"] = tc.cursor
			c, _ := pipeSession(t, g)
			f := hello("alice", "d1")
			f.GetHello().LastUserSeq = tc.last
			f.GetHello().Epoch = tc.epoch
			id := c.request(f)
			w := c.recv()
			wl := w.GetWelcome()
			if wl == nil || w.RequestId != id {
				t.Fatalf("want Welcome, got %v", w)
			}
			if wl.ProtocolVersion != 1 || wl.ServerTime != testNow.UnixMilli() || wl.HeartbeatMs != 7000 ||
				wl.AckedUserSeq != tc.cursor || wl.UserSeq != 10 || wl.PushFromUserSeq != tc.wantFrom ||
				wl.Session == "" || wl.Epoch != "epoch-1" || wl.User != "alice" || wl.MaxFrameBytes != 100000 {
				t.Fatalf("unexpected Welcome %v", wl)
			}
			if tc.wantFrom < 10 {
				checkSeqs(t, c.events(int(10-tc.wantFrom)), tc.wantFrom+1, 10)
			}
			var extra []*pimv1.Event
			c.ping(&extra)
			if len(extra) != 0 {
				t.Fatalf("pushed more than the backlog: %v", seqs(extra))
			}
		})
	}
}

func TestRequestsAnsweredInOrder(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	const n = 200
	// Pipeline every request without waiting; the pipe only lets a write
	// finish when the server reads it, so write from another goroutine.
	var frames []*pimv1.Frame
	for i := 0; i < n; i++ {
		var f *pimv1.Frame
		switch i % 5 {
		case 0, 1, 2:
			f = &pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
				ClientMsgId: fmt.Sprint("m", i), ToUser: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi")}}}
		case 3:
			f = &pimv1.Frame{Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{ClientTime: int64(i)}}}
		case 4:
			f = &pimv1.Frame{Body: &pimv1.Frame_HistoryReq{HistoryReq: &pimv1.HistoryReq{Conv: "d:alice:bob"}}}
		}
		f.RequestId = uint64(i + 1)
		frames = append(frames, f)
	}
	werr := make(chan error, 1)
	go func() {
		for _, f := range frames {
			if err := c.write(f); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	var pushed []*pimv1.Event
	for i := 0; i < n; i++ {
		f := c.recvNonPush(&pushed)
		if f.RequestId != uint64(i+1) {
			t.Fatalf("response %d has request id %d: %v", i, f.RequestId, f)
		}
		switch i % 5 {
		case 0, 1, 2:
			if f.GetSendAck().GetClientMsgId() != fmt.Sprint("m", i) {
				t.Fatalf("want SendAck for m%d, got %v", i, f)
			}
		case 3:
			if f.GetPong().GetClientTime() != int64(i) {
				t.Fatalf("want Pong %d, got %v", i, f)
			}
		case 4:
			if f.GetHistoryResp() == nil {
				t.Fatalf("want HistoryResp, got %v", f)
			}
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	// Sender FIFO, and the sender is always the session's user and device.
	sends := l.sendLog()
	k := 0
	for i := 0; i < n; i++ {
		if i%5 > 2 {
			continue
		}
		if sends[k] != (sendCall{"alice", "d1", fmt.Sprint("m", i)}) {
			t.Fatalf("send %d is %v", k, sends[k])
		}
		k++
	}
	// Our own sends come back on the push stream, in order.
	for len(pushed) < k {
		pushed = append(pushed, c.events(1)...)
	}
	checkSeqs(t, pushed, 1, uint64(k))
}

func TestSendsOfDifferentConnectionsRunConcurrently(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	var (
		mu      sync.Mutex
		waiting int
		all     = make(chan struct{})
	)
	// Each send waits until both are in flight: serialized sends deadlock.
	l.sendHook = func(ctx context.Context, _ string, _ *pimv1.SendReq) error {
		mu.Lock()
		waiting++
		if waiting == 2 {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
			return nil
		case <-time.After(failsafe):
			return errors.New("sends were not concurrent")
		}
	}
	var cs []*client
	for _, u := range []string{"alice", "bob"} {
		c, _ := pipeSession(t, g)
		c.login(u, "d1")
		cs = append(cs, c)
	}
	for _, c := range cs {
		c.request(&pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
			ClientMsgId: "x", ToUser: "carol", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi")}}})
	}
	for _, c := range cs {
		if f := c.recvNonPush(nil); f.GetSendAck() == nil {
			t.Fatalf("want SendAck, got %v", f)
		}
	}
}

func TestIsolation(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	alice, _ := pipeSession(t, g)
	alice.login("alice", "d1")
	bob, _ := pipeSession(t, g)
	bob.login("bob", "phone")
	// bob writes to carol: nothing for alice.
	bob.request(&pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
		ClientMsgId: "1", ToUser: "carol", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("psst")}}})
	if f := bob.recvNonPush(nil); f.GetSendAck() == nil {
		t.Fatalf("want SendAck, got %v", f)
	}
	var leaked []*pimv1.Event
	alice.ping(&leaked)
	if len(leaked) != 0 {
		t.Fatalf("alice received bob's events: %v", leaked)
	}
	if s := l.sendLog(); len(s) != 1 || s[0].user != "bob" || s[0].device != "phone" {
		t.Fatalf("send recorded as %v", s)
	}
}

func TestFatalFrames(t *testing.T) {
	frame := func(f *pimv1.Frame) []byte {
		b, _ := protoAppend(f)
		return b
	}
	unknown := protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)
	cases := []struct {
		name string
		raw  []byte
		code pimv1.ErrorCode
	}{
		{name: "malformed", raw: []byte{0, 0, 0, 3, 0xff, 0xff, 0xff}, code: pimv1.ErrorCode_ERROR_CODE_MALFORMED},
		{name: "too large", raw: []byte{0, 0x10, 0, 1}, code: pimv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE},
		{name: "empty frame", raw: []byte{0, 0, 0, 0}, code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL},
		{name: "server-only push", raw: frame(&pimv1.Frame{RequestId: 3, Body: &pimv1.Frame_Push{Push: &pimv1.Push{}}}),
			code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL},
		{name: "server-only welcome", raw: frame(&pimv1.Frame{Body: &pimv1.Frame_Welcome{Welcome: &pimv1.Welcome{}}}),
			code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL},
		{name: "second hello", raw: frame(hello("alice", "d1")), code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL},
		{name: "unknown type is not fatal", raw: lengthPrefixed(unknown), code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, _, _ := newTestGateway(t, func(c *Config) { c.MaxFrame = 1 << 20 })
			c, done := pipeSession(t, g)
			c.login("alice", "d1")
			if err := c.writeRaw(tc.raw); err != nil {
				t.Fatal(err)
			}
			f := c.recv()
			e := errOf(t, f)
			if e.Code != tc.code {
				t.Fatalf("got %v, want %v", e, tc.code)
			}
			if !e.Fatal {
				c.ping(nil) // the connection is still served
				return
			}
			if fs := c.closed(); len(fs) != 0 {
				t.Fatalf("frames after a fatal error: %v", fs)
			}
			waitDone(t, done)
		})
	}
}

func TestNonFatalErrorKeepsConnection(t *testing.T) {
	g, _, reg := newTestGateway(t, nil)
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	id := c.request(&pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{ClientMsgId: "1", ToUser: "bob", Body: []byte("fail")}}})
	f := c.recvNonPush(nil)
	if e := errOf(t, f); e.Code != pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST || e.Fatal || f.RequestId != id {
		t.Fatalf("got %v for request %d", f, id)
	}
	id = c.request(&pimv1.Frame{Body: &pimv1.Frame_HistoryReq{HistoryReq: &pimv1.HistoryReq{}}})
	if f := c.recvNonPush(nil); f.GetError().GetCode() != pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST || f.RequestId != id {
		t.Fatalf("got %v", f)
	}
	id = c.request(&pimv1.Frame{Body: &pimv1.Frame_GroupReq{GroupReq: &pimv1.GroupReq{Group: "g:x"}}})
	if f := c.recvNonPush(nil); f.GetGroupResp().GetGroup() != "g:x" || f.RequestId != id {
		t.Fatalf("got %v", f)
	}
	c.ping(nil)
	if v := metricValue(t, reg, "pim_errors_total", "code", "bad_request"); v != 2 {
		t.Fatalf("pim_errors_total{code=bad_request} = %v", v)
	}
	if v := metricValue(t, reg, "pim_frames_in_total", "type", "send_req"); v != 1 {
		t.Fatalf("pim_frames_in_total{type=send_req} = %v", v)
	}
	if v := metricValue(t, reg, "pim_connections", "", ""); v != 1 {
		t.Fatalf("pim_connections = %v", v)
	}
}

func TestHeartbeatTimeout(t *testing.T) {
	g, _, _ := newTestGateway(t, func(c *Config) { c.Heartbeat = 10 * time.Millisecond })
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	if fs := c.closed(); len(fs) != 0 {
		t.Fatalf("unexpected frames %v", fs)
	}
	waitDone(t, done)
}

func TestSlowClientDisconnected(t *testing.T) {
	g, _, _ := newTestGateway(t, func(c *Config) { c.MaxFrame = 1024; c.MaxQueueBytes = 1 })
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	// The client stops reading but keeps sending requests: their answers
	// pile up in the queue until its bound.
	ping := &pimv1.Frame{Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{}}}
	c.stopReading()
	var err error
	for i := 0; i < 100000 && err == nil; i++ {
		err = c.write(ping)
	}
	if err == nil {
		t.Fatal("a client that never reads was not disconnected")
	}
	waitDone(t, done)
}

func TestWriteTimeout(t *testing.T) {
	// Long enough that the first push is read even on a loaded machine.
	g, l, _ := newTestGateway(t, func(c *Config) { c.WriteTimeout = 250 * time.Millisecond })
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	c.stopReading()
	l.deliver("alice", "one") // the client reads this one, then stops
	checkSeqs(t, c.events(1), 1, 1)
	l.deliver("alice", "two") // this push blocks in write, then times out
	waitDone(t, done)
}

func TestShutdownSendsGoAway(t *testing.T) {
	g, _, _ := newTestGateway(t, func(c *Config) { c.GoAwaySpread = 3 * time.Second })
	var cs []*client
	var dones []<-chan struct{}
	for _, u := range []string{"alice", "bob", "carol"} {
		c, done := pipeSession(t, g)
		c.login(u, "d1")
		cs = append(cs, c)
		dones = append(dones, done)
	}
	pre, _ := pipeSession(t, g) // not logged in yet: gets GoAway too
	ctx, cancel := context.WithTimeout(context.Background(), failsafe)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range append(cs, pre) {
		fs := c.closed()
		if len(fs) != 1 || fs[0].GetGoAway() == nil {
			t.Fatalf("want one GoAway, got %v", fs)
		}
		ga := fs[0].GetGoAway()
		// One node (no alternatives): the time left of the drain (4 sessions:
		// a 4 ms window at the default drain rate) + 1s + [0, 3s).
		if ga.RetryAfterMs < 1000 || ga.RetryAfterMs >= 4005 || ga.Reason == "" || fs[0].RequestId != 0 || len(ga.Servers) != 0 {
			t.Fatalf("bad GoAway %v", ga)
		}
	}
	for _, d := range dones {
		waitDone(t, d)
	}
	if n := g.Sessions(); n != 0 {
		t.Fatalf("%d sessions after shutdown", n)
	}
	// No new sessions after shutdown.
	c, done := pipeSession(t, g)
	waitDone(t, done)
	if fs := c.closed(); len(fs) != 0 {
		t.Fatalf("frames on a refused connection: %v", fs)
	}
}

func TestShutdownLetsInflightRequestFinish(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	started, release := make(chan struct{}), make(chan struct{})
	l.sendHook = func(ctx context.Context, _ string, _ *pimv1.SendReq) error {
		close(started)
		<-release
		return nil
	}
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	id := c.request(&pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
		ClientMsgId: "1", ToUser: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("last words")}}})
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), failsafe)
		defer cancel()
		shut <- g.Shutdown(ctx)
	}()
	close(release)
	fs := c.closed()
	var kinds []string
	for _, f := range fs {
		switch {
		case f.GetSendAck() != nil && f.RequestId == id:
			kinds = append(kinds, "ack")
		case f.GetGoAway() != nil:
			kinds = append(kinds, "goaway")
		case f.GetPush() != nil:
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	if strings.Join(kinds, ",") != "ack,goaway" {
		t.Fatalf("got %v, want the SendAck then GoAway", kinds)
	}
	waitDone(t, done)
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func TestShutdownDeadlineAborts(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	started := make(chan struct{})
	l.sendHook = func(ctx context.Context, _ string, _ *pimv1.SendReq) error {
		close(started)
		<-ctx.Done() // only a forced shutdown ends it
		return ctx.Err()
	}
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	c.request(&pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{ClientMsgId: "1", ToUser: "bob", Body: []byte("x")}}})
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := g.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown = %v, want context.Canceled", err)
	}
	waitDone(t, done)
	c.closed()
}

func TestPushAckAppliedBeforeClose(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	for i := 0; i < 5; i++ {
		l.appendEvent("alice", "bob", "x")
	}
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	checkSeqs(t, c.events(5), 1, 5)
	c.send(&pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: 4}}})
	c.conn.Close()
	waitDone(t, done)
	if got := l.cursor("alice", "d1"); got != 4 {
		t.Fatalf("cursor %d after close, want 4", got)
	}
}

func TestFrameTrimming(t *testing.T) {
	var evs []*pimv1.Event
	for i := 1; i <= 100; i++ {
		evs = append(evs, &pimv1.Event{UserSeq: uint64(i), Kind: &pimv1.Event_Message{Message: &pimv1.Message{Body: make([]byte, 1000)}}})
	}
	r := &pimv1.SyncResp{Events: evs, UserSeq: 100}
	fitSync(r, 10_000)
	if n := len(r.Events); n == 0 || n >= 10 || !r.HasMore || r.Events[0].UserSeq != 1 {
		t.Fatalf("SyncResp trimmed to %d events (has_more %v)", n, r.HasMore)
	}
	if s := protoSize(&pimv1.Frame{Body: &pimv1.Frame_SyncResp{SyncResp: r}}); s > 10_000 {
		t.Fatalf("trimmed SyncResp frame is %d bytes", s)
	}
	var msgs []*pimv1.Message
	for i := 1; i <= 100; i++ {
		msgs = append(msgs, &pimv1.Message{Seq: uint64(i), Body: make([]byte, 1000)})
	}
	h := &pimv1.HistoryResp{Messages: msgs}
	fitHistory(h, 10_000)
	if n := len(h.Messages); n == 0 || n >= 10 || !h.HasMore || h.Messages[n-1].Seq != 100 {
		t.Fatalf("HistoryResp trimmed to %d messages (has_more %v)", n, h.HasMore)
	}
	one := &pimv1.SyncResp{Events: evs[:1]}
	fitSync(one, 100) // a single event too large is still sent
	if len(one.Events) != 1 {
		t.Fatal("dropped the only event")
	}
}
