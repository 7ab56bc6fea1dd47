// The local store: round trips, atomic batches, identity, resync.

package pim

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

func msgEvent(us uint64, conv string, seq uint64) core.MessageEvent {
	return core.MessageEvent{UserSeq: us, Message: &pimv1.Message{Conv: conv, Seq: seq, MsgId: "m",
		Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("x")}}
}

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, err := openStore(dir, "alice", "phone")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Millisecond)
	meta := core.Meta{Epoch: "e1", Delivered: 2, NextOrder: 4, NextClientSeq: 3,
		Clock: core.ClockSample{Offset: time.Second, RTT: 10 * time.Millisecond, At: now}}
	p := core.Persist{
		Meta: &meta,
		PutOutbox: []core.OutboxEntry{
			{ClientMsgID: "c1", Conv: "d:alice:bob", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi"),
				ClientSeq: 1, Order: 1, Created: now, Since: now, Attempts: 2, State: core.Sending},
			{ClientMsgID: "c2", Conv: "d:alice:bob", Body: []byte("yo"), Order: 2, State: core.Failed,
				FailCode: pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, FailMsg: "no"},
		},
		PutCommands:   []core.CommandEntry{{ID: 3, Order: 3, Request: []byte{1, 2, 3}, Conv: "g:x", Created: now}},
		PutHeartbeats: []core.HeartbeatRecord{{Network: "wifi", Interval: 5 * time.Minute, Ceiling: 7 * time.Minute}},
	}
	evs := []core.Event{msgEvent(1, "d:alice:bob", 1), core.CaughtUpEvent{}, msgEvent(2, "g:x", 1)}
	if err := s.commit(p, evs); err != nil {
		t.Fatal(err)
	}
	if err := s.commit(core.Persist{DeleteOutbox: []string{"c1"}, DeleteCommands: []uint64{3}}, nil); err != nil {
		t.Fatal(err)
	}
	s.close()

	s, err = openStore(dir, "alice", "phone")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	st, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	var want core.State
	want.Apply(p)
	want.Apply(core.Persist{DeleteOutbox: []string{"c1"}, DeleteCommands: []uint64{3}})
	if st.Meta.Epoch != want.Meta.Epoch || st.Meta.Delivered != 2 || !st.Meta.Clock.At.Equal(now) ||
		st.Meta.Clock.Offset != time.Second || len(st.Outbox) != 1 || st.Outbox[0].ClientMsgID != "c2" ||
		st.Outbox[0].FailCode != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN || !st.Outbox[0].Rejected() ||
		len(st.Commands) != 0 || len(st.Heartbeats) != 1 || st.Heartbeats[0] != want.Heartbeats[0] {
		t.Fatalf("loaded %+v, want %+v", st, want)
	}
	tl, err := s.timeline(0, 10)
	if err != nil || len(tl) != 2 || tl[1].Message.GetConv() != "g:x" {
		t.Fatalf("timeline %v %v", tl, err)
	}

	// A resync clears the timeline in the same transaction as the new
	// epoch's first messages.
	m2 := core.Meta{Epoch: "e2", Delivered: 1}
	if err := s.commit(core.Persist{Meta: &m2}, []core.Event{core.ResyncEvent{OldEpoch: "e1", NewEpoch: "e2"},
		msgEvent(1, "d:alice:carol", 1)}); err != nil {
		t.Fatal(err)
	}
	tl, _ = s.timeline(0, 10)
	if len(tl) != 1 || tl[0].Message.GetConv() != "d:alice:carol" {
		t.Fatalf("timeline after resync: %v", tl)
	}
	if ms, _ := s.messages("d:alice:bob", 0, 10); len(ms) != 0 {
		t.Fatalf("old conversation survived the resync: %v", ms)
	}
}

func TestStoreIdentityAndLock(t *testing.T) {
	defer func(d time.Duration) { storeLockTimeout = d }(storeLockTimeout)
	storeLockTimeout = 50 * time.Millisecond
	dir := t.TempDir()
	s, err := openStore(dir, "alice", "phone")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openStore(dir, "alice", "phone"); !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second open: %v", err)
	}
	s.close()
	if _, err := openStore(dir, "bob", "phone"); err == nil || !strings.Contains(err.Error(), "belongs to") {
		t.Fatalf("open for another user: %v", err)
	}
}

func TestStoreMessagesPaging(t *testing.T) {
	s, err := openStore(t.TempDir(), "alice", "phone")
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	var evs []core.Event
	for i := uint64(1); i <= 10; i++ {
		evs = append(evs, msgEvent(i, "c", i))
	}
	if err := s.commit(core.Persist{}, evs); err != nil {
		t.Fatal(err)
	}
	seqs := func(ms []*Message) []uint64 {
		var out []uint64
		for _, m := range ms {
			out = append(out, m.GetSeq())
		}
		return out
	}
	for _, c := range []struct {
		before uint64
		limit  int
		want   []uint64
	}{{0, 3, []uint64{8, 9, 10}}, {5, 10, []uint64{1, 2, 3, 4}}, {99, 2, []uint64{9, 10}}, {1, 5, nil}} {
		ms, err := s.messages("c", c.before, c.limit)
		if err != nil || !slices.Equal(seqs(ms), c.want) {
			t.Errorf("before %d limit %d: %v %v, want %v", c.before, c.limit, seqs(ms), err, c.want)
		}
	}
}
