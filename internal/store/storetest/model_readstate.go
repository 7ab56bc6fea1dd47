// The reference model of the read state. Where the Pebble store maintains
// conversation entries incrementally, the model derives them from scratch
// out of the user's timeline on every call (readmodel.Derive): two
// independent ways to the same answer, which is what the model test
// compares.
//
// Invariants: the entries are readmodel's definition (see its package
// comment); PeerReadSeq only ever holds reads reported while both users
// had read receipts on, because no other read produces a peer read-sync.
package storetest

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/store"
	"github.com/pim-project/pim/internal/store/readmodel"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// readModel is the model's read state besides read positions.
type readModel struct {
	off           map[string]bool           // user -> read receipts off
	indexed       map[[2]string]indexedRead // (user, conv) -> read counted by Receipts
	delivered     map[string]uint64         // user -> MarkDelivered mark
	peerDelivered map[[2]string]uint64      // (user, conv) -> PeerDeliveredSeq
	hidden        map[[2]string][]uint64
	groups        map[string]store.GroupSettings
}

func newReadModel() readModel {
	return readModel{
		off:           make(map[string]bool),
		indexed:       make(map[[2]string]indexedRead),
		delivered:     make(map[string]uint64),
		peerDelivered: make(map[[2]string]uint64),
		hidden:        make(map[[2]string][]uint64),
		groups:        make(map[string]store.GroupSettings),
	}
}

// indexedRead is a read as Receipts counts it: up to pos, by a reader who
// had joined at join.
type indexedRead struct{ pos, join uint64 }

// readerOf reports whether user's indexed read counts for seq sent by sender.
func (r indexedRead) readerOf(user string, seq uint64, sender string) bool {
	return r.pos >= seq && r.join <= seq && user != sender
}

// deliver appends ev (kind only) about conv/seq to user's timeline.
func (st *memState) deliver(user, conv string, seq uint64, ev *pimv1.Event) store.Delivery {
	st.timelines[user] = append(st.timelines[user], modelRef{conv: conv, seq: seq, ev: ev})
	return store.Delivery{User: user, Event: &pimv1.Event{
		UserSeq: uint64(len(st.timelines[user])), Kind: proto.Clone(ev).(*pimv1.Event).Kind}}
}

func (st *memState) markRead(user, device, conv string, seq uint64, members []string) (uint64, store.Result, error) {
	key := [2]string{user, conv}
	seq = min(seq, uint64(len(st.msgs[conv])))
	if seq <= st.reads[key] {
		return st.reads[key], store.Result{}, nil
	}
	st.reads[key] = seq
	off := st.rs.off[user]
	if !off {
		var join uint64
		if g, ok := st.groups[conv]; ok {
			join = g[user].JoinSeq
		}
		st.rs.indexed[key] = indexedRead{pos: seq, join: join}
	}
	recipients := []string{user}
	if !store.IsGroup(conv) && !off {
		for _, u := range members {
			if u != user && !st.rs.off[u] {
				recipients = append(recipients, u)
			}
		}
	}
	ev := &pimv1.Event{Kind: &pimv1.Event_Read{Read: &pimv1.ReadSync{Conv: conv, Seq: seq, User: user, Device: device}}}
	var res store.Result
	for _, u := range recipients {
		res.Deliveries = append(res.Deliveries, st.deliver(u, conv, seq, ev))
	}
	return seq, res, nil
}

// entries derives user's conversation entries from their timeline
// (readmodel.Derive), each with its last message.
func (st *memState) entries(user string) map[string]*pimv1.Conversation {
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
	out := readmodel.Derive(user, evs)
	for conv, c := range out {
		c.LastMessage = clone(st.msgs[conv][c.LastSeq-1])
	}
	return out
}

func (m *memStore) Conversations(ctx context.Context, user string, q store.ConvQuery) ([]*pimv1.Conversation, bool, uint64, error) {
	if !store.ValidID(user) {
		return nil, false, 0, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return nil, false, 0, err
	}
	defer m.st.mu.Unlock()
	version := uint64(len(m.st.timelines[user]))
	var sel []*pimv1.Conversation
	for _, c := range m.st.entries(user) {
		switch {
		case q.SinceVersion > 0:
			if c.Version > q.SinceVersion {
				sel = append(sel, c)
			}
		case q.BeforeActivity == 0 || c.Activity < q.BeforeActivity:
			sel = append(sel, c)
		}
	}
	slices.SortFunc(sel, func(a, b *pimv1.Conversation) int {
		if q.SinceVersion > 0 {
			return cmp.Compare(a.Version, b.Version)
		}
		return cmp.Compare(b.Activity, a.Activity)
	})
	limit := max(q.Limit, 0)
	more := len(sel) > limit && limit > 0
	sel = sel[:min(limit, len(sel))]
	if sel == nil {
		sel = []*pimv1.Conversation{}
	}
	return sel, more, version, nil
}

func (m *memStore) Receipts(ctx context.Context, conv string, seq uint64, afterUser string, limit int) (int, []string, bool, error) {
	if store.ValidateConv(conv) != nil {
		return 0, nil, false, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return 0, nil, false, err
	}
	defer m.st.mu.Unlock()
	msgs := m.st.msgs[conv]
	if seq == 0 || seq > uint64(len(msgs)) {
		return 0, nil, false, fmt.Errorf("model: receipts: %w", store.ErrNotFound)
	}
	sender := msgs[seq-1].Sender
	var users []string
	for k, r := range m.st.rs.indexed {
		if k[1] == conv && r.readerOf(k[0], seq, sender) {
			users = append(users, k[0])
		}
	}
	slices.Sort(users)
	count := len(users)
	var page []string
	for _, u := range users {
		if u > afterUser {
			page = append(page, u)
		}
	}
	limit = max(limit, 0)
	more := len(page) > limit
	if more {
		page = page[:limit]
	}
	if page == nil {
		page = []string{}
	}
	return count, page, more, nil
}

func (m *memStore) NotifyReads(ctx context.Context, conv string, from, to uint64) (store.Result, error) {
	if store.ValidateConv(conv) != nil {
		return store.Result{}, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return store.Result{}, err
	}
	defer m.st.mu.Unlock()
	st := m.st
	to = min(to, uint64(len(st.msgs[conv])))
	if to > store.MaxNotifySpan {
		from = max(from, to-store.MaxNotifySpan)
	}
	var res store.Result
	if to <= from {
		return res, nil
	}
	bySender := make(map[string][]uint64)
	var senders []string
	for seq := from + 1; seq <= to; seq++ {
		msg := st.msgs[conv][seq-1]
		if msg.Type < pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED {
			if _, ok := bySender[msg.Sender]; !ok {
				senders = append(senders, msg.Sender)
			}
			bySender[msg.Sender] = append(bySender[msg.Sender], seq)
		}
	}
	slices.Sort(senders)
	ms, _ := st.members(conv)
	for _, s := range senders {
		member := slices.ContainsFunc(ms, func(mb store.Member) bool { return mb.User == s })
		if !member || st.rs.off[s] {
			continue
		}
		rc := &pimv1.Receipt{Conv: conv, Kind: pimv1.ReceiptKind_RECEIPT_KIND_READ}
		for _, seq := range bySender[s] {
			n := 0
			for k, r := range st.rs.indexed {
				if k[1] == conv && k[0] != s && r.readerOf(k[0], seq, s) && r.pos > from {
					n++
				}
			}
			if n > 0 {
				rc.Messages = append(rc.Messages, &pimv1.MessageReads{Seq: seq, ReadCount: uint32(n)})
			}
		}
		if len(rc.Messages) == 0 {
			continue
		}
		res.Deliveries = append(res.Deliveries, st.deliver(s, conv, to, &pimv1.Event{Kind: &pimv1.Event_Receipt{Receipt: rc}}))
	}
	return res, nil
}

func (m *memStore) MarkDelivered(ctx context.Context, user string, userSeq uint64) (store.Result, error) {
	if !store.ValidID(user) {
		return store.Result{}, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return store.Result{}, err
	}
	defer m.st.mu.Unlock()
	st := m.st
	from := st.rs.delivered[user]
	to := min(userSeq, uint64(len(st.timelines[user])))
	var res store.Result
	if to <= from {
		return res, nil
	}
	latest := make(map[string]uint64)
	for _, r := range st.timelines[user][from:to] {
		if r.ev == nil && !store.IsGroup(r.conv) && st.msgs[r.conv][r.seq-1].Sender != user {
			latest[r.conv] = max(latest[r.conv], r.seq)
		}
	}
	st.rs.delivered[user] = to
	var convs []string
	for c := range latest {
		convs = append(convs, c)
	}
	slices.Sort(convs)
	for _, conv := range convs {
		peer := st.msgs[conv][latest[conv]-1].Sender
		k := [2]string{peer, conv}
		if latest[conv] <= st.rs.peerDelivered[k] {
			continue
		}
		st.rs.peerDelivered[k] = latest[conv]
		res.Deliveries = append(res.Deliveries, st.deliver(peer, conv, latest[conv], &pimv1.Event{
			Kind: &pimv1.Event_Receipt{Receipt: &pimv1.Receipt{Conv: conv,
				Kind: pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED, Seq: latest[conv], User: user}}}))
	}
	return res, nil
}

func (m *memStore) Hide(ctx context.Context, user, device, conv string, seq uint64) (store.Result, error) {
	if store.ValidateConv(conv) != nil || !store.ValidID(user) {
		return store.Result{}, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return store.Result{}, err
	}
	defer m.st.mu.Unlock()
	st := m.st
	ms, err := st.members(conv)
	if err != nil {
		return store.Result{}, fmt.Errorf("model: hide: %w", err)
	}
	i := slices.IndexFunc(ms, func(mb store.Member) bool { return mb.User == user })
	if i < 0 {
		return store.Result{}, fmt.Errorf("model: hide: %w", store.ErrNotMember)
	}
	if seq == 0 || seq > uint64(len(st.msgs[conv])) || seq < ms[i].JoinSeq {
		return store.Result{}, fmt.Errorf("model: hide: %w", store.ErrNotFound)
	}
	k := [2]string{user, conv}
	if slices.Contains(st.rs.hidden[k], seq) {
		return store.Result{}, nil
	}
	st.rs.hidden[k] = append(st.rs.hidden[k], seq)
	slices.Sort(st.rs.hidden[k])
	d := st.deliver(user, conv, seq, &pimv1.Event{Kind: &pimv1.Event_Hidden{
		Hidden: &pimv1.Hidden{Conv: conv, Seq: seq, Device: device}}})
	return store.Result{Deliveries: []store.Delivery{d}}, nil
}

func (m *memStore) HiddenIn(ctx context.Context, user, conv string, from, before uint64) ([]uint64, error) {
	if store.ValidateConv(conv) != nil || !store.ValidID(user) {
		return nil, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.st.mu.Unlock()
	out := []uint64{}
	for _, s := range m.st.rs.hidden[[2]string{user, conv}] {
		if s >= from && (before == 0 || s < before) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (m *memStore) SetReadReceipts(ctx context.Context, user string, on bool) error {
	if !store.ValidID(user) {
		return errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.st.mu.Unlock()
	m.st.rs.off[user] = !on
	return nil
}

func (m *memStore) ReadReceipts(ctx context.Context, user string) (bool, error) {
	if !store.ValidID(user) {
		return false, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return false, err
	}
	defer m.st.mu.Unlock()
	return !m.st.rs.off[user], nil
}

func (m *memStore) SetGroupSettings(ctx context.Context, group string, gs store.GroupSettings) error {
	if store.ValidateConv(group) != nil {
		return errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.st.mu.Unlock()
	if _, ok := m.st.groups[group]; !ok {
		return fmt.Errorf("model: group settings: %w", store.ErrNotFound)
	}
	m.st.rs.groups[group] = gs
	return nil
}

func (m *memStore) GroupSettings(ctx context.Context, group string) (store.GroupSettings, error) {
	if store.ValidateConv(group) != nil {
		return store.GroupSettings{}, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return store.GroupSettings{}, err
	}
	defer m.st.mu.Unlock()
	if _, ok := m.st.groups[group]; !ok {
		return store.GroupSettings{}, fmt.Errorf("model: group settings: %w", store.ErrNotFound)
	}
	return m.st.rs.groups[group], nil
}
