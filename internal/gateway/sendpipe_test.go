package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/bus/local"
	"github.com/pim-project/pim/internal/logic"
	"github.com/pim-project/pim/internal/store"
	pebblestore "github.com/pim-project/pim/internal/store/pebble"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// realGateway is a gateway over the real logic and a durable Pebble store
// (events announced in commit order, as the server wires them).
func realGateway(t *testing.T, mod func(*Config)) (*Gateway, store.Store) {
	t.Helper()
	b := local.New()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Sync: true, Logger: slog.New(slog.DiscardHandler),
		OnCommit: func(ds []store.Delivery) {
			for _, d := range ds {
				b.Publish(d.User, d.Event)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	svc := logic.New(logic.Config{Store: st})
	cfg := Config{Logic: svc, Bus: b, Auth: fakeAuth{}, Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	g := New(cfg)
	g.onPanic = func(v any) { t.Errorf("panic in session: %v", v) }
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), failsafe)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		st.Close()
	})
	return g, st
}

// writeAll writes frames from a goroutine (a pipe's write waits for the
// server to read it); the error, if any, is returned on the channel.
func writeAll(c *client, frames []*pimv1.Frame) <-chan error {
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
	return werr
}

func history(t *testing.T, st store.Store, conv string) []*pimv1.Message {
	t.Helper()
	msgs, _, err := st.History(t.Context(), conv, 1, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// TestPipelinedSendsInOrder: a connection pipelining sends (with resends of
// ids still in flight) gets one answer per request, in request order, with
// increasing seqs; a resend names the seq of the original; the messages are
// stored once each, in the order sent.
func TestPipelinedSendsInOrder(t *testing.T) {
	g, st := realGateway(t, nil)
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	const n = 150
	var frames []*pimv1.Frame
	orig := map[int]int{} // frame index of a resend -> index of the original
	for i := range n {
		frames = append(frames, sendReq(fmt.Sprint("m", i), "bob", fmt.Sprint("body ", i)))
		if i%10 == 9 { // resend the previous message, most likely in flight
			orig[len(frames)] = len(frames) - 1
			frames = append(frames, sendReq(fmt.Sprint("m", i), "bob", "resent"))
		}
		if i == 70 { // a request that is not a send keeps its place
			frames = append(frames, &pimv1.Frame{Body: &pimv1.Frame_HistoryReq{HistoryReq: &pimv1.HistoryReq{Conv: "d:alice:bob", Limit: 500}}})
		}
	}
	for i, f := range frames {
		f.RequestId = uint64(i + 1)
	}
	werr := writeAll(c, frames)
	seqs := make([]uint64, len(frames))
	var last uint64
	for i, req := range frames {
		f := c.recvNonPush(nil)
		if f.RequestId != req.RequestId {
			t.Fatalf("answer %d has request id %d: %v", i, f.RequestId, f)
		}
		if req.GetHistoryReq() != nil {
			// Every send before it is answered, hence stored: 71 messages.
			if h := f.GetHistoryResp(); h == nil || len(h.Messages) != 71 {
				t.Fatalf("history after 71 sends: %v", f)
			}
			continue
		}
		ack := f.GetSendAck()
		if ack == nil || ack.ClientMsgId != req.GetSendReq().ClientMsgId {
			t.Fatalf("answer %d: %v", i, f)
		}
		seqs[i] = ack.Seq
		if j, ok := orig[i]; ok {
			if !ack.Duplicate || ack.Seq != seqs[j] {
				t.Fatalf("resend of %s: %v, original seq %d", ack.ClientMsgId, ack, seqs[j])
			}
			continue
		}
		if ack.Duplicate || ack.Seq != last+1 {
			t.Fatalf("send %s: %v, want seq %d", ack.ClientMsgId, ack, last+1)
		}
		last = ack.Seq
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	msgs := history(t, st, "d:alice:bob")
	if len(msgs) != n {
		t.Fatalf("%d messages stored, want %d", len(msgs), n)
	}
	for i, m := range msgs {
		if m.ClientMsgId != fmt.Sprint("m", i) || string(m.Body) != fmt.Sprint("body ", i) || m.Seq != uint64(i+1) {
			t.Fatalf("message %d: %v", i, m)
		}
	}
}

// TestPipelinedRefusalStoresNothingAfter: with a send rate of 5, the sixth
// of a window of pipelined sends is refused (fatal, after the five acks)
// and none after it is stored.
func TestPipelinedRefusalStoresNothingAfter(t *testing.T) {
	g, st := realGateway(t, withAdmission(admission.Config{UserSend: admission.Limit{Rate: slow, Burst: 5}}))
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	frames := sendFrames(20)
	werr := writeAll(c, frames)
	for i := range 6 {
		f := c.recvNonPush(nil)
		if f.RequestId != uint64(i+1) {
			t.Fatalf("answer %d: %v", i, f)
		}
		if i < 5 {
			if f.GetSendAck().GetSeq() != uint64(i+1) {
				t.Fatalf("send %d: %v", i, f)
			}
			continue
		}
		if e := errOf(t, f); e.Code != pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED || !e.Fatal {
			t.Fatalf("send over the rate: %v", e)
		}
	}
	for _, f := range c.closed() {
		if f.GetPush() == nil {
			t.Fatalf("after the fatal Error: %v", f)
		}
	}
	waitDone(t, done)
	<-werr // the server stopped reading: the writer may have failed
	if msgs := history(t, st, "d:alice:bob"); len(msgs) != 5 {
		t.Fatalf("%d messages stored, want 5", len(msgs))
	}
}

// TestPipelineFailureStopsChain: a send that fails with a retryable code in
// the store ends the connection with that Error after the answers before
// it, and no send after it is applied.
func TestPipelineFailureStopsChain(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	release := make(chan struct{})
	l.sendHook = func(ctx context.Context, _ string, req *pimv1.SendReq) error {
		switch req.ClientMsgId {
		case "m0":
			<-release // the rest queue up behind it
		case "m3":
			return fmt.Errorf("commit: %w", store.ErrClosed) // INTERNAL: retryable
		}
		return nil
	}
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	frames := sendFrames(10)
	werr := writeAll(c, frames)
	waitInflight(t, l, 10) // all ten handed over before the first is answered
	close(release)
	for i := range 4 {
		f := c.recvNonPush(nil)
		if f.RequestId != uint64(i+1) {
			t.Fatalf("answer %d: %v", i, f)
		}
		if i < 3 {
			if f.GetSendAck() == nil {
				t.Fatalf("send %d: %v", i, f)
			}
			continue
		}
		if e := errOf(t, f); !retryable(e.Code) || !e.Fatal {
			t.Fatalf("failed send: %v", e)
		}
	}
	for _, f := range c.closed() {
		if f.GetPush() == nil {
			t.Fatalf("after the fatal Error: %v", f)
		}
	}
	waitDone(t, done)
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if got := l.sendLog(); len(got) != 3 {
		t.Fatalf("sends applied: %v, want m0-m2", got)
	}
}

// TestPipelineDepthBounded: at most MaxPipelinedSends sends of a connection
// are handed over at once.
func TestPipelineDepthBounded(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	release := make(chan struct{})
	l.sendHook = func(ctx context.Context, _ string, req *pimv1.SendReq) error {
		if req.ClientMsgId == "m0" {
			<-release
		}
		return nil
	}
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	const n = MaxPipelinedSends + 8
	frames := sendFrames(n)
	werr := writeAll(c, frames)
	waitInflight(t, l, MaxPipelinedSends)
	time.Sleep(50 * time.Millisecond) // a negative check: no more are handed over
	if k := l.inflight.Load(); k != MaxPipelinedSends {
		t.Fatalf("%d sends in flight, bound %d", k, MaxPipelinedSends)
	}
	close(release)
	for i := range n {
		if f := c.recvNonPush(nil); f.RequestId != uint64(i+1) || f.GetSendAck() == nil {
			t.Fatalf("answer %d: %v", i, f)
		}
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}

// TestShutdownWaitsForPipelinedSends: a GoAway waits for every send in
// flight to be answered, and goes out after their acks.
func TestShutdownWaitsForPipelinedSends(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	release := make(chan struct{})
	l.sendHook = func(ctx context.Context, _ string, req *pimv1.SendReq) error {
		if req.ClientMsgId == "m0" {
			<-release
		}
		return nil
	}
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	const n = 5
	frames := sendFrames(n)
	if err := <-writeAll(c, frames); err != nil {
		t.Fatal(err)
	}
	waitInflight(t, l, n)
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), failsafe)
		defer cancel()
		shut <- g.Shutdown(ctx)
	}()
	close(release)
	var got []string
	for _, f := range c.closed() {
		switch {
		case f.GetSendAck() != nil:
			got = append(got, fmt.Sprint("ack", f.RequestId))
		case f.GetGoAway() != nil:
			got = append(got, "goaway")
		case f.GetPush() != nil:
		default:
			t.Fatalf("unexpected %v", f)
		}
	}
	if want := "[ack1 ack2 ack3 ack4 ack5 goaway]"; fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
	waitDone(t, done)
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// sendFrames returns n SendReqs to bob, ids m0..m(n-1), request ids 1..n.
func sendFrames(n int) []*pimv1.Frame {
	frames := make([]*pimv1.Frame, n)
	for i := range n {
		frames[i] = sendReq(fmt.Sprint("m", i), "bob", "hi")
		frames[i].RequestId = uint64(i + 1)
	}
	return frames
}

// waitInflight polls until the fake logic has at least n sends in flight
// (failing after failsafe).
func waitInflight(t *testing.T, l *fakeLogic, n int64) {
	t.Helper()
	deadline := time.Now().Add(failsafe)
	for l.inflight.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d sends in flight, want %d", l.inflight.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}
