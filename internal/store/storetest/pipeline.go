package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/store"
)

// testPipelined checks contract 10: a chain of SendAsync calls is stored in
// the order of the calls, a resend of a ClientMsgID still in flight is a
// duplicate of it, a refusal does not stop the chain, and a send that
// failed for another reason (here a context already done) stops it: nothing
// after it is stored.
func testPipelined(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("a", "b")
	e.create("g:club", "b", "c") // a is not a member
	ctx := t.Context()
	done, cancel := context.WithCancel(ctx)
	cancel()

	type step struct {
		req  store.SendRequest
		ctx  context.Context
		want string // "ok", "dup:<i>", "refused", "failed", "stopped"
	}
	var steps []step
	add := func(c context.Context, r store.SendRequest, want string) {
		steps = append(steps, step{r, c, want})
	}
	for i := range 20 {
		add(ctx, e.req(conv, "a", "d1", fmt.Sprint("p", i), fmt.Sprint("m", i)), "ok")
	}
	add(ctx, e.req(conv, "a", "d1", "p5", "resend of p5"), "dup:5")    // in flight, or just stored
	add(ctx, e.req(conv, "a", "d1", "p19", "resend of p19"), "dup:19") // in flight
	add(ctx, e.req("g:club", "a", "d1", "g1", "not a member"), "refused")
	add(ctx, e.req(conv, "a", "d1", "p20", "after a refusal"), "ok")
	add(done, e.req(conv, "a", "d1", "p21", "canceled"), "failed")
	add(ctx, e.req(conv, "a", "d1", "p22", "after a failure"), "stopped")
	add(ctx, e.req(conv, "a", "d1", "p21", "resend after a failure"), "stopped")

	ps := make([]store.Pending, len(steps))
	var last store.Pending
	for i, s := range steps {
		ps[i] = e.s.SendAsync(s.ctx, s.req, last)
		last = ps[i]
	}
	var seq uint64
	results := make([]store.Result, len(steps))
	for i, s := range steps {
		res, err := ps[i].Wait(ctx)
		results[i] = res
		// Wait answers again, the same.
		if res2, err2 := ps[i].Wait(ctx); !errors.Is(err2, err) || !proto.Equal(res2.Message, res.Message) {
			t.Fatalf("step %d: a second Wait answered %v %v, the first %v %v", i, res2.Message, err2, res.Message, err)
		}
		switch w := s.want; {
		case w == "ok":
			if err != nil || res.Duplicate || res.Message.GetSeq() != seq+1 || res.Message.ClientMsgId != s.req.ClientMsgID {
				t.Fatalf("step %d (%s): %v dup=%v %s, want seq %d", i, s.req.ClientMsgID, err, res.Duplicate, fmtMsg(res.Message), seq+1)
			}
			seq++
		case len(w) > 4 && w[:4] == "dup:":
			var j int
			fmt.Sscan(w[4:], &j)
			if err != nil || !res.Duplicate || !proto.Equal(res.Message, results[j].Message) || len(res.Deliveries) != 0 {
				t.Fatalf("step %d: resend of %s: %v dup=%v %s, want %s", i, s.req.ClientMsgID, err, res.Duplicate,
					fmtMsg(res.Message), fmtMsg(results[j].Message))
			}
		case w == "refused":
			if !errors.Is(err, store.ErrNotMember) || !store.Refusal(err) {
				t.Fatalf("step %d: send by a non-member: %v", i, err)
			}
		case w == "failed":
			if err == nil || store.Refusal(err) {
				t.Fatalf("step %d: send with a done context: %v", i, err)
			}
		case w == "stopped":
			if !errors.Is(err, store.ErrPredecessorFailed) {
				t.Fatalf("step %d: send after a failure: %v %s, want ErrPredecessorFailed", i, err, fmtMsg(res.Message))
			}
		}
	}
	if h := e.history(conv); len(h) != int(seq) {
		t.Fatalf("history has %d messages, want %d", len(h), seq)
	}
	// A new chain is not affected by the failed one; p21 and p22 were not stored.
	for _, id := range []string{"p21", "p22"} {
		res, err := e.s.SendAsync(ctx, e.req(conv, "a", "d1", id, "again"), nil).Wait(ctx)
		if err != nil || res.Duplicate || res.Message.Seq != seq+1 {
			t.Fatalf("%s on a new chain: %v dup=%v %s", id, err, res.Duplicate, fmtMsg(res.Message))
		}
		seq++
	}
	// A chain whose first send is invalid stops at once.
	bad := e.s.SendAsync(ctx, store.SendRequest{Conv: "bad id", Sender: "a", Device: "d1", ClientMsgID: "x"}, nil)
	next := e.s.SendAsync(ctx, e.req(conv, "a", "d1", "p23", "after an invalid send"), bad)
	if _, err := bad.Wait(ctx); err == nil {
		t.Fatal("an invalid send was stored")
	}
	if _, err := next.Wait(ctx); !errors.Is(err, store.ErrPredecessorFailed) {
		t.Fatalf("send after an invalid one: %v", err)
	}
	CheckConsistent(t, e.s, []string{conv, "g:club"}, []string{"a", "b", "c"})
}
