// Integration tests against a real in-process server.
//
// Invariants checked: every device of both users is shown every message of
// the conversation exactly once, in order (per sender and by seq), own
// messages flagged; an offline device catches up from its cursor and
// reports CaughtUp after the backlog; an outbox queued while the server is
// unreachable survives Close and is delivered once after reopening; group
// commands and online requests (History, Members) work through the driver.

package pim

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestTwoUsersThreeDevicesEachOnceInOrder(t *testing.T) {
	srv := startServer(t)
	addr := srv.TCPAddr().String()
	const n = 15
	conv := DirectConv("alice", "bob")
	var devs []*device
	for _, u := range []string{"alice", "bob"} {
		tok := token(t, srv, u)
		for _, id := range []string{"phone", "pc", "pad"} {
			d := newDevice(t, u, id, tok, addr)
			d.open()
			devs = append(devs, d)
		}
	}
	// A fourth device of alice is offline while the others talk.
	late := newDevice(t, "alice", "late", token(t, srv, "alice"), addr)

	var wg sync.WaitGroup
	senders := make(map[string]int)
	for _, d := range devs {
		senders[d.user+"."+d.id] = n
		wg.Add(1)
		go func() {
			defer wg.Done()
			waitSent(t, sendAll(t, d.cl, conv, d.user+"."+d.id, 0, n))
		}()
	}
	wg.Wait()
	total := n * len(devs)
	for _, d := range devs {
		d.rec.waitMessages(t, total)
	}
	late.open()
	late.rec.waitMessages(t, total)
	late.rec.wait(t, "caught up", func(r *recorder) bool {
		return len(r.caught) > 0 && r.caught[len(r.caught)-1] >= uint64(total)
	})
	for _, d := range append(devs, late) {
		d.rec.check(t, senders)
		d.rec.mu.Lock()
		for _, m := range d.rec.msgs {
			own := m.Message.GetSender() == d.user && m.Message.GetSenderDevice() == d.id
			if m.Own != own {
				t.Errorf("%s/%s: message %d Own=%v", d.user, d.id, m.UserSeq, m.Own)
			}
		}
		d.rec.mu.Unlock()
	}
	// The local store holds what was shown.
	msgs, err := late.cl.Messages(conv, 0, 1000)
	if err != nil || len(msgs) != total {
		t.Fatalf("local messages: %d, %v; want %d", len(msgs), err, total)
	}
	for i, m := range msgs {
		if m.GetSeq() != uint64(i+1) {
			t.Fatalf("local message %d has seq %d", i, m.GetSeq())
		}
	}
	page, err := late.cl.Messages(conv, 11, 5)
	if err != nil || len(page) != 5 || page[0].GetSeq() != 6 || page[4].GetSeq() != 10 {
		t.Fatalf("local page before 11: %v %v", page, err)
	}
	// The local timeline is the whole timeline, gap-free: the messages and
	// the delivered receipts between them.
	tl, err := late.cl.Timeline(0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var nmsgs int
	for i, e := range tl {
		if e.UserSeq != uint64(i+1) || (e.Message == nil) == (e.Event == nil) {
			t.Fatalf("local timeline entry %d: %+v", i, e)
		}
		if e.Message != nil {
			nmsgs++
		} else if e.Event.GetReceipt().GetKind() != ReceiptDelivered {
			t.Fatalf("local timeline entry %d: %v", i, e.Event)
		}
	}
	if nmsgs != total || tl[len(tl)-1].UserSeq != late.cl.Delivered() {
		t.Fatalf("local timeline: %d messages in %d entries, delivered %d", nmsgs, len(tl), late.cl.Delivered())
	}
	if tail, err := late.cl.Timeline(uint64(len(tl))-3, 10); err != nil || len(tail) != 3 || tail[0].UserSeq != uint64(len(tl))-2 {
		t.Fatalf("local timeline tail: %v %v", tail, err)
	}
	// History, an online request, agrees.
	h, err := devs[3].cl.History(ctxT(t), conv, 0, 10)
	if err != nil || len(h.Messages) != 10 || !h.HasMore || h.Messages[9].GetSeq() != uint64(total) {
		t.Fatalf("history: %+v %v", h, err)
	}
}

func TestOutboxSurvivesCloseWhileServerDown(t *testing.T) {
	srv := startServer(t)
	px := proxyTo(t, srv)
	px.SetRefuse(true) // the server looks down
	const n = 12
	a := newDevice(t, "alice", "phone", token(t, srv, "alice"), px.Addr())
	b := newDevice(t, "bob", "phone", token(t, srv, "bob"), srv.TCPAddr().String())
	b.open()
	a.open()
	out := sendAll(t, a.cl, DirectConv("alice", "bob"), "alice", 0, n)
	for _, o := range out {
		if s := o.State(); s != Queued {
			t.Fatalf("%s is %v while the server is down", o.ClientMsgID(), s)
		}
	}
	a.close()

	a.open()
	pending, err := a.cl.Pending(ctxT(t))
	if err != nil || len(pending) != n {
		t.Fatalf("pending after reopen: %d, %v; want %d", len(pending), err, n)
	}
	for i, o := range pending {
		if o.ClientMsgID() != out[i].ClientMsgID() {
			t.Fatalf("pending %d is %s, want %s", i, o.ClientMsgID(), out[i].ClientMsgID())
		}
	}
	px.SetRefuse(false)
	a.cl.NetworkChanged("wifi") // reconnect at once
	waitSent(t, pending)
	b.rec.waitMessages(t, n)
	a.rec.waitMessages(t, n)
	b.rec.check(t, map[string]int{"alice": n})
	a.rec.check(t, map[string]int{"alice": n})
	if p, _ := a.cl.Pending(ctxT(t)); len(p) != 0 {
		t.Fatalf("%d messages still pending", len(p))
	}
}

func TestGroupCommandsOffline(t *testing.T) {
	srv := startServer(t)
	px := proxyTo(t, srv)
	px.SetRefuse(true)
	a := newDevice(t, "alice", "phone", token(t, srv, "alice"), px.Addr())
	b := newDevice(t, "bob", "phone", token(t, srv, "bob"), srv.TCPAddr().String())
	a.open()
	b.open()
	ctx := ctxT(t)
	// Offline: create a group, send in it, add carol; all queued durably.
	create, err := a.cl.CreateGroup(ctx, "", "bob")
	if err != nil {
		t.Fatal(err)
	}
	g := create.Group()
	msgs := sendAll(t, a.cl, g, "alice", 0, 3)
	add, err := a.cl.AddMembers(ctx, g, "carol")
	if err != nil {
		t.Fatal(err)
	}
	a.close()
	a.open()
	px.SetRefuse(false)
	a.cl.NetworkChanged("wifi")
	// The handles of the previous run are gone; the results arrive as events.
	a.rec.wait(t, "two command results and three messages", func(r *recorder) bool {
		return len(r.msgs) >= 5
	})
	_ = add
	_ = msgs
	// Bob sees the group's creation, the three messages, then carol's
	// addition, in that order.
	b.rec.waitMessages(t, 5)
	b.rec.mu.Lock()
	var got []string
	for _, m := range b.rec.msgs {
		got = append(got, fmt.Sprintf("%s:%d:%s", m.Message.GetType(), m.Message.GetSeq(), m.Message.GetBody()))
	}
	b.rec.mu.Unlock()
	want := []string{"MESSAGE_TYPE_GROUP_CREATED:1:", "MESSAGE_TYPE_TEXT:2:alice-0", "MESSAGE_TYPE_TEXT:3:alice-1",
		"MESSAGE_TYPE_TEXT:4:alice-2", "MESSAGE_TYPE_MEMBERS_ADDED:5:"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bob saw %v, want %v", got, want)
	}
	members, err := b.cl.Members(ctx, g)
	if err != nil || len(members) != 3 {
		t.Fatalf("members: %v %v", members, err)
	}
	// Online: bob leaves; his handle reports the answer.
	leave, err := b.cl.Leave(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if err := leave.Wait(ctx); err != nil {
		t.Fatalf("leave: %v", err)
	}
	if r := leave.GroupResp(); r == nil || r.GetGroup() != g {
		t.Fatalf("leave answer: %v", r)
	}
}

// A message whose retry budget runs out while the server is unreachable
// fails; RetryFailed sends it again with the same id, and it is delivered
// once.
func TestRetryFailed(t *testing.T) {
	srv := startServer(t)
	px := proxyTo(t, srv)
	px.SetRefuse(true)
	a := newDevice(t, "alice", "phone", token(t, srv, "alice"), px.Addr())
	a.tune.MaxSendAge = 200 * time.Millisecond
	a.open()
	b := newDevice(t, "bob", "phone", token(t, srv, "bob"), srv.TCPAddr().String())
	b.open()
	out := sendAll(t, a.cl, DirectConv("alice", "bob"), "alice", 0, 2)
	if err := out[0].Wait(ctxT(t)); !errors.Is(err, ErrRetryBudget) {
		t.Fatalf("first message: %v, want ErrRetryBudget", err)
	}
	if s := out[1].State(); s != Queued { // it waits behind the failed one
		t.Fatalf("second message is %v", s)
	}
	px.SetRefuse(false)
	a.cl.NetworkChanged("wifi")
	if err := a.cl.RetryFailed(ctxT(t), out[0].ClientMsgID()); err != nil {
		t.Fatal(err)
	}
	waitSent(t, out)
	b.rec.waitMessages(t, 2)
	b.rec.check(t, map[string]int{"alice": 2})
	if err := a.cl.RetryFailed(ctxT(t), out[0].ClientMsgID()); err == nil {
		t.Fatal("RetryFailed of a sent message succeeded")
	}
}

// MarkRead works offline and converges: a read made while disconnected is
// replayed after reconnecting (and survives an app restart); the user's
// other device, offline meanwhile, learns of it when it connects; the peer
// gets a read receipt.
func TestMarkReadOfflineConverges(t *testing.T) {
	srv := startServer(t)
	pxPhone := proxyTo(t, srv)
	pxPC := proxyTo(t, srv)
	pxPC.SetRefuse(true)
	phone := newDevice(t, "alice", "phone", token(t, srv, "alice"), pxPhone.Addr())
	pc := newDevice(t, "alice", "pc", token(t, srv, "alice"), pxPC.Addr())
	bob := newDevice(t, "bob", "phone", token(t, srv, "bob"), srv.TCPAddr().String())
	phone.open()
	pc.open()
	bob.open()
	conv := DirectConv("alice", "bob")
	waitSent(t, sendAll(t, bob.cl, conv, "bob", 0, 3))
	phone.rec.waitMessages(t, 3)

	// The phone goes offline, reads everything, and the app restarts.
	pxPhone.SetRefuse(true)
	pxPhone.Cut()
	if _, err := phone.cl.MarkRead(ctxT(t), conv, 3); err != nil {
		t.Fatal(err)
	}
	phone.close()
	phone.open()
	pxPhone.SetRefuse(false)
	phone.cl.NetworkChanged("wifi")

	isRead := func(own bool) func(r *recorder) bool {
		return func(r *recorder) bool {
			return len(r.reads) == 1 && r.reads[0].Seq == 3 && r.reads[0].User == "alice" &&
				r.reads[0].Device == "phone" && r.reads[0].Own == own
		}
	}
	bob.rec.wait(t, "alice's read receipt", isRead(false))
	phone.rec.wait(t, "its own read", isRead(true))
	// The PC was offline throughout: it gets the messages, then the read.
	pxPC.SetRefuse(false)
	pc.cl.NetworkChanged("wifi")
	pc.rec.wait(t, "the messages and the phone's read", func(r *recorder) bool {
		return len(r.msgs) == 3 && isRead(true)(r)
	})
	for _, d := range []*device{phone, pc, bob} {
		d.rec.check(t, map[string]int{"bob": 3})
	}
}
