// Integration test: the gateway over the real business logic, the Pebble
// store and the local bus, with clients on TCP and WebSocket.
//
// Invariants checked end to end: sender FIFO and conversation order, gap-free
// push streams per device, per-device cursors, dedup, epoch-checked resume,
// membership messages, isolation, GoAway on shutdown.
package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/bus/local"
	"github.com/pim-project/pim/internal/logic"
	pebblestore "github.com/pim-project/pim/internal/store/pebble"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func TestIntegrationPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Sync: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // runs after the gateway's shutdown
	b := local.New()
	svc := logic.New(logic.Config{Store: st, Bus: b})
	keys := auth.NewForTest([]byte("0123456789abcdef0123456789abcdef"), "admin", time.Now)
	g, _, _ := newTestGateway(t, func(c *Config) { c.Logic = svc; c.Bus = b; c.Auth = keys })
	addr, served := serveTCP(t, g)
	srv := httptest.NewServer(g.WebSocketHandler())
	defer srv.Close()

	token := func(user string) string {
		tok, err := keys.Issue(user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	helloFor := func(user, device string, last uint64, epoch string) *pimv1.Frame {
		return &pimv1.Frame{Body: &pimv1.Frame_Hello{Hello: &pimv1.Hello{
			Token: token(user), DeviceId: device, ProtocolVersion: 1, LastUserSeq: last, Epoch: epoch}}}
	}
	tcpLogin := func(user, device string, last uint64, epoch string) (*client, net.Conn, *pimv1.Welcome) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, conn)
		c.request(helloFor(user, device, last, epoch))
		w := c.recv().GetWelcome()
		if w == nil || w.User != user {
			t.Fatalf("no Welcome for %s: %v", user, w)
		}
		return c, conn, w
	}
	text := func(cmid, to string) *pimv1.Frame {
		return &pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
			ClientMsgId: cmid, ToUser: to, Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("msg " + cmid)}}}
	}

	alice, aliceConn, _ := tcpLogin("alice", "laptop", 0, "")
	tablet, tabletConn, _ := tcpLogin("bob", "tablet", 0, "")
	phone := dialWS(t, srv.URL)
	phone.request(helloFor("bob", "phone", 0, ""))
	wl := phone.mustRecv().GetWelcome()
	if wl == nil || wl.Epoch != st.Epoch() {
		t.Fatalf("phone Welcome %v", wl)
	}

	// Fifty pipelined sends: acked in order, seqs 1..50 in the conversation.
	const n = 50
	go func() {
		for i := 1; i <= n; i++ {
			f := text(fmt.Sprint(i), "bob")
			f.RequestId = uint64(i)
			if alice.write(f) != nil {
				return
			}
		}
	}()
	var own []*pimv1.Event
	for i := 1; i <= n; i++ {
		f := alice.recvNonPush(&own)
		ack := f.GetSendAck()
		if ack == nil || f.RequestId != uint64(i) || ack.Seq != uint64(i) || ack.Conv != "d:alice:bob" || ack.Duplicate {
			t.Fatalf("ack %d: %v", i, f)
		}
	}
	// Both of bob's devices get them, in order, gap-free; so does alice's own stream.
	check := func(evs []*pimv1.Event) {
		t.Helper()
		checkSeqs(t, evs, 1, n)
		for i, ev := range evs {
			m := ev.GetMessage()
			if m.Seq != uint64(i+1) || m.Sender != "alice" || m.SenderDevice != "laptop" || m.ClientMsgId != fmt.Sprint(i+1) {
				t.Fatalf("event %d: %v", i, m)
			}
		}
	}
	check(tablet.events(n))
	var phoneEvs []*pimv1.Event
	for len(phoneEvs) < n {
		phoneEvs = append(phoneEvs, phone.mustRecv().GetPush().GetEvents()...)
	}
	check(phoneEvs)
	for len(own) < n {
		own = append(own, alice.events(1)...)
	}
	check(own)

	// A resend is deduplicated.
	id := alice.request(text("7", "bob"))
	if f := alice.recvNonPush(nil); !f.GetSendAck().GetDuplicate() || f.GetSendAck().Seq != 7 || f.RequestId != id {
		t.Fatalf("resend: %v", f)
	}

	// The phone acks 50; the tablet's cursor is its own.
	phone.request(&pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: n}}})
	phone.request(&pimv1.Frame{Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{}}})
	if f := phone.mustRecv(); f.GetPong() == nil {
		t.Fatalf("got %v", f)
	}
	if c, _, _ := svc.Session(context.Background(), "bob", "phone"); c != n {
		t.Fatalf("phone cursor %d", c)
	}
	if c, _, _ := svc.Session(context.Background(), "bob", "tablet"); c != 0 {
		t.Fatalf("tablet cursor %d", c)
	}

	// The tablet resumes from 40 with the right epoch, and from its cursor with a stale one.
	tablet.conn.Close()
	_ = tabletConn
	tablet, tabletConn, w := tcpLogin("bob", "tablet", 40, st.Epoch())
	if w.PushFromUserSeq != 40 || w.UserSeq != n {
		t.Fatalf("resume Welcome %v", w)
	}
	checkSeqs(t, tablet.events(n-40), 41, n)
	stale, staleConn, w := tcpLogin("bob", "tablet", 40, "another-epoch")
	if w.PushFromUserSeq != 0 {
		t.Fatalf("stale-epoch Welcome %v", w)
	}
	checkSeqs(t, stale.events(n), 1, n)
	staleConn.Close()

	// Groups: membership is a message; members get group messages.
	id = alice.request(&pimv1.Frame{Body: &pimv1.Frame_GroupReq{GroupReq: &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_CREATE, Group: "g:team", Users: []string{"bob"}}}})
	if f := alice.recvNonPush(nil); f.GetGroupResp().GetGroup() != "g:team" || len(f.GetGroupResp().Members) != 2 || f.RequestId != id {
		t.Fatalf("create group: %v", f)
	}
	id = alice.request(&pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
		ClientMsgId: "g1", Conv: "g:team", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi team")}}})
	if f := alice.recvNonPush(nil); f.GetSendAck().GetSeq() != 2 || f.RequestId != id {
		t.Fatalf("group send: %v", f)
	}
	evs := tablet.events(2)
	checkSeqs(t, evs, n+1, n+2)
	if evs[0].GetMessage().Type != pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED || string(evs[1].GetMessage().Body) != "hi team" {
		t.Fatalf("group events %v", evs)
	}

	// Isolation: bob cannot read alice's conversation with carol.
	alice.request(text("c1", "carol"))
	alice.recvNonPush(nil)
	id = tablet.request(&pimv1.Frame{Body: &pimv1.Frame_HistoryReq{HistoryReq: &pimv1.HistoryReq{Conv: "d:alice:carol"}}})
	if f := tablet.recvNonPush(nil); f.GetError().GetCode() != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN || f.RequestId != id {
		t.Fatalf("history of others: %v", f)
	}

	// Shutdown: everyone gets GoAway.
	shut := shutdown(t, g)
	for _, c := range []*client{alice, tablet} {
		fs := c.closed()
		if len(fs) == 0 || fs[len(fs)-1].GetGoAway() == nil {
			t.Fatalf("want GoAway last, got %v", fs)
		}
	}
	aliceConn.Close()
	tabletConn.Close()
	for {
		f, err := phone.recv()
		if err != nil {
			break
		}
		if f.GetGoAway() != nil {
			continue
		}
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
