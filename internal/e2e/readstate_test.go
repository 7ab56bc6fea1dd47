package e2e

// Read state end to end: read sync across devices, 1:1 read and delivered
// receipts (and turning them off), coalesced group receipts in a 200-member
// group, and the conversation list's incremental sync after a reconnect.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/server"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// convEntry reads c's user's entry for conv, or fails.
func convEntry(t *testing.T, c *client.Conn, conv string) *pimv1.Conversation {
	t.Helper()
	resp, err := c.Conversations(ctxT(t), &pimv1.ConvListReq{Limit: 1000})
	if err != nil {
		t.Fatalf("conversations: %v", err)
	}
	for _, e := range resp.Convs {
		if e.Conv == conv {
			return e
		}
	}
	t.Fatalf("no conversation %s in %v", conv, resp.Convs)
	return nil
}

// waitEvent reads pushes from c (acking them) until one satisfies ok.
func waitEvent(t *testing.T, c *client.Conn, what string, ok func(*pimv1.Event) bool) *pimv1.Event {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case ev, open := <-c.Pushes():
			if !open {
				t.Fatalf("waiting for %s: push stream ended: %v", what, c.Err())
			}
			if err := c.PushAck(ev.UserSeq); err != nil {
				t.Fatalf("push ack: %v", err)
			}
			if ok(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s within %v", what, waitFor)
		}
	}
}

func TestReadSyncConvergesAcrossDevices(t *testing.T) {
	srv := startServer(t, t.TempDir())
	bob := dial(t, srv, "bob", "phone")
	phone := dial(t, srv, "alice", "phone")
	pc := dial(t, srv, "alice", "pc")
	conv := store.DirectConv("alice", "bob")
	for i := range 5 {
		send(t, bob, "alice", "", fmt.Sprintf("m%d", i), "hello")
	}
	recv(t, pc, 5)
	last := recv(t, phone, 5)[4].UserSeq
	pc.Close() // the PC goes offline

	if r, err := phone.Read(ctxT(t), &pimv1.ReadReq{Conv: conv, Seq: 3}); err != nil || r.ReadSeq != 3 {
		t.Fatalf("read: %v %v", r, err)
	}
	// Replayed and late reads (offline commands) change nothing.
	for _, seq := range []uint64{3, 2} {
		if r, err := phone.Read(ctxT(t), &pimv1.ReadReq{Conv: conv, Seq: seq}); err != nil || r.ReadSeq != 3 {
			t.Fatalf("replayed read %d: %v %v", seq, r, err)
		}
	}
	pc = dialOpts(t, srv, client.Options{Token: token(t, srv, "alice"), Device: "pc", LastUserSeq: last})
	evs := syncAll(t, pc, last)
	if len(evs) != 1 || evs[0].GetRead().GetSeq() != 3 || evs[0].GetRead().GetDevice() != "phone" {
		t.Fatalf("the PC caught up with %v, want one read-sync to 3 from the phone", evs)
	}
	a, b := convEntry(t, phone, conv), convEntry(t, pc, conv)
	if a.ReadSeq != 3 || a.Unread != 2 || !proto.Equal(a, b) {
		t.Fatalf("devices disagree or wrong: phone %v, pc %v (want read 3, unread 2)", a, b)
	}
	// Bob learns it: a read receipt in his timeline and his list entry.
	waitEvent(t, bob, "bob's read receipt", func(ev *pimv1.Event) bool { return ev.GetRead().GetUser() == "alice" })
	if e := convEntry(t, bob, conv); e.PeerReadSeq != 3 || e.Unread != 0 {
		t.Fatalf("bob's entry: %v, want peer_read_seq 3 and nothing unread (his own messages)", e)
	}
}

func TestDirectReceipts(t *testing.T) {
	srv := startServer(t, t.TempDir())
	alice := dial(t, srv, "alice", "a")
	bob := dial(t, srv, "bob", "b")
	conv := store.DirectConv("alice", "bob")
	_ = send(t, alice, "bob", "", "x1", "hi")
	recv(t, alice, 1) // her own message, in her timeline too
	recv(t, bob, 1)   // acked: delivered
	ev := waitEvent(t, alice, "a delivered receipt", func(ev *pimv1.Event) bool {
		return ev.GetReceipt().GetKind() == pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED
	})
	if r := ev.GetReceipt(); r.Seq != 1 || r.User != "bob" || r.Conv != conv {
		t.Fatalf("delivered receipt %v", r)
	}
	if e := convEntry(t, alice, conv); e.PeerDeliveredSeq != 1 || e.PeerReadSeq != 0 {
		t.Fatalf("alice's entry %v", e)
	}

	// Bob turns read receipts off: his reads no longer reach alice, and
	// alice's no longer reach him.
	off := false
	if s, err := bob.Settings(ctxT(t), &pimv1.SettingsReq{ReadReceipts: &off}); err != nil || s.ReadReceipts {
		t.Fatalf("settings: %v %v", s, err)
	}
	if _, err := bob.Read(ctxT(t), &pimv1.ReadReq{Conv: conv, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	send(t, bob, "alice", "", "y1", "reply")
	recv(t, bob, 2) // his own read-sync and his reply
	if _, err := alice.Read(ctxT(t), &pimv1.ReadReq{Conv: conv, Seq: 2}); err != nil {
		t.Fatal(err)
	}
	a := syncAll(t, alice, 0)
	for _, ev := range a {
		if r := ev.GetRead(); r != nil && r.User == "bob" {
			t.Fatalf("alice saw bob's read with his receipts off: %v", ev)
		}
	}
	for _, ev := range syncAll(t, bob, 0) {
		if r := ev.GetRead(); r != nil && r.User == "alice" {
			t.Fatalf("bob saw alice's read with his receipts off: %v", ev)
		}
	}
	if _, err := bob.Receipts(ctxT(t), &pimv1.ReceiptsReq{Conv: conv, Seq: 2}); errCode(err) != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		t.Fatalf("receipts with receipts off: %v, want FORBIDDEN", err)
	}
	if e := convEntry(t, alice, conv); e.PeerReadSeq != 0 {
		t.Fatalf("alice's entry shows bob's read: %v", e)
	}
}

// adminRead marks conv read for user over the HTTP API with the admin key.
func adminRead(t *testing.T, srv *server.Server, user, conv string, seq uint64) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"seq": seq})
	url := fmt.Sprintf("http://%s/v1/conversations/%s/read?as=%s", srv.HTTPAddr(), conv, user)
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+srv.Keys().AdminKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("read as %s: %v", user, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("read as %s: %s", user, resp.Status)
	}
}

func TestGroupReceiptsCoalesced(t *testing.T) {
	srv := startServer(t, t.TempDir())
	owner := dial(t, srv, "owner", "d")
	members := ids(200, "m")
	group(t, owner, pimv1.GroupOp_GROUP_OP_CREATE, "g:big", members...)
	ack := send(t, owner, "", "g:big", "hello-all", "please read")
	recv(t, owner, 2) // the creation and the message

	start := time.Now()
	var wg sync.WaitGroup
	for w := range 8 { // 200 members read, 8 at a time
		wg.Go(func() {
			for i := w; i < len(members); i += 8 {
				adminRead(t, srv, members[i], "g:big", ack.Seq)
			}
		})
	}
	wg.Wait()
	var events int
	waitEvent(t, owner, "a receipt with 200 readers", func(ev *pimv1.Event) bool {
		r := ev.GetReceipt()
		if r.GetKind() != pimv1.ReceiptKind_RECEIPT_KIND_READ {
			return false
		}
		events++
		for _, m := range r.Messages {
			if m.Seq == ack.Seq && m.ReadCount == 200 {
				return true
			}
		}
		return false
	})
	elapsed := time.Since(start)
	// At most one notification per second per conversation, plus the first.
	if limit := int(elapsed/time.Second) + 2; events > limit {
		t.Fatalf("%d receipt events in %v for 200 reads, want at most %d (coalescing)", events, elapsed, limit)
	}
	t.Logf("200 reads -> %d receipt events to the sender in %v", events, elapsed)

	var readers []string
	after := ""
	for {
		r, err := owner.Receipts(ctxT(t), &pimv1.ReceiptsReq{Conv: "g:big", Seq: ack.Seq, AfterUser: after, Limit: 64})
		if err != nil {
			t.Fatalf("receipts: %v", err)
		}
		if r.ReadCount != 200 {
			t.Fatalf("read_count %d, want 200", r.ReadCount)
		}
		readers = append(readers, r.Readers...)
		if !r.HasMore {
			break
		}
		after = r.Readers[len(r.Readers)-1]
	}
	if fmt.Sprint(readers) != fmt.Sprint(members) {
		t.Fatalf("readers paged: %d, want the 200 members in order", len(readers))
	}
	// Only the sender may read them, unless the owner makes them visible.
	m0 := dial(t, srv, members[0], "d")
	if _, err := m0.Receipts(ctxT(t), &pimv1.ReceiptsReq{Conv: "g:big", Seq: ack.Seq}); errCode(err) != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		t.Fatalf("a member reading the sender's receipts: %v, want FORBIDDEN", err)
	}
	on := true
	if _, err := m0.Group(ctxT(t), &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_SETTINGS, Group: "g:big", ReceiptsVisible: &on}); errCode(err) != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		t.Fatalf("a member changing the group's settings: %v, want FORBIDDEN", err)
	}
	if r, err := owner.Group(ctxT(t), &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_SETTINGS, Group: "g:big", ReceiptsVisible: &on}); err != nil || !r.ReceiptsVisible {
		t.Fatalf("the owner making receipts visible: %v %v", r, err)
	}
	if r, err := m0.Receipts(ctxT(t), &pimv1.ReceiptsReq{Conv: "g:big", Seq: ack.Seq}); err != nil || r.ReadCount != 200 {
		t.Fatalf("a member reading visible receipts: %v %v", r, err)
	}
	if e := convEntry(t, m0, "g:big"); e.ReadSeq != ack.Seq || e.Unread != 0 {
		t.Fatalf("member's entry %v", e)
	}
}

func TestConvListReconnectTransfersOnlyChanged(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 conversations")
	}
	srv, err := server.Start(server.Config{DataDir: t.TempDir(), TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Fsync: server.FsyncOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopServer(t, srv) })
	const convs, workers = 10000, 8
	var wg sync.WaitGroup
	for w := range workers {
		c := dialOpts(t, srv, client.Options{Token: token(t, srv, "me"), Device: fmt.Sprintf("w%d", w), DiscardPushes: true})
		wg.Go(func() {
			for i := w; i < convs; i += workers {
				if _, err := c.Send(ctxT(t), &pimv1.SendReq{ClientMsgId: fmt.Sprint(i), ToUser: fmt.Sprintf("p%05d", i),
					Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi")}); err != nil {
					t.Errorf("send %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	dev := dialOpts(t, srv, client.Options{Token: token(t, srv, "me"), Device: "phone", DiscardPushes: true})
	var full, version uint64
	var fullBytes int
	before := uint64(0)
	for {
		r, err := dev.Conversations(ctxT(t), &pimv1.ConvListReq{BeforeActivity: before, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		full += uint64(len(r.Convs))
		fullBytes += proto.Size(r)
		version = max(version, r.Version)
		if !r.HasMore {
			break
		}
		before = r.Convs[len(r.Convs)-1].Activity
	}
	if full != convs {
		t.Fatalf("full list: %d entries, want %d", full, convs)
	}
	dev.Close() // offline while three conversations change

	for _, p := range []string{"p00042", "p05000", "p09999"} {
		send(t, dialOpts(t, srv, client.Options{Token: token(t, srv, p), Device: "d", DiscardPushes: true}), "me", "", "back", "news")
	}
	dev = dialOpts(t, srv, client.Options{Token: token(t, srv, "me"), Device: "phone", DiscardPushes: true})
	r, err := dev.Conversations(ctxT(t), &pimv1.ConvListReq{SinceVersion: version, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Convs) != 3 || r.HasMore {
		t.Fatalf("incremental sync transferred %d entries (more=%v), want exactly the 3 changed", len(r.Convs), r.HasMore)
	}
	for _, e := range r.Convs {
		if e.Unread != 1 || e.LastSeq != 2 {
			t.Fatalf("changed entry %v: want unread 1, last seq 2", e)
		}
	}
	t.Logf("conversation list: full sync of %d entries %d bytes; after 3 changes %d bytes", full, fullBytes, proto.Size(r))
}
