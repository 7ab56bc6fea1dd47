package e2e

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/pimproc"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// pimBinary builds cmd/pim once per test run.
func pimBinary(t *testing.T) string {
	t.Helper()
	bin, err := pimproc.Build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// child is a `pim serve` process.
type child = pimproc.Server

// startChild starts `pim serve` on dir (plaintext TCP only) and returns once it listens.
func startChild(t *testing.T, bin, dir string) *child {
	t.Helper()
	return startChildArgs(t, bin, "serve", "--data", dir, "--tcp", "127.0.0.1:0", "--http", "", "--log-level", "warn")
}

// startChildArgs runs the pim binary with args and waits for its banner.
func startChildArgs(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	c, err := pimproc.Start(bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sender sends msgs messages from one device, resending each (same
// client_msg_id) until it is acknowledged, across server crashes.
type sender struct {
	user, device, to, conv string
	acks                   []*pimv1.SendAck
}

func (s *sender) id(i int) string { return fmt.Sprintf("%s-%s-%04d", s.user, s.device, i) }

func (s *sender) run(ctx context.Context, tok string, addr *atomic.Value, msgs int, acked *atomic.Int64) error {
	var conn *client.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for i := 0; i < msgs; {
		if ctx.Err() != nil {
			return fmt.Errorf("%s/%s stopped at message %d: %w", s.user, s.device, i, ctx.Err())
		}
		if conn == nil {
			c, err := client.Dial(ctx, client.Options{Addr: addr.Load().(string), Token: tok, Device: s.device, DiscardPushes: true})
			if err != nil {
				time.Sleep(20 * time.Millisecond) // client back-off while the server restarts
				continue
			}
			conn = c
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := conn.Send(sctx, &pimv1.SendReq{ClientMsgId: s.id(i), ToUser: s.to, Conv: s.conv,
			Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte(s.id(i)), ClientSeq: uint64(i + 1)})
		cancel()
		if err != nil {
			if errCode(err) == pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
				return fmt.Errorf("%s: %w", s.id(i), err)
			}
			conn.Close()
			conn = nil
			continue
		}
		s.acks = append(s.acks, ack)
		acked.Add(1)
		i++
	}
	return nil
}

// A server child process is killed with SIGKILL while clients send with
// retries; after each restart on the same data dir, every acknowledged
// message is present exactly once, seqs are gap-free, and every device syncs
// all of them in order.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a server process")
	}
	bin := pimBinary(t)
	dir := t.TempDir()
	srv := startChild(t, bin, dir)
	defer func() { srv.Kill() }()
	keys, err := auth.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok := func(u string) string { s, _ := keys.Issue(u, time.Hour); return s }
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	setup, err := client.Dial(ctx, client.Options{Addr: srv.Addr, Token: tok("alice"), Device: "setup", DiscardPushes: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Group(ctx, &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_CREATE, Group: "g:crash", Users: []string{"bob", "carol"}}); err != nil {
		t.Fatal(err)
	}
	setup.Close()

	const msgs = 150
	senders := []*sender{
		{user: "alice", device: "phone", to: "bob"},
		{user: "alice", device: "pc", conv: "g:crash"},
		{user: "carol", device: "phone", conv: "g:crash"},
		{user: "bob", device: "phone", to: "alice"},
	}
	var addr atomic.Value
	addr.Store(srv.Addr)
	var acked atomic.Int64
	errs := make(chan error, len(senders))
	for _, s := range senders {
		go func() { errs <- s.run(ctx, tok(s.user), &addr, msgs, &acked) }()
	}
	total := int64(msgs * len(senders))
	for _, at := range []int64{total / 8, total / 4, total * 3 / 8, total / 2, total * 5 / 8, total * 3 / 4, total * 7 / 8} {
		for acked.Load() < at && ctx.Err() == nil {
			time.Sleep(time.Millisecond) // polling a counter another goroutine owns; the kill point need not be exact
		}
		srv.Kill()
		t.Logf("killed the server after %d acks", acked.Load())
		srv = startChild(t, bin, dir)
		addr.Store(srv.Addr)
	}
	for range senders {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	verifyAfterCrash(t, ctx, srv.Addr, tok, senders, msgs)
}

func verifyAfterCrash(t *testing.T, ctx context.Context, addr string, tok func(string) string, senders []*sender, msgs int) {
	conns := map[string]*client.Conn{}
	for _, u := range []string{"alice", "bob", "carol"} {
		c, err := client.Dial(ctx, client.Options{Addr: addr, Token: tok(u), Device: "verifier", DiscardPushes: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[u] = c
	}
	// Every conversation: gap-free seqs; every acked message exactly once at
	// its acked seq; each device's messages in the order it sent them.
	convMsgs := map[string][]*pimv1.Message{}
	for _, conv := range []string{store.DirectConv("alice", "bob"), "g:crash"} {
		h := history(t, conns["alice"], conv)
		for i, m := range h {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d has seq %d (gap)", conv, i, m.Seq)
			}
		}
		convMsgs[conv] = h
	}
	for _, s := range senders {
		if len(s.acks) != msgs {
			t.Fatalf("%s/%s: %d acks, want %d", s.user, s.device, len(s.acks), msgs)
		}
		h := convMsgs[s.acks[0].Conv]
		count, last := 0, uint64(0)
		for _, m := range h {
			if m.Sender == s.user && m.SenderDevice == s.device {
				count++
				if m.ClientSeq <= last {
					t.Fatalf("%s/%s: client seq %d after %d: sender order broken", s.user, s.device, m.ClientSeq, last)
				}
				last = m.ClientSeq
			}
		}
		if count != msgs {
			t.Fatalf("%s/%s: %d messages stored, want %d (duplicates or loss)", s.user, s.device, count, msgs)
		}
		for i, ack := range s.acks {
			m := h[ack.Seq-1]
			if m.ClientMsgId != s.id(i) || m.MsgId != ack.MsgId {
				t.Fatalf("acked %s at seq %d, found %s", s.id(i), ack.Seq, m.ClientMsgId)
			}
		}
	}
	// Every user's timeline: gap-free and holding each message of their
	// conversations exactly once, in conversation order.
	for user, c := range conns {
		evs := syncAll(t, c, 0)
		checkGapFree(t, evs, 1)
		next := map[string]uint64{}
		for _, ev := range evs {
			m := ev.GetMessage()
			if m == nil {
				continue // a receipt: delivered receipts follow the acks
			}
			if m.Seq != next[m.Conv]+1 && next[m.Conv] != 0 {
				t.Fatalf("%s: %s seq %d after %d", user, m.Conv, m.Seq, next[m.Conv])
			}
			next[m.Conv] = m.Seq
		}
		for conv, h := range convMsgs {
			if a, b, ok := store.ParseDirect(conv); ok && user != a && user != b {
				continue
			}
			if next[conv] != uint64(len(h)) {
				t.Fatalf("%s's timeline ends %s at seq %d, conversation has %d", user, conv, next[conv], len(h))
			}
		}
	}
}
