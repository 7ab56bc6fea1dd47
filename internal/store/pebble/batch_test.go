package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/pim-project/pim/internal/store"
	"github.com/pim-project/pim/internal/store/storetest"
)

// gated opens a store whose writer stops before each commit until the test
// lets it go, so that the test decides exactly which ops share a batch.
type gated struct {
	t       *testing.T
	s       *Store
	entered chan int   // the writer is about to commit a batch of n ops
	release chan error // the commit's outcome (nil: really commit)
}

func openGated(t *testing.T) *gated {
	s, err := Open(t.TempDir(), Options{Sync: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	g := &gated{t: t, s: s, entered: make(chan int), release: make(chan error)}
	stop := make(chan struct{}) // closed when the test ends: the writer runs free
	s.testHookCommit = func(n int) error {
		select {
		case g.entered <- n:
		case <-stop:
			return nil
		}
		select {
		case err := <-g.release:
			return err
		case <-stop:
			return nil
		}
	}
	t.Cleanup(func() { s.Close() })
	t.Cleanup(func() { close(stop) }) // runs first
	return g
}

type answer struct {
	res store.Result
	err error
}

// batch runs ops as one batch: it parks the writer in the commit of a
// blocker op, queues ops in order, then lets the writer take them all at
// once, and commits them with outcome commitErr.
func (g *gated) batch(commitErr error, ops ...func() (store.Result, error)) []answer {
	g.t.Helper()
	blocker := make(chan answer, 1)
	go func() {
		r, err := g.s.Send(g.t.Context(), store.SendRequest{Conv: "d:blocker:blocker", Sender: "blocker", MsgID: "b"})
		blocker <- answer{r, err}
	}()
	if n := <-g.entered; n != 1 {
		g.t.Fatalf("blocker batch has %d ops", n)
	}
	answers := make([]chan answer, len(ops))
	for i, op := range ops {
		answers[i] = make(chan answer, 1)
		go func() {
			r, err := op()
			answers[i] <- answer{r, err}
		}()
		for len(g.s.ops) != i+1 { // queued in this order
			runtime.Gosched()
		}
	}
	g.release <- nil
	if a := <-blocker; a.err != nil {
		g.t.Fatalf("blocker: %v", a.err)
	}
	if n := <-g.entered; n != len(ops) {
		g.t.Fatalf("batch has %d ops, want %d", n, len(ops))
	}
	g.release <- commitErr
	out := make([]answer, len(ops))
	for i := range ops {
		out[i] = <-answers[i]
	}
	return out
}

// plain runs one op in a batch of its own that commits.
func (g *gated) plain(op func() (store.Result, error)) store.Result {
	g.t.Helper()
	done := make(chan answer, 1)
	go func() {
		r, err := op()
		done <- answer{r, err}
	}()
	if n := <-g.entered; n != 1 {
		g.t.Fatalf("batch has %d ops", n)
	}
	g.release <- nil
	a := <-done
	if a.err != nil {
		g.t.Fatal(a.err)
	}
	return a.res
}

func (g *gated) send(conv, sender, cmid string) func() (store.Result, error) {
	return func() (store.Result, error) {
		return g.s.Send(g.t.Context(), store.SendRequest{Conv: conv, Sender: sender, Device: "d", ClientMsgID: cmid, MsgID: "m-" + cmid})
	}
}

func (g *gated) change(f func(*Store) func(ctx context.Context, ch store.GroupChange) (store.Result, error), group, actor string, users ...string) func() (store.Result, error) {
	return func() (store.Result, error) {
		return f(g.s)(g.t.Context(), store.GroupChange{Group: group, Actor: actor, Users: users, MsgID: fmt.Sprint(group, actor, users)})
	}
}

func create(s *Store) func(context.Context, store.GroupChange) (store.Result, error) {
	return s.CreateGroup
}
func add(s *Store) func(context.Context, store.GroupChange) (store.Result, error) {
	return s.AddMembers
}
func remove(s *Store) func(context.Context, store.GroupChange) (store.Result, error) {
	return s.RemoveMembers
}

// TestBatchSeesEarlierOps: within one batch, each op sees the effects of
// the ops before it: dedup entries, created groups, membership changes.
func TestBatchSeesEarlierOps(t *testing.T) {
	g := openGated(t)
	a := g.batch(nil,
		g.change(create, "g:x", "a", "b"),   // 0: seq 1
		g.send("g:x", "b", "1"),             // 1: seq 2
		g.send("g:x", "b", "1"),             // 2: duplicate of 1
		g.change(add, "g:x", "b", "c"),      // 3: seq 3
		g.send("g:x", "c", "2"),             // 4: seq 4, c is in
		g.change(remove, "g:x", "a", "b"),   // 5: seq 5
		g.send("g:x", "b", "3"),             // 6: ErrNotMember
		g.change(create, "g:x", "c"),        // 7: ErrExists
		g.change(add, "g:x", "c", "b", "c"), // 8: seq 6, b back
		g.send("d:a:b", "a", "1"),           // 9: d:a:b seq 1
		g.send("g:y", "a", "4"),             // 10: ErrNotFound
		g.send("g:x", "b", "1"),             // 11: duplicate of 1
		g.change(remove, "g:x", "a", "zed"), // 12: nothing to do
	)
	wantErr := map[int]error{6: store.ErrNotMember, 7: store.ErrExists, 10: store.ErrNotFound}
	wantSeq := map[int]uint64{0: 1, 1: 2, 2: 2, 3: 3, 4: 4, 5: 5, 8: 6, 9: 1, 11: 2}
	for i, an := range a {
		if !errors.Is(an.err, wantErr[i]) || (wantErr[i] == nil) != (an.err == nil) {
			t.Fatalf("op %d: error %v, want %v", i, an.err, wantErr[i])
		}
		if got := an.res.Message.GetSeq(); got != wantSeq[i] {
			t.Fatalf("op %d: seq %d, want %d", i, got, wantSeq[i])
		}
		if dup := i == 2 || i == 11; an.res.Duplicate != dup {
			t.Fatalf("op %d: duplicate %v", i, an.res.Duplicate)
		}
	}
	if !slices.Equal(recipients(a[4].res), []string{"a", "b", "c"}) || !slices.Equal(recipients(a[5].res), []string{"a", "b", "c"}) {
		t.Fatalf("recipients %v, %v", recipients(a[4].res), recipients(a[5].res))
	}
	storetest.CheckConsistent(t, g.s, []string{"g:x", "d:a:b"}, []string{"a", "b", "c", "zed"})
}

func recipients(r store.Result) []string {
	var us []string
	for _, d := range r.Deliveries {
		us = append(us, d.User)
	}
	return us
}

// TestFailedCommit: a failed commit fails every op of its batch and leaves
// no trace: seqs go on without a gap, nothing of it is stored or cached.
func TestFailedCommit(t *testing.T) {
	g := openGated(t)
	g.plain(g.change(create, "g:x", "a", "b"))
	g.plain(g.send("g:x", "a", "1"))
	boom := errors.New("disk on fire")
	a := g.batch(boom,
		g.send("g:x", "a", "2"),
		g.send("g:x", "a", "2"), // in-batch duplicate: fails too
		g.change(add, "g:x", "a", "c"),
		g.send("g:x", "c", "3"),
		g.change(create, "g:new", "a"),
		g.send("d:a:b", "b", "4"),
		g.send("g:x", "zed", "5"), // would have been ErrNotMember
	)
	for i, an := range a {
		if !errors.Is(an.err, boom) {
			t.Fatalf("op %d: %v, want the commit error", i, an.err)
		}
	}
	a = g.batch(nil,
		g.send("g:x", "a", "2"), // not a duplicate: it was never stored
		g.send("g:x", "c", "3"), // c is not a member
		g.change(create, "g:new", "a"),
		g.send("d:a:b", "b", "4"),
	)
	if a[0].err != nil || a[0].res.Duplicate || a[0].res.Message.Seq != 3 {
		t.Fatalf("retry: %v dup=%v seq=%d", a[0].err, a[0].res.Duplicate, a[0].res.Message.GetSeq())
	}
	if !errors.Is(a[1].err, store.ErrNotMember) {
		t.Fatalf("send by the member added in the failed batch: %v", a[1].err)
	}
	if a[2].err != nil || a[3].err != nil || a[3].res.Message.Seq != 1 {
		t.Fatalf("create/send after failure: %v %v", a[2].err, a[3].err)
	}
	for _, d := range a[0].res.Deliveries {
		if d.Event.UserSeq != 3 {
			t.Fatalf("user seq of %s after failure = %d, want 3", d.User, d.Event.UserSeq)
		}
	}
	storetest.CheckConsistent(t, g.s, []string{"g:x", "g:new", "d:a:b"}, []string{"a", "b", "c", "zed"})
}

// TestCloseFailsQueued: ops queued behind a commit in progress when Close
// is called fail with ErrClosed; the batch being committed completes.
func TestCloseFailsQueued(t *testing.T) {
	g := openGated(t)
	first := make(chan answer, 1)
	go func() {
		r, err := g.send("d:a:b", "a", "1")()
		first <- answer{r, err}
	}()
	<-g.entered
	queued := make(chan answer, 1)
	go func() {
		r, err := g.send("d:a:b", "a", "2")()
		queued <- answer{r, err}
	}()
	for len(g.s.ops) != 1 {
		runtime.Gosched()
	}
	closed := make(chan error, 1)
	go func() { closed <- g.s.Close() }()
	for {
		g.s.mu.RLock()
		c := g.s.closed
		g.s.mu.RUnlock()
		if c {
			break
		}
		runtime.Gosched()
	}
	g.release <- nil
	if a := <-first; a.err != nil || a.res.Message.Seq != 1 {
		t.Fatalf("op being committed at Close: %v", a.err)
	}
	if a := <-queued; !errors.Is(a.err, store.ErrClosed) {
		t.Fatalf("queued op: %v, want ErrClosed", a.err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("close: %v", err)
	}
}

// TestReadsSeeOnlyPublished: a batch that Pebble has committed is invisible
// to reads until the writer publishes it (after the commit, fsync included,
// returned), and visible to its writer when its call returns.
func TestReadsSeeOnlyPublished(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Sync: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	parked, resume, stop := make(chan struct{}), make(chan struct{}), make(chan struct{})
	defer close(stop) // runs first: the writer runs free
	s.testHookCommitted = func() {
		select {
		case parked <- struct{}{}:
		case <-stop:
			return
		}
		select {
		case <-resume:
		case <-stop:
		}
	}
	ctx := t.Context()
	done := make(chan error, 1)
	go func() {
		_, err := s.CreateGroup(ctx, store.GroupChange{Group: "g:x", Actor: "a", Users: []string{"b"}})
		if err == nil {
			_, err = s.Send(ctx, store.SendRequest{Conv: "g:x", Sender: "a", ClientMsgID: "1"})
		}
		done <- err
	}()
	<-parked // the group is in Pebble, not published
	if _, err := s.Members(ctx, "g:x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("members of an unpublished group: %v", err)
	}
	if h, err := s.Head(ctx, "b"); err != nil || h != 0 {
		t.Fatalf("head with an unpublished event: %d %v", h, err)
	}
	if c, err := s.Ack(ctx, "b", "d", 1); err != nil || c != 0 {
		t.Fatalf("ack of an unpublished event: %d %v", c, err)
	}
	resume <- struct{}{}
	<-parked // the message is in Pebble, not published
	if evs, head, err := s.Timeline(ctx, "b", 0, 10); err != nil || head != 1 || len(evs) != 1 {
		t.Fatalf("timeline: %d events, head %d, %v; want the creation only", len(evs), head, err)
	}
	if msgs, _, err := s.History(ctx, "g:x", 0, 0, 10); err != nil || len(msgs) != 1 {
		t.Fatalf("history: %d messages, %v; want the creation only", len(msgs), err)
	}
	resume <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctx, "b"); err != nil || h != 2 {
		t.Fatalf("head after the send returned: %d %v", h, err)
	}
}

// TestPipelineStopsAtFailedCommit: a chain of SendAsync calls whose first
// send is taken back by a failed commit stores nothing after it, even in a
// later batch that commits (contract 10).
func TestPipelineStopsAtFailedCommit(t *testing.T) {
	g := openGated(t)
	ctx := t.Context()
	req := func(id string) store.SendRequest {
		return store.SendRequest{Conv: "d:a:b", Sender: "a", Device: "d", ClientMsgID: id, MsgID: "m" + id, Body: []byte(id)}
	}
	p1 := g.s.SendAsync(ctx, req("1"), nil)
	if n := <-g.entered; n != 1 {
		t.Fatalf("first batch has %d ops", n)
	}
	p2 := g.s.SendAsync(ctx, req("2"), p1) // queued behind the commit in progress
	boom := errors.New("disk on fire")
	g.release <- boom
	if _, err := p1.Wait(ctx); !errors.Is(err, boom) {
		t.Fatalf("send 1: %v, want the commit error", err)
	}
	p3 := g.s.SendAsync(ctx, req("3"), p2)
	for i, p := range []store.Pending{p2, p3} {
		if res, err := p.Wait(ctx); !errors.Is(err, store.ErrPredecessorFailed) {
			t.Fatalf("send %d after the failed one: %v %v", i+2, err, res.Message)
		}
	}
	// A new chain goes on; the failed sends are not duplicates.
	p := g.s.SendAsync(ctx, req("2"), nil)
	<-g.entered
	g.release <- nil
	if res, err := p.Wait(ctx); err != nil || res.Duplicate || res.Message.Seq != 1 {
		t.Fatalf("retry on a new chain: %v %v", err, res.Message)
	}
	storetest.CheckConsistent(t, g.s, []string{"d:a:b"}, []string{"a", "b"})
}

// TestLargeBatchPublishedAndAnnounced: a batch large enough for Pebble to
// commit it as a flushable batch (it drops the batch's data in Commit) is
// still published to reads and its deliveries announced.
func TestLargeBatchPublishedAndAnnounced(t *testing.T) {
	g := openGated(t)
	var announced []uint64
	var mu sync.Mutex
	g.s.onCommit = func(ds []store.Delivery) { // only the writer calls it
		mu.Lock()
		defer mu.Unlock()
		for _, d := range ds {
			if d.User == "b" {
				announced = append(announced, d.Event.UserSeq)
			}
		}
	}
	const n = 320
	body := make([]byte, 60<<10) // n bodies pass memTableSize/2
	ops := make([]func() (store.Result, error), n)
	for i := range ops {
		ops[i] = func() (store.Result, error) {
			return g.s.Send(t.Context(), store.SendRequest{Conv: "d:a:b", Sender: "a", Device: "d",
				ClientMsgID: fmt.Sprint(i), MsgID: fmt.Sprint("m", i), Body: body})
		}
	}
	for i, a := range g.batch(nil, ops...) {
		if a.err != nil {
			t.Fatalf("send %d: %v", i, a.err)
		}
	}
	evs, head, err := g.s.Timeline(t.Context(), "b", 0, n+10)
	if err != nil {
		t.Fatal(err)
	}
	if head != n || len(evs) != n {
		t.Fatalf("read after the large batch: head %d, %d events; want %d (the view was not published)", head, len(evs), n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(announced) != n || announced[0] != 1 || announced[n-1] != n {
		t.Fatalf("announced %d deliveries to b, want %d in order", len(announced), n)
	}
}
