// The reference model: the store contract written as plainly as possible,
// in memory, behind one mutex. The model test runs the same random
// operations against an implementation and against the model and demands
// identical answers; the suite also runs against the model itself
// (storetest_test.go), which keeps the two honest.
//
// Invariants:
//   - The model holds the whole data set in memState; a memStore is one open
//     handle on it (reopen = a new handle on the same state), closed handles
//     answer store.ErrClosed.
//   - Values handed out are clones: callers may keep them while the model
//     goes on.
//   - Semantics the contract leaves open are decided here, and are what
//     the suite demands of every implementation:
//     error precedence (Send: duplicate before membership; group changes:
//     ErrNotFound, then ErrNotMember, then "nothing to do", then
//     ErrGroupTooLarge); an empty ClientMsgID is never deduplicated;
//     membership messages list all members at creation (the actor
//     included), the added or the removed users, sorted; a direct
//     conversation id in a group change is ErrNotFound; History, Members
//     and Membership answer ErrNotFound for an unknown group; a limit <= 0
//     returns no rows.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

var errModelInvalid = errors.New("model: invalid argument")

type modelRef struct {
	conv string
	seq  uint64
	ev   *pimv1.Event // set (kind only) for an event that is not a message
}

type modelDedup struct{ sender, device, clientMsgID string }

// memState is a whole data set.
type memState struct {
	mu        sync.Mutex
	epoch     string
	msgs      map[string][]*pimv1.Message // conv -> messages; msgs[i].Seq == i+1
	groups    map[string]map[string]store.Member
	timelines map[string][]modelRef // user -> events; index user seq - 1
	dedup     map[modelDedup]modelRef
	cursors   map[[2]string]uint64
	reads     map[[2]string]uint64 // (user, conv) -> read position
	rs        readModel
}

func newMemState() *memState {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		panic(err)
	}
	return &memState{
		epoch:     hex.EncodeToString(raw[:]),
		msgs:      make(map[string][]*pimv1.Message),
		groups:    make(map[string]map[string]store.Member),
		timelines: make(map[string][]modelRef),
		dedup:     make(map[modelDedup]modelRef),
		cursors:   make(map[[2]string]uint64),
		reads:     make(map[[2]string]uint64),
		rs:        newReadModel(),
	}
}

// memStore is an open handle on a memState; it implements store.Store.
type memStore struct {
	st     *memState
	closed bool // guarded by st.mu
}

var _ store.Store = (*memStore)(nil)

// newModel returns a model store on a new, empty data set.
func newModel() *memStore { return &memStore{st: newMemState()} }

// reopen returns a new handle on the same data set.
func (m *memStore) reopen() *memStore { return &memStore{st: m.st} }

// lock takes the state's lock; it fails when ctx is done or m is closed.
func (m *memStore) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.st.mu.Lock()
	if m.closed {
		m.st.mu.Unlock()
		return store.ErrClosed
	}
	return nil
}

func (m *memStore) Epoch() string { return m.st.epoch }

func (m *memStore) Close() error {
	m.st.mu.Lock()
	defer m.st.mu.Unlock()
	if m.closed {
		return store.ErrClosed
	}
	m.closed = true
	return nil
}

func clone(msg *pimv1.Message) *pimv1.Message { return proto.Clone(msg).(*pimv1.Message) }

// members returns conv's members, ordered by user, or ErrNotFound.
func (st *memState) members(conv string) ([]store.Member, error) {
	if a, b, ok := store.ParseDirect(conv); ok {
		ms := []store.Member{{User: a, Role: "member"}}
		if b != a {
			ms = append(ms, store.Member{User: b, Role: "member"})
		}
		return ms, nil
	}
	g, ok := st.groups[conv]
	if !ok {
		return nil, store.ErrNotFound
	}
	ms := make([]store.Member, 0, len(g))
	for _, mb := range g {
		ms = append(ms, mb)
	}
	slices.SortFunc(ms, func(x, y store.Member) int { return compareStrings(x.User, y.User) })
	return ms, nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// appendMsg sequences msg into its conversation and delivers it to
// recipients (ordered by user).
func (st *memState) appendMsg(msg *pimv1.Message, recipients []string) store.Result {
	msg.Seq = uint64(len(st.msgs[msg.Conv]) + 1)
	st.msgs[msg.Conv] = append(st.msgs[msg.Conv], msg)
	res := store.Result{Message: clone(msg), Deliveries: []store.Delivery{}}
	for _, u := range recipients {
		st.timelines[u] = append(st.timelines[u], modelRef{conv: msg.Conv, seq: msg.Seq})
		res.Deliveries = append(res.Deliveries, store.Delivery{User: u, Event: &pimv1.Event{
			UserSeq: uint64(len(st.timelines[u])),
			Kind:    &pimv1.Event_Message{Message: res.Message},
		}})
	}
	return res
}

// modelPending is the model's answer to SendAsync: the model sends at once.
type modelPending struct {
	res store.Result
	err error
}

func (p *modelPending) Wait(context.Context) (store.Result, error) { return p.res, p.err }

// SendAsync sends at once (the model has no queue); a chain keeps its rule:
// nothing is stored after a send that failed other than by a refusal.
func (m *memStore) SendAsync(ctx context.Context, req store.SendRequest, after store.Pending) store.Pending {
	if a, ok := after.(*modelPending); ok && a.err != nil && !store.Refusal(a.err) {
		return &modelPending{err: fmt.Errorf("model: send: %w", store.ErrPredecessorFailed)}
	}
	res, err := m.Send(ctx, req)
	return &modelPending{res: res, err: err}
}

func (m *memStore) Send(ctx context.Context, req store.SendRequest) (store.Result, error) {
	if store.ValidateConv(req.Conv) != nil || !store.ValidID(req.Sender) {
		return store.Result{}, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return store.Result{}, err
	}
	defer m.st.mu.Unlock()
	st := m.st
	if res, ok := st.duplicate(req.Sender, req.Device, req.ClientMsgID); ok {
		return res, nil
	}
	ms, err := st.members(req.Conv)
	if err != nil {
		return store.Result{}, fmt.Errorf("model: send: %w", err)
	}
	var recipients []string
	for _, mb := range ms {
		recipients = append(recipients, mb.User)
	}
	if !slices.Contains(recipients, req.Sender) {
		return store.Result{}, fmt.Errorf("model: send: %w", store.ErrNotMember)
	}
	msg := &pimv1.Message{
		Conv: req.Conv, MsgId: req.MsgID, Sender: req.Sender, SenderDevice: req.Device,
		ClientMsgId: req.ClientMsgID, Type: req.Type, Body: slices.Clone(req.Body),
		ClientTime: req.ClientTime, ServerTime: req.ServerTime, ClientSeq: req.ClientSeq,
	}
	res := st.appendMsg(msg, recipients)
	st.remember(res.Message)
	return res, nil
}

// duplicate returns the original message stored under (sender, device, id).
func (st *memState) duplicate(sender, device, id string) (store.Result, bool) {
	r, ok := st.dedup[modelDedup{sender, device, id}]
	if !ok || id == "" {
		return store.Result{}, false
	}
	return store.Result{Message: clone(st.msgs[r.conv][r.seq-1]), Duplicate: true}, true
}

// remember records msg's dedup entry, if it has a client id.
func (st *memState) remember(msg *pimv1.Message) {
	if msg.ClientMsgId != "" {
		st.dedup[modelDedup{msg.Sender, msg.SenderDevice, msg.ClientMsgId}] = modelRef{conv: msg.Conv, seq: msg.Seq}
	}
}

func validChange(ch store.GroupChange) bool {
	if store.ValidateConv(ch.Group) != nil || !store.ValidID(ch.Actor) {
		return false
	}
	for _, u := range ch.Users {
		if !store.ValidID(u) {
			return false
		}
	}
	return true
}

func groupMsg(ch store.GroupChange, t pimv1.MessageType, users []string) *pimv1.Message {
	return &pimv1.Message{
		Conv: ch.Group, MsgId: ch.MsgID, Sender: ch.Actor, SenderDevice: ch.Device,
		ClientMsgId: ch.ClientMsgID, Type: t, ServerTime: ch.ServerTime, Members: users,
	}
}

func sortedUnique(us []string) []string {
	out := slices.Clone(us)
	slices.Sort(out)
	return slices.Compact(out)
}

func (m *memStore) CreateGroup(ctx context.Context, ch store.GroupChange) (store.Result, error) {
	if !validChange(ch) || !store.IsGroup(ch.Group) {
		return store.Result{}, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return store.Result{}, err
	}
	defer m.st.mu.Unlock()
	st := m.st
	if res, ok := st.duplicate(ch.Actor, ch.Device, ch.ClientMsgID); ok {
		return res, nil
	}
	if _, ok := st.groups[ch.Group]; ok {
		return store.Result{}, fmt.Errorf("model: create: %w", store.ErrExists)
	}
	users := sortedUnique(append([]string{ch.Actor}, ch.Users...))
	if ch.MaxMembers > 0 && len(users) > ch.MaxMembers {
		return store.Result{}, fmt.Errorf("model: create: %w", store.ErrGroupTooLarge)
	}
	res := st.appendMsg(groupMsg(ch, pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, users), users)
	st.remember(res.Message)
	g := make(map[string]store.Member)
	for _, u := range users {
		mb := store.Member{User: u, JoinSeq: res.Message.Seq, Role: "member"}
		if u == ch.Actor {
			mb.Role = "owner"
		}
		g[u] = mb
	}
	st.groups[ch.Group] = g
	return res, nil
}

// changeable returns the group a change applies to.
func (st *memState) changeable(ch store.GroupChange) (map[string]store.Member, error) {
	g, ok := st.groups[ch.Group]
	if !ok {
		return nil, store.ErrNotFound
	}
	if _, ok := g[ch.Actor]; !ok {
		return nil, store.ErrNotMember
	}
	return g, nil
}

func (m *memStore) AddMembers(ctx context.Context, ch store.GroupChange) (store.Result, error) {
	if !validChange(ch) {
		return store.Result{}, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return store.Result{}, err
	}
	defer m.st.mu.Unlock()
	st := m.st
	if res, ok := st.duplicate(ch.Actor, ch.Device, ch.ClientMsgID); ok {
		return res, nil
	}
	g, err := st.changeable(ch)
	if err != nil {
		return store.Result{}, fmt.Errorf("model: add: %w", err)
	}
	var added []string
	for _, u := range sortedUnique(ch.Users) {
		if _, ok := g[u]; !ok {
			added = append(added, u)
		}
	}
	if len(added) == 0 {
		return store.Result{}, nil
	}
	if ch.MaxMembers > 0 && len(g)+len(added) > ch.MaxMembers {
		return store.Result{}, fmt.Errorf("model: add: %w", store.ErrGroupTooLarge)
	}
	seq := uint64(len(st.msgs[ch.Group]) + 1)
	for _, u := range added {
		g[u] = store.Member{User: u, JoinSeq: seq, Role: "member"}
	}
	ms, _ := st.members(ch.Group)
	var recipients []string
	for _, mb := range ms {
		recipients = append(recipients, mb.User)
	}
	res := st.appendMsg(groupMsg(ch, pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED, added), recipients)
	st.remember(res.Message)
	return res, nil
}

func (m *memStore) RemoveMembers(ctx context.Context, ch store.GroupChange) (store.Result, error) {
	if !validChange(ch) {
		return store.Result{}, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return store.Result{}, err
	}
	defer m.st.mu.Unlock()
	st := m.st
	if res, ok := st.duplicate(ch.Actor, ch.Device, ch.ClientMsgID); ok {
		return res, nil
	}
	g, err := st.changeable(ch)
	if err != nil {
		return store.Result{}, fmt.Errorf("model: remove: %w", err)
	}
	var removed []string
	for _, u := range sortedUnique(ch.Users) {
		if _, ok := g[u]; ok {
			removed = append(removed, u)
		}
	}
	if len(removed) == 0 {
		return store.Result{}, nil
	}
	ms, _ := st.members(ch.Group)
	var recipients []string
	for _, mb := range ms {
		recipients = append(recipients, mb.User)
	}
	res := st.appendMsg(groupMsg(ch, pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED, removed), recipients)
	st.remember(res.Message)
	for _, u := range removed {
		delete(g, u)
	}
	return res, nil
}

func (m *memStore) Members(ctx context.Context, conv string) ([]store.Member, error) {
	if store.ValidateConv(conv) != nil {
		return nil, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.st.mu.Unlock()
	ms, err := m.st.members(conv)
	if err != nil {
		return nil, fmt.Errorf("model: members: %w", err)
	}
	return ms, nil
}

func (m *memStore) Membership(ctx context.Context, conv, user string) (store.Member, bool, error) {
	if store.ValidateConv(conv) != nil {
		return store.Member{}, false, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return store.Member{}, false, err
	}
	defer m.st.mu.Unlock()
	ms, err := m.st.members(conv)
	if err != nil {
		return store.Member{}, false, fmt.Errorf("model: membership: %w", err)
	}
	for _, mb := range ms {
		if mb.User == user {
			return mb, true, nil
		}
	}
	return store.Member{}, false, nil
}

func (m *memStore) Timeline(ctx context.Context, user string, after uint64, limit int) ([]*pimv1.Event, uint64, error) {
	if !store.ValidID(user) {
		return nil, 0, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return nil, 0, err
	}
	defer m.st.mu.Unlock()
	tl := m.st.timelines[user]
	head := uint64(len(tl))
	evs := []*pimv1.Event{}
	for us := after + 1; us <= head && len(evs) < limit; us++ {
		r := tl[us-1]
		ev := &pimv1.Event{UserSeq: us}
		if r.ev != nil {
			ev.Kind = proto.Clone(r.ev).(*pimv1.Event).Kind
		} else {
			ev.Kind = &pimv1.Event_Message{Message: clone(m.st.msgs[r.conv][r.seq-1])}
		}
		evs = append(evs, ev)
	}
	return evs, head, nil
}

func (m *memStore) Head(ctx context.Context, user string) (uint64, error) {
	if !store.ValidID(user) {
		return 0, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.st.mu.Unlock()
	return uint64(len(m.st.timelines[user])), nil
}

func (m *memStore) History(ctx context.Context, conv string, from, before uint64, limit int) ([]*pimv1.Message, bool, error) {
	if store.ValidateConv(conv) != nil {
		return nil, false, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return nil, false, err
	}
	defer m.st.mu.Unlock()
	if _, err := m.st.members(conv); err != nil {
		return nil, false, fmt.Errorf("model: history: %w", err)
	}
	all := m.st.msgs[conv]
	lo := max(from, 1)
	hi := uint64(len(all)) + 1 // exclusive
	if before != 0 {
		hi = min(hi, before)
	}
	msgs := []*pimv1.Message{}
	if hi <= lo {
		return msgs, false, nil
	}
	start := lo
	if limit < 0 {
		limit = 0
	}
	if hi-lo > uint64(limit) {
		start = hi - uint64(limit)
	}
	for seq := start; seq < hi; seq++ {
		msgs = append(msgs, clone(all[seq-1]))
	}
	return msgs, start > lo, nil
}

func (m *memStore) Ack(ctx context.Context, user, device string, userSeq uint64) (uint64, error) {
	if !store.ValidID(user) {
		return 0, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.st.mu.Unlock()
	k := [2]string{user, device}
	c := max(m.st.cursors[k], min(userSeq, uint64(len(m.st.timelines[user]))))
	m.st.cursors[k] = c
	return c, nil
}

func (m *memStore) Cursor(ctx context.Context, user, device string) (uint64, error) {
	if !store.ValidID(user) {
		return 0, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.st.mu.Unlock()
	return m.st.cursors[[2]string{user, device}], nil
}

func (m *memStore) MarkRead(ctx context.Context, user, device, conv string, seq uint64) (uint64, store.Result, error) {
	if store.ValidateConv(conv) != nil || !store.ValidID(user) {
		return 0, store.Result{}, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return 0, store.Result{}, err
	}
	defer m.st.mu.Unlock()
	st := m.st
	ms, err := st.members(conv)
	if err != nil {
		return 0, store.Result{}, fmt.Errorf("model: mark read: %w", err)
	}
	var users []string
	for _, mb := range ms {
		users = append(users, mb.User)
	}
	if !slices.Contains(users, user) {
		return 0, store.Result{}, fmt.Errorf("model: mark read: %w", store.ErrNotMember)
	}
	return st.markRead(user, device, conv, seq, users)
}

func (m *memStore) ReadPosition(ctx context.Context, user, conv string) (uint64, error) {
	if store.ValidateConv(conv) != nil || !store.ValidID(user) {
		return 0, errModelInvalid
	}
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.st.mu.Unlock()
	return m.st.reads[[2]string{user, conv}], nil
}
