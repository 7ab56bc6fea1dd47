// Package storetest is the conformance suite of store.Store: every
// implementation runs Run, and passes it, before it is used:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, dir string) store.Store {
//			s, err := mystore.Open(dir)
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// The suite closes every store it opens. The model test's seed is logged;
// -storetest.seed=N replays it and -storetest.ops=N sets its length.
// CheckConsistent is exported for implementations' own tests.
//
// Invariants:
//   - Each subtest works in its own t.TempDir() and reopens the same dir to
//     test persistence; every store it opens is closed before the dir is
//     removed.
//   - The suite is deterministic except for the goroutine interleavings it
//     provokes on purpose and the model test's seed, which it logs and which
//     -storetest.seed replays. It never sleeps to synchronize.
//   - Checks read through the Store interface only.
package storetest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

var (
	seedFlag = flag.Int64("storetest.seed", 0, "seed of the storetest model test (0: a new random seed)")
	opsFlag  = flag.Int("storetest.ops", 1000, "operations in the storetest model test")
)

// Opener opens (or reopens) a store on dir. It fails t if it cannot.
type Opener = func(t *testing.T, dir string) store.Store

// Run runs the conformance suite against the stores open returns.
func Run(t *testing.T, open func(t *testing.T, dir string) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"SendAndRead", testSendAndRead},
		{"Idempotent", testIdempotent},
		{"IdempotentConcurrent", testIdempotentConcurrent},
		{"DedupPerDevice", testDedupPerDevice},
		{"Pipelined", testPipelined},
		{"IdempotentGroupChanges", testIdempotentGroupChanges},
		{"ReadPositions", testReadPositions},
		{"ConcurrentGapFree", testConcurrentGapFree},
		{"ConcurrentMixedAtomic", testConcurrentMixed},
		{"Cursors", testCursors},
		{"CursorsConcurrent", testCursorsConcurrent},
		{"Membership", testMembership},
		{"GroupErrors", testGroupErrors},
		{"HistoryPaging", testHistoryPaging},
		{"TimelinePaging", testTimelinePaging},
		{"Epoch", testEpoch},
		{"Reopen", testReopen},
		{"Closed", testClosed},
		{"CloseWhileBusy", testCloseWhileBusy},
		{"InvalidInput", testInvalidInput},
		{"CanceledContext", testCanceled},
		{"UnreadCounts", testUnreadCounts},
		{"ConvListSince", testConvListSince},
		{"Receipts", testReceipts},
		{"Hide", testHide},
		{"Model", testModel},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// env is one subtest's store and dir.
type env struct {
	t    *testing.T
	dir  string
	open Opener
	s    store.Store
	n    atomic.Int64 // for MsgIDs and times
}

func newEnv(t *testing.T, open Opener) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), open: open}
	e.s = open(t, e.dir)
	t.Cleanup(func() {
		if e.s != nil {
			e.s.Close()
		}
	})
	return e
}

// reopen closes the store and opens it again on the same dir.
func (e *env) reopen() {
	e.t.Helper()
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("close: %v", err)
	}
	e.s = nil
	e.s = e.open(e.t, e.dir)
}

func (e *env) req(conv, sender, device, cmid, body string) store.SendRequest {
	n := e.n.Add(1)
	return store.SendRequest{
		Conv: conv, Sender: sender, Device: device, ClientMsgID: cmid,
		MsgID: fmt.Sprintf("msg-%06d", n), Type: pimv1.MessageType_MESSAGE_TYPE_TEXT,
		Body: []byte(body), ClientTime: 1000 + n, ServerTime: 2000 + n, ClientSeq: uint64(n),
	}
}

func (e *env) change(group, actor string, users ...string) store.GroupChange {
	n := e.n.Add(1)
	return store.GroupChange{
		Group: group, Actor: actor, Device: "dev", Users: users,
		MsgID: fmt.Sprintf("msg-%06d", n), ServerTime: 2000 + n,
	}
}

// send sends a text message and fails the test on error.
func (e *env) send(conv, sender, device, cmid, body string) store.Result {
	e.t.Helper()
	res, err := e.s.Send(e.t.Context(), e.req(conv, sender, device, cmid, body))
	if err != nil {
		e.t.Fatalf("send %s from %s/%s %q: %v", conv, sender, device, cmid, err)
	}
	return res
}

func (e *env) create(group, actor string, users ...string) store.Result {
	e.t.Helper()
	res, err := e.s.CreateGroup(e.t.Context(), e.change(group, actor, users...))
	if err != nil {
		e.t.Fatalf("create %s: %v", group, err)
	}
	return res
}

func (e *env) add(group, actor string, users ...string) store.Result {
	e.t.Helper()
	res, err := e.s.AddMembers(e.t.Context(), e.change(group, actor, users...))
	if err != nil {
		e.t.Fatalf("add %v to %s: %v", users, group, err)
	}
	return res
}

func (e *env) remove(group, actor string, users ...string) store.Result {
	e.t.Helper()
	res, err := e.s.RemoveMembers(e.t.Context(), e.change(group, actor, users...))
	if err != nil {
		e.t.Fatalf("remove %v from %s: %v", users, group, err)
	}
	return res
}

func (e *env) head(user string) uint64 {
	e.t.Helper()
	h, err := e.s.Head(e.t.Context(), user)
	if err != nil {
		e.t.Fatalf("head %s: %v", user, err)
	}
	return h
}

func (e *env) ack(user, device string, seq uint64) uint64 {
	e.t.Helper()
	c, err := e.s.Ack(e.t.Context(), user, device, seq)
	if err != nil {
		e.t.Fatalf("ack %s/%s %d: %v", user, device, seq, err)
	}
	return c
}

func (e *env) cursor(user, device string) uint64 {
	e.t.Helper()
	c, err := e.s.Cursor(e.t.Context(), user, device)
	if err != nil {
		e.t.Fatalf("cursor %s/%s: %v", user, device, err)
	}
	return c
}

// timeline reads user's whole timeline (in pages of 7) and checks that its
// user seqs are 1..head.
func (e *env) timeline(user string) []*pimv1.Event {
	e.t.Helper()
	return readTimeline(e.t, e.s, user)
}

func readTimeline(t *testing.T, s store.Store, user string) []*pimv1.Event {
	t.Helper()
	var all []*pimv1.Event
	var after uint64
	for {
		evs, head, err := s.Timeline(t.Context(), user, after, 7)
		if err != nil {
			t.Fatalf("timeline %s after %d: %v", user, after, err)
		}
		for _, ev := range evs {
			if ev.UserSeq != after+1 {
				t.Fatalf("timeline %s: user seq %d after %d (gap or disorder)", user, ev.UserSeq, after)
			}
			if ev.GetKind() == nil {
				t.Fatalf("timeline %s: event %d is empty", user, ev.UserSeq)
			}
			after = ev.UserSeq
			all = append(all, ev)
		}
		if after > head {
			t.Fatalf("timeline %s: event %d above head %d", user, after, head)
		}
		if after == head {
			return all
		}
		if len(evs) == 0 {
			t.Fatalf("timeline %s: empty page after %d below head %d", user, after, head)
		}
	}
}

// history reads conv's whole history backwards (pages of 10), checks that
// its seqs are 1..n and returns it; nil with ErrNotFound for an unknown group.
func (e *env) history(conv string) []*pimv1.Message {
	e.t.Helper()
	msgs, err := readHistory(e.t, e.s, conv)
	if err != nil {
		e.t.Fatalf("history %s: %v", conv, err)
	}
	return msgs
}

func readHistory(t *testing.T, s store.Store, conv string) ([]*pimv1.Message, error) {
	t.Helper()
	var all []*pimv1.Message
	var before uint64
	for {
		page, more, err := s.History(t.Context(), conv, 0, before, 10)
		if err != nil {
			return nil, err
		}
		if len(page) == 0 && more {
			t.Fatalf("history %s before %d: empty page with more", conv, before)
		}
		all = append(slices.Clone(page), all...)
		if !more {
			break
		}
		before = page[0].Seq
	}
	for i, m := range all {
		if m.Seq != uint64(i+1) || m.Conv != conv {
			t.Fatalf("history %s: message %d is %s/%d (gap, disorder or wrong conversation)", conv, i+1, m.Conv, m.Seq)
		}
	}
	return all, nil
}

func (e *env) members(conv string) []store.Member {
	e.t.Helper()
	ms, err := e.s.Members(e.t.Context(), conv)
	if err != nil {
		e.t.Fatalf("members %s: %v", conv, err)
	}
	return ms
}

// convSeqs returns the seqs of conv's messages in events, in order.
func convSeqs(evs []*pimv1.Event, conv string) []uint64 {
	var seqs []uint64
	for _, ev := range evs {
		if m := ev.GetMessage(); m.GetConv() == conv {
			seqs = append(seqs, m.Seq)
		}
	}
	return seqs
}

func seqRange(lo, hi uint64) []uint64 {
	var s []uint64
	for i := lo; i <= hi; i++ {
		s = append(s, i)
	}
	return s
}

func deliveredTo(res store.Result) []string {
	var us []string
	for _, d := range res.Deliveries {
		us = append(us, d.User)
	}
	slices.Sort(us)
	return us
}

func mustErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

// fmtEvent formats a timeline event of any kind.
func fmtEvent(ev *pimv1.Event) string {
	if r := ev.GetRead(); r != nil {
		return fmt.Sprintf("read %s/%d by %s/%s", r.Conv, r.Seq, r.User, r.Device)
	}
	if h := ev.GetHidden(); h != nil {
		return fmt.Sprintf("hidden %s/%d on %s", h.Conv, h.Seq, h.Device)
	}
	if r := ev.GetReceipt(); r != nil {
		var b strings.Builder
		fmt.Fprintf(&b, "receipt %v %s/%d user=%s", r.Kind, r.Conv, r.Seq, r.User)
		for _, m := range r.Messages {
			fmt.Fprintf(&b, " %d:%d", m.Seq, m.ReadCount)
		}
		return b.String()
	}
	return fmtMsg(ev.GetMessage())
}

// fmtConvs formats a page of a conversation list.
func fmtConvs(cs []*pimv1.Conversation, more bool, version uint64, err error) string {
	if err != nil {
		return "error " + errName(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version=%d more=%v", version, more)
	for _, c := range cs {
		fmt.Fprintf(&b, "\n  %s last=%d read=%d unread=%d v=%d act=%d join=%d left=%v peerread=%d peerdlv=%d msg=%s",
			c.Conv, c.LastSeq, c.ReadSeq, c.Unread, c.Version, c.Activity, c.JoinSeq, c.Left,
			c.PeerReadSeq, c.PeerDeliveredSeq, fmtMsg(c.LastMessage))
	}
	return b.String()
}

func fmtMsg(m *pimv1.Message) string {
	if m == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%s/%d id=%s from=%s/%s cmid=%q type=%v body=%q ct=%d st=%d cs=%d members=%v",
		m.Conv, m.Seq, m.MsgId, m.Sender, m.SenderDevice, m.ClientMsgId, m.Type, m.Body,
		m.ClientTime, m.ServerTime, m.ClientSeq, m.Members)
}

// CheckConsistent reads every conversation of convs and the timeline of
// every user of users and checks the contract's invariants on them: gap-free
// seqs, timelines that agree with conversation order, and exactly one event
// per recipient of every message, the recipients being derived from the
// membership messages of the conversation (rules 1, 4, 5). users must include
// every user who was ever a member of one of convs.
func CheckConsistent(t *testing.T, s store.Store, convs, users []string) {
	t.Helper()
	hist := make(map[string][]*pimv1.Message)
	for _, c := range convs {
		msgs, err := readHistory(t, s, c)
		if errors.Is(err, store.ErrNotFound) && store.IsGroup(c) {
			continue
		}
		if err != nil {
			t.Fatalf("history %s: %v", c, err)
		}
		hist[c] = msgs
	}
	// got[conv][seq] = the users whose timeline holds that message.
	got := make(map[string]map[uint64][]string)
	for _, u := range users {
		evs := readTimeline(t, s, u)
		last := make(map[string]uint64)
		for _, ev := range evs {
			m := ev.GetMessage()
			if m == nil {
				continue // a read-sync event
			}
			if m.Seq <= last[m.Conv] {
				t.Fatalf("timeline %s: %s/%d after %s/%d: disagrees with conversation order", u, m.Conv, m.Seq, m.Conv, last[m.Conv])
			}
			last[m.Conv] = m.Seq
			h, ok := hist[m.Conv]
			if !ok {
				continue
			}
			if m.Seq > uint64(len(h)) || !proto.Equal(m, h[m.Seq-1]) {
				t.Fatalf("timeline %s event %d: message %s does not match the conversation's", u, ev.UserSeq, fmtMsg(m))
			}
			if got[m.Conv] == nil {
				got[m.Conv] = make(map[uint64][]string)
			}
			got[m.Conv][m.Seq] = append(got[m.Conv][m.Seq], u)
		}
	}
	for _, c := range convs {
		msgs, ok := hist[c]
		if !ok {
			continue
		}
		members := make(map[string]store.Member)
		if a, b, ok := store.ParseDirect(c); ok {
			members[a] = store.Member{User: a, Role: "member"}
			members[b] = store.Member{User: b, Role: "member"}
		}
		for _, m := range msgs {
			var recipients []string
			switch m.Type {
			case pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED:
				if m.Seq != 1 {
					t.Fatalf("%s: GROUP_CREATED at seq %d", c, m.Seq)
				}
				for _, u := range m.Members {
					members[u] = store.Member{User: u, JoinSeq: m.Seq, Role: "member"}
				}
				members[m.Sender] = store.Member{User: m.Sender, JoinSeq: m.Seq, Role: "owner"}
				recipients = sortedKeys(members)
			case pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED:
				for _, u := range m.Members {
					members[u] = store.Member{User: u, JoinSeq: m.Seq, Role: "member"}
				}
				recipients = sortedKeys(members)
			case pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED:
				recipients = sortedKeys(members)
				for _, u := range m.Members {
					delete(members, u)
				}
			default:
				if _, ok := members[m.Sender]; !ok {
					t.Fatalf("%s/%d: sender %s was not a member", c, m.Seq, m.Sender)
				}
				recipients = sortedKeys(members)
			}
			have := slices.Clone(got[c][m.Seq])
			slices.Sort(have)
			if !slices.Equal(have, recipients) {
				t.Fatalf("%s/%d (%v): in the timelines of %v, want exactly %v", c, m.Seq, m.Type, have, recipients)
			}
		}
		ms, err := s.Members(t.Context(), c)
		if err != nil {
			t.Fatalf("members %s: %v", c, err)
		}
		want := make([]store.Member, 0, len(members))
		for _, u := range sortedKeys(members) {
			want = append(want, members[u])
		}
		if !slices.Equal(ms, want) {
			t.Fatalf("members %s: %v, want %v (replayed from its history)", c, ms, want)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// dump renders everything the store knows about convs, users and devices
// as lines, for comparing two stores (or one store before and after reopen).
func dump(t *testing.T, s store.Store, convs, users, devices []string) []string {
	t.Helper()
	ctx := t.Context()
	var out []string
	for _, c := range convs {
		msgs, err := readHistory(t, s, c)
		if err != nil {
			out = append(out, fmt.Sprintf("history %s: %v", c, errName(err)))
		}
		for _, m := range msgs {
			out = append(out, "history "+fmtMsg(m))
		}
		ms, err := s.Members(ctx, c)
		out = append(out, fmt.Sprintf("members %s: %v %v", c, ms, errName(err)))
	}
	for _, u := range users {
		evs := readTimeline(t, s, u)
		out = append(out, fmt.Sprintf("head %s: %d", u, len(evs)))
		for _, ev := range evs {
			out = append(out, fmt.Sprintf("timeline %s %d: %s", u, ev.UserSeq, fmtEvent(ev)))
		}
		for _, d := range devices {
			c, err := s.Cursor(ctx, u, d)
			out = append(out, fmt.Sprintf("cursor %s/%s: %d %v", u, d, c, errName(err)))
		}
		cs, more, v, err := s.Conversations(ctx, u, store.ConvQuery{Limit: 1 << 20})
		out = append(out, strings.Split(fmt.Sprintf("convs %s: %s", u, fmtConvs(cs, more, v, err)), "\n")...)
		for _, c := range convs {
			p, err := s.ReadPosition(ctx, u, c)
			h, herr := s.HiddenIn(ctx, u, c, 0, 0)
			out = append(out, fmt.Sprintf("read %s %s: %d %v hidden %v %v", u, c, p, errName(err), h, errName(herr)))
		}
	}
	return out
}

// errName names err by the store error it is, so that two implementations'
// differently worded errors compare equal.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range []error{store.ErrNotFound, store.ErrNotMember, store.ErrExists, store.ErrGroupTooLarge, store.ErrClosed, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, s) {
			return s.Error()
		}
	}
	return "error"
}

func diffLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			lo, hi := max(0, i-3), min(len(want), i+3)
			t.Fatalf("%s: line %d differs:\n got: %s\nwant: %s\ncontext (want):\n%s", what, i, g, w, strings.Join(want[lo:hi], "\n"))
		}
	}
}

// ---- tests ----

func testSendAndRead(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("bob", "alice")
	res := e.send(conv, "alice", "phone", "c1", "hi bob")
	m := res.Message
	if m == nil || m.Seq != 1 || m.Conv != conv || m.Sender != "alice" || m.SenderDevice != "phone" ||
		m.ClientMsgId != "c1" || string(m.Body) != "hi bob" || m.Type != pimv1.MessageType_MESSAGE_TYPE_TEXT ||
		m.MsgId == "" || m.ClientTime == 0 || m.ServerTime == 0 || m.ClientSeq == 0 {
		t.Fatalf("send: stored %s", fmtMsg(m))
	}
	if res.Duplicate {
		t.Fatal("first send is a duplicate")
	}
	if got := deliveredTo(res); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Fatalf("delivered to %v, want alice and bob", got)
	}
	for _, d := range res.Deliveries {
		if d.Event.UserSeq != 1 || !proto.Equal(d.Event.GetMessage(), m) {
			t.Fatalf("delivery to %s: event %d %s", d.User, d.Event.UserSeq, fmtMsg(d.Event.GetMessage()))
		}
	}
	res2 := e.send(conv, "bob", "laptop", "c1", "hi alice")
	if res2.Message.Seq != 2 {
		t.Fatalf("second message seq %d", res2.Message.Seq)
	}
	for _, u := range []string{"alice", "bob"} {
		evs := e.timeline(u)
		if len(evs) != 2 || !proto.Equal(evs[0].GetMessage(), m) || !proto.Equal(evs[1].GetMessage(), res2.Message) {
			t.Fatalf("timeline %s: %v", u, evs)
		}
		if h := e.head(u); h != 2 {
			t.Fatalf("head %s = %d", u, h)
		}
	}
	if h := e.head("carol"); h != 0 {
		t.Fatalf("head of a user with nothing = %d", h)
	}
	if evs, head, err := e.s.Timeline(t.Context(), "carol", 0, 10); err != nil || len(evs) != 0 || head != 0 {
		t.Fatalf("timeline of a user with nothing: %v %d %v", evs, head, err)
	}
	hist := e.history(conv)
	if len(hist) != 2 || !proto.Equal(hist[0], m) {
		t.Fatalf("history: %v", hist)
	}
	want := []store.Member{{User: "alice", Role: "member"}, {User: "bob", Role: "member"}}
	if ms := e.members(conv); !slices.Equal(ms, want) {
		t.Fatalf("members of %s: %v", conv, ms)
	}
	if mb, ok, err := e.s.Membership(t.Context(), conv, "bob"); err != nil || !ok || mb != want[1] {
		t.Fatalf("membership of bob: %v %v %v", mb, ok, err)
	}
	if _, ok, err := e.s.Membership(t.Context(), conv, "carol"); err != nil || ok {
		t.Fatalf("membership of carol: %v %v", ok, err)
	}
	// A direct conversation nobody wrote to exists, empty.
	if msgs, more, err := e.s.History(t.Context(), store.DirectConv("x", "y"), 0, 0, 10); err != nil || len(msgs) != 0 || more {
		t.Fatalf("history of an empty direct conversation: %v %v %v", msgs, more, err)
	}

	// A self conversation delivers once.
	self := store.DirectConv("alice", "alice")
	r := e.send(self, "alice", "phone", "note", "to self")
	if got := deliveredTo(r); !slices.Equal(got, []string{"alice"}) || r.Deliveries[0].Event.UserSeq != 3 {
		t.Fatalf("self message delivered to %v", r.Deliveries)
	}
	if ms := e.members(self); !slices.Equal(ms, []store.Member{{User: "alice", Role: "member"}}) {
		t.Fatalf("members of %s: %v", self, ms)
	}
	if h := e.head("alice"); h != 3 {
		t.Fatalf("alice head %d after self message", h)
	}
	CheckConsistent(t, e.s, []string{conv, self}, []string{"alice", "bob", "carol"})
}

func testIdempotent(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("a", "b")
	first := e.send(conv, "a", "d1", "cm-1", "hello")
	retry := e.req(conv, "a", "d1", "cm-1", "hello again") // a new msg id and time, even
	check := func(when string) {
		t.Helper()
		res, err := e.s.Send(t.Context(), retry)
		if err != nil {
			t.Fatalf("%s: resend: %v", when, err)
		}
		if !res.Duplicate || !proto.Equal(res.Message, first.Message) || len(res.Deliveries) != 0 {
			t.Fatalf("%s: resend returned dup=%v %s, %d deliveries; want the original %s", when,
				res.Duplicate, fmtMsg(res.Message), len(res.Deliveries), fmtMsg(first.Message))
		}
		for _, u := range []string{"a", "b"} {
			if evs := e.timeline(u); len(evs) != 1 {
				t.Fatalf("%s: timeline %s has %d events", when, u, len(evs))
			}
		}
		if h := e.history(conv); len(h) != 1 {
			t.Fatalf("%s: history has %d messages", when, len(h))
		}
	}
	check("same session")
	check("twice")
	e.reopen()
	check("after reopen")
	// The next message continues the sequence.
	if r := e.send(conv, "a", "d1", "cm-2", "next"); r.Message.Seq != 2 || r.Duplicate {
		t.Fatalf("next message: seq %d dup %v", r.Message.Seq, r.Duplicate)
	}

	// A resend is recognized even when the sender has left the group since.
	e.create("g:club", "a", "b")
	orig := e.send("g:club", "b", "d1", "cm-g", "bye")
	e.remove("g:club", "a", "b")
	res, err := e.s.Send(t.Context(), e.req("g:club", "b", "d1", "cm-g", "bye"))
	if err != nil || !res.Duplicate || !proto.Equal(res.Message, orig.Message) {
		t.Fatalf("resend after leaving: %v dup=%v %s", err, res.Duplicate, fmtMsg(res.Message))
	}
	CheckConsistent(t, e.s, []string{conv, "g:club"}, []string{"a", "b"})
}

func testIdempotentConcurrent(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("a", "b")
	const rounds, n = 10, 16
	// Background traffic keeps the store busy, so that the duplicates of a
	// round arrive together while an earlier write is in progress and are
	// sequenced together (in one batch, for a group-committing store).
	stop := make(chan struct{})
	var bg sync.WaitGroup
	bg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := e.s.Send(t.Context(), e.req(store.DirectConv("x", "y"), "x", "d", fmt.Sprint(i), "bg")); err != nil {
				t.Errorf("background send: %v", err)
				return
			}
		}
	})
	defer bg.Wait()
	defer close(stop)
	for round := range rounds {
		results := make([]store.Result, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start // all at once, so that the sends share write batches
				results[i], errs[i] = e.s.Send(t.Context(), e.req(conv, "a", "d1", fmt.Sprint("same", round), fmt.Sprint(i)))
			})
		}
		close(start)
		wg.Wait()
		originals := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d send %d: %v", round, i, errs[i])
			}
			if !results[i].Duplicate {
				originals++
			}
			if results[i].Message.Seq != uint64(round+1) {
				t.Fatalf("round %d send %d: seq %d", round, i, results[i].Message.Seq)
			}
		}
		if originals != 1 {
			t.Fatalf("round %d: %d sends stored a message, want 1", round, originals)
		}
	}
	if h := e.history(conv); len(h) != rounds {
		t.Fatalf("history has %d messages, want %d", len(h), rounds)
	}
	CheckConsistent(t, e.s, []string{conv}, []string{"a", "b"})
}

func testDedupPerDevice(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("a", "b")
	r1 := e.send(conv, "a", "phone", "x", "1")
	r2 := e.send(conv, "a", "laptop", "x", "2")
	r3 := e.send(conv, "b", "phone", "x", "3")
	r4 := e.send(store.DirectConv("a", "c"), "a", "phone", "y", "4")
	for i, r := range []store.Result{r1, r2, r3} {
		if r.Duplicate || r.Message.Seq != uint64(i+1) {
			t.Fatalf("send %d: dup=%v seq=%d", i+1, r.Duplicate, r.Message.Seq)
		}
	}
	if r4.Duplicate || r4.Message.Seq != 1 {
		t.Fatalf("other conversation: dup=%v seq=%d", r4.Duplicate, r4.Message.Seq)
	}
	// Empty client ids are never deduplicated.
	e.send(conv, "a", "phone", "", "no id")
	if r := e.send(conv, "a", "phone", "", "no id"); r.Duplicate || r.Message.Seq != 5 {
		t.Fatalf("empty client id: dup=%v seq=%d", r.Duplicate, r.Message.Seq)
	}
	if h := e.head("a"); h != 6 {
		t.Fatalf("head a = %d, want 6", h)
	}
}

// testConcurrentGapFree: 16 goroutines x 200 sends into a few conversations.
func testConcurrentGapFree(t *testing.T, open Opener) {
	e := newEnv(t, open)
	users := []string{"u0", "u1", "u2", "u3", "u4"}
	e.create("g:all", "u0", "u1", "u2", "u3", "u4")
	e.create("g:few", "u1", "u2", "u3")
	convs := []string{"g:all", "g:few", store.DirectConv("u0", "u1"), store.DirectConv("u1", "u2"), store.DirectConv("u3", "u3")}
	type sender struct{ conv, user string }
	senders := []sender{
		{"g:all", "u0"}, {"g:all", "u4"}, {"g:few", "u2"}, {"g:few", "u3"},
		{convs[2], "u0"}, {convs[2], "u1"}, {convs[3], "u2"}, {convs[4], "u3"},
	}
	const workers, each = 16, 200
	var wg sync.WaitGroup
	results := make([][]store.Result, workers)
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				sd := senders[(w+i)%len(senders)]
				res, err := e.s.Send(t.Context(), e.req(sd.conv, sd.user, fmt.Sprintf("d%d", w), fmt.Sprintf("w%d-%d", w, i), "x"))
				if err != nil {
					errs[w] = err
					return
				}
				results[w] = append(results[w], res)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	total := 0
	for _, c := range convs {
		total += len(e.history(c))
	}
	if want := workers*each + 2; total != want {
		t.Fatalf("%d messages stored, want %d", total, want)
	}
	CheckConsistent(t, e.s, convs, users)
	checkResults(t, e.s, results)
	// A sender device's messages are in the order it sent them.
	for w := range workers {
		last := make(map[string]uint64)
		for _, r := range results[w] {
			if r.Message.Seq <= last[r.Message.Conv] {
				t.Fatalf("worker %d: %s/%d after %d", w, r.Message.Conv, r.Message.Seq, last[r.Message.Conv])
			}
			last[r.Message.Conv] = r.Message.Seq
		}
	}
}

// checkResults checks that the events a write returned are the ones stored.
func checkResults(t *testing.T, s store.Store, results [][]store.Result) {
	t.Helper()
	tls := make(map[string][]*pimv1.Event)
	for _, rs := range results {
		for _, r := range rs {
			for _, d := range r.Deliveries {
				tl, ok := tls[d.User]
				if !ok {
					tl = readTimeline(t, s, d.User)
					tls[d.User] = tl
				}
				us := d.Event.UserSeq
				if us == 0 || us > uint64(len(tl)) || !proto.Equal(tl[us-1], d.Event) {
					t.Fatalf("delivery of %s to %s at %d is not in the timeline", fmtMsg(r.Message), d.User, us)
				}
			}
		}
	}
}

// testConcurrentMixed: sends, membership changes and acks at once; then
// every message must be in the timeline of exactly its recipients.
func testConcurrentMixed(t *testing.T, open Opener) {
	e := newEnv(t, open)
	users := []string{"o0", "o1", "c0", "c1", "c2", "c3", "c4", "c5"}
	groups := []string{"g:one", "g:two"}
	for _, g := range groups {
		e.create(g, "o0", "o1")
	}
	dm := store.DirectConv("c0", "o0")
	var wg sync.WaitGroup
	var failed atomic.Value
	fail := func(err error) { failed.CompareAndSwap(nil, err) }
	const rounds = 60
	// Stable members send.
	for w := range 6 {
		wg.Go(func() {
			for i := range rounds {
				g := groups[(w+i)%2]
				if w == 5 {
					g = dm
				}
				u := users[w%2]
				if w == 5 {
					u = "o0"
				}
				if _, err := e.s.Send(t.Context(), e.req(g, u, "d", fmt.Sprintf("s%d-%d", w, i), "m")); err != nil {
					fail(fmt.Errorf("send: %w", err))
				}
			}
		})
	}
	// Churners join and leave; while in, they send too.
	for w := range 2 {
		wg.Go(func() {
			for i := range rounds / 2 {
				g := groups[(w+i)%2]
				c := users[2+(w*3+i)%6]
				if _, err := e.s.AddMembers(t.Context(), e.change(g, "o0", c, users[2+(i%6)])); err != nil {
					fail(fmt.Errorf("add: %w", err))
				}
				_, err := e.s.Send(t.Context(), e.req(g, c, "d", fmt.Sprintf("c%d-%d", w, i), "m"))
				if err != nil && !errors.Is(err, store.ErrNotMember) {
					fail(fmt.Errorf("churner send: %w", err))
				}
				if _, err := e.s.RemoveMembers(t.Context(), e.change(g, "o1", c)); err != nil {
					fail(fmt.Errorf("remove: %w", err))
				}
			}
		})
	}
	// Readers ack what they see.
	for w := range 2 {
		wg.Go(func() {
			for i := range rounds {
				u := users[(w+i)%len(users)]
				evs, head, err := e.s.Timeline(t.Context(), u, 0, 1000)
				if err != nil {
					fail(fmt.Errorf("timeline: %w", err))
					return
				}
				if uint64(len(evs)) != head {
					fail(fmt.Errorf("timeline %s: %d events, head %d", u, len(evs), head))
				}
				c, err := e.s.Ack(t.Context(), u, "d", head)
				if err != nil || c < head {
					fail(fmt.Errorf("ack %s %d: %d %v", u, head, c, err))
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	CheckConsistent(t, e.s, append(groups, dm), users)
	e.reopen()
	CheckConsistent(t, e.s, append(groups, dm), users)
}

func testCursors(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("a", "b")
	for i := range 5 {
		e.send(conv, "b", "x", fmt.Sprint(i), "m")
	}
	if c := e.cursor("a", "phone"); c != 0 {
		t.Fatalf("new cursor = %d", c)
	}
	steps := []struct {
		dev       string
		ack, want uint64
	}{
		{"phone", 3, 3},
		{"phone", 2, 3},  // never backwards
		{"laptop", 1, 1}, // independent per device
		{"phone", 0, 3},
		{"phone", 100, 5}, // clamped to head
		{"laptop", 4, 4},
	}
	for _, s := range steps {
		if got := e.ack("a", s.dev, s.ack); got != s.want {
			t.Fatalf("ack a/%s %d = %d, want %d", s.dev, s.ack, got, s.want)
		}
	}
	if c := e.cursor("a", "phone"); c != 5 {
		t.Fatalf("cursor a/phone = %d", c)
	}
	if c := e.cursor("b", "phone"); c != 0 {
		t.Fatalf("cursor b/phone = %d: users share cursors", c)
	}
	if c := e.ack("nobody", "d", 10); c != 0 {
		t.Fatalf("ack of a user with no events = %d", c)
	}
	e.reopen()
	if c := e.cursor("a", "phone"); c != 5 {
		t.Fatalf("cursor a/phone after reopen = %d", c)
	}
	if c := e.cursor("a", "laptop"); c != 4 {
		t.Fatalf("cursor a/laptop after reopen = %d", c)
	}
	e.send(conv, "b", "x", "more", "m")
	if c := e.ack("a", "phone", 100); c != 6 {
		t.Fatalf("ack after a new message = %d", c)
	}
}

func testCursorsConcurrent(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("a", "b")
	for i := range 50 {
		e.send(conv, "b", "x", fmt.Sprint(i), "m")
	}
	const devices, acks = 10, 50
	var wg sync.WaitGroup
	var failed atomic.Value
	var highest [devices]atomic.Uint64 // the highest cursor an ack returned
	for w := range 16 {
		wg.Go(func() {
			for d := range devices {
				dev := fmt.Sprint("dev", d)
				var last uint64
				for i := range acks {
					seq := uint64(i + (w+d)%5) // creeping up: most acks move it
					c, err := e.s.Ack(t.Context(), "a", dev, seq)
					if err != nil || c < last || c < min(seq, 50) || c > 50 {
						failed.CompareAndSwap(nil, fmt.Errorf("ack %s %d = %d (%v) after %d", dev, seq, c, err, last))
						return
					}
					// No concurrent ack may have moved it back since.
					now, err := e.s.Cursor(t.Context(), "a", dev)
					if err != nil || now < c {
						failed.CompareAndSwap(nil, fmt.Errorf("cursor %s %d (%v) right after ack returned %d", dev, now, err, c))
						return
					}
					last = c
					for h := highest[d].Load(); c > h && !highest[d].CompareAndSwap(h, c); h = highest[d].Load() {
					}
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	for d := range devices {
		if c := e.cursor("a", fmt.Sprint("dev", d)); c != highest[d].Load() {
			t.Fatalf("cursor dev%d = %d, but an ack returned %d", d, c, highest[d].Load())
		}
	}
}

func testMembership(t *testing.T, open Opener) {
	e := newEnv(t, open)
	const g = "g:team"
	ctx := t.Context()
	r := e.create(g, "a", "b", "a", "b")
	if r.Message.Seq != 1 || r.Message.Type != pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED ||
		!slices.Equal(r.Message.Members, []string{"a", "b"}) || r.Message.Sender != "a" {
		t.Fatalf("create: %s", fmtMsg(r.Message))
	}
	if got := deliveredTo(r); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("create delivered to %v", got)
	}
	want := []store.Member{{User: "a", JoinSeq: 1, Role: "owner"}, {User: "b", JoinSeq: 1, Role: "member"}}
	if ms := e.members(g); !slices.Equal(ms, want) {
		t.Fatalf("members: %v", ms)
	}
	e.send(g, "a", "d", "1", "m2")
	e.send(g, "b", "d", "2", "m3")

	r = e.add(g, "b", "c", "a") // a is already in
	if r.Message.Seq != 4 || r.Message.Type != pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED || !slices.Equal(r.Message.Members, []string{"c"}) {
		t.Fatalf("add: %s", fmtMsg(r.Message))
	}
	if got := deliveredTo(r); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("add delivered to %v", got)
	}
	if mb, ok, err := e.s.Membership(ctx, g, "c"); err != nil || !ok || mb != (store.Member{User: "c", JoinSeq: 4, Role: "member"}) {
		t.Fatalf("membership c: %v %v %v", mb, ok, err)
	}
	e.send(g, "c", "d", "3", "m5")
	r = e.remove(g, "a", "b", "zed")
	if r.Message.Seq != 6 || r.Message.Type != pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED || !slices.Equal(r.Message.Members, []string{"b"}) {
		t.Fatalf("remove: %s", fmtMsg(r.Message))
	}
	if got := deliveredTo(r); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("remove delivered to %v, want the removed user too", got)
	}
	r = e.send(g, "a", "d", "4", "m7")
	if got := deliveredTo(r); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("after removal delivered to %v", got)
	}
	if got := convSeqs(e.timeline("a"), g); !slices.Equal(got, seqRange(1, 7)) {
		t.Fatalf("a sees %v", got)
	}
	if got := convSeqs(e.timeline("b"), g); !slices.Equal(got, seqRange(1, 6)) {
		t.Fatalf("b (removed at 6) sees %v", got)
	}
	if got := convSeqs(e.timeline("c"), g); !slices.Equal(got, seqRange(4, 7)) {
		t.Fatalf("c (added at 4) sees %v", got)
	}
	if _, ok, err := e.s.Membership(ctx, g, "b"); err != nil || ok {
		t.Fatalf("membership b after removal: %v %v", ok, err)
	}
	_, err := e.s.Send(ctx, e.req(g, "b", "d", "5", "let me in"))
	mustErr(t, "send by removed member", err, store.ErrNotMember)
	_, err = e.s.Send(ctx, e.req(g, "x", "d", "5", "hi"))
	mustErr(t, "send by stranger", err, store.ErrNotMember)
	_, err = e.s.Send(ctx, e.req(store.DirectConv("a", "b"), "x", "d", "5", "hi"))
	mustErr(t, "send into someone else's direct conversation", err, store.ErrNotMember)

	// Re-adding starts a new visible range.
	r = e.add(g, "c", "b")
	if ms := e.members(g); !slices.Equal(ms, []store.Member{
		{User: "a", JoinSeq: 1, Role: "owner"}, {User: "b", JoinSeq: 8, Role: "member"}, {User: "c", JoinSeq: 4, Role: "member"},
	}) {
		t.Fatalf("members after re-adding b: %v", ms)
	}
	e.send(g, "b", "d", "6", "back")
	if got := convSeqs(e.timeline("b"), g); !slices.Equal(got, append(seqRange(1, 6), 8, 9)) {
		t.Fatalf("b (removed at 6, re-added at 8) sees %v", got)
	}
	// The owner may leave.
	e.remove(g, "a", "a")
	if _, ok, _ := e.s.Membership(ctx, g, "a"); ok {
		t.Fatal("a is still a member after leaving")
	}
	CheckConsistent(t, e.s, []string{g}, []string{"a", "b", "c", "x", "zed"})
	e.reopen()
	CheckConsistent(t, e.s, []string{g}, []string{"a", "b", "c", "x", "zed"})
}

func testGroupErrors(t *testing.T, open Opener) {
	e := newEnv(t, open)
	ctx := t.Context()
	e.create("g:a", "a", "b")
	heads := func() []uint64 {
		return []uint64{e.head("a"), e.head("b"), e.head("c"), e.head("d"), e.head("e")}
	}
	before := heads()
	_, err := e.s.CreateGroup(ctx, e.change("g:a", "c"))
	mustErr(t, "create existing", err, store.ErrExists)
	_, err = e.s.Send(ctx, e.req("g:nope", "a", "d", "1", "x"))
	mustErr(t, "send to unknown group", err, store.ErrNotFound)
	_, err = e.s.AddMembers(ctx, e.change("g:nope", "a", "b"))
	mustErr(t, "add to unknown group", err, store.ErrNotFound)
	_, err = e.s.RemoveMembers(ctx, e.change("g:nope", "a", "b"))
	mustErr(t, "remove from unknown group", err, store.ErrNotFound)
	_, err = e.s.AddMembers(ctx, e.change(store.DirectConv("a", "b"), "a", "c"))
	mustErr(t, "add to a direct conversation", err, store.ErrNotFound)
	_, err = e.s.Members(ctx, "g:nope")
	mustErr(t, "members of unknown group", err, store.ErrNotFound)
	_, _, err = e.s.Membership(ctx, "g:nope", "a")
	mustErr(t, "membership of unknown group", err, store.ErrNotFound)
	_, _, err = e.s.History(ctx, "g:nope", 0, 0, 10)
	mustErr(t, "history of unknown group", err, store.ErrNotFound)
	_, err = e.s.AddMembers(ctx, e.change("g:a", "c", "d"))
	mustErr(t, "add by non-member", err, store.ErrNotMember)
	_, err = e.s.RemoveMembers(ctx, e.change("g:a", "c", "b"))
	mustErr(t, "remove by non-member", err, store.ErrNotMember)

	// Nothing to do: nothing written.
	if r := e.add("g:a", "a", "b", "a"); r.Message != nil || len(r.Deliveries) != 0 {
		t.Fatalf("add of members: %s", fmtMsg(r.Message))
	}
	if r := e.remove("g:a", "a", "c"); r.Message != nil || len(r.Deliveries) != 0 {
		t.Fatalf("remove of non-members: %s", fmtMsg(r.Message))
	}

	// Size caps.
	ch := e.change("g:small", "a", "b", "c")
	ch.MaxMembers = 2
	_, err = e.s.CreateGroup(ctx, ch)
	mustErr(t, "create over max", err, store.ErrGroupTooLarge)
	_, err = e.s.Members(ctx, "g:small")
	mustErr(t, "members of a group that failed to be created", err, store.ErrNotFound)
	ch.MaxMembers = 3
	if _, err := e.s.CreateGroup(ctx, ch); err != nil {
		t.Fatalf("create at max: %v", err)
	}
	ch = e.change("g:small", "b", "d", "e")
	ch.MaxMembers = 4
	_, err = e.s.AddMembers(ctx, ch)
	mustErr(t, "add over max", err, store.ErrGroupTooLarge)
	if len(e.members("g:small")) != 3 {
		t.Fatal("a refused add changed the group")
	}
	ch.MaxMembers = 5
	if _, err := e.s.AddMembers(ctx, ch); err != nil {
		t.Fatalf("add at max: %v", err)
	}
	if e.history("g:a")[0].Seq != 1 || len(e.history("g:a")) != 1 {
		t.Fatal("refused changes wrote into g:a")
	}
	after := heads()
	// g:small's creation and addition reached a, b, c and then d, e.
	wantAfter := []uint64{before[0] + 2, before[1] + 2, before[2] + 2, before[3] + 1, before[4] + 1}
	if !slices.Equal(after, wantAfter) {
		t.Fatalf("heads %v, want %v: refused changes wrote timeline events", after, wantAfter)
	}
	CheckConsistent(t, e.s, []string{"g:a", "g:small"}, []string{"a", "b", "c", "d", "e"})
}

func testHistoryPaging(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("a", "b")
	for i := range 25 {
		e.send(conv, "a", "d", fmt.Sprint(i), fmt.Sprint(i))
	}
	cases := []struct {
		from, before uint64
		limit        int
		lo, hi       uint64 // want seqs lo..hi (none if lo > hi)
		more         bool
	}{
		{0, 0, 10, 16, 25, true},
		{0, 16, 10, 6, 15, true},
		{0, 6, 10, 1, 5, false},
		{0, 0, 100, 1, 25, false},
		{0, 0, 25, 1, 25, false},
		{0, 0, 24, 2, 25, true},
		{1, 0, 24, 2, 25, true},
		{10, 0, 100, 10, 25, false},
		{10, 0, 5, 21, 25, true},
		{10, 12, 5, 10, 11, false},
		{10, 10, 5, 1, 0, false},
		{0, 1, 5, 1, 0, false},
		{30, 0, 5, 1, 0, false},
		{0, 100, 3, 23, 25, true},
		{25, 0, 1, 25, 25, false},
		{24, 0, 1, 25, 25, true},
	}
	for _, c := range cases {
		msgs, more, err := e.s.History(t.Context(), conv, c.from, c.before, c.limit)
		if err != nil {
			t.Fatalf("History(%d, %d, %d): %v", c.from, c.before, c.limit, err)
		}
		var seqs []uint64
		for _, m := range msgs {
			seqs = append(seqs, m.Seq)
			if string(m.Body) != fmt.Sprint(m.Seq-1) {
				t.Fatalf("History: message %d has body %q", m.Seq, m.Body)
			}
		}
		if !slices.Equal(seqs, seqRange(c.lo, c.hi)) || more != c.more {
			t.Fatalf("History(from %d, before %d, limit %d) = %v more=%v, want %d..%d more=%v",
				c.from, c.before, c.limit, seqs, more, c.lo, c.hi, c.more)
		}
	}
}

func testTimelinePaging(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("a", "b")
	for i := range 12 {
		e.send(conv, "a", "d", fmt.Sprint(i), "m")
	}
	cases := []struct {
		after  uint64
		limit  int
		lo, hi uint64
	}{
		{0, 5, 1, 5}, {5, 5, 6, 10}, {10, 5, 11, 12}, {12, 5, 1, 0}, {40, 5, 1, 0}, {3, 1, 4, 4}, {0, 100, 1, 12},
	}
	for _, c := range cases {
		evs, head, err := e.s.Timeline(t.Context(), "b", c.after, c.limit)
		if err != nil || head != 12 {
			t.Fatalf("Timeline(after %d, limit %d): head %d, %v", c.after, c.limit, head, err)
		}
		var seqs []uint64
		for _, ev := range evs {
			seqs = append(seqs, ev.UserSeq)
			if ev.GetMessage().GetSeq() != ev.UserSeq {
				t.Fatalf("event %d carries message %s", ev.UserSeq, fmtMsg(ev.GetMessage()))
			}
		}
		if !slices.Equal(seqs, seqRange(c.lo, c.hi)) {
			t.Fatalf("Timeline(after %d, limit %d) = %v, want %d..%d", c.after, c.limit, seqs, c.lo, c.hi)
		}
	}
}

func testEpoch(t *testing.T, open Opener) {
	e := newEnv(t, open)
	ep := e.s.Epoch()
	if len(ep) < 16 {
		t.Fatalf("epoch %q is too short to be random", ep)
	}
	e.send(store.DirectConv("a", "b"), "a", "d", "1", "m")
	e.reopen()
	if got := e.s.Epoch(); got != ep {
		t.Fatalf("epoch changed across reopen: %q -> %q", ep, got)
	}
	other := newEnv(t, open)
	if other.s.Epoch() == ep {
		t.Fatalf("two data sets share epoch %q", ep)
	}
}

func testReopen(t *testing.T, open Opener) {
	e := newEnv(t, open)
	users := []string{"a", "b", "c"}
	convs := []string{store.DirectConv("a", "b"), "g:g"}
	e.create("g:g", "a", "b", "c")
	for i := range 10 {
		e.send(convs[i%2], users[i%2], "d", fmt.Sprint(i), "m")
	}
	e.remove("g:g", "a", "c")
	e.ack("a", "d1", 4)
	e.ack("b", "d2", 100)
	devices := []string{"d1", "d2"}
	before := dump(t, e.s, convs, users, devices)
	headA := e.head("a")
	e.reopen()
	diffLines(t, "after reopen", dump(t, e.s, convs, users, devices), before)
	r := e.send("g:g", "b", "d", "new", "m")
	if r.Message.Seq != 8 {
		t.Fatalf("conversation seq after reopen = %d, want 8", r.Message.Seq)
	}
	for _, d := range r.Deliveries {
		if d.User == "a" && d.Event.UserSeq != headA+1 {
			t.Fatalf("user seq after reopen = %d, want %d", d.Event.UserSeq, headA+1)
		}
	}
	e.reopen()
	e.reopen()
	CheckConsistent(t, e.s, convs, users)
}

func testClosed(t *testing.T, open Opener) {
	e := newEnv(t, open)
	conv := store.DirectConv("a", "b")
	e.send(conv, "a", "d", "1", "m")
	e.create("g:g", "a", "b")
	s := e.s
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	ctx := t.Context()
	var err error
	_, err = s.Send(ctx, e.req(conv, "a", "d", "2", "m"))
	mustErr(t, "Send", err, store.ErrClosed)
	_, err = s.CreateGroup(ctx, e.change("g:h", "a"))
	mustErr(t, "CreateGroup", err, store.ErrClosed)
	_, err = s.AddMembers(ctx, e.change("g:g", "a", "c"))
	mustErr(t, "AddMembers", err, store.ErrClosed)
	_, err = s.RemoveMembers(ctx, e.change("g:g", "a", "b"))
	mustErr(t, "RemoveMembers", err, store.ErrClosed)
	_, err = s.Members(ctx, "g:g")
	mustErr(t, "Members", err, store.ErrClosed)
	_, _, err = s.Membership(ctx, "g:g", "a")
	mustErr(t, "Membership", err, store.ErrClosed)
	_, _, err = s.Timeline(ctx, "a", 0, 10)
	mustErr(t, "Timeline", err, store.ErrClosed)
	_, err = s.Head(ctx, "a")
	mustErr(t, "Head", err, store.ErrClosed)
	_, _, err = s.History(ctx, conv, 0, 0, 10)
	mustErr(t, "History", err, store.ErrClosed)
	_, err = s.Ack(ctx, "a", "d", 1)
	mustErr(t, "Ack", err, store.ErrClosed)
	_, err = s.Cursor(ctx, "a", "d")
	mustErr(t, "Cursor", err, store.ErrClosed)
	mustErr(t, "second Close", s.Close(), store.ErrClosed)
	e.s = open(t, e.dir)
	if h := e.head("a"); h != 2 {
		t.Fatalf("head after reopen = %d", h)
	}
}

// testCloseWhileBusy closes the store under concurrent writes and reads:
// each call either succeeds or fails with ErrClosed, none hangs, and every
// write that succeeded is there after reopening.
func testCloseWhileBusy(t *testing.T, open Opener) {
	e := newEnv(t, open)
	users := []string{"a", "b", "c"}
	e.create("g:g", "a", "b", "c")
	convs := []string{"g:g", store.DirectConv("a", "b")}
	s := e.s
	const workers = 8
	started := make(chan struct{})
	var startOnce sync.Once
	var okCount atomic.Int64
	var wg sync.WaitGroup
	results := make([][]store.Result, workers)
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				var err error
				if w%4 == 3 {
					_, _, err = s.Timeline(t.Context(), users[i%3], 0, 50)
				} else {
					var r store.Result
					r, err = s.Send(t.Context(), e.req(convs[i%2], users[w%2], fmt.Sprint(w), fmt.Sprint(i), "m"))
					if err == nil {
						results[w] = append(results[w], r)
					}
				}
				if err != nil {
					errs[w] = err
					return
				}
				if okCount.Add(1) >= 40 {
					startOnce.Do(func() { close(started) })
				}
			}
		})
	}
	<-started
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	wg.Wait()
	for w, err := range errs {
		if !errors.Is(err, store.ErrClosed) {
			t.Fatalf("worker %d ended with %v, want ErrClosed", w, err)
		}
	}
	e.s = open(t, e.dir)
	CheckConsistent(t, e.s, convs, users)
	checkResults(t, e.s, results)
}

func testInvalidInput(t *testing.T, open Opener) {
	e := newEnv(t, open)
	ctx := t.Context()
	expectErr := func(what string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", what)
		}
	}
	_, err := e.s.Send(ctx, e.req("x:nope", "a", "d", "1", "m"))
	expectErr("send to a malformed conversation", err)
	_, err = e.s.Send(ctx, e.req("d:b:a", "a", "d", "1", "m"))
	expectErr("send to an unsorted direct conversation", err)
	_, err = e.s.Send(ctx, e.req(store.DirectConv("a", "b"), "", "d", "1", "m"))
	expectErr("send without sender", err)
	_, err = e.s.CreateGroup(ctx, e.change(store.DirectConv("a", "b"), "a"))
	expectErr("create a group with a direct id", err)
	_, err = e.s.CreateGroup(ctx, e.change("g:ok", "a", "bad user"))
	expectErr("create a group with a malformed user", err)
	if h := e.head("a"); h != 0 {
		t.Fatalf("invalid input wrote %d events", h)
	}
}

func testCanceled(t *testing.T, open Opener) {
	e := newEnv(t, open)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := e.s.Send(ctx, e.req(store.DirectConv("a", "b"), "a", "d", "1", "m"))
	mustErr(t, "send with a canceled context", err, context.Canceled)
	_, _, err = e.s.Timeline(ctx, "a", 0, 10)
	mustErr(t, "timeline with a canceled context", err, context.Canceled)
	if r := e.send(store.DirectConv("a", "b"), "a", "d", "2", "m"); r.Message.Seq != 1 {
		t.Fatalf("seq after a canceled send = %d", r.Message.Seq)
	}
}

// A group change with a client id is applied once: a retry, even after
// later changes, a restart, or the actor's own leaving, returns the original
// message and writes nothing.
func testIdempotentGroupChanges(t *testing.T, open Opener) {
	e := newEnv(t, open)
	ctx := t.Context()
	withID := func(ch store.GroupChange, id string) store.GroupChange {
		ch.ClientMsgID = id
		return ch
	}
	create := withID(e.change("g:team", "alice", "bob"), "c1")
	first, err := e.s.CreateGroup(ctx, create)
	if err != nil {
		t.Fatal(err)
	}
	add := withID(e.change("g:team", "bob", "carol"), "a1")
	added, err := e.s.AddMembers(ctx, add)
	if err != nil {
		t.Fatal(err)
	}
	leave := withID(e.change("g:team", "carol", "carol"), "l1")
	left, err := e.s.RemoveMembers(ctx, leave)
	if err != nil {
		t.Fatal(err)
	}
	heads := map[string]uint64{"alice": e.head("alice"), "bob": e.head("bob"), "carol": e.head("carol")}
	e.reopen()
	retries := []struct {
		name string
		do   func() (store.Result, error)
		want store.Result
	}{
		{"create", func() (store.Result, error) { return e.s.CreateGroup(ctx, create) }, first},
		{"add", func() (store.Result, error) { return e.s.AddMembers(ctx, add) }, added},
		{"leave after leaving", func() (store.Result, error) { return e.s.RemoveMembers(ctx, leave) }, left},
	}
	for _, r := range retries {
		res, err := r.do()
		if err != nil {
			t.Fatalf("retry %s: %v", r.name, err)
		}
		if !res.Duplicate || len(res.Deliveries) != 0 || res.Message.GetSeq() != r.want.Message.GetSeq() ||
			res.Message.GetClientMsgId() != r.want.Message.GetClientMsgId() {
			t.Fatalf("retry %s = %s (dup %v, %d deliveries), want the original %s",
				r.name, fmtMsg(res.Message), res.Duplicate, len(res.Deliveries), fmtMsg(r.want.Message))
		}
	}
	for u, h := range heads {
		if got := e.head(u); got != h {
			t.Fatalf("%s's head moved from %d to %d on retries", u, h, got)
		}
	}
	if got := e.history("g:team"); len(got) != 3 {
		t.Fatalf("group has %d messages after retries, want 3", len(got))
	}
}

// Read positions only move forward, are capped at the head, reach the
// reader's timeline (and the peer's in a 1:1) once per move, survive a
// reopen, and are refused to non-members.
func testReadPositions(t *testing.T, open Opener) {
	e := newEnv(t, open)
	ctx := t.Context()
	dm := store.DirectConv("alice", "bob")
	for i := range 3 {
		e.send(dm, "bob", "phone", fmt.Sprintf("b%d", i), "hi")
	}
	e.create("g:team", "alice", "bob", "carol")
	e.send("g:team", "bob", "phone", "g1", "group hi")
	heads := func() [3]uint64 { return [3]uint64{e.head("alice"), e.head("bob"), e.head("carol")} }
	before := heads()

	steps := []struct {
		user, conv string
		seq, want  uint64
		moved      bool
	}{
		{"alice", dm, 2, 2, true},
		{"alice", dm, 2, 2, false}, // repeated
		{"alice", dm, 1, 2, false}, // late: never moves back
		{"alice", dm, 99, 3, true}, // capped at the head
		{"carol", "g:team", 2, 2, true},
		{"carol", "g:team", 0, 2, false},
	}
	for i, st := range steps {
		pos, res, err := e.s.MarkRead(ctx, st.user, "pc", st.conv, st.seq)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if pos != st.want || (len(res.Deliveries) > 0) != st.moved {
			t.Fatalf("step %d: MarkRead(%s, %s, %d) = %d with %d deliveries, want %d (moved %v)",
				i, st.user, st.conv, st.seq, pos, len(res.Deliveries), st.want, st.moved)
		}
	}
	after := heads()
	// alice: 2 moves in the 1:1; bob: the same 2 as receipts; carol: 1 (groups do not fan out).
	if after[0]-before[0] != 2 || after[1]-before[1] != 2 || after[2]-before[2] != 1 {
		t.Fatalf("timeline growth %v -> %v, want +2 +2 +1", before, after)
	}
	evs := e.timeline("bob")
	last := evs[len(evs)-1].GetRead()
	if last == nil || last.Conv != dm || last.Seq != 3 || last.User != "alice" || last.Device != "pc" {
		t.Fatalf("bob's last event = %s, want alice's read receipt up to 3", fmtEvent(evs[len(evs)-1]))
	}
	e.reopen()
	if pos, err := e.s.ReadPosition(ctx, "alice", dm); err != nil || pos != 3 {
		t.Fatalf("after reopen: ReadPosition = %d, %v", pos, err)
	}
	if pos, _, err := e.s.MarkRead(ctx, "alice", "pc", dm, 3); err != nil || pos != 3 {
		t.Fatalf("after reopen: MarkRead = %d, %v", pos, err)
	}
	if _, _, err := e.s.MarkRead(ctx, "dave", "pc", "g:team", 1); !errors.Is(err, store.ErrNotMember) {
		t.Fatalf("non-member read: %v", err)
	}
	if _, _, err := e.s.MarkRead(ctx, "dave", "pc", dm, 1); !errors.Is(err, store.ErrNotMember) {
		t.Fatalf("outsider read of a 1:1: %v", err)
	}
	if _, _, err := e.s.MarkRead(ctx, "dave", "pc", "g:none", 1); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("read of an unknown group: %v", err)
	}
}
