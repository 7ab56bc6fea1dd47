package core_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

func TestHandshake(t *testing.T) {
	st := core.State{Meta: core.Meta{Epoch: "e1", Delivered: 7}}
	h := newHarness(t, testConfig(), st)
	if d := h.lastDial(); d.Addr != "s0" {
		t.Fatalf("first dial to %q", d.Addr)
	}
	f, hello := h.up()
	if hello.Token != "tok" || hello.DeviceId != "phone" || hello.ProtocolVersion != 1 ||
		hello.LastUserSeq != 7 || hello.Epoch != "e1" || hello.ClientTime != t0.UnixMilli() || f.RequestId == 0 {
		t.Fatalf("Hello %v", hello)
	}
	h.now = h.now.Add(100 * time.Millisecond)
	h.welcome(f, &pimv1.Welcome{ServerTime: t0.Add(time.Hour + 50*time.Millisecond).UnixMilli(),
		UserSeq: 7, PushFromUserSeq: 7, AckedUserSeq: 7})
	if h.c.ConnState() != core.Connected {
		t.Fatalf("state %v", h.c.ConnState())
	}
	off, bound, ok := h.c.Offset()
	if !ok || off != time.Hour || bound != 50*time.Millisecond {
		t.Fatalf("offset %v ± %v (%v)", off, bound, ok)
	}
	if got := h.c.ServerNow(h.now); !got.Equal(h.now.Add(time.Hour)) {
		t.Fatalf("ServerNow %v", got)
	}
	if h.state.Meta.Clock.RTT != 100*time.Millisecond {
		t.Fatalf("clock sample not persisted: %+v", h.state.Meta.Clock)
	}
	var caught bool
	for _, e := range h.takeEvents() {
		if cu, ok := e.(core.CaughtUpEvent); ok && cu.UserSeq == 7 {
			caught = true
		}
	}
	if !caught {
		t.Fatal("no CaughtUp with nothing to catch up")
	}
}

func TestTimelineDeliversOnceInOrderAndAcksAfterPersist(t *testing.T) {
	cfg := testConfig()
	cfg.AckEvery = 3
	cfg.AckDelay = 200 * time.Millisecond
	h := newHarness(t, cfg, core.State{})
	h.connect(&pimv1.Welcome{UserSeq: 5, PushFromUserSeq: 0})
	h.takeEvents()
	h.receive(push(msgEvent(1, dm, 1), msgEvent(2, dm, 2)))
	if got := delivered(h.takeEvents()); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("delivered %v", got)
	}
	if h.state.Meta.Delivered != 2 {
		t.Fatalf("persisted cursor %d", h.state.Meta.Delivered)
	}
	if fs := h.takeFrames(); len(fs) != 0 {
		t.Fatalf("acked before AckEvery/AckDelay: %v", fs)
	}
	// A duplicate is dropped; the third event triggers an ack.
	h.receive(push(msgEvent(2, dm, 2), msgEvent(3, dm, 3)))
	if got := delivered(h.takeEvents()); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("delivered %v", got)
	}
	fs := h.takeFrames()
	if len(fs) != 1 || fs[0].GetPushAck().GetUserSeq() != 3 {
		t.Fatalf("frames %v, want PushAck(3)", fs)
	}
	// One more: acked after AckDelay.
	h.receive(push(msgEvent(4, dm, 4)))
	h.wait(199 * time.Millisecond)
	if fs := h.takeFrames(); len(fs) != 0 {
		t.Fatalf("early ack %v", fs)
	}
	h.wait(time.Millisecond)
	if fs := h.takeFrames(); len(fs) != 1 || fs[0].GetPushAck().GetUserSeq() != 4 {
		t.Fatalf("frames %v, want PushAck(4)", fs)
	}
	h.receive(push(msgEvent(5, dm, 5)))
	var caught bool
	for _, e := range h.takeEvents() {
		if _, ok := e.(core.CaughtUpEvent); ok {
			caught = true
		}
	}
	if !caught {
		t.Fatal("no CaughtUp at Welcome.user_seq")
	}
}

func TestTimelineGapIsSynced(t *testing.T) {
	cfg := testConfig()
	cfg.SyncLimit = 2
	h := newHarness(t, cfg, core.State{Meta: core.Meta{Epoch: "e1", Delivered: 1}})
	// The server's cursor is ahead of what this device has (e.g. restored
	// from a backup): the stream starts after 4.
	h.connect(&pimv1.Welcome{UserSeq: 6, PushFromUserSeq: 4, AckedUserSeq: 4})
	fs := h.takeFrames()
	if len(fs) != 1 || fs[0].GetSyncReq().GetAfterUserSeq() != 1 || fs[0].GetSyncReq().GetLimit() != 2 {
		t.Fatalf("frames %v, want SyncReq(after 1)", fs)
	}
	h.receive(push(msgEvent(5, dm, 5), msgEvent(6, dm, 6))) // held
	if got := delivered(h.takeEvents()); len(got) != 0 {
		t.Fatalf("delivered %v across a gap", got)
	}
	h.receive(&pimv1.Frame{RequestId: fs[0].RequestId, Body: &pimv1.Frame_SyncResp{SyncResp: &pimv1.SyncResp{
		Events: []*pimv1.Event{msgEvent(2, dm, 2), msgEvent(3, dm, 3)}, HasMore: true, UserSeq: 6}}})
	fs = h.takeFrames()
	if len(fs) != 1 || fs[0].GetSyncReq().GetAfterUserSeq() != 3 {
		t.Fatalf("frames %v, want SyncReq(after 3)", fs)
	}
	h.receive(&pimv1.Frame{RequestId: fs[0].RequestId, Body: &pimv1.Frame_SyncResp{SyncResp: &pimv1.SyncResp{
		Events: []*pimv1.Event{msgEvent(4, dm, 4), msgEvent(5, dm, 5)}, HasMore: true, UserSeq: 6}}})
	if got := delivered(h.takeEvents()); !slices.Equal(got, []uint64{2, 3, 4, 5, 6}) {
		t.Fatalf("delivered %v", got)
	}
	for _, f := range h.takeFrames() {
		if f.GetSyncReq() != nil {
			t.Fatalf("synced again after the gap closed: %v", f)
		}
	}
}

func TestEpochChangeResyncs(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{Meta: core.Meta{Epoch: "old", Delivered: 40}})
	h.connect(&pimv1.Welcome{Epoch: "new", UserSeq: 3, PushFromUserSeq: 0})
	evs := h.takeEvents()
	i := slices.IndexFunc(evs, func(e core.Event) bool { _, ok := e.(core.ResyncEvent); return ok })
	if i < 0 || evs[i].(core.ResyncEvent) != (core.ResyncEvent{OldEpoch: "old", NewEpoch: "new"}) {
		t.Fatalf("events %v, want Resync", evs)
	}
	if h.state.Meta.Epoch != "new" || h.state.Meta.Delivered != 0 {
		t.Fatalf("meta %+v after resync", h.state.Meta)
	}
	h.receive(push(msgEvent(1, dm, 1)))
	if got := delivered(h.takeEvents()); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("delivered %v", got)
	}
}

func TestOwnEchoCompletesTheOutboxEntry(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.connect(&pimv1.Welcome{})
	id := h.send(dm, "hi")
	h.takeFrames()
	ev := &pimv1.Event{UserSeq: 1, Kind: &pimv1.Event_Message{Message: &pimv1.Message{
		Conv: dm, Seq: 1, MsgId: "m1", Sender: "alice", SenderDevice: "phone", ClientMsgId: id,
		Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi")}}}
	h.receive(push(ev))
	evs := h.takeEvents()
	if got := sendStates(evs, id); !slices.Equal(got, []core.SendState{core.Queued, core.Sending, core.Sent}) {
		t.Fatalf("states %v", got)
	}
	var own bool
	for _, e := range evs {
		if m, ok := e.(core.MessageEvent); ok {
			own = m.Own
		}
	}
	if !own || len(h.c.Outbox()) != 0 || len(h.state.Outbox) != 0 {
		t.Fatalf("own=%v outbox %v persisted %v", own, h.c.Outbox(), h.state.Outbox)
	}
}

func TestOutboxPipelinesAndResendsInOrder(t *testing.T) {
	cfg := testConfig()
	cfg.Window = 2
	h := newHarness(t, cfg, core.State{})
	ids := []string{h.send(dm, "1"), h.send(dm, "2"), h.send(dm, "3"), h.send("g:x", "4")}
	if len(h.state.Outbox) != 4 {
		t.Fatalf("persisted %d entries offline", len(h.state.Outbox))
	}
	h.connect(&pimv1.Welcome{})
	fs := sendReqs(h.takeFrames())
	got := func(fs []*pimv1.Frame) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.GetSendReq().ClientMsgId)
		}
		return out
	}
	if want := []string{ids[0], ids[1], ids[3]}; !slices.Equal(got(fs), want) {
		t.Fatalf("sent %v, want %v (window 2 per conversation)", got(fs), want)
	}
	// The connection dies: the whole window again, same ids and client_seqs.
	first := fs
	h.down()
	h.connect(&pimv1.Welcome{})
	again := sendReqs(h.takeFrames())
	if !slices.Equal(got(again), got(first)) {
		t.Fatalf("resent %v, want %v", got(again), got(first))
	}
	for i := range again {
		if !proto.Equal(again[i].GetSendReq(), first[i].GetSendReq()) {
			t.Fatalf("resend differs: %v vs %v", again[i], first[i])
		}
	}
	h.receive(ackFor(again[0], 1))
	next := sendReqs(h.takeFrames())
	if !slices.Equal(got(next), []string{ids[2]}) {
		t.Fatalf("after an ack sent %v, want the third", got(next))
	}
	evs := h.takeEvents()
	if s := sendStates(evs, ids[0]); s[len(s)-1] != core.Sent {
		t.Fatalf("states of the first: %v", s)
	}
}

func TestRetryBudgetAttempts(t *testing.T) {
	cfg := testConfig()
	cfg.MaxAttempts = 3
	cfg.SendTimeout = time.Second
	cfg.DeadAfterTimeouts = 100
	cfg.MaxSendAge = time.Hour
	h := newHarness(t, cfg, core.State{})
	h.connect(&pimv1.Welcome{})
	a := h.send(dm, "a")
	b := h.send(dm, "b")
	var n int
	for range 3 {
		n += len(sendReqs(h.takeFrames()))
		h.wait(time.Second)
	}
	h.takeFrames()
	evs := h.takeEvents()
	if s := sendStates(evs, a); s[len(s)-1] != core.Failed {
		t.Fatalf("states of a: %v", s)
	}
	if s := sendStates(evs, b); s[len(s)-1] != core.Queued {
		t.Fatalf("b does not wait behind the failed a: %v", s)
	}
	for _, e := range evs {
		if s, ok := e.(core.SendStateEvent); ok && s.State == core.Failed && !errors.Is(s.Err, core.ErrRetryBudget) {
			t.Fatalf("failure %v", s.Err)
		}
	}
	h.wait(10 * time.Second)
	if fs := sendReqs(h.takeFrames()); len(fs) != 0 {
		t.Fatalf("sent %v behind a failed message", fs)
	}
	// Retry: same id, same client_seq, and b follows.
	before := h.c.Outbox()[0]
	if err := h.c.RetryFailed(h.now, a); err != nil {
		t.Fatal(err)
	}
	h.flush()
	fs := sendReqs(h.takeFrames())
	if len(fs) != 2 || fs[0].GetSendReq().ClientMsgId != a || fs[0].GetSendReq().ClientSeq != before.ClientSeq ||
		fs[1].GetSendReq().ClientMsgId != b {
		t.Fatalf("after RetryFailed: %v", fs)
	}
}

func TestRetryBudgetAge(t *testing.T) {
	cfg := testConfig()
	cfg.MaxSendAge = time.Minute
	h := newHarness(t, cfg, core.State{})
	// Offline: the dial never completes.
	a := h.send(dm, "a")
	h.wait(59 * time.Second)
	if s := sendStates(h.takeEvents(), a); slices.Contains(s, core.Failed) {
		t.Fatalf("failed early: %v", s)
	}
	h.wait(time.Second)
	if s := sendStates(h.takeEvents(), a); !slices.Equal(s, []core.SendState{core.Failed}) {
		t.Fatalf("states %v", s)
	}
	if h.state.Outbox[0].State != core.Failed {
		t.Fatalf("failure not persisted: %+v", h.state.Outbox[0])
	}
}

func TestRefusedMessageDoesNotBlock(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.connect(&pimv1.Welcome{})
	a := h.send("g:x", "a")
	b := h.send("g:x", "b")
	fs := sendReqs(h.takeFrames())
	h.receive(&pimv1.Frame{RequestId: fs[0].RequestId, Body: &pimv1.Frame_Error{Error: &pimv1.Error{
		Code: pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, Message: "not a member"}}})
	h.receive(ackFor(fs[1], 1))
	evs := h.takeEvents()
	var se *core.ServerError
	for _, e := range evs {
		if s, ok := e.(core.SendStateEvent); ok && s.ClientMsgID == a && s.State == core.Failed {
			if !errors.As(s.Err, &se) || se.Code != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
				t.Fatalf("err %v", s.Err)
			}
		}
	}
	if se == nil || !slices.Contains(sendStates(evs, b), core.Sent) {
		t.Fatalf("events %v", evs)
	}
	// Retried, it goes to the end of the conversation with a new client_seq.
	c := h.send("g:x", "c")
	fs = sendReqs(h.takeFrames())
	if err := h.c.RetryFailed(h.now, a); err != nil {
		t.Fatal(err)
	}
	h.flush()
	fs = append(fs, sendReqs(h.takeFrames())...)
	if len(fs) != 2 || fs[0].GetSendReq().ClientMsgId != c || fs[1].GetSendReq().ClientMsgId != a ||
		fs[1].GetSendReq().ClientSeq <= fs[0].GetSendReq().ClientSeq {
		t.Fatalf("sent %v", fs)
	}
}

func TestRestartResumesFromPersistedState(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.connect(&pimv1.Welcome{})
	a := h.send(dm, "a")
	first := sendReqs(h.takeFrames())[0]
	// The app dies; a new core starts from what was persisted (with a
	// random source that does not repeat the first one's).
	cfg := testConfig()
	cfg.Rand = rand.New(rand.NewPCG(3, 4))
	h2 := newHarness(t, cfg, h.state)
	h2.now = h.now
	h2.connect(&pimv1.Welcome{})
	again := sendReqs(h2.takeFrames())
	if len(again) != 1 || !proto.Equal(again[0].GetSendReq(), first.GetSendReq()) {
		t.Fatalf("after restart sent %v, want %v", again, first)
	}
	if again[0].GetSendReq().ClientMsgId != a {
		t.Fatal("id changed")
	}
	b := h2.send(dm, "b")
	if bs := sendReqs(h2.takeFrames()); len(bs) != 1 || bs[0].GetSendReq().ClientSeq <= first.GetSendReq().ClientSeq || b == a {
		t.Fatalf("new message after restart: %v", bs)
	}
}

func TestCommandsInOrderWithMessages(t *testing.T) {
	cfg := testConfig()
	cfg.CommandQuarantine = 5 * time.Second
	h := newHarness(t, cfg, core.State{})
	create := &pimv1.Frame{Body: &pimv1.Frame_GroupReq{GroupReq: &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_CREATE, Group: "g:new", Users: []string{"bob"}}}}
	cid, err := h.c.Command(h.now, create)
	if err != nil {
		t.Fatal(err)
	}
	h.flush()
	hello := h.send("g:new", "hello")
	leave := &pimv1.Frame{Body: &pimv1.Frame_GroupReq{GroupReq: &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_REMOVE, Group: "g:new", Users: []string{"alice"}}}}
	lid, _ := h.c.Command(h.now, leave)
	h.flush()
	if len(h.state.Commands) != 2 {
		t.Fatalf("persisted commands %v", h.state.Commands)
	}
	h.connect(&pimv1.Welcome{})
	fs := h.takeFrames()
	if len(fs) != 1 || fs[0].GetGroupReq().GetOp() != pimv1.GroupOp_GROUP_OP_CREATE {
		t.Fatalf("first %v, want only the CREATE (the message waits for it)", fs)
	}
	// The connection dies before the answer: the CREATE is not sent again
	// before the quarantine is over.
	h.down()
	h.connect(&pimv1.Welcome{})
	if fs := h.takeFrames(); len(fs) != 0 {
		t.Fatalf("resent within the quarantine: %v", fs)
	}
	h.wait(5 * time.Second)
	fs = h.takeFrames()
	if len(fs) != 1 || fs[0].GetGroupReq().GetOp() != pimv1.GroupOp_GROUP_OP_CREATE {
		t.Fatalf("after the quarantine %v", fs)
	}
	h.receive(&pimv1.Frame{RequestId: fs[0].RequestId, Body: &pimv1.Frame_GroupResp{GroupResp: &pimv1.GroupResp{Group: "g:new", Seq: 1}}})
	fs = h.takeFrames()
	if len(fs) != 1 || fs[0].GetSendReq().GetClientMsgId() != hello {
		t.Fatalf("after CREATE %v, want the message (the leave waits for it)", fs)
	}
	h.receive(ackFor(fs[0], 2))
	fs = h.takeFrames()
	if len(fs) != 1 || fs[0].GetGroupReq().GetOp() != pimv1.GroupOp_GROUP_OP_REMOVE {
		t.Fatalf("after the message %v, want the leave", fs)
	}
	h.receive(&pimv1.Frame{RequestId: fs[0].RequestId, Body: &pimv1.Frame_Error{Error: &pimv1.Error{
		Code: pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, RetryAfterMs: 2000}}})
	h.wait(1999 * time.Millisecond)
	if fs := h.takeFrames(); len(fs) != 0 && fs[0].GetGroupReq() != nil {
		t.Fatalf("retried before retry_after: %v", fs)
	}
	h.wait(time.Millisecond)
	fs = h.takeFrames()
	if len(fs) != 1 || fs[0].GetGroupReq() == nil {
		t.Fatalf("not retried: %v", fs)
	}
	h.receive(&pimv1.Frame{RequestId: fs[0].RequestId, Body: &pimv1.Frame_GroupResp{GroupResp: &pimv1.GroupResp{Group: "g:new", Seq: 3}}})
	var results []core.CommandResultEvent
	for _, e := range h.takeEvents() {
		if r, ok := e.(core.CommandResultEvent); ok {
			results = append(results, r)
		}
	}
	if len(results) != 2 || results[0].ID != cid || results[0].Attempts != 2 || results[1].ID != lid ||
		results[1].Err != nil || len(h.state.Commands) != 0 {
		t.Fatalf("results %+v, persisted %v", results, h.state.Commands)
	}
}

func TestCommandNamesAnUnnamedGroup(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	if _, err := h.c.Command(h.now, &pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{}}}); err == nil {
		t.Fatal("a SendReq accepted as a command")
	}
	if _, err := h.c.Command(h.now, &pimv1.Frame{Body: &pimv1.Frame_GroupReq{GroupReq: &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_CREATE}}}); err != nil {
		t.Fatal(err)
	}
	h.flush()
	f := new(pimv1.Frame)
	if err := proto.Unmarshal(h.state.Commands[0].Request, f); err != nil || len(f.GetGroupReq().GetGroup()) < 10 {
		t.Fatalf("group %q (%v)", f.GetGroupReq().GetGroup(), err)
	}
}
