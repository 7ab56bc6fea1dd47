// Conformance cases of the read state: conversation lists and exact unread
// counts, receipts (read, delivered, turned off) and delete-for-me. The
// model test covers random interleavings; these pin the semantics down with
// values written out.
package storetest

import (
	"fmt"
	"testing"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// conv returns user's entry for conv, failing if there is none.
func (e *env) conv(user, conv string) *pimv1.Conversation {
	e.t.Helper()
	cs, _, _, err := e.s.Conversations(e.t.Context(), user, store.ConvQuery{Limit: 1000})
	if err != nil {
		e.t.Fatalf("conversations of %s: %v", user, err)
	}
	for _, c := range cs {
		if c.Conv == conv {
			return c
		}
	}
	e.t.Fatalf("conversations of %s: no entry for %s", user, conv)
	return nil
}

func (e *env) markRead(user, device, conv string, seq uint64) (uint64, store.Result) {
	e.t.Helper()
	pos, res, err := e.s.MarkRead(e.t.Context(), user, device, conv, seq)
	if err != nil {
		e.t.Fatalf("mark read %s %s %d: %v", user, conv, seq, err)
	}
	return pos, res
}

func testUnreadCounts(t *testing.T, open Opener) {
	e := newEnv(t, open)
	dm := store.DirectConv("alice", "bob")
	for i := range 3 {
		e.send(dm, "alice", "a1", fmt.Sprintf("a%d", i), "hi")
	}
	e.send(dm, "bob", "b1", "b0", "yo")
	if c := e.conv("bob", dm); c.Unread != 3 || c.LastSeq != 4 || c.ReadSeq != 0 {
		t.Fatalf("bob: unread %d last %d read %d, want 3 4 0", c.Unread, c.LastSeq, c.ReadSeq)
	}
	if c := e.conv("alice", dm); c.Unread != 1 {
		t.Fatalf("alice: own messages counted: unread %d, want 1", c.Unread)
	}
	e.markRead("bob", "b2", dm, 2)
	if c := e.conv("bob", dm); c.Unread != 1 || c.ReadSeq != 2 {
		t.Fatalf("bob after reading 2: unread %d read %d, want 1 2", c.Unread, c.ReadSeq)
	}
	if c := e.conv("alice", dm); c.PeerReadSeq != 2 {
		t.Fatalf("alice: peer read %d, want 2 (a read receipt)", c.PeerReadSeq)
	}
	// A late read changes nothing.
	if pos, res := e.markRead("bob", "b1", dm, 1); pos != 2 || len(res.Deliveries) != 0 {
		t.Fatalf("late read: pos %d deliveries %d, want 2 0", pos, len(res.Deliveries))
	}

	// Groups: a member's count starts at their join point; membership
	// messages do not count.
	e.create("g:x", "alice", "bob")
	e.send("g:x", "alice", "a1", "ga0", "before carol")
	e.add("g:x", "bob", "carol")
	e.send("g:x", "alice", "a1", "ga1", "after carol")
	if c := e.conv("carol", "g:x"); c.Unread != 1 || c.JoinSeq != 3 {
		t.Fatalf("carol: unread %d join %d, want 1 3", c.Unread, c.JoinSeq)
	}
	if c := e.conv("bob", "g:x"); c.Unread != 2 {
		t.Fatalf("bob in g:x: unread %d, want 2", c.Unread)
	}
	// Sorted by activity, newest first.
	cs, _, _, err := e.s.Conversations(t.Context(), "bob", store.ConvQuery{Limit: 10})
	if err != nil || len(cs) != 2 || cs[0].Conv != "g:x" || cs[1].Conv != dm {
		t.Fatalf("bob's list: %v %v, want g:x then %s", cs, err, dm)
	}
	if cs[0].LastMessage.GetBody() == nil || string(cs[0].LastMessage.Body) != "after carol" {
		t.Fatalf("bob's g:x last message %v", cs[0].LastMessage)
	}
}

func testConvListSince(t *testing.T, open Opener) {
	e := newEnv(t, open)
	const n = 40
	for i := range n {
		e.send(store.DirectConv("me", fmt.Sprintf("p%02d", i)), fmt.Sprintf("p%02d", i), "d", "c", "hello")
	}
	_, _, v, err := e.s.Conversations(t.Context(), "me", store.ConvQuery{Limit: 1})
	if err != nil || v != n {
		t.Fatalf("version %d %v, want %d", v, err, n)
	}
	e.send(store.DirectConv("me", "p07"), "p07", "d", "c2", "again")
	e.markRead("me", "d", store.DirectConv("me", "p20"), 1)
	e.send(store.DirectConv("me", "p33"), "me", "d", "c3", "reply")
	cs, more, v2, err := e.s.Conversations(t.Context(), "me", store.ConvQuery{SinceVersion: v, Limit: 100})
	if err != nil || more || v2 != n+3 || len(cs) != 3 {
		t.Fatalf("since %d: %d entries more=%v version %d %v, want the 3 changed", v, len(cs), more, v2, err)
	}
	for i, want := range []string{"p07", "p20", "p33"} {
		if cs[i].Conv != store.DirectConv("me", want) || cs[i].Version != v+uint64(i)+1 {
			t.Fatalf("change %d: %s v%d, want %s v%d", i, cs[i].Conv, cs[i].Version, want, v+uint64(i)+1)
		}
	}
	// Paging by activity reaches every entry once.
	seen := make(map[string]bool)
	var before uint64
	for {
		cs, more, _, err := e.s.Conversations(t.Context(), "me", store.ConvQuery{BeforeActivity: before, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if seen[c.Conv] || (before > 0 && c.Activity >= before) {
				t.Fatalf("paging: %s repeated or out of order", c.Conv)
			}
			seen[c.Conv] = true
			before = c.Activity
		}
		if !more {
			break
		}
	}
	if len(seen) != n {
		t.Fatalf("paging saw %d entries, want %d", len(seen), n)
	}
}

func testReceipts(t *testing.T, open Opener) {
	e := newEnv(t, open)
	users := []string{"m1", "m2", "m3", "m4", "m5"}
	e.create("g:r", "owner", users...)
	msg := e.send("g:r", "owner", "o1", "x", "read me").Message.Seq
	e.send("g:r", "m1", "d", "y", "me too")
	e.markRead("owner", "o1", "g:r", 3) // the sender's own read is not a receipt
	for _, u := range []string{"m3", "m1", "m4"} {
		e.markRead(u, "d", "g:r", msg)
	}
	n, page, more, err := e.s.Receipts(t.Context(), "g:r", msg, "", 2)
	if err != nil || n != 3 || fmt.Sprint(page) != "[m1 m3]" || !more {
		t.Fatalf("receipts: %d %v %v %v, want 3 [m1 m3] more", n, page, more, err)
	}
	if _, page, more, _ = e.s.Receipts(t.Context(), "g:r", msg, "m3", 2); fmt.Sprint(page) != "[m4]" || more {
		t.Fatalf("receipts page 2: %v %v, want [m4]", page, more)
	}
	// Coalesced notification: one event for each sender, with counts.
	res, err := e.s.NotifyReads(t.Context(), "g:r", 0, 3)
	if err != nil || len(res.Deliveries) != 2 {
		t.Fatalf("notify reads: %v %v, want one event each for m1 and owner", res.Deliveries, err)
	}
	for _, d := range res.Deliveries {
		r := d.Event.GetReceipt()
		want := map[string]string{"owner": "[2:3]", "m1": "[3:1]"}[d.User]
		got := ""
		for _, m := range r.GetMessages() {
			got += fmt.Sprintf("%d:%d", m.Seq, m.ReadCount)
		}
		if "["+got+"]" != want {
			t.Fatalf("receipt to %s: %s, want %s", d.User, got, want)
		}
	}

	// Group settings: off by default, kept, unknown groups refused.
	if gs, err := e.s.GroupSettings(t.Context(), "g:r"); err != nil || gs.ReceiptsVisible {
		t.Fatalf("default group settings %+v %v", gs, err)
	}
	if err := e.s.SetGroupSettings(t.Context(), "g:r", store.GroupSettings{ReceiptsVisible: true}); err != nil {
		t.Fatal(err)
	}
	if gs, err := e.s.GroupSettings(t.Context(), "g:r"); err != nil || !gs.ReceiptsVisible {
		t.Fatalf("group settings after setting %+v %v", gs, err)
	}
	if err := e.s.SetGroupSettings(t.Context(), "g:nope", store.GroupSettings{}); errName(err) != store.ErrNotFound.Error() {
		t.Fatalf("settings of an unknown group: %v, want not found", err)
	}

	// A member who joined after the message does not count as its reader.
	e.add("g:r", "owner", "late")
	e.markRead("late", "d", "g:r", 10)
	if n, _, _, _ := e.s.Receipts(t.Context(), "g:r", msg, "", 10); n != 3 {
		t.Fatalf("receipts after a later member read: %d, want 3", n)
	}

	// Turned off: m5's read is not counted; nor does the 1:1 peer learn.
	if err := e.s.SetReadReceipts(t.Context(), "m5", false); err != nil {
		t.Fatal(err)
	}
	e.markRead("m5", "d", "g:r", msg)
	if n, _, _, _ := e.s.Receipts(t.Context(), "g:r", msg, "", 10); n != 3 {
		t.Fatalf("receipts with m5's off: %d, want 3", n)
	}
	dm := store.DirectConv("m5", "owner")
	e.send(dm, "owner", "o1", "z", "psst")
	if _, res := e.markRead("m5", "d", dm, 1); len(res.Deliveries) != 1 || res.Deliveries[0].User != "m5" {
		t.Fatalf("read with receipts off went to %v, want m5 only", res.Deliveries)
	}
	if on, err := e.s.ReadReceipts(t.Context(), "m5"); on || err != nil {
		t.Fatalf("m5 receipts on=%v %v", on, err)
	}
	// Reads made while either has receipts off are not reported either way.
	e.markRead("owner", "o1", dm, 1)
	if c := e.conv("m5", dm); c.PeerReadSeq != 0 {
		t.Fatalf("m5 (receipts off) sees owner's read position %d", c.PeerReadSeq)
	}
	if c := e.conv("owner", dm); c.PeerReadSeq != 0 {
		t.Fatalf("owner sees the read position %d of m5, whose receipts are off", c.PeerReadSeq)
	}

	// Delivered: bob's device acknowledging alice's message tells alice, once.
	ab := store.DirectConv("alice", "bob")
	e.send(ab, "alice", "a", "1", "one")
	e.send(ab, "alice", "a", "2", "two")
	res, err = e.s.MarkDelivered(t.Context(), "bob", e.head("bob"))
	if err != nil || len(res.Deliveries) != 1 || res.Deliveries[0].User != "alice" ||
		res.Deliveries[0].Event.GetReceipt().GetSeq() != 2 {
		t.Fatalf("delivered: %v %v, want one receipt up to 2 for alice", res.Deliveries, err)
	}
	if c := e.conv("alice", ab); c.PeerDeliveredSeq != 2 {
		t.Fatalf("alice's peer delivered %d, want 2", c.PeerDeliveredSeq)
	}
	if res, _ = e.s.MarkDelivered(t.Context(), "bob", e.head("bob")); len(res.Deliveries) != 0 {
		t.Fatalf("second delivered: %v, want none", res.Deliveries)
	}
}

func testHide(t *testing.T, open Opener) {
	e := newEnv(t, open)
	dm := store.DirectConv("alice", "bob")
	for i := range 3 {
		e.send(dm, "alice", "a", fmt.Sprint(i), "m")
	}
	res, err := e.s.Hide(t.Context(), "bob", "b2", dm, 2)
	if err != nil || len(res.Deliveries) != 1 || res.Deliveries[0].Event.GetHidden().GetSeq() != 2 {
		t.Fatalf("hide: %v %v", res.Deliveries, err)
	}
	// A hidden message is not unread; the entry's change is versioned.
	if c := e.conv("bob", dm); c.Unread != 2 || c.Version != res.Deliveries[0].Event.UserSeq {
		t.Fatalf("bob's entry after hiding: unread %d version %d, want 2 and %d", c.Unread, c.Version, res.Deliveries[0].Event.UserSeq)
	}
	e.markRead("bob", "b1", dm, 1)
	if c := e.conv("bob", dm); c.Unread != 1 {
		t.Fatalf("bob's unread after reading 1 with 2 hidden: %d, want 1", c.Unread)
	}
	if res, err = e.s.Hide(t.Context(), "bob", "b1", dm, 2); err != nil || len(res.Deliveries) != 0 {
		t.Fatalf("hide again: %v %v, want nothing written", res.Deliveries, err)
	}
	if h, err := e.s.HiddenIn(t.Context(), "bob", dm, 0, 0); err != nil || fmt.Sprint(h) != "[2]" {
		t.Fatalf("bob hidden %v %v", h, err)
	}
	if h, _ := e.s.HiddenIn(t.Context(), "alice", dm, 0, 0); len(h) != 0 {
		t.Fatalf("alice hidden %v: delete-for-me leaked to the peer", h)
	}
	if _, err := e.s.Hide(t.Context(), "bob", "b1", dm, 9); errName(err) != store.ErrNotFound.Error() {
		t.Fatalf("hide a missing message: %v, want not found", err)
	}
	if _, err := e.s.Hide(t.Context(), "carol", "c", dm, 1); errName(err) != store.ErrNotMember.Error() {
		t.Fatalf("hide in someone else's conversation: %v, want not member", err)
	}
}
