package e2e

import (
	"fmt"
	"slices"
	"testing"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Two users, three devices: every message reaches every device of both
// users (the sender's own devices included), once, in conversation order.
func TestDirectMessagesReachEveryDevice(t *testing.T) {
	srv := startServer(t, t.TempDir())
	phone := dial(t, srv, "alice", "phone")
	pc := dial(t, srv, "alice", "pc")
	bob := dial(t, srv, "bob", "phone")
	conv := store.DirectConv("alice", "bob")

	for i, id := range ids(5, "a") {
		c := phone
		if i%2 == 1 {
			c = bob // both sides talk
		}
		to := "bob"
		if c == bob {
			to = "alice"
		}
		ack := send(t, c, to, "", id, fmt.Sprintf("hello %d", i))
		if ack.Conv != conv || ack.Seq != uint64(i+1) || ack.Duplicate || ack.MsgId == "" {
			t.Fatalf("ack %d = %v", i, ack)
		}
	}
	for name, c := range map[string]*client.Conn{"alice/phone": phone, "alice/pc": pc, "bob/phone": bob} {
		evs := recv(t, c, 5)
		checkGapFree(t, evs, 1)
		for i, ev := range evs {
			m := ev.GetMessage()
			if m.Conv != conv || m.Seq != uint64(i+1) || text(ev) != fmt.Sprintf("hello %d", i) {
				t.Fatalf("%s: event %d = %v", name, i, m)
			}
		}
		atHead(t, c, 5)
	}
}

// A device that was offline gets everything it missed, in order, when it
// connects; its acks do not hide anything from the user's other devices.
func TestOfflineDeviceCatchesUpInOrder(t *testing.T) {
	srv := startServer(t, t.TempDir())
	alice := dial(t, srv, "alice", "phone")
	const n = 300 // more than one push page
	for i, id := range ids(n, "m") {
		send(t, alice, "bob", "", id, fmt.Sprintf("msg %d", i))
	}
	tablet := dial(t, srv, "bob", "tablet")
	if w := tablet.Welcome(); w.UserSeq != n || w.PushFromUserSeq != 0 {
		t.Fatalf("welcome = %v", w)
	}
	evs := recv(t, tablet, n)
	checkGapFree(t, evs, 1)
	for i, ev := range evs {
		if text(ev) != fmt.Sprintf("msg %d", i) || ev.GetMessage().Seq != uint64(i+1) {
			t.Fatalf("event %d = %v", i, ev.GetMessage())
		}
	}
	atHead(t, tablet, n)
	tablet.Close()

	// The tablet's cursor is kept: reconnecting pushes nothing old.
	again := dial(t, srv, "bob", "tablet")
	if w := again.Welcome(); w.AckedUserSeq != n || w.PushFromUserSeq != n {
		t.Fatalf("welcome after reconnect = %v", w)
	}
	send(t, alice, "bob", "", "late", "late")
	if ev := recv(t, again, 1)[0]; ev.UserSeq != n+1 || text(ev) != "late" {
		t.Fatalf("after reconnect got %v", ev)
	}
	// Another device of bob still gets everything from the start.
	phone := dial(t, srv, "bob", "phone")
	if got := recv(t, phone, n+1); got[0].UserSeq != 1 || got[n].UserSeq != n+1 {
		t.Fatalf("phone got user seqs %d..%d", got[0].UserSeq, got[n].UserSeq)
	}
}

// A resend after a lost ack (the connection died before the ack arrived)
// yields one message; the same id from another device is another message.
func TestResendAfterLostAckYieldsOneMessage(t *testing.T) {
	srv := startServer(t, t.TempDir())
	a := dial(t, srv, "alice", "phone")
	err := a.WriteFrame(&pimv1.Frame{RequestId: 77, Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
		ClientMsgId: "x1", ToUser: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("once")}}})
	if err != nil {
		t.Fatal(err)
	}
	a.Close() // the ack, if any, is lost

	b := dial(t, srv, "alice", "phone")
	first := send(t, b, "bob", "", "x1", "once")
	second := send(t, b, "bob", "", "x1", "once")
	if second.Seq != first.Seq || second.MsgId != first.MsgId || !second.Duplicate || second.ServerTime != first.ServerTime {
		t.Fatalf("resend ack %v differs from %v", second, first)
	}
	other := send(t, dial(t, srv, "alice", "pc"), "bob", "", "x1", "other device")
	if other.Duplicate || other.Seq != first.Seq+1 {
		t.Fatalf("same id from another device: %v", other)
	}
	msgs := history(t, b, store.DirectConv("alice", "bob"))
	if len(msgs) != 2 || string(msgs[0].Body) != "once" || msgs[1].SenderDevice != "pc" {
		t.Fatalf("history = %v", msgs)
	}
}

// A restart on the same data dir keeps messages, cursors and the dedup index.
func TestRestartKeepsEverythingAndDeduplicates(t *testing.T) {
	dir := t.TempDir()
	srv, err := startUnmanaged(dir)
	if err != nil {
		t.Fatal(err)
	}
	a := dialOpts(t, srv, clientOpts(t, srv, "alice", "phone"))
	var acks []*pimv1.SendAck
	for i, id := range ids(10, "r") {
		acks = append(acks, send(t, a, "bob", "", id, fmt.Sprintf("r%d", i)))
	}
	bob := dialOpts(t, srv, clientOpts(t, srv, "bob", "phone"))
	recv(t, bob, 4)                              // bob acks the first 4
	if _, err := bob.Ping(ctxT(t)); err != nil { // the acks are in before the pong
		t.Fatal(err)
	}
	epoch := srv.Epoch()
	a.Close()
	bob.Close()
	stopServer(t, srv)

	srv2 := startServer(t, dir)
	if srv2.Epoch() != epoch {
		t.Fatalf("epoch changed across restart: %s -> %s", epoch, srv2.Epoch())
	}
	a2 := dial(t, srv2, "alice", "phone")
	for i, id := range ids(10, "r") {
		ack := send(t, a2, "bob", "", id, fmt.Sprintf("r%d", i))
		if !ack.Duplicate || ack.Seq != acks[i].Seq || ack.MsgId != acks[i].MsgId {
			t.Fatalf("resend %s after restart: %v, first ack %v", id, ack, acks[i])
		}
	}
	if ack := send(t, a2, "bob", "", "new", "new"); ack.Seq != 11 {
		t.Fatalf("first new message after restart has seq %d, want 11", ack.Seq)
	}
	bob2 := dial(t, srv2, "bob", "phone")
	if w := bob2.Welcome(); w.AckedUserSeq != 4 || w.UserSeq != 11 {
		t.Fatalf("bob's welcome after restart = %v", w)
	}
	evs := recv(t, bob2, 7)
	checkGapFree(t, evs, 5)
	got := history(t, a2, store.DirectConv("alice", "bob"))
	var bodies []string
	for _, m := range got {
		bodies = append(bodies, string(m.Body))
	}
	want := []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "new"}
	if !slices.Equal(bodies, want) {
		t.Fatalf("history after restart = %v", bodies)
	}
}

// The same protocol over WebSocket.
func TestWebSocket(t *testing.T) {
	srv := startServer(t, t.TempDir())
	ws := dialOpts(t, srv, client.Options{Addr: "ws://" + srv.HTTPAddr().String() + "/ws", WebSocket: true,
		Token: token(t, srv, "bob"), Device: "web"})
	tcp := dial(t, srv, "alice", "phone")
	send(t, tcp, "bob", "", "w1", "over tcp")
	ack, err := ws.Send(ctxT(t), &pimv1.SendReq{ClientMsgId: "w2", ToUser: "alice",
		Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("over ws")})
	if err != nil || ack.Seq != 2 {
		t.Fatalf("ws send: %v %v", ack, err)
	}
	evs := recv(t, ws, 2)
	if text(evs[0]) != "over tcp" || text(evs[1]) != "over ws" {
		t.Fatalf("ws got %v", evs)
	}
}
