package core_test

import (
	"errors"
	"testing"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

func TestDiscardUnblocksTheConversation(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSendAge = 10 * time.Second
	h := newHarness(t, cfg, core.State{})
	a := h.send(dm, "a")
	b := h.send(dm, "b")
	h.wait(10 * time.Second) // offline: a fails, b waits behind it
	h.connect(&pimv1.Welcome{})
	if fs := sendReqs(h.takeFrames()); len(fs) != 0 {
		t.Fatalf("sent %v behind a failed message", fs)
	}
	if err := h.c.Discard(h.now, b); err == nil {
		t.Fatal("discarded a message that had not failed")
	}
	if err := h.c.Discard(h.now, a); err != nil {
		t.Fatal(err)
	}
	h.flush()
	fs := sendReqs(h.takeFrames())
	if len(fs) != 1 || fs[0].GetSendReq().ClientMsgId != b {
		t.Fatalf("after Discard sent %v", fs)
	}
	if len(h.state.Outbox) != 1 || h.state.Outbox[0].ClientMsgID != b || h.state.Outbox[0].Attempts != 1 {
		t.Fatalf("persisted %+v", h.state.Outbox)
	}
}

func TestSyncTimeoutRetries(t *testing.T) {
	cfg := testConfig()
	cfg.RequestTimeout = 3 * time.Second
	h := newHarness(t, cfg, core.State{Meta: core.Meta{Epoch: "e1"}})
	h.connect(&pimv1.Welcome{UserSeq: 4, PushFromUserSeq: 4, AckedUserSeq: 4})
	if fs := h.takeFrames(); len(fs) != 1 || fs[0].GetSyncReq() == nil {
		t.Fatalf("frames %v", fs)
	}
	h.wait(3 * time.Second)
	if fs := h.takeFrames(); len(fs) != 1 || fs[0].GetSyncReq().GetAfterUserSeq() != 0 {
		t.Fatalf("after a timeout %v, want the SyncReq again", fs)
	}
}

func TestWelcomeForAnotherUserStops(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	f, _ := h.up()
	h.welcome(f, &pimv1.Welcome{User: "mallory"})
	ss := connStates(h.takeEvents())
	if last := ss[len(ss)-1]; last.State != core.Stopped || !errors.Is(last.Err, core.ErrWrongUser) {
		t.Fatalf("events %v", ss)
	}
}

func TestGoAwayDuringHandshake(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.up()
	h.receive(&pimv1.Frame{Body: &pimv1.Frame_GoAway{GoAway: &pimv1.GoAway{RetryAfterMs: 1000}}})
	h.wait(hintMax(time.Second))
	if d := h.lastDial(); d.Addr != "s1" || len(h.dials) != 2 {
		t.Fatalf("dials %v, want s1 after 1s", h.dials)
	}
}

func TestErrorToPingKeepsHeartbeating(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.connect(&pimv1.Welcome{})
	h.takeFrames()
	h.wait(10 * time.Second)
	fs := h.takeFrames()
	if len(fs) != 1 || fs[0].GetPing() == nil {
		t.Fatalf("frames %v", fs)
	}
	h.receive(errFrame(fs[0].RequestId, pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, 0, false))
	h.wait(10 * time.Second)
	if fs := h.takeFrames(); len(fs) != 1 || fs[0].GetPing() == nil {
		t.Fatalf("no heartbeat after an Error to a Ping: %v", fs)
	}
}
