// The read state through the SDK against a real in-process server: the
// local conversation list, delete-for-me, receipts and settings.
//
// Invariants checked: after convergence every device's Conversations()
// equals the server's list (unread, read, peer read and delivered
// positions, versions), also for a device that was offline while another
// device of its user read and hid messages; a hide issued offline survives
// a restart, is applied once after reconnecting, reaches every device of
// the user once, and removes the message from History and Messages; group
// read counts arrive as READ receipts and Receipts names the readers;
// SetReadReceipts is an offline command that ReadReceipts reads back.

package pim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/pim-project/pim/internal/server"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// serverList is user's conversation list as the server has it.
func serverList(t *testing.T, srv *server.Server, user string) map[string]*pimv1.Conversation {
	t.Helper()
	resp, err := srv.Logic().Conversations(context.Background(), user, &pimv1.ConvListReq{Limit: 1000})
	if err != nil {
		t.Fatalf("server list of %s: %v", user, err)
	}
	if resp.HasMore {
		t.Fatalf("server list of %s has more than a page", user)
	}
	out := make(map[string]*pimv1.Conversation)
	for _, c := range resp.Convs {
		out[c.Conv] = c
	}
	return out
}

// listDiff compares d's conversation list with the server's ("" if equal).
func listDiff(t *testing.T, srv *server.Server, d *device) string {
	t.Helper()
	local, err := d.cl.Conversations()
	if err != nil {
		t.Fatalf("%s/%s: Conversations: %v", d.user, d.id, err)
	}
	want := serverList(t, srv, d.user)
	if len(local) != len(want) {
		return fmt.Sprintf("%d entries, the server has %d", len(local), len(want))
	}
	for i, c := range local {
		s := want[c.Conv]
		switch {
		case s == nil:
			return fmt.Sprintf("entry %s unknown to the server", c.Conv)
		case i > 0 && local[i-1].Activity < c.Activity:
			return "not sorted by activity"
		case c.Stale || c.LastSeq != s.LastSeq || c.ReadSeq != s.ReadSeq || c.Unread != s.Unread ||
			c.Version != s.Version || c.Activity != s.Activity || c.JoinSeq != s.JoinSeq || c.Left != s.Left ||
			c.PeerReadSeq != s.PeerReadSeq || c.PeerDeliveredSeq != s.PeerDeliveredSeq ||
			c.LastMessage.GetMsgId() != s.GetLastMessage().GetMsgId():
			return fmt.Sprintf("entry %s: local %+v, server %v", c.Conv, c, s)
		}
	}
	return ""
}

// waitList waits until d's list equals the server's.
func waitList(t *testing.T, srv *server.Server, d *device) {
	t.Helper()
	var last string
	d.rec.wait(t, "the server's conversation list", func(*recorder) bool {
		last = listDiff(t, srv, d)
		return last == ""
	})
	if last != "" {
		t.Fatalf("%s/%s: %s", d.user, d.id, last)
	}
}

// waitEntry waits until d's list equals the server's and its entry for
// conv satisfies cond.
func waitEntry(t *testing.T, srv *server.Server, d *device, conv, what string, cond func(Conversation) bool) {
	t.Helper()
	d.rec.wait(t, what, func(*recorder) bool {
		c, ok, err := d.cl.Conversation(conv)
		return err == nil && ok && cond(c) && listDiff(t, srv, d) == ""
	})
}

func entry(t *testing.T, d *device, conv string) Conversation {
	t.Helper()
	c, ok, err := d.cl.Conversation(conv)
	if err != nil || !ok {
		t.Fatalf("%s/%s: entry %s: %v %v", d.user, d.id, conv, ok, err)
	}
	return c
}

func TestConversationListConvergesAcrossDevices(t *testing.T) {
	srv := startServer(t)
	px := proxyTo(t, srv)
	addr := srv.TCPAddr().String()
	phone := newDevice(t, "alice", "phone", token(t, srv, "alice"), addr)
	pc := newDevice(t, "alice", "pc", token(t, srv, "alice"), px.Addr())
	bob := newDevice(t, "bob", "phone", token(t, srv, "bob"), addr)
	devs := []*device{phone, pc, bob}
	for _, d := range devs {
		d.open()
	}
	ctx := ctxT(t)
	dm := DirectConv("alice", "bob")
	g, err := bob.cl.CreateGroup(ctx, "g:team", "alice")
	if err != nil {
		t.Fatal(err)
	}
	waitSent(t, sendAll(t, bob.cl, dm, "bob", 0, 5))       // dm 1-5
	waitSent(t, sendAll(t, phone.cl, dm, "alice", 0, 2))   // dm 6-7
	waitSent(t, sendAll(t, bob.cl, g.Group(), "bg", 0, 3)) // team 2-4
	for _, d := range devs {
		waitList(t, srv, d)
	}
	waitEntry(t, srv, pc, dm, "alice's messages delivered to bob", func(c Conversation) bool {
		return c.Unread == 5 && c.PeerDeliveredSeq == 7
	})

	// The PC goes offline; meanwhile bob writes and the phone reads (part
	// of it) and deletes an unread message for alice.
	px.SetRefuse(true)
	px.Cut()
	waitSent(t, sendAll(t, bob.cl, dm, "bob", 5, 3)) // dm 8-10
	phone.rec.waitMessages(t, 14)
	for _, cmd := range []func() (*Command, error){
		func() (*Command, error) { return phone.cl.MarkRead(ctx, dm, 8) },
		func() (*Command, error) { return phone.cl.Hide(ctx, dm, 9) },
		func() (*Command, error) { return phone.cl.MarkRead(ctx, g.Group(), 4) },
	} {
		c, err := cmd()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitEntry(t, srv, phone, dm, "the read and the hide", func(c Conversation) bool {
		return c.ReadSeq == 8 && c.Unread == 1
	})
	waitEntry(t, srv, bob, dm, "alice's read and delivery", func(c Conversation) bool {
		return c.PeerReadSeq == 8 && c.PeerDeliveredSeq == 10
	})

	// The PC comes back: its list catches up by version and by events.
	px.SetRefuse(false)
	pc.cl.NetworkChanged("wifi")
	for _, d := range devs {
		waitList(t, srv, d)
	}
	if c := entry(t, pc, dm); c.ReadSeq != 8 || c.Unread != 1 || c.PeerReadSeq != 0 {
		t.Fatalf("pc after reconnecting: %+v", c)
	}
	if c := entry(t, pc, g.Group()); c.Unread != 0 || c.JoinSeq != 1 {
		t.Fatalf("pc's group entry: %+v", c)
	}

	// Bob reads alice's messages; bob writes once more; the phone then reads
	// only part of what is unread (within what the PC may know by number
	// only: it may have to fetch the entry). All three still agree.
	if _, err := bob.cl.MarkRead(ctx, dm, 10); err != nil {
		t.Fatal(err)
	}
	waitSent(t, sendAll(t, bob.cl, dm, "bob", 8, 1)) // dm 11
	rd, err := phone.cl.MarkRead(ctx, dm, 9)
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*device{phone, pc} {
		waitEntry(t, srv, d, dm, "the partial read and bob's read", func(c Conversation) bool {
			return c.ReadSeq == 9 && c.Unread == 2 && c.PeerReadSeq == 10 && c.PeerDeliveredSeq == 7
		})
	}
	waitList(t, srv, bob)
	pc.rec.mu.Lock()
	t.Logf("pc: %d ConversationEvents", pc.rec.convEvs)
	pc.rec.mu.Unlock()

	// A restart keeps the list; the next connection syncs it.
	pc.close()
	pc.open()
	waitList(t, srv, pc)
	for _, d := range devs {
		d.rec.checkOrder(t)
		d.rec.mu.Lock()
		n := len(d.rec.msgs)
		d.rec.mu.Unlock()
		if n != 15 { // 9 + 2 in the 1:1, the group's creation and 3 in it
			t.Errorf("%s/%s: %d messages shown, want 15", d.user, d.id, n)
		}
	}
}

func TestHideOfflineIsReplayedOnce(t *testing.T) {
	srv := startServer(t)
	px := proxyTo(t, srv)
	phone := newDevice(t, "alice", "phone", token(t, srv, "alice"), px.Addr())
	pc := newDevice(t, "alice", "pc", token(t, srv, "alice"), srv.TCPAddr().String())
	bob := newDevice(t, "bob", "phone", token(t, srv, "bob"), srv.TCPAddr().String())
	for _, d := range []*device{phone, pc, bob} {
		d.open()
	}
	ctx := ctxT(t)
	dm := DirectConv("alice", "bob")
	waitSent(t, sendAll(t, bob.cl, dm, "bob", 0, 3))
	phone.rec.waitMessages(t, 3)

	// Offline: hide bob's second message, then the app restarts.
	px.SetRefuse(true)
	px.Cut()
	if _, err := phone.cl.Hide(ctx, dm, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := phone.cl.Hide(ctx, dm, 0); err == nil {
		t.Fatal("Hide of seq 0 accepted")
	}
	phone.close()
	phone.open()
	if h, err := srv.Logic().History(ctx, "alice", &pimv1.HistoryReq{Conv: dm}); err != nil || len(h.Messages) != 3 {
		t.Fatalf("the hide reached the server while offline: %v %v", h, err)
	}
	px.SetRefuse(false)
	phone.cl.NetworkChanged("wifi")

	isHidden := func(r *recorder) bool { return len(r.hidden) == 1 }
	for _, d := range []*device{phone, pc} {
		d.rec.wait(t, "the hidden event", isHidden)
		d.rec.mu.Lock()
		h := d.rec.hidden[0]
		d.rec.mu.Unlock()
		if h.Conv != dm || h.Seq != 2 || h.Device != "phone" {
			t.Fatalf("%s: hidden event %+v", d.id, h)
		}
		msgs, err := d.cl.Messages(dm, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		var seqs []uint64
		for _, m := range msgs {
			seqs = append(seqs, m.GetSeq())
		}
		if !slices.Equal(seqs, []uint64{1, 3}) {
			t.Fatalf("%s: local messages %v after the hide", d.id, seqs)
		}
	}
	page, err := phone.cl.History(ctx, dm, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, m := range page.Messages {
		seqs = append(seqs, m.GetSeq())
	}
	if !slices.Equal(seqs, []uint64{1, 3}) {
		t.Fatalf("History after the hide: %v", seqs)
	}
	// Bob still sees it; alice's unread count left it.
	if bp, err := bob.cl.History(ctx, dm, 0, 10); err != nil || len(bp.Messages) != 3 {
		t.Fatalf("bob's history: %v %v", bp, err)
	}
	waitList(t, srv, phone)
	waitList(t, srv, pc)
	if c := entry(t, pc, dm); c.Unread != 2 {
		t.Fatalf("pc's entry after the hide: %+v", c)
	}
	// Hiding again (a late replay) changes nothing: no second event.
	again, err := pc.cl.Hide(ctx, dm, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := again.Wait(ctx); err != nil || again.Response().GetHideResp().GetSeq() != 2 {
		t.Fatalf("hiding again: %v %v", err, again.Response())
	}
	waitSent(t, sendAll(t, bob.cl, dm, "bob", 3, 1)) // a marker after it
	for _, d := range []*device{phone, pc} {
		d.rec.waitMessages(t, 4)
		d.rec.mu.Lock()
		n := len(d.rec.hidden)
		d.rec.mu.Unlock()
		if n != 1 {
			t.Fatalf("%s: %d hidden events, want 1", d.id, n)
		}
		d.rec.check(t, map[string]int{"bob": 4})
	}
	// Outside a conversation the user is in: refused.
	bad, err := pc.cl.Hide(ctx, "d:bob:carol", 1)
	if err != nil {
		t.Fatal(err)
	}
	var se *ServerError
	if err := bad.Wait(ctx); !errors.As(err, &se) || se.Code != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		t.Fatalf("hiding in someone else's conversation: %v", err)
	}
}

func TestGroupReceiptsAndSettings(t *testing.T) {
	srv := startServer(t)
	addr := srv.TCPAddr().String()
	alice := newDevice(t, "alice", "phone", token(t, srv, "alice"), addr)
	bob := newDevice(t, "bob", "phone", token(t, srv, "bob"), addr)
	carol := newDevice(t, "carol", "phone", token(t, srv, "carol"), addr)
	for _, d := range []*device{alice, bob, carol} {
		d.open()
	}
	ctx := ctxT(t)
	g, err := alice.cl.CreateGroup(ctx, "g:team", "bob", "carol")
	if err != nil {
		t.Fatal(err)
	}
	waitSent(t, sendAll(t, alice.cl, g.Group(), "alice", 0, 2)) // seqs 2, 3
	for _, d := range []*device{bob, carol} {
		d.rec.waitMessages(t, 3)
		if _, err := d.cl.MarkRead(ctx, g.Group(), 3); err != nil {
			t.Fatal(err)
		}
	}
	// Alice learns the read counts (coalesced: one or more READ receipts).
	alice.rec.wait(t, "read count 2 of seq 3", func(r *recorder) bool {
		for _, rc := range r.receipts {
			for _, m := range rc.Reads {
				if rc.Kind == ReceiptRead && rc.Conv == g.Group() && m.Seq == 3 && m.ReadCount == 2 {
					return true
				}
			}
		}
		return false
	})
	rs, err := alice.cl.Receipts(ctx, g.Group(), 3)
	if err != nil {
		t.Fatal(err)
	}
	if rs.ReadCount != 2 || !slices.Equal(rs.Readers, []string{"bob", "carol"}) {
		t.Fatalf("receipts %+v", rs)
	}
	if p, err := alice.cl.ReceiptsPage(ctx, g.Group(), 3, "bob", 1); err != nil || !slices.Equal(p.Readers, []string{"carol"}) || p.HasMore {
		t.Fatalf("receipts page after bob: %v %v", p, err)
	}
	var se *ServerError
	if _, err := bob.cl.Receipts(ctx, g.Group(), 3); !errors.As(err, &se) || se.Code != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		t.Fatalf("bob reading the receipts of alice's message: %v", err)
	}

	// Settings: an offline command, read back online.
	on, err := carol.cl.ReadReceipts(ctx)
	if err != nil || !on {
		t.Fatalf("read receipts at first: %v %v", on, err)
	}
	set, err := carol.cl.SetReadReceipts(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := set.Wait(ctx); err != nil || set.Response().GetSettingsResp().GetReadReceipts() {
		t.Fatalf("turning read receipts off: %v %v", err, set.Response())
	}
	if on, err := carol.cl.ReadReceipts(ctx); err != nil || on {
		t.Fatalf("read receipts after turning them off: %v %v", on, err)
	}
	waitSent(t, sendAll(t, carol.cl, g.Group(), "carol", 0, 1))
	if _, err := carol.cl.Receipts(ctx, g.Group(), 4); !errors.As(err, &se) || se.Code != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		t.Fatalf("receipts with read receipts off: %v", err)
	}
	for _, d := range []*device{alice, bob, carol} {
		waitList(t, srv, d)
	}
}
