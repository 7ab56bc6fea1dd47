package core_test

import (
	"math/rand/v2"
	"strings"
	"testing"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

func (h *harness) sendWithID(conv, id, body string) (string, error) {
	got, err := h.c.SendWithID(h.now, conv, id, pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte(body))
	h.flush()
	return got, err
}

// A caller's client_msg_id goes on the wire as given, one outbox entry per
// id: the same message again (also after a restart) queues nothing, another
// message under the id is refused, and once the entry is Sent the id may be
// queued again (the server then answers with the first message's ack).
func TestSendWithIDOneEntryPerID(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	if id, err := h.sendWithID(dm, "script-1", "hi"); err != nil || id != "script-1" {
		t.Fatalf("SendWithID: %q, %v", id, err)
	}
	if id, err := h.sendWithID(dm, "script-1", "hi"); err != nil || id != "script-1" {
		t.Fatalf("the same message again: %q, %v", id, err)
	}
	for _, c := range []struct{ conv, body string }{{dm, "other text"}, {"g:x", "hi"}} {
		if _, err := h.sendWithID(c.conv, "script-1", c.body); err == nil || !strings.Contains(err.Error(), "already in the outbox") {
			t.Fatalf("another message (%s, %q) under the id: %v", c.conv, c.body, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 65), "\xff"} {
		if _, err := h.sendWithID(dm, bad, "hi"); err == nil {
			t.Fatalf("id %q accepted", bad)
		}
	}
	if _, err := h.sendWithID("nope", "script-2", "hi"); err == nil {
		t.Fatal("invalid conversation accepted")
	}
	if n := len(h.state.Outbox); n != 1 {
		t.Fatalf("%d entries persisted, want 1", n)
	}

	// After a restart: still one entry, sent with the caller's id.
	cfg := testConfig()
	cfg.Rand = rand.New(rand.NewPCG(3, 4))
	h2 := newHarness(t, cfg, h.state)
	if _, err := h2.sendWithID(dm, "script-1", "hi"); err != nil || len(h2.c.Outbox()) != 1 {
		t.Fatalf("after restart: %v, outbox %v", err, h2.c.Outbox())
	}
	h2.connect(&pimv1.Welcome{})
	fs := sendReqs(h2.takeFrames())
	if len(fs) != 1 || fs[0].GetSendReq().ClientMsgId != "script-1" {
		t.Fatalf("sent %v", fs)
	}
	h2.receive(ackFor(fs[0], 1))
	if len(h2.c.Outbox()) != 0 {
		t.Fatalf("outbox after the ack: %v", h2.c.Outbox())
	}
	if _, err := h2.sendWithID(dm, "script-1", "hi"); err != nil {
		t.Fatal(err)
	}
	if fs := sendReqs(h2.takeFrames()); len(fs) != 1 || fs[0].GetSendReq().ClientMsgId != "script-1" {
		t.Fatalf("sent again %v", fs)
	}
}
