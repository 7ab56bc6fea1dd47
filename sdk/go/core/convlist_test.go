// Deterministic tests of the conversation list and the read-state events:
// the test plays the server by hand.
//
// Invariants checked: the full load pages by activity and then syncs since
// its first page's version; events keep every field exact (unread across
// reads, hides and joins; peer read and delivered positions); a change that
// cannot be derived exactly marks the entry stale and fetches it; a server
// entry never overwrites a newer local one; every connection syncs since
// ListVersion; the list survives a restart and is dropped with the epoch;
// every timeline event reaches the app with its user seq.

package core_test

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

const grp = "g:team"

func listConfig() core.Config {
	cfg := testConfig()
	cfg.ConvList = true
	cfg.ConvListLimit = 2
	return cfg
}

// convListReqs returns the ConvListReqs among fs.
func convListReqs(fs []*pimv1.Frame) []*pimv1.Frame {
	var out []*pimv1.Frame
	for _, f := range fs {
		if f.GetConvListReq() != nil {
			out = append(out, f)
		}
	}
	return out
}

// oneListReq takes the frames written and returns the single ConvListReq.
func (h *harness) oneListReq() *pimv1.Frame {
	h.t.Helper()
	fs := convListReqs(h.takeFrames())
	if len(fs) != 1 {
		h.t.Fatalf("ConvListReqs %v, want one", fs)
	}
	return fs[0]
}

func (h *harness) noListReq() {
	h.t.Helper()
	if fs := convListReqs(h.takeFrames()); len(fs) != 0 {
		h.t.Fatalf("unexpected ConvListReqs %v", fs)
	}
}

func listResp(req *pimv1.Frame, version uint64, more bool, convs ...*pimv1.Conversation) *pimv1.Frame {
	return &pimv1.Frame{RequestId: req.RequestId, Body: &pimv1.Frame_ConvListResp{ConvListResp: &pimv1.ConvListResp{
		Convs: convs, HasMore: more, Version: version}}}
}

func srvConv(conv string, last, version, activity, read, unread uint64) *pimv1.Conversation {
	return &pimv1.Conversation{Conv: conv, LastSeq: last, Version: version, Activity: activity, ReadSeq: read,
		Unread: unread, LastMessage: &pimv1.Message{Conv: conv, Seq: last, MsgId: "m", Sender: "bob"}}
}

func ev(us uint64, kind any) *pimv1.Event {
	e := &pimv1.Event{UserSeq: us}
	switch k := kind.(type) {
	case *pimv1.Message:
		e.Kind = &pimv1.Event_Message{Message: k}
	case *pimv1.ReadSync:
		e.Kind = &pimv1.Event_Read{Read: k}
	case *pimv1.Hidden:
		e.Kind = &pimv1.Event_Hidden{Hidden: k}
	case *pimv1.Receipt:
		e.Kind = &pimv1.Event_Receipt{Receipt: k}
	}
	return e
}

func text(conv string, seq uint64, sender string) *pimv1.Message {
	return &pimv1.Message{Conv: conv, Seq: seq, MsgId: "m", Sender: sender, SenderDevice: "d",
		Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("x")}
}

// conv returns the app's view of one entry.
func (h *harness) conv(id string) core.Conversation {
	h.t.Helper()
	for _, c := range h.c.Conversations() {
		if c.Conv == id {
			return c
		}
	}
	h.t.Fatalf("no entry %s in %v", id, h.c.Conversations())
	return core.Conversation{}
}

// loadEmpty connects a fresh device and answers its full load with an
// empty list at version 0.
func loadEmpty(t *testing.T) *harness {
	h := newHarness(t, listConfig(), core.State{})
	h.connect(&pimv1.Welcome{})
	req := h.oneListReq()
	if q := req.GetConvListReq(); q.SinceVersion != 0 || q.BeforeActivity != 0 || q.Limit != 2 {
		t.Fatalf("first request %v", q)
	}
	h.receive(listResp(req, 0, false))
	if st := h.c.ListStatus(); !st.Loaded || st.Syncing || !st.Synced {
		t.Fatalf("status %+v after an empty load", st)
	}
	h.takeEvents()
	return h
}

func TestConvListFullLoadPagesThenSyncsSinceItsFirstPage(t *testing.T) {
	// A device that already has the timeline up to 10 (an SDK upgrade).
	h := newHarness(t, listConfig(), core.State{Meta: core.Meta{Epoch: "e1", Delivered: 10}})
	h.connect(&pimv1.Welcome{UserSeq: 10, PushFromUserSeq: 10, AckedUserSeq: 10})
	req := h.oneListReq()
	h.receive(listResp(req, 10, true, srvConv(dm, 6, 10, 10, 0, 2), srvConv("d:alice:carol", 3, 8, 8, 3, 0)))
	req = h.oneListReq()
	if q := req.GetConvListReq(); q.BeforeActivity != 8 || q.SinceVersion != 0 {
		t.Fatalf("second page %v, want before_activity 8", q)
	}
	if st := h.c.ListStatus(); st.Loaded || !st.Syncing {
		t.Fatalf("status %+v during the load", st)
	}
	// Meanwhile the group moved to the top (version 11): the last page
	// misses it, the sync since the first page's version finds it.
	h.receive(listResp(req, 11, false, srvConv("d:alice:dave", 1, 2, 2, 0, 1)))
	req = h.oneListReq()
	if q := req.GetConvListReq(); q.SinceVersion != 10 {
		t.Fatalf("after the pages %v, want since_version 10", q)
	}
	h.receive(listResp(req, 11, false, srvConv(grp, 4, 11, 11, 0, 4)))
	h.noListReq()
	st := h.c.ListStatus()
	if !st.Loaded || st.Version != 11 || st.Stale != 0 || st.Syncing || !st.Synced {
		t.Fatalf("status %+v after the load", st)
	}
	var order []string
	for _, c := range h.c.Conversations() {
		order = append(order, c.Conv)
	}
	if want := []string{grp, dm, "d:alice:carol", "d:alice:dave"}; !slices.Equal(order, want) {
		t.Fatalf("list %v, want %v (by activity)", order, want)
	}
	if c := h.conv(dm); c.Unread != 2 || c.LastMessage.GetSeq() != 6 || c.Version != 10 {
		t.Fatalf("entry %+v", c)
	}
	var evs []string
	for _, e := range h.takeEvents() {
		if ce, ok := e.(core.ConversationEvent); ok {
			evs = append(evs, ce.Conversation.Conv)
		}
	}
	if want := []string{dm, "d:alice:carol", "d:alice:dave", grp}; !slices.Equal(evs, want) {
		t.Fatalf("ConversationEvents %v, want %v", evs, want)
	}
	if !h.state.Meta.ListLoaded || h.state.Meta.ListVersion != 11 || len(h.state.Convs) != 4 {
		t.Fatalf("persisted meta %+v, %d entries", h.state.Meta, len(h.state.Convs))
	}
}

func TestConvListEventsKeepEveryFieldExact(t *testing.T) {
	h := loadEmpty(t)
	h.receive(push(
		ev(1, text(dm, 1, "bob")),
		ev(2, text(dm, 2, "bob")),
		ev(3, text(dm, 3, "alice")), // own: never unread
		ev(4, text(dm, 4, "bob")),
	))
	if c := h.conv(dm); c.Unread != 3 || c.LastSeq != 4 || c.Activity != 4 || c.Version != 4 {
		t.Fatalf("after 4 messages: %+v", c)
	}
	h.receive(push(
		ev(5, &pimv1.ReadSync{Conv: dm, Seq: 2, User: "alice", Device: "pc"}), // read on another device
		ev(6, &pimv1.Hidden{Conv: dm, Seq: 4, Device: "pc"}),                  // the last unread one
		ev(7, &pimv1.Hidden{Conv: dm, Seq: 1, Device: "pc"}),                  // below the read position
		ev(8, &pimv1.Receipt{Conv: dm, Kind: pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED, Seq: 3, User: "bob"}),
		ev(9, &pimv1.ReadSync{Conv: dm, Seq: 3, User: "bob", Device: "phone"}), // a read receipt
	))
	c := h.conv(dm)
	if c.ReadSeq != 2 || c.Unread != 0 || c.PeerDeliveredSeq != 3 || c.PeerReadSeq != 3 || c.Version != 9 ||
		c.Activity != 4 || c.Stale {
		t.Fatalf("after reads, hides and receipts: %+v", c)
	}
	// A group: joined at 5; a READ receipt changes no entry.
	created := &pimv1.Message{Conv: grp, Seq: 5, MsgId: "g", Sender: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED,
		Members: []string{"alice", "bob"}}
	h.receive(push(
		ev(10, created),
		ev(11, text(grp, 6, "bob")),
		ev(12, &pimv1.Receipt{Conv: grp, Kind: pimv1.ReceiptKind_RECEIPT_KIND_READ,
			Messages: []*pimv1.MessageReads{{Seq: 2, ReadCount: 1}}}),
		ev(13, &pimv1.Message{Conv: grp, Seq: 7, MsgId: "r", Sender: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED,
			Members: []string{"alice"}}),
	))
	if g := h.conv(grp); g.JoinSeq != 5 || g.Unread != 1 || !g.Left || g.Version != 13 || g.LastSeq != 7 {
		t.Fatalf("group entry %+v", g)
	}
	// Every timeline event reached the app once, with its user seq.
	var seqs []uint64
	for _, e := range h.takeEvents() {
		switch e := e.(type) {
		case core.MessageEvent:
			seqs = append(seqs, e.UserSeq)
		case core.ReadEvent:
			seqs = append(seqs, e.UserSeq)
		case core.HiddenEvent:
			seqs = append(seqs, e.UserSeq)
		case core.ReceiptEvent:
			seqs = append(seqs, e.UserSeq)
			if e.UserSeq == 12 && (e.Kind != pimv1.ReceiptKind_RECEIPT_KIND_READ ||
				!slices.Equal(e.Reads, []core.MessageReads{{Seq: 2, ReadCount: 1}})) {
				t.Fatalf("READ receipt %+v", e)
			}
		}
	}
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}; !slices.Equal(seqs, want) {
		t.Fatalf("timeline events %v, want %v", seqs, want)
	}
	h.noListReq()
	if st := h.c.ListStatus(); st.Version != 13 || st.Stale != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestConvListRejoinStartsAtZeroAndNewConversationIsExact(t *testing.T) {
	h := loadEmpty(t)
	added := func(us, seq uint64) *pimv1.Event {
		return ev(us, &pimv1.Message{Conv: grp, Seq: seq, MsgId: "a", Sender: "bob",
			Type: pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED, Members: []string{"alice"}})
	}
	h.receive(push(added(1, 3), ev(2, text(grp, 4, "bob")), ev(3, text(grp, 5, "carol"))))
	if g := h.conv(grp); g.Unread != 2 || g.JoinSeq != 3 || g.Stale {
		t.Fatalf("after joining: %+v", g)
	}
	h.receive(push(added(4, 9), ev(5, text(grp, 10, "bob"))))
	if g := h.conv(grp); g.Unread != 1 || g.JoinSeq != 9 {
		t.Fatalf("after the re-join: %+v", g)
	}
	// A hide below the join point changes nothing; reading past it is exact.
	h.receive(push(ev(6, &pimv1.Hidden{Conv: grp, Seq: 4}), ev(7, &pimv1.ReadSync{Conv: grp, Seq: 10, User: "alice"})))
	if g := h.conv(grp); g.Unread != 0 || g.ReadSeq != 10 || g.Stale {
		t.Fatalf("after reading: %+v", g)
	}
	h.noListReq()
}

func TestConvListInexactChangeGoesStaleAndIsFetched(t *testing.T) {
	h := newHarness(t, listConfig(), core.State{Meta: core.Meta{Epoch: "e1", Delivered: 5}})
	h.connect(&pimv1.Welcome{UserSeq: 5, PushFromUserSeq: 5, AckedUserSeq: 5})
	// From the server: 3 unread at or below seq 5, which ones unknown.
	h.receive(listResp(h.oneListReq(), 5, false, srvConv(dm, 5, 5, 5, 2, 3)))
	h.takeEvents()
	// A new message is known by seq; reading up to the last known one is
	// exact (every unknown unread message is below it).
	h.receive(push(ev(6, text(dm, 6, "bob"))))
	if c := h.conv(dm); c.Unread != 4 || c.Stale {
		t.Fatalf("after a message: %+v", c)
	}
	// A read within the unknown range cannot be derived.
	h.receive(push(ev(7, &pimv1.ReadSync{Conv: dm, Seq: 4, User: "alice", Device: "pc"})))
	c := h.conv(dm)
	if !c.Stale || c.ReadSeq != 4 || c.Version != 7 {
		t.Fatalf("after a read of unknown messages: %+v", c)
	}
	req := h.oneListReq()
	if q := req.GetConvListReq(); q.SinceVersion != 6 {
		t.Fatalf("refetch %v, want since_version 6 (below the entry's 7)", q)
	}
	fresh := srvConv(dm, 6, 7, 6, 4, 2)
	h.receive(listResp(req, 7, false, fresh))
	if c := h.conv(dm); c.Stale || c.Unread != 2 || c.Version != 7 {
		t.Fatalf("after the refetch: %+v", c)
	}
	stale := 0
	for _, e := range h.takeEvents() {
		if ce, ok := e.(core.ConversationEvent); ok && ce.Conversation.Stale {
			stale++
		}
	}
	if stale != 1 {
		t.Fatalf("%d stale ConversationEvents, want 1", stale)
	}
	h.noListReq()
	// Hiding a message the entry may count is fetched too; reading to the
	// bottom is always exact.
	h.receive(push(ev(8, &pimv1.Hidden{Conv: dm, Seq: 5})))
	if c := h.conv(dm); !c.Stale {
		t.Fatalf("a hide within the unknown range: %+v", c)
	}
	req = h.oneListReq()
	h.receive(push(ev(9, &pimv1.ReadSync{Conv: dm, Seq: 6, User: "alice"})))
	if c := h.conv(dm); c.Unread != 0 || !c.Stale {
		t.Fatalf("read to the bottom while stale: %+v", c)
	}
	// The answer is older than what the entry applied since: kept, still
	// stale, asked again after a while (not in a loop).
	h.receive(listResp(req, 8, false, srvConv(dm, 6, 8, 6, 4, 1)))
	if c := h.conv(dm); c.Version != 9 || c.Unread != 0 || !c.Stale {
		t.Fatalf("an older answer replaced a newer entry: %+v", c)
	}
	h.noListReq()
	h.wait(core.DefaultRetryAfter)
	req = h.oneListReq()
	if q := req.GetConvListReq(); q.SinceVersion != 8 {
		t.Fatalf("second refetch %v", q)
	}
	h.receive(listResp(req, 9, false, srvConv(dm, 6, 9, 6, 6, 0)))
	if c := h.conv(dm); c.Stale || c.Unread != 0 || c.ReadSeq != 6 {
		t.Fatalf("after the second refetch: %+v", c)
	}
	h.noListReq()
}

func TestConvListEventsBeforeTheLoadAreNotGuessed(t *testing.T) {
	h := newHarness(t, listConfig(), core.State{})
	h.connect(&pimv1.Welcome{UserSeq: 3})
	req := h.oneListReq()
	// The backlog arrives before the list: entries from events alone are
	// stale (their earlier history is unknown here).
	h.receive(push(ev(1, text(dm, 1, "bob")), ev(2, text(dm, 2, "bob"))))
	if c := h.conv(dm); !c.Stale {
		t.Fatalf("entry before the load: %+v", c)
	}
	// The answer at version 3 includes events 1 and 2, and 3 which the
	// device has not seen yet: it is skipped when it comes.
	h.receive(listResp(req, 3, false, srvConv(dm, 3, 3, 3, 0, 3)))
	if c := h.conv(dm); c.Stale || c.Unread != 3 {
		t.Fatalf("after the load: %+v", c)
	}
	h.receive(push(ev(3, text(dm, 3, "bob")), ev(4, text(dm, 4, "bob"))))
	if c := h.conv(dm); c.Unread != 4 || c.Version != 4 {
		t.Fatalf("event 3 applied twice, or 4 missed: %+v", c)
	}
	if st := h.c.ListStatus(); !st.Loaded || st.Version != 4 || st.Stale != 0 {
		t.Fatalf("status %+v", st)
	}
	h.noListReq()
}

func TestConvListSyncsOnReconnectSurvivesRestartAndDropsWithTheEpoch(t *testing.T) {
	h := loadEmpty(t)
	h.receive(push(ev(1, text(dm, 1, "bob")), ev(2, text(dm, 2, "bob"))))
	h.noListReq()
	h.down()
	h.connect(&pimv1.Welcome{UserSeq: 5, PushFromUserSeq: 2, AckedUserSeq: 2})
	req := h.oneListReq()
	if q := req.GetConvListReq(); q.SinceVersion != 2 {
		t.Fatalf("reconnect sync %v, want since_version 2", q)
	}
	h.receive(listResp(req, 5, false, srvConv(dm, 4, 5, 4, 1, 3)))
	if st := h.c.ListStatus(); st.Version != 5 || !st.Synced {
		t.Fatalf("status %+v", st)
	}
	// Restart from what was persisted: the same list, synced again.
	want := h.c.Conversations()
	h2 := newHarness(t, listConfig(), h.state)
	if got := h2.c.Conversations(); len(got) != 1 || !proto.Equal(got[0].LastMessage, want[0].LastMessage) ||
		got[0].Unread != want[0].Unread || got[0].Version != want[0].Version {
		t.Fatalf("after a restart %+v, want %+v", got, want)
	}
	h2.connect(&pimv1.Welcome{UserSeq: 5, PushFromUserSeq: 2, AckedUserSeq: 2})
	if q := h2.oneListReq().GetConvListReq(); q.SinceVersion != 5 {
		t.Fatalf("after a restart %v, want since_version 5", q)
	}
	// Another epoch: the list goes with the timeline and loads again.
	h2.down()
	h2.connect(&pimv1.Welcome{Epoch: "e2", UserSeq: 1})
	if q := h2.oneListReq().GetConvListReq(); q.SinceVersion != 0 || q.BeforeActivity != 0 {
		t.Fatalf("after an epoch change %v, want a full load", q)
	}
	if len(h2.c.Conversations()) != 0 || h2.state.Meta.ListLoaded || len(h2.state.Convs) != 0 {
		t.Fatalf("list kept across epochs: %v, %+v", h2.c.Conversations(), h2.state.Meta)
	}
}

func TestConvListErrors(t *testing.T) {
	h := newHarness(t, listConfig(), core.State{})
	h.connect(&pimv1.Welcome{})
	req := h.oneListReq()
	h.receive(errFrame(req.RequestId, pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, 2000, false))
	h.wait(1999 * time.Millisecond)
	h.noListReq()
	h.wait(time.Millisecond)
	req = h.oneListReq()
	// A server that does not know the request is not asked again.
	h.receive(errFrame(req.RequestId, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, 0, false))
	h.wait(time.Minute)
	h.noListReq()
	// Without ConvList the core never asks.
	h3 := newHarness(t, testConfig(), core.State{})
	h3.connect(&pimv1.Welcome{})
	h3.noListReq()
	h3.receive(push(ev(1, text(dm, 1, "bob"))))
	if len(h3.c.Conversations()) != 0 {
		t.Fatal("a list without ConvList")
	}
}

func TestUnknownEventKeepsUserSeqsGapFree(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.connect(&pimv1.Welcome{UserSeq: 2})
	h.receive(push(&pimv1.Event{UserSeq: 1}, ev(2, text(dm, 1, "bob"))))
	var got []string
	for _, e := range h.takeEvents() {
		switch e := e.(type) {
		case core.UnknownEvent:
			got = append(got, "unknown")
			if e.UserSeq != 1 {
				t.Fatalf("unknown event %+v", e)
			}
		case core.MessageEvent:
			got = append(got, "message")
		}
	}
	if !slices.Equal(got, []string{"unknown", "message"}) {
		t.Fatalf("events %v", got)
	}
}

func TestHideAndSettingsAreCommands(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	hide := &pimv1.Frame{Body: &pimv1.Frame_HideReq{HideReq: &pimv1.HideReq{Conv: dm, Seq: 3}}}
	off := false
	set := &pimv1.Frame{Body: &pimv1.Frame_SettingsReq{SettingsReq: &pimv1.SettingsReq{ReadReceipts: &off}}}
	for _, f := range []*pimv1.Frame{hide, set} {
		if _, err := h.c.Command(h.now, f); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.c.Command(h.now, &pimv1.Frame{Body: &pimv1.Frame_SettingsReq{SettingsReq: &pimv1.SettingsReq{}}}); err == nil {
		t.Fatal("a SettingsReq that only reads was queued as a command")
	}
	h.flush()
	if len(h.state.Commands) != 2 || h.state.Commands[0].Conv != dm || h.state.Commands[1].Conv != "" {
		t.Fatalf("persisted commands %+v", h.state.Commands)
	}
	h.connect(&pimv1.Welcome{})
	fs := h.takeFrames()
	if len(fs) != 1 || !proto.Equal(fs[0].GetHideReq(), hide.GetHideReq()) {
		t.Fatalf("frames %v, want the HideReq alone (one command at a time)", fs)
	}
	h.receive(&pimv1.Frame{RequestId: fs[0].RequestId, Body: &pimv1.Frame_HideResp{HideResp: &pimv1.HideResp{Conv: dm, Seq: 3}}})
	fs = h.takeFrames()
	if len(fs) != 1 || fs[0].GetSettingsReq().ReadReceipts == nil || *fs[0].GetSettingsReq().ReadReceipts {
		t.Fatalf("frames %v, want the SettingsReq", fs)
	}
	h.receive(&pimv1.Frame{RequestId: fs[0].RequestId, Body: &pimv1.Frame_SettingsResp{SettingsResp: &pimv1.SettingsResp{}}})
	var results int
	for _, e := range h.takeEvents() {
		if r, ok := e.(core.CommandResultEvent); ok && r.Err == nil && r.Response != nil {
			results++
		}
	}
	if results != 2 || len(h.state.Commands) != 0 {
		t.Fatalf("%d results, %d commands left", results, len(h.state.Commands))
	}
}

func TestConvListManyUnreadKnownByNumberBelowTheFloor(t *testing.T) {
	h := loadEmpty(t)
	var evs []*pimv1.Event
	for i := uint64(1); i <= 300; i++ {
		evs = append(evs, ev(i, text(dm, i, "bob")))
	}
	h.receive(push(evs...))
	if c := h.conv(dm); c.Unread != 300 || c.Stale {
		t.Fatalf("after 300 messages: %+v", c)
	}
	// The oldest 44 are known by number only; a read past them is exact.
	h.receive(push(ev(301, &pimv1.ReadSync{Conv: dm, Seq: 100, User: "alice"})))
	if c := h.conv(dm); c.Unread != 200 || c.Stale {
		t.Fatalf("after reading to 100: %+v", c)
	}
	h.noListReq()
	if n := len(h.state.Convs[0].UnreadSeqs); n != 200 {
		t.Fatalf("%d unread seqs persisted", n)
	}
	// Fill the window again, then read short of its floor: fetched.
	evs = nil
	for i := uint64(302); i <= 401; i++ {
		evs = append(evs, ev(i, text(dm, i-1, "bob")))
	}
	h.receive(push(evs...))
	h.receive(push(ev(402, &pimv1.ReadSync{Conv: dm, Seq: 120, User: "alice"})))
	if c := h.conv(dm); !c.Stale {
		t.Fatalf("a read below the floor: %+v", c)
	}
	if q := h.oneListReq().GetConvListReq(); q.SinceVersion != 401 {
		t.Fatalf("refetch %v", q)
	}
}
