// SendWithID against a real server: the caller's client_msg_id makes a
// message idempotent across calls, restarts and after it was sent.

package pim

import (
	"strings"
	"testing"
)

func TestSendWithIDStoresOnce(t *testing.T) {
	srv := startServer(t)
	px := proxyTo(t, srv)
	px.SetRefuse(true) // the server looks down
	a := newDevice(t, "alice", "phone", token(t, srv, "alice"), px.Addr())
	b := newDevice(t, "bob", "phone", token(t, srv, "bob"), srv.TCPAddr().String())
	b.open()
	a.open()
	conv := DirectConv("alice", "bob")
	ctx := ctxT(t)

	// Offline: the same id and message twice is one outbox entry, one
	// handle; another message under the id is refused.
	o1, err := a.cl.SendWithID(ctx, conv, "script-0", "alice-0")
	if err != nil {
		t.Fatal(err)
	}
	if o1.ClientMsgID() != "script-0" || o1.Conv() != conv {
		t.Fatalf("handle %s in %s", o1.ClientMsgID(), o1.Conv())
	}
	if o2, err := a.cl.SendWithID(ctx, conv, "script-0", "alice-0"); err != nil || o2 != o1 {
		t.Fatalf("the same message again: %p, %v; want the first handle %p", o2, err, o1)
	}
	if _, err := a.cl.SendWithID(ctx, conv, "script-0", "something else"); err == nil || !strings.Contains(err.Error(), "already in the outbox") {
		t.Fatalf("another message under the id: %v", err)
	}
	if _, err := a.cl.SendWithID(ctx, conv, "", "alice-0"); err == nil {
		t.Fatal("an empty id was accepted")
	}

	// After a restart: the pending message's handle.
	a.close()
	a.open()
	pending, err := a.cl.Pending(ctx)
	if err != nil || len(pending) != 1 {
		t.Fatalf("pending after reopen: %d, %v", len(pending), err)
	}
	o3, err := a.cl.SendWithID(ctx, conv, "script-0", "alice-0")
	if err != nil || o3 != pending[0] {
		t.Fatalf("after reopen: %p, %v; want the pending handle %p", o3, err, pending[0])
	}
	px.SetRefuse(false)
	a.cl.NetworkChanged("wifi") // reconnect at once
	waitSent(t, []*Outgoing{o3})
	first := o3.Ack()
	if first.GetClientMsgId() != "script-0" {
		t.Fatalf("ack %v", first)
	}

	// Sent, and shown to this device: the id again is the server's
	// duplicate (same seq, nothing stored).
	a.rec.waitMessages(t, 1)
	o4, err := a.cl.SendWithID(ctx, conv, "script-0", "alice-0")
	if err != nil {
		t.Fatal(err)
	}
	waitSent(t, []*Outgoing{o4})
	if ack := o4.Ack(); !ack.GetDuplicate() || ack.GetSeq() != first.GetSeq() {
		t.Fatalf("resent after Sent: ack %v, want a duplicate of %v", ack, first)
	}
	waitSent(t, sendAll(t, a.cl, conv, "alice", 1, 1))
	b.rec.waitMessages(t, 2)
	b.rec.check(t, map[string]int{"alice": 2})
}
