// The receive path: the user's timeline from Push and SyncResp, delivered
// to the app gap-free and exactly once.
//
// Invariants of this file:
//   - meta.Delivered only grows (within an epoch) and only by one: an event
//     is delivered iff its user seq is Delivered+1. Events at or below it
//     are duplicates and dropped; events above Delivered+1 are held, and a
//     SyncReq(after=Delivered) pages the gap in.
//   - PushAck and SyncReq.after never exceed Delivered, and they are written
//     in the Ready that persists it (so after it on the wire): the server's
//     cursor never passes what is durably stored here.
//   - Acks are batched: once AckEvery events are unacknowledged, or
//     AckDelay after the first of them.
//   - A Welcome whose epoch differs from the stored (non-empty) one resets
//     Delivered to 0 and emits ResyncEvent before anything else of the new
//     epoch. CaughtUpEvent is emitted once per connection, when Delivered
//     reaches the Welcome's user_seq.
//   - This device's own messages are matched to their outbox entry by
//     client_msg_id (turning it Sent) and still delivered, flagged Own.
//   - Every delivered event yields exactly one event with its UserSeq
//     (MessageEvent, ReadEvent, HiddenEvent, ReceiptEvent, UnknownEvent),
//     and is then applied to the conversation list (convlist.go).

package core

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// maxHeld bounds the events held above a gap; beyond it they are dropped
// and fetched again by SyncReq.
const maxHeld = 8192

type timeline struct {
	pushFrom uint64         // Welcome.push_from_user_seq
	seen     uint64         // highest user seq received on this connection
	held     []*pimv1.Event // above a gap: ascending, unique
	syncReq  uint64         // SyncReq in flight (0: none)
	syncAt   time.Time      // no SyncReq before this (after an error)
	acked    uint64         // highest user seq acknowledged to the server
	ackDue   time.Time      // when a pending ack must go (zero: none pending)
	hbAcked  uint64         // cursor acknowledged with the last heartbeat
	caughtUp uint64         // Welcome.user_seq
	caught   bool           // CaughtUpEvent emitted for this connection
}

func (t *timeline) reset() { *t = timeline{} }

func (t *timeline) syncTimedOut(id uint64) {
	if t.syncReq == id {
		t.syncReq = 0
	}
}

func (c *Core) timelineWelcome(now time.Time, w *pimv1.Welcome) {
	if c.meta.Epoch != "" && w.GetEpoch() != c.meta.Epoch {
		c.emit(ResyncEvent{OldEpoch: c.meta.Epoch, NewEpoch: w.GetEpoch()})
		c.meta.Delivered = 0
		c.resetList()
		c.dirtyMeta()
	}
	if c.meta.Epoch != w.GetEpoch() {
		c.meta.Epoch = w.GetEpoch()
		c.dirtyMeta()
	}
	c.tl = timeline{
		pushFrom: w.GetPushFromUserSeq(),
		seen:     w.GetPushFromUserSeq(),
		acked:    w.GetAckedUserSeq(),
		hbAcked:  w.GetAckedUserSeq(),
		caughtUp: w.GetUserSeq(),
	}
	c.checkCaughtUp()
}

func (c *Core) onPush(now time.Time, p *pimv1.Push) {
	for _, ev := range p.GetEvents() {
		c.accept(now, ev)
	}
}

// accept delivers, drops or holds one event.
func (c *Core) accept(now time.Time, ev *pimv1.Event) {
	t := &c.tl
	us := ev.GetUserSeq()
	t.seen = max(t.seen, us)
	switch {
	case us <= c.meta.Delivered:
		return
	case us == c.meta.Delivered+1:
		c.deliver(now, ev)
		for len(t.held) > 0 && t.held[0].GetUserSeq() <= c.meta.Delivered+1 {
			h := t.held[0]
			t.held = t.held[1:]
			if h.GetUserSeq() == c.meta.Delivered+1 {
				c.deliver(now, h)
			}
		}
	default:
		i, found := slices.BinarySearchFunc(t.held, us, func(e *pimv1.Event, s uint64) int {
			return cmp.Compare(e.GetUserSeq(), s)
		})
		if !found && len(t.held) < maxHeld {
			t.held = slices.Insert(t.held, i, ev)
		}
	}
}

// deliver hands the event at Delivered+1 to the app.
func (c *Core) deliver(now time.Time, ev *pimv1.Event) {
	c.meta.Delivered = ev.GetUserSeq()
	c.dirtyMeta()
	if msg := ev.GetMessage(); msg != nil {
		own := msg.GetSender() == c.cfg.User && msg.GetSenderDevice() == c.cfg.DeviceID
		if own && msg.GetClientMsgId() != "" {
			if e := c.byID[msg.GetClientMsgId()]; e != nil {
				c.markSent(now, e, &pimv1.SendAck{
					ClientMsgId: msg.GetClientMsgId(), Conv: msg.GetConv(), Seq: msg.GetSeq(),
					MsgId: msg.GetMsgId(), ServerTime: msg.GetServerTime(),
				})
			}
		}
		c.emit(MessageEvent{UserSeq: ev.GetUserSeq(), Message: msg, Own: own})
		switch msg.GetType() {
		case pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED,
			pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED:
			c.emit(GroupEvent{
				Conv: msg.GetConv(), Seq: msg.GetSeq(), Type: msg.GetType(), Actor: msg.GetSender(),
				Members: slices.Clone(msg.GetMembers()), Me: slices.Contains(msg.GetMembers(), c.cfg.User),
			})
		}
	}
	switch k := ev.GetKind().(type) {
	case *pimv1.Event_Message:
	case *pimv1.Event_Read:
		r := k.Read
		c.emit(ReadEvent{UserSeq: ev.GetUserSeq(), Conv: r.GetConv(), Seq: r.GetSeq(), User: r.GetUser(),
			Device: r.GetDevice(), Own: r.GetUser() == c.cfg.User})
	case *pimv1.Event_Hidden:
		h := k.Hidden
		c.emit(HiddenEvent{UserSeq: ev.GetUserSeq(), Conv: h.GetConv(), Seq: h.GetSeq(), Device: h.GetDevice()})
	case *pimv1.Event_Receipt:
		r := k.Receipt
		re := ReceiptEvent{UserSeq: ev.GetUserSeq(), Conv: r.GetConv(), Kind: r.GetKind(), Seq: r.GetSeq(), User: r.GetUser()}
		for _, m := range r.GetMessages() {
			re.Reads = append(re.Reads, MessageReads{Seq: m.GetSeq(), ReadCount: m.GetReadCount()})
		}
		c.emit(re)
	default:
		c.emit(UnknownEvent{UserSeq: ev.GetUserSeq(), Event: proto.Clone(ev).(*pimv1.Event)})
	}
	c.listEvent(ev)
	c.checkCaughtUp()
}

func (c *Core) checkCaughtUp() {
	if c.cn.phase == phaseActive && !c.tl.caught && c.meta.Delivered >= c.tl.caughtUp {
		c.tl.caught = true
		c.emit(CaughtUpEvent{UserSeq: c.meta.Delivered})
	}
}

// needSync reports whether events below what the stream has shown are
// missing and not held.
func (c *Core) needSync() bool {
	t := &c.tl
	d := c.meta.Delivered
	if d >= max(t.pushFrom, t.seen) {
		return false
	}
	return len(t.held) == 0 || t.held[0].GetUserSeq() > d+1
}

func (c *Core) onSyncAnswer(now time.Time, r *request, resp *pimv1.SyncResp, se *ServerError) {
	t := &c.tl
	if t.syncReq == r.id {
		t.syncReq = 0
	}
	if se != nil {
		t.syncAt = now.Add(max(se.RetryAfter, DefaultRetryAfter))
		return
	}
	before := c.meta.Delivered
	for _, ev := range resp.GetEvents() {
		c.accept(now, ev)
	}
	if c.meta.Delivered == before && c.needSync() {
		// No progress: do not spin.
		t.syncAt = now.Add(DefaultRetryAfter)
	}
}

func (c *Core) timelinePump(now time.Time) {
	t := &c.tl
	d := c.meta.Delivered
	if t.syncReq == 0 && c.needSync() && !now.Before(t.syncAt) {
		r := c.reqs.add(&request{kind: reqSync, sent: now, deadline: now.Add(c.cfg.RequestTimeout)})
		t.syncReq = r.id
		c.write(now, &pimv1.Frame{RequestId: r.id, Body: &pimv1.Frame_SyncReq{SyncReq: &pimv1.SyncReq{
			AfterUserSeq: d, Limit: c.cfg.SyncLimit,
		}}})
		t.acked = max(t.acked, d)
	}
	if d <= t.acked {
		t.ackDue = time.Time{}
		return
	}
	if d-t.acked >= uint64(c.cfg.AckEvery) || (!t.ackDue.IsZero() && !now.Before(t.ackDue)) {
		c.reqs.next++ // a request id, though nothing answers it
		c.write(now, &pimv1.Frame{RequestId: c.reqs.next, Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: d}}})
		t.acked = d
		t.ackDue = time.Time{}
		return
	}
	if t.ackDue.IsZero() {
		t.ackDue = now.Add(c.cfg.AckDelay)
	}
}

func (c *Core) timelineDeadlines(at func(time.Time)) {
	if c.cn.phase != phaseActive {
		return
	}
	t := &c.tl
	if c.meta.Delivered > t.acked {
		at(t.ackDue)
	}
	if t.syncReq == 0 && c.needSync() {
		at(t.syncAt)
	}
}
