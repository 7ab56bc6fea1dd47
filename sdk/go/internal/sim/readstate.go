// The simulated server's read state: read positions, conversation
// entries, hidden messages, delivered marks and coalesced group read
// receipts, as internal/store/pebble/readstate.go and internal/logic keep
// them, and an independent derivation of the entries from the timelines
// (as internal/store/storetest's model does) for the final checks.
//
// Invariants of this file:
//   - Every change to a conversation entry is made together with the
//     timeline event of its user that announces it (a message, a read, a
//     hide, a delivered receipt), and the entry's Version becomes that
//     event's user seq; group READ receipts change no entry. So the entries
//     with Version > V are exactly those changed after user seq V.
//   - Unread counts the content messages from others above max(ReadSeq,
//     JoinSeq) in the user's timeline, hidden ones excepted: incremented on
//     delivery, recomputed on each read, decremented by a hide above the
//     read position; a (re)joined member starts at 0.
//   - Reads move forward only and are capped at the conversation's head;
//     hides are idempotent; a delivered receipt goes out only when the
//     peer's delivered mark moves. Read receipts are never turned off in
//     the simulation, so nothing is masked.
//   - The coalescer notifies a group at most once per receiptInterval; its
//     pending spans live in memory and are lost with a whole-server
//     restart (as logic.RunReceipts' are).

package sim

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	pimstore "github.com/pim-project/pim/internal/store"
	"github.com/pim-project/pim/internal/store/readmodel"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// receiptInterval is logic.ReceiptInterval.
const receiptInterval = time.Second

// maxNotifySpan is store.MaxNotifySpan.
const maxNotifySpan = 256

// indexedRead is a read as receipts count it: up to pos, by a reader who
// had joined at join.
type indexedRead struct{ pos, join uint64 }

type readStore struct {
	reads     map[[2]string]indexedRead // (user, conv)
	hidden    map[[2]string]map[uint64]bool
	delivered map[string]uint64                         // user -> delivered mark
	entries   map[string]map[string]*pimv1.Conversation // user -> conv -> entry (LastMessage unset)
}

func newReadStore() readStore {
	return readStore{
		reads:     make(map[[2]string]indexedRead),
		hidden:    make(map[[2]string]map[uint64]bool),
		delivered: make(map[string]uint64),
		entries:   make(map[string]map[string]*pimv1.Conversation),
	}
}

// entry returns user's entry for conv (created empty if none).
func (st *store) entry(user, conv string) *pimv1.Conversation {
	m := st.rs.entries[user]
	if m == nil {
		m = make(map[string]*pimv1.Conversation)
		st.rs.entries[user] = m
	}
	c := m[conv]
	if c == nil {
		c = &pimv1.Conversation{Conv: conv}
		m[conv] = c
	}
	return c
}

// noteMessage updates user's entry for msg, delivered at user seq us.
func (st *store) noteMessage(user string, us uint64, msg *pimv1.Message) {
	c := st.entry(user, msg.Conv)
	c.LastSeq, c.Activity, c.Version = msg.Seq, us, us
	switch msg.Type {
	case pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED:
		if slices.Contains(msg.Members, user) {
			c.JoinSeq, c.Left, c.Unread = msg.Seq, false, 0
		}
	case pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED:
		if slices.Contains(msg.Members, user) {
			c.Left = true
		}
	}
	if pimstore.CountsAsUnread(msg, user) && msg.Seq > c.ReadSeq {
		c.Unread++
	}
}

// joinSeq is user's join point in conv (0 for 1:1).
func (st *store) joinSeq(conv, user string) uint64 {
	if g, ok := st.groups[conv]; ok && g[user] != nil {
		return g[user].joinSeq
	}
	return 0
}

// unreadAbove counts user's unread messages of conv above max(pos, join).
func (st *store) unreadAbove(user, conv string, pos, join uint64) uint64 {
	hidden := st.rs.hidden[[2]string{user, conv}]
	var n uint64
	for _, m := range st.msgs[conv][max(pos, join):] {
		if pimstore.CountsAsUnread(m, user) && !hidden[m.Seq] {
			n++
		}
	}
	return n
}

// memberErr is the refusal of a read-state write by a non-member (nil if
// user is a member of conv).
func (s *server) memberErr(kind, user, device, conv string) *pimv1.Error {
	if _, ok := s.st.members(conv); !ok {
		return s.w.refused(kind, user, device, pimv1.ErrorCode_ERROR_CODE_NOT_FOUND, false)
	}
	if !s.st.isMember(conv, user) {
		// The user left (or was removed) after issuing the command.
		return s.w.refused(kind, user, device, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, true)
	}
	return nil
}

// readState answers ReadReq, HideReq and ConvListReq.
func (s *server) readState(user, device string, f *pimv1.Frame) (*pimv1.Frame, *pimv1.Error) {
	switch b := f.GetBody().(type) {
	case *pimv1.Frame_ReadReq:
		if e := s.memberErr("read", user, device, b.ReadReq.GetConv()); e != nil {
			return nil, e
		}
		pos := s.markRead(user, device, b.ReadReq.GetConv(), b.ReadReq.GetSeq())
		return &pimv1.Frame{Body: &pimv1.Frame_ReadResp{ReadResp: &pimv1.ReadResp{Conv: b.ReadReq.GetConv(), ReadSeq: pos}}}, nil
	case *pimv1.Frame_HideReq:
		conv, seq := b.HideReq.GetConv(), b.HideReq.GetSeq()
		if e := s.memberErr("hide", user, device, conv); e != nil {
			return nil, e
		}
		if seq == 0 || seq > uint64(len(s.st.msgs[conv])) || seq < s.st.joinSeq(conv, user) {
			return nil, s.w.refused("hide", user, device, pimv1.ErrorCode_ERROR_CODE_NOT_FOUND, false)
		}
		s.hide(user, device, conv, seq)
		return &pimv1.Frame{Body: &pimv1.Frame_HideResp{HideResp: &pimv1.HideResp{Conv: conv, Seq: seq}}}, nil
	case *pimv1.Frame_ConvListReq:
		return &pimv1.Frame{Body: &pimv1.Frame_ConvListResp{ConvListResp: s.st.convList(user, b.ConvListReq)}}, nil
	}
	return nil, protoErr(pimv1.ErrorCode_ERROR_CODE_PROTOCOL, "not a read-state request")
}

// markRead is logic.Read over the store; it returns the read position.
func (s *server) markRead(user, device, conv string, seq uint64) uint64 {
	st := s.st
	k := [2]string{user, conv}
	head := uint64(len(st.msgs[conv]))
	seq = min(seq, head)
	old := st.rs.reads[k].pos
	if seq <= old {
		return old
	}
	st.rs.reads[k] = indexedRead{pos: seq, join: st.joinSeq(conv, user)}
	recipients := []string{user}
	if a, b, ok := parseDirect(conv); ok && a != b {
		peer := a
		if peer == user {
			peer = b
		}
		recipients = append(recipients, peer)
	}
	for _, u := range recipients {
		us := st.appendEvent(u, conv, seq, &pimv1.Event{Kind: &pimv1.Event_Read{Read: &pimv1.ReadSync{
			Conv: conv, Seq: seq, User: user, Device: device}}})
		c := st.entry(u, conv)
		if u == user {
			c.ReadSeq, c.Unread = seq, st.unreadAbove(user, conv, seq, c.JoinSeq)
		} else {
			c.PeerReadSeq = max(c.PeerReadSeq, seq)
		}
		c.Version = us
	}
	s.deliver(recipients)
	if _, group := st.groups[conv]; group {
		s.rc.note(s, conv, old, seq)
	}
	return seq
}

// hide marks conv/seq hidden for user (idempotent).
func (s *server) hide(user, device, conv string, seq uint64) {
	st := s.st
	k := [2]string{user, conv}
	if st.rs.hidden[k][seq] {
		return
	}
	if st.rs.hidden[k] == nil {
		st.rs.hidden[k] = make(map[uint64]bool)
	}
	st.rs.hidden[k][seq] = true
	us := st.appendEvent(user, conv, seq, &pimv1.Event{Kind: &pimv1.Event_Hidden{Hidden: &pimv1.Hidden{
		Conv: conv, Seq: seq, Device: device}}})
	c := st.entry(user, conv)
	if seq > max(c.ReadSeq, c.JoinSeq) && pimstore.CountsAsUnread(st.msgs[conv][seq-1], user) && c.Unread > 0 {
		c.Unread--
	}
	c.Version = us
	s.deliver([]string{user})
}

// markDelivered turns user's acknowledged timeline range up to `to` into
// delivered receipts for the peers of their 1:1 conversations; it returns
// the users whose timelines grew.
func (st *store) markDelivered(user string, to uint64) []string {
	from := st.rs.delivered[user]
	to = min(to, st.head(user))
	if to <= from {
		return nil
	}
	latest := make(map[string]uint64)
	for _, r := range st.timelines[user][from:to] {
		if r.ev != nil {
			continue
		}
		if _, _, direct := parseDirect(r.conv); direct && st.msgs[r.conv][r.seq-1].Sender != user {
			latest[r.conv] = max(latest[r.conv], r.seq)
		}
	}
	st.rs.delivered[user] = to
	var woke []string
	for _, conv := range sortedKeys(latest) {
		a, b, _ := parseDirect(conv)
		peer := a
		if peer == user {
			peer = b
		}
		c := st.entry(peer, conv)
		if latest[conv] <= c.PeerDeliveredSeq {
			continue
		}
		us := st.appendEvent(peer, conv, latest[conv], &pimv1.Event{Kind: &pimv1.Event_Receipt{Receipt: &pimv1.Receipt{
			Conv: conv, Kind: pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED, Seq: latest[conv], User: user}}})
		c.PeerDeliveredSeq, c.Version = latest[conv], us
		woke = append(woke, peer)
	}
	return woke
}

// notifyReads appends to the senders of conv's content messages in (from,
// to] their new read counts; it returns the senders notified.
func (st *store) notifyReads(conv string, from, to uint64) []string {
	to = min(to, uint64(len(st.msgs[conv])))
	if to > maxNotifySpan {
		from = max(from, to-maxNotifySpan)
	}
	if to <= from {
		return nil
	}
	bySender := make(map[string][]uint64)
	for _, m := range st.msgs[conv][from:to] {
		if m.Type < pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED {
			bySender[m.Sender] = append(bySender[m.Sender], m.Seq)
		}
	}
	var notified []string
	for _, sender := range sortedKeys(bySender) {
		if !st.isMember(conv, sender) {
			continue
		}
		rc := &pimv1.Receipt{Conv: conv, Kind: pimv1.ReceiptKind_RECEIPT_KIND_READ}
		for _, seq := range bySender[sender] {
			n := 0
			for k, r := range st.rs.reads {
				if k[1] == conv && k[0] != sender && r.pos >= seq && r.join <= seq {
					n++
				}
			}
			rc.Messages = append(rc.Messages, &pimv1.MessageReads{Seq: seq, ReadCount: uint32(n)})
		}
		st.appendEvent(sender, conv, to, &pimv1.Event{Kind: &pimv1.Event_Receipt{Receipt: rc}})
		notified = append(notified, sender)
	}
	return notified
}

// convList answers a ConvListReq of user (logic.Conversations).
func (st *store) convList(user string, q *pimv1.ConvListReq) *pimv1.ConvListResp {
	limit := int(q.GetLimit())
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	var sel []*pimv1.Conversation
	for _, conv := range sortedKeys(st.rs.entries[user]) {
		c := st.rs.entries[user][conv]
		switch {
		case q.GetSinceVersion() > 0:
			if c.Version > q.GetSinceVersion() {
				sel = append(sel, c)
			}
		case q.GetBeforeActivity() == 0 || c.Activity < q.GetBeforeActivity():
			sel = append(sel, c)
		}
	}
	slices.SortFunc(sel, func(a, b *pimv1.Conversation) int {
		if q.GetSinceVersion() > 0 {
			return cmp.Compare(a.Version, b.Version)
		}
		return cmp.Compare(b.Activity, a.Activity)
	})
	resp := &pimv1.ConvListResp{Version: st.head(user), HasMore: len(sel) > limit}
	for _, c := range sel[:min(limit, len(sel))] {
		c = proto.Clone(c).(*pimv1.Conversation)
		if c.LastSeq > 0 {
			c.LastMessage = st.msgs[c.Conv][c.LastSeq-1]
		}
		resp.Convs = append(resp.Convs, c)
	}
	return resp
}

// derivedEntries derives user's entries from scratch out of their timeline
// (readmodel.Derive, the store model's definition), independently of the
// incremental upkeep above.
func (st *store) derivedEntries(user string) map[string]*pimv1.Conversation {
	tl := st.timelines[user]
	evs := make([]*pimv1.Event, len(tl))
	for i, r := range tl {
		evs[i] = &pimv1.Event{UserSeq: uint64(i + 1)}
		if r.ev != nil {
			evs[i].Kind = r.ev.Kind
		} else {
			evs[i].Kind = &pimv1.Event_Message{Message: st.msgs[r.conv][r.seq-1]}
		}
	}
	return readmodel.Derive(user, evs)
}

// coalescer is logic's: at most one READ notification per group per
// receiptInterval; reads noted meanwhile are merged into the next.
type coalescer struct {
	gen     int // a whole-server restart loses what is pending
	pending map[string][2]uint64
	last    map[string]time.Time
	armed   map[string]bool
}

func (c *coalescer) note(s *server, conv string, from, to uint64) {
	if c.pending == nil {
		c.pending, c.last, c.armed = make(map[string][2]uint64), make(map[string]time.Time), make(map[string]bool)
	}
	if sp, ok := c.pending[conv]; ok {
		from, to = min(sp[0], from), max(sp[1], to)
	}
	c.pending[conv] = [2]uint64{from, to}
	if c.armed[conv] {
		return
	}
	c.armed[conv] = true
	w := s.w
	at := w.s.now
	if last, ok := c.last[conv]; ok && at.Before(last.Add(receiptInterval)) {
		at = last.Add(receiptInterval)
	}
	gen := c.gen
	w.s.at(at, func() {
		if c.gen != gen {
			return
		}
		sp := c.pending[conv]
		delete(c.pending, conv)
		delete(c.armed, conv)
		c.last[conv] = w.s.now
		if s.storeDown() {
			w.logf("server: group read receipts of %s lost (storage down)", conv)
			return
		}
		s.deliver(s.st.notifyReads(conv, sp[0], sp[1]))
	})
}

// restart drops what is pending (a whole-server restart).
func (c *coalescer) restart() {
	c.gen++
	c.pending, c.last, c.armed = nil, nil, nil
}

// idle reports whether no notification is pending.
func (c *coalescer) idle() bool { return len(c.pending) == 0 }
