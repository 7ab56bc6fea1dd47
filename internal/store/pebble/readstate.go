// The writer's read state: conversation entries, read positions and their
// receipt index, delivered marks, hidden messages and settings.
//
// Invariants:
//   - Every change to a conversation entry is made in the same batch as a
//     timeline event of its user, and the entry's Version becomes that
//     event's user seq; so the entries with Version > V are exactly those
//     changed after the user's timeline position V (incremental sync).
//   - Activity is the user seq of the entry's last message; Unread counts
//     the content messages from others with seq > max(ReadSeq, JoinSeq)
//     delivered to the user (a re-added member starts at 0).
//   - Like the caches in writer.go, writer.convs (entries) and the pend
//     maps hold the batch's view (committed state plus this batch's ops);
//     the pend maps are cleared per batch, the caches when a commit fails.
//   - Only the writer goroutine touches any of it.
package pebblestore

import (
	"fmt"
	"slices"
	"sort"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// convState is a conversation entry in the batch's view, with the index
// keys it has now.
type convState struct {
	c *pimv1.Conversation
	// The entry's cx/ keys now: its Activity and Version as indexed (equal:
	// one "both" key; 0: none).
	idxActivity, idxVersion uint64
}

// readState is a read position in the batch's view.
type readState struct{ pos, indexed uint64 }

// pendState is the read state a batch has written.
type pendState struct {
	conv     map[string]*convState // user\x00conv
	read     map[string]readState  // r/ key
	settings map[string]byte
	hidden   map[string]bool // h/ key
}

func newPendState() pendState {
	return pendState{
		conv:     make(map[string]*convState),
		read:     make(map[string]readState),
		settings: make(map[string]byte),
		hidden:   make(map[string]bool),
	}
}

func (p *pendState) clear() {
	clear(p.read)
	clear(p.settings)
	clear(p.hidden)
}

// convEntry returns user's entry for conv (a new one if none).
func (w *writer) convEntry(user, conv string) (*convState, error) {
	k := user + "\x00" + conv
	if st, ok := w.convs[k]; ok {
		return st, nil
	}
	st := &convState{c: &pimv1.Conversation{Conv: conv}}
	raw, err := get(w.db, convKey(user, conv))
	if err != nil {
		return nil, err
	}
	if raw != nil {
		if err := proto.Unmarshal(raw, st.c); err != nil {
			return nil, fmt.Errorf("conversation entry %s/%s: %w", user, conv, err)
		}
		st.idxActivity, st.idxVersion = st.c.Activity, st.c.Version
	}
	w.convs[k] = st
	return st, nil
}

// saveConv writes st, moving its index keys.
func (w *writer) saveConv(b *pebble.Batch, user string, st *convState) {
	c := st.c
	old, want := indexKeys(st.idxActivity, st.idxVersion), indexKeys(c.Activity, c.Version)
	for _, k := range old {
		if k.seq > 0 && want.role(k.seq) == 0 {
			w.del(b, convIndexKey(user, k.seq))
		}
	}
	for _, k := range want {
		if k.seq > 0 && old.role(k.seq) != k.role {
			w.set(b, convIndexKey(user, k.seq), encodeIndexValue(k.role, c.Conv))
		}
	}
	st.idxActivity, st.idxVersion = c.Activity, c.Version
	raw, err := proto.Marshal(c)
	if err != nil {
		if w.batchErr == nil {
			w.batchErr = fmt.Errorf("marshal conversation entry: %w", err)
		}
		return
	}
	w.set(b, convKey(user, c.Conv), raw)
}

// indexKey is one cx/ key of an entry (seq 0: none).
type indexKey struct {
	seq  uint64
	role byte
}

// entryKeys are an entry's cx/ keys: at most two.
type entryKeys [2]indexKey

// role returns the role of the key at seq (0: no such key).
func (ks entryKeys) role(seq uint64) byte {
	for _, k := range ks {
		if k.seq == seq && seq > 0 {
			return k.role
		}
	}
	return 0
}

// indexKeys returns the cx/ keys of an entry with activity and version.
func indexKeys(activity, version uint64) entryKeys {
	switch {
	case activity == version:
		return entryKeys{{version, roleBoth}}
	case activity > 0:
		return entryKeys{{activity, roleActivity}, {version, roleVersion}}
	}
	return entryKeys{{version, roleVersion}}
}

// noteMessage updates user's entry for msg, delivered at user seq us.
func (w *writer) noteMessage(b *pebble.Batch, user string, us uint64, msg *pimv1.Message) error {
	if w.s.noConvList {
		return nil
	}
	st, err := w.convEntry(user, msg.Conv)
	if err != nil {
		return err
	}
	c := st.c
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
	if store.CountsAsUnread(msg, user) && msg.Seq > c.ReadSeq {
		c.Unread++
	}
	w.saveConv(b, user, st)
	return nil
}

// appendEvent appends ev (its kind set) about conv/seq to user's timeline
// (whose head must be loaded) and returns the delivery.
func (w *writer) appendEvent(b *pebble.Batch, user string, r ref, ev *pimv1.Event) (store.Delivery, error) {
	v, err := encodeEventRef(r, ev)
	if err != nil {
		return store.Delivery{}, err
	}
	us := w.userHead[user] + 1
	w.userHead[user] = us
	w.set(b, userKey(user, us), v)
	return store.Delivery{User: user, Event: &pimv1.Event{UserSeq: us, Kind: ev.Kind}}, nil
}

// receiptsOff reports whether user turned read receipts off.
func (w *writer) receiptsOff(user string) (bool, error) {
	f, ok := w.pend.settings[user]
	if !ok {
		v, err := get(w.db, settingsKey(user))
		if err != nil {
			return false, err
		}
		if len(v) > 0 {
			f = v[0]
		}
	}
	return f&settingNoReadReceipts != 0, nil
}

func (w *writer) setReceipts(b *pebble.Batch, user string, on bool) (store.Result, error) {
	var f byte
	if !on {
		f = settingNoReadReceipts
	}
	w.pend.settings[user] = f
	w.set(b, settingsKey(user), []byte{f})
	return store.Result{}, nil
}

func (w *writer) setGroupSettings(b *pebble.Batch, group string, visible bool) (store.Result, error) {
	g, err := w.groupOf(group)
	if err == nil && (!g.exists || !store.IsGroup(group)) {
		err = fmt.Errorf("group %s: %w", group, store.ErrNotFound)
	}
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: group settings: %w", err)
	}
	var f byte
	if visible {
		f = groupReceiptsVisible
	}
	w.set(b, groupSettingsKey(group), []byte{f})
	return store.Result{}, nil
}

// readStateOf returns user's read position in conv.
func (w *writer) readStateOf(user, conv string) (readState, error) {
	rk := string(readKey(user, conv))
	if rs, ok := w.pend.read[rk]; ok {
		return rs, nil
	}
	v, err := get(w.db, []byte(rk))
	if err != nil {
		return readState{}, err
	}
	pos, idx, err := decodeReadPos(v)
	return readState{pos, idx}, err
}

// eachMessage calls fn for each message of conv with from < seq <= to, in
// order, in the batch's view.
func (w *writer) eachMessage(conv string, from, to uint64, fn func(*pimv1.Message)) error {
	if to <= from {
		return nil
	}
	last := from
	it, err := w.db.NewIter(&pebble.IterOptions{LowerBound: msgKey(conv, from+1), UpperBound: msgKey(conv, to+1)})
	if err != nil {
		return err
	}
	for ok := it.First(); ok; ok = it.Next() {
		m := new(pimv1.Message)
		if err := proto.Unmarshal(it.Value(), m); err != nil {
			it.Close()
			return fmt.Errorf("message %q: %w", it.Key(), err)
		}
		fn(m)
		last = m.Seq
	}
	if err := it.Close(); err != nil {
		return err
	}
	// The rest was sequenced in this batch, which reads cannot see.
	for s := last + 1; s <= to; s++ {
		if m, ok := w.pendMsgs[ref{conv: conv, seq: s}]; ok {
			fn(m)
		}
	}
	return nil
}

// unreadAbove counts user's unread messages of conv above pos (hidden ones
// excepted): O(head - pos).
func (w *writer) unreadAbove(user, conv string, pos, join, head uint64) (uint64, error) {
	from := max(pos, join)
	hidden, err := w.hiddenIn(user, conv, from, head)
	if err != nil {
		return 0, err
	}
	var n uint64
	err = w.eachMessage(conv, from, head, func(m *pimv1.Message) {
		if store.CountsAsUnread(m, user) && !hidden[m.Seq] {
			n++
		}
	})
	return n, err
}

// markRead advances rs.User's read position in rs.Conv to rs.Seq (capped at
// the head). If it moved, it appends a read-sync event to the reader's
// timeline and, for a direct conversation where both users have read
// receipts on, to the peer's. The answer's Message carries the resulting
// position in Seq (and nothing else).
func (w *writer) markRead(b *pebble.Batch, rs *pimv1.ReadSync) (store.Result, error) {
	res, err := w.markReadOp(b, rs)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: mark read: %w", err)
	}
	return res, nil
}

func (w *writer) markReadOp(b *pebble.Batch, rs *pimv1.ReadSync) (store.Result, error) {
	members, err := w.recipientsOf(rs.Conv, rs.User)
	if err != nil {
		return store.Result{}, err
	}
	head, err := w.convHeadOf(rs.Conv)
	if err != nil {
		return store.Result{}, err
	}
	cur, err := w.readStateOf(rs.User, rs.Conv)
	if err != nil {
		return store.Result{}, err
	}
	seq := min(rs.Seq, head)
	if seq <= cur.pos {
		return store.Result{Message: &pimv1.Message{Conv: rs.Conv, Seq: cur.pos}}, nil
	}
	off, err := w.receiptsOff(rs.User)
	if err != nil {
		return store.Result{}, err
	}
	next := readState{pos: seq, indexed: cur.indexed}
	if !off {
		if cur.indexed > 0 {
			w.del(b, receiptKey(rs.Conv, cur.indexed, rs.User))
		}
		var join uint64 // the reader read from here: earlier messages are not theirs to count
		if store.IsGroup(rs.Conv) {
			join = w.groups[rs.Conv].members[rs.User].JoinSeq // loaded by recipientsOf
		}
		w.set(b, receiptKey(rs.Conv, seq, rs.User), appendBE8(nil, join))
		next.indexed = seq
	}
	rk := readKey(rs.User, rs.Conv)
	w.pend.read[string(rk)] = next
	w.set(b, rk, encodeReadPos(next.pos, next.indexed))

	recipients := []string{rs.User}
	for _, peer := range members {
		if store.IsGroup(rs.Conv) || off || peer == rs.User {
			continue
		}
		peerOff, err := w.receiptsOff(peer)
		if err != nil {
			return store.Result{}, err
		}
		if !peerOff {
			recipients = append(recipients, peer)
		}
	}
	if err := w.loadUserHeads(recipients); err != nil {
		return store.Result{}, err
	}
	ev := &pimv1.ReadSync{Conv: rs.Conv, Seq: seq, User: rs.User, Device: rs.Device}
	v := encodeReadRef(ev)
	res := store.Result{Message: &pimv1.Message{Conv: rs.Conv, Seq: seq}}
	for _, u := range recipients {
		us := w.userHead[u] + 1
		w.userHead[u] = us
		w.set(b, userKey(u, us), v)
		res.Deliveries = append(res.Deliveries, store.Delivery{User: u, Event: &pimv1.Event{
			UserSeq: us, Kind: &pimv1.Event_Read{Read: ev}}})
		if err := w.noteRead(b, u, us, rs.Conv, rs.User, seq, head); err != nil {
			return store.Result{}, err
		}
	}
	return res, nil
}

// noteRead updates user's entry for reader's read at seq, announced to
// user at user seq us: the reader's own position or, in 1:1, the peer's.
func (w *writer) noteRead(b *pebble.Batch, user string, us uint64, conv, reader string, seq, head uint64) error {
	if w.s.noConvList {
		return nil
	}
	st, err := w.convEntry(user, conv)
	if err != nil {
		return err
	}
	c := st.c
	if user == reader {
		n, err := w.unreadAbove(user, conv, seq, c.JoinSeq, head)
		if err != nil {
			return err
		}
		c.ReadSeq, c.Unread = seq, n
	} else {
		c.PeerReadSeq = max(c.PeerReadSeq, seq)
	}
	c.Version = us
	w.saveConv(b, user, st)
	return nil
}

// hide marks conv/seq hidden for user and tells the user's devices.
func (w *writer) hide(b *pebble.Batch, a *opArgs) (store.Result, error) {
	res, err := w.hideOp(b, a)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: hide: %w", err)
	}
	return res, nil
}

func (w *writer) hideOp(b *pebble.Batch, a *opArgs) (store.Result, error) {
	if _, err := w.recipientsOf(a.conv, a.user); err != nil {
		return store.Result{}, err
	}
	head, err := w.convHeadOf(a.conv)
	if err != nil {
		return store.Result{}, err
	}
	var join uint64
	if store.IsGroup(a.conv) {
		g, _ := w.groupOf(a.conv) // loaded by recipientsOf
		join = g.members[a.user].JoinSeq
	}
	if a.seq == 0 || a.seq > head || a.seq < join {
		return store.Result{}, fmt.Errorf("message %s/%d: %w", a.conv, a.seq, store.ErrNotFound)
	}
	hk := hiddenKey(a.user, a.conv, a.seq)
	done := w.pend.hidden[string(hk)]
	if !done {
		v, err := get(w.db, hk)
		if err != nil {
			return store.Result{}, err
		}
		done = v != nil
	}
	if done {
		return store.Result{}, nil
	}
	if err := w.loadUserHeads([]string{a.user}); err != nil {
		return store.Result{}, err
	}
	w.pend.hidden[string(hk)] = true
	w.set(b, hk, nil)
	d, err := w.appendEvent(b, a.user, ref{conv: a.conv, seq: a.seq}, &pimv1.Event{
		Kind: &pimv1.Event_Hidden{Hidden: &pimv1.Hidden{Conv: a.conv, Seq: a.seq, Device: a.device}}})
	if err != nil {
		return store.Result{}, err
	}
	if err := w.noteHidden(b, a.user, a.conv, a.seq, d.Event.UserSeq); err != nil {
		return store.Result{}, err
	}
	return store.Result{Deliveries: []store.Delivery{d}}, nil
}

// noteHidden updates user's entry for hiding conv/seq, announced at user
// seq us: a hidden message no longer counts as unread.
func (w *writer) noteHidden(b *pebble.Batch, user, conv string, seq, us uint64) error {
	if w.s.noConvList {
		return nil
	}
	st, err := w.convEntry(user, conv)
	if err != nil {
		return err
	}
	c := st.c
	if seq > max(c.ReadSeq, c.JoinSeq) {
		err = w.eachMessage(conv, seq-1, seq, func(m *pimv1.Message) {
			if store.CountsAsUnread(m, user) && c.Unread > 0 {
				c.Unread--
			}
		})
		if err != nil {
			return err
		}
	}
	c.Version = us
	w.saveConv(b, user, st)
	return nil
}

// hiddenIn returns the seqs of conv in (from, to] that user hid, in the
// batch's view.
func (w *writer) hiddenIn(user, conv string, from, to uint64) (map[uint64]bool, error) {
	p := hiddenPrefix(user, conv)
	it, err := w.db.NewIter(&pebble.IterOptions{LowerBound: appendBE8(p, from+1), UpperBound: appendBE8(p, to+1)})
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]bool)
	for ok := it.First(); ok; ok = it.Next() {
		seq, err := seqSuffix(it.Key(), len(p))
		if err != nil {
			it.Close()
			return nil, err
		}
		out[seq] = true
	}
	for k := range w.pend.hidden { // this batch's, which the iterator cannot see
		if seq, err := seqSuffix([]byte(k), len(p)); err == nil && k[:len(p)] == string(p) && seq > from && seq <= to {
			out[seq] = true
		}
	}
	return out, it.Close()
}

// markDelivered turns a.user's newly acknowledged timeline range into
// delivered receipts for the peers of its direct conversations.
func (w *writer) markDelivered(b *pebble.Batch, a *opArgs) (store.Result, error) {
	res, err := w.markDeliveredOp(b, a)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: mark delivered: %w", err)
	}
	return res, nil
}

// persistDeliveredEvery bounds how far a delivered mark may run ahead of
// its stored value when acks produce no receipt: a restart (or a dropped
// cache) rescans at most that many events, and finds nothing new to send.
const persistDeliveredEvery = 1024

// deliveredMark is a user's MarkDelivered position: mem in the batch's
// view, disk as stored.
type deliveredMark struct{ mem, disk uint64 }

func (w *writer) deliveredMarkOf(user string) (deliveredMark, error) {
	if m, ok := w.dvMark[user]; ok {
		return m, nil
	}
	v, err := get(w.db, deliveredKey(user))
	if err != nil {
		return deliveredMark{}, err
	}
	d, err := decodeBE8(v, "delivered mark")
	return deliveredMark{d, d}, err
}

func (w *writer) markDeliveredOp(b *pebble.Batch, a *opArgs) (store.Result, error) {
	mark, err := w.deliveredMarkOf(a.user)
	if err != nil {
		return store.Result{}, err
	}
	if err := w.loadUserHeads([]string{a.user}); err != nil {
		return store.Result{}, err
	}
	to := min(a.seq, w.userHead[a.user])
	if to <= mark.mem {
		return store.Result{}, nil
	}
	latest, err := w.peerMessages(a.user, mark.mem, to)
	if err != nil {
		return store.Result{}, err
	}
	mark.mem = to
	if len(latest) > 0 || mark.mem-mark.disk >= persistDeliveredEvery {
		// Receipts are written with the mark, so a rescan finds them sent.
		w.set(b, deliveredKey(a.user), appendBE8(nil, to))
		mark.disk = to
	}
	w.dvMark[a.user] = mark
	convs := make([]string, 0, len(latest))
	for c := range latest {
		convs = append(convs, c)
	}
	slices.Sort(convs)
	var res store.Result
	for _, conv := range convs {
		d, ok, err := w.deliveredTo(b, a.user, conv, latest[conv])
		if err != nil {
			return store.Result{}, err
		}
		if ok {
			res.Deliveries = append(res.Deliveries, d)
		}
	}
	return res, nil
}

// peerMessages returns, per direct conversation, the highest seq of a
// message from the peer in user's timeline range (from, to]. It reads refs
// only, never messages.
func (w *writer) peerMessages(user string, from, to uint64) (map[string]uint64, error) {
	latest := make(map[string]uint64)
	it, err := w.db.NewIter(&pebble.IterOptions{LowerBound: userKey(user, from+1), UpperBound: userKey(user, to+1)})
	if err != nil {
		return nil, err
	}
	for ok := it.First(); ok; ok = it.Next() {
		t, err := decodeTimelineRef(it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		if t.ev != nil || t.own || store.IsGroup(t.conv) {
			continue
		}
		latest[t.conv] = max(latest[t.conv], t.seq)
	}
	return latest, it.Close()
}

// deliveredTo raises the peer's delivered mark in conv to seq and, if it
// moved, appends a DELIVERED receipt to the peer's timeline.
func (w *writer) deliveredTo(b *pebble.Batch, user, conv string, seq uint64) (store.Delivery, bool, error) {
	x, y, _ := store.ParseDirect(conv)
	peer := x
	if peer == user {
		peer = y
	}
	st, err := w.convEntry(peer, conv)
	if err != nil {
		return store.Delivery{}, false, err
	}
	if seq <= st.c.PeerDeliveredSeq {
		return store.Delivery{}, false, nil
	}
	if err := w.loadUserHeads([]string{peer}); err != nil {
		return store.Delivery{}, false, err
	}
	d, err := w.appendEvent(b, peer, ref{conv: conv, seq: seq}, &pimv1.Event{Kind: &pimv1.Event_Receipt{
		Receipt: &pimv1.Receipt{Conv: conv, Kind: pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED, Seq: seq, User: user}}})
	if err != nil {
		return store.Delivery{}, false, err
	}
	st.c.PeerDeliveredSeq = seq
	st.c.Version = d.Event.UserSeq
	w.saveConv(b, peer, st)
	return d, true, nil
}

// notifyReads appends coalesced READ receipts for conv's messages in
// (from, to] to their senders' timelines.
func (w *writer) notifyReads(b *pebble.Batch, a *opArgs) (store.Result, error) {
	res, err := w.notifyReadsOp(b, a)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: notify reads: %w", err)
	}
	return res, nil
}

func (w *writer) notifyReadsOp(b *pebble.Batch, a *opArgs) (store.Result, error) {
	head, err := w.convHeadOf(a.conv)
	if err != nil {
		return store.Result{}, err
	}
	to := min(a.seq2, head)
	from := a.seq
	if to > store.MaxNotifySpan {
		from = max(from, to-store.MaxNotifySpan)
	}
	if to <= from {
		return store.Result{}, nil
	}
	bySender := make(map[string][]uint64)
	err = w.eachMessage(a.conv, from, to, func(m *pimv1.Message) {
		if m.Type < pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED {
			bySender[m.Sender] = append(bySender[m.Sender], m.Seq)
		}
	})
	if err != nil {
		return store.Result{}, err
	}
	readers, err := receiptReaders(w.db, a.conv, from+1)
	if err != nil {
		return store.Result{}, err
	}
	senders := make([]string, 0, len(bySender))
	for s := range bySender {
		senders = append(senders, s)
	}
	slices.Sort(senders)
	var res store.Result
	for _, s := range senders {
		d, ok, err := w.readReceipt(b, a.conv, s, bySender[s], readers, to)
		if err != nil {
			return store.Result{}, err
		}
		if ok {
			res.Deliveries = append(res.Deliveries, d)
		}
	}
	return res, nil
}

// readReceipt appends to sender's timeline the read counts of seqs.
func (w *writer) readReceipt(b *pebble.Batch, conv, sender string, seqs []uint64, readers []reader, to uint64) (store.Delivery, bool, error) {
	if _, err := w.recipientsOf(conv, sender); err != nil {
		return store.Delivery{}, false, nil // no longer a member: no receipts
	}
	if off, err := w.receiptsOff(sender); err != nil || off {
		return store.Delivery{}, false, err
	}
	if err := w.loadUserHeads([]string{sender}); err != nil {
		return store.Delivery{}, false, err
	}
	rc := &pimv1.Receipt{Conv: conv, Kind: pimv1.ReceiptKind_RECEIPT_KIND_READ}
	for _, s := range seqs {
		if n := countReaders(readers, s, sender); n > 0 { // nobody else read it: nothing to tell
			rc.Messages = append(rc.Messages, &pimv1.MessageReads{Seq: s, ReadCount: uint32(n)})
		}
	}
	if len(rc.Messages) == 0 {
		return store.Delivery{}, false, nil
	}
	d, err := w.appendEvent(b, sender, ref{conv: conv, seq: to}, &pimv1.Event{Kind: &pimv1.Event_Receipt{Receipt: rc}})
	return d, err == nil, err
}

// reader is one entry of the receipt index: user read up to pos, having
// joined at join.
type reader struct {
	pos, join uint64
	user      string
}

// readerOf reports whether r counts as a reader of seq sent by sender.
func (r reader) readerOf(seq uint64, sender string) bool {
	return r.pos >= seq && r.join <= seq && r.user != sender
}

// receiptReaders returns the entries of conv's receipt index with pos >=
// from, ascending by pos.
func receiptReaders(r pebble.Reader, conv string, from uint64) ([]reader, error) {
	p := receiptPrefix(conv)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: appendBE8(p, from), UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	var out []reader
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		join, err := decodeBE8(it.Value(), "receipt entry")
		if err != nil || len(k) <= len(p)+8 {
			it.Close()
			return nil, fmt.Errorf("corrupt receipt entry %q: %x", k, it.Value())
		}
		pos, _ := seqSuffix(k[:len(p)+8], len(p))
		out = append(out, reader{pos: pos, join: join, user: string(k[len(p)+8:])})
	}
	return out, it.Close()
}

// countReaders counts the readers (ascending by pos) of seq sent by sender:
// O(log R + readers past seq).
func countReaders(rs []reader, seq uint64, sender string) int {
	n := 0
	for _, r := range rs[sort.Search(len(rs), func(i int) bool { return rs[i].pos >= seq }):] {
		if r.readerOf(seq, sender) {
			n++
		}
	}
	return n
}
