// The writer: the single goroutine that sequences every write.
//
// Invariants:
//   - Only the writer goroutine assigns conversation and user seqs and
//     changes membership; it is started by Open and ends when Close closes
//     quit, after which every op it did not take fails with store.ErrClosed.
//   - The writer's caches (conversation heads, user heads, group membership)
//     hold the committed state plus the effects of the ops already applied to
//     the batch being built, never anything else: an op changes them only
//     after all its checks passed, and a failed commit drops them all (they
//     are reloaded from Pebble on demand).
//   - One group commit = one Pebble batch: the ops taken in one round are
//     applied in order (each sees the effects of the earlier ones, including
//     dedup entries and membership changes), committed together with the
//     store's write options, and only then answered.
//   - A batch is published to reads (Store.publish) after its commit
//     returned and before any of its ops is answered, so a writer reads its
//     own writes and no reader sees a batch that is not durable.
//   - An op is answered exactly once, by closing its done channel after its
//     res and err are set.
//   - Pipelined sends (SendAsync, contract 10): ops enter the queue in the
//     order of the calls, and the writer takes them in that order, so an
//     op's predecessor in its chain was answered before it was queued
//     (failed at the door) or was applied before it, in this batch or an
//     earlier one whose commit finished. The writer fails an op, writing
//     nothing, when its predecessor's err is set and not a refusal; an op
//     that a failed commit takes back has its err set before any later
//     batch starts, so the chain stops there too.
package pebblestore

import (
	"context"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Cache bounds: past these, a cache is dropped after a commit (it is
// reloaded from Pebble on demand).
const (
	maxCachedHeads  = 1 << 18
	maxCachedGroups = 1 << 14
	// maxCachedEntries bounds the cached conversation entries (about 200
	// bytes each).
	maxCachedEntries = 1 << 17
)

type opKind uint8

const (
	opSend opKind = iota
	opCreate
	opAdd
	opRemove
	opRead
	opHide
	opDelivered
	opNotifyReads
	opSettings
	opGroupSettings
)

func (k opKind) String() string {
	return [...]string{"send", "create group", "add members", "remove members", "mark read",
		"hide", "mark delivered", "notify reads", "settings", "group settings"}[k]
}

// opArgs are the arguments of the read-state ops.
type opArgs struct {
	user, device, conv string
	seq, seq2          uint64
	on                 bool
}

// op is one write waiting for the writer.
type op struct {
	ctx  context.Context
	kind opKind
	send store.SendRequest
	ch   store.GroupChange
	read *pimv1.ReadSync // MarkRead: user, device, conv and the requested seq
	args opArgs
	// after is the op before this one in its SendAsync chain (nil if none);
	// the writer reads it, then drops it (no chain of ops kept alive).
	after *op
	// writerDone is the store's, for Wait.
	writerDone <-chan struct{}

	res  store.Result
	err  error
	done chan struct{}
}

// Wait answers an op handed over by SendAsync. See store.Pending.
func (o *op) Wait(ctx context.Context) (store.Result, error) {
	select {
	case <-o.done:
		return o.res, o.err
	default:
	}
	select {
	case <-o.done:
		return o.res, o.err
	case <-o.writerDone:
		// The writer closes done before writerDone, so this check is exact.
		select {
		case <-o.done:
			return o.res, o.err
		default:
			return store.Result{}, store.ErrClosed
		}
	case <-ctx.Done():
		select {
		case <-o.done:
			return o.res, o.err
		default:
			// The op may still be committed: a retry with the same client
			// msg id finds it.
			return store.Result{}, ctx.Err()
		}
	}
}

// failed answers o at once with err (it never reached the writer).
func (o *op) failed(err error) *op {
	o.after = nil
	o.err = err
	close(o.done)
	return o
}

// submit hands o to the writer and waits for its answer.
func (s *Store) submit(ctx context.Context, o *op) (store.Result, error) {
	if err := s.enqueue(ctx, o); err != nil {
		return store.Result{}, err
	}
	return o.Wait(ctx)
}

// enqueue hands o to the writer (prepared for Wait), unless ctx is done or
// the store is closed.
func (s *Store) enqueue(ctx context.Context, o *op) error {
	o.ctx, o.writerDone, o.done = ctx, s.writerDone, make(chan struct{})
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-s.quit:
		return store.ErrClosed
	default:
	}
	select {
	case s.ops <- o:
		return nil
	case <-s.quit:
		return store.ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// group is the writer's cached view of a group conversation.
type group struct {
	exists  bool
	members map[string]store.Member
	sorted  []string // member ids in order; nil when it must be rebuilt
}

func (g *group) users() []string {
	if g.sorted == nil {
		g.sorted = make([]string, 0, len(g.members))
		for u := range g.members {
			g.sorted = append(g.sorted, u)
		}
		slices.Sort(g.sorted)
	}
	return g.sorted
}

// writer owns the overlay. Only its goroutine touches it.
type writer struct {
	s  *Store
	db *pebble.DB

	convHead map[string]uint64
	userHead map[string]uint64
	groups   map[string]*group
	dvMark   map[string]deliveredMark // MarkDelivered positions (readstate.go)
	convs    map[string]*convState    // conversation entries by user\x00conv

	// Per batch: the dedup entries, messages and read positions written by
	// this batch.
	pendDedup map[string]ref
	pendMsgs  map[ref]*pimv1.Message
	pend      pendState
	// batchErr is set when writing into the batch failed: the batch is
	// then unusable and must not be committed.
	batchErr error
}

func newWriter(s *Store) *writer {
	w := &writer{s: s, db: s.db}
	w.dropCaches()
	w.pendDedup = make(map[string]ref)
	w.pendMsgs = make(map[ref]*pimv1.Message)
	w.pend = newPendState()
	return w
}

func (w *writer) dropCaches() {
	w.convHead = make(map[string]uint64)
	w.userHead = make(map[string]uint64)
	w.groups = make(map[string]*group)
	w.dvMark = make(map[string]deliveredMark)
	w.convs = make(map[string]*convState)
}

func (w *writer) run() {
	defer close(w.s.writerDone)
	batch := make([]*op, 0, maxBatch)
	for {
		select {
		case <-w.s.quit:
			w.failQueued()
			return
		default:
		}
		select {
		case o := <-w.s.ops:
			batch = append(batch[:0], o)
		case <-w.s.quit:
			w.failQueued()
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case o := <-w.s.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		w.commit(batch)
		clear(batch) // drop references to answered ops
	}
}

// failQueued answers every op still queued with ErrClosed. Ops queued after
// it ran are answered by submit, which sees writerDone.
func (w *writer) failQueued() {
	for {
		select {
		case o := <-w.s.ops:
			o.err = store.ErrClosed
			close(o.done)
		default:
			return
		}
	}
}

// commit applies ops in order to one batch, commits it and answers them.
func (w *writer) commit(ops []*op) {
	b := w.db.NewBatch()
	defer b.Close()
	clear(w.pendDedup)
	clear(w.pendMsgs)
	w.pend.clear()
	w.batchErr = nil
	for _, o := range ops {
		if a := o.after; a != nil {
			// The predecessor was answered or applied before o (it was queued
			// first; an earlier op of this batch has its err set by now).
			o.after = nil
			if a.err != nil && !store.Refusal(a.err) {
				o.err = fmt.Errorf("pebble store: send: %w", store.ErrPredecessorFailed)
				continue
			}
		}
		if err := o.ctx.Err(); err != nil {
			o.err = err // abandoned before it was sequenced: write nothing
			continue
		}
		switch o.kind {
		case opSend:
			o.res, o.err = w.send(b, &o.send)
		case opCreate:
			o.res, o.err = w.createGroup(b, &o.ch)
		case opAdd:
			o.res, o.err = w.addMembers(b, &o.ch)
		case opRemove:
			o.res, o.err = w.removeMembers(b, &o.ch)
		case opRead:
			o.res, o.err = w.markRead(b, o.read)
		case opHide:
			o.res, o.err = w.hide(b, &o.args)
		case opDelivered:
			o.res, o.err = w.markDelivered(b, &o.args)
		case opNotifyReads:
			o.res, o.err = w.notifyReads(b, &o.args)
		case opSettings:
			o.res, o.err = w.setReceipts(b, o.args.user, o.args.on)
		case opGroupSettings:
			o.res, o.err = w.setGroupSettings(b, o.args.conv, o.args.on)
		}
		if w.batchErr != nil {
			break
		}
	}
	err := w.batchErr
	// Whether the batch writes anything, asked before Commit: Pebble drops
	// the data of a large batch (one it queues as a flushable) in Commit,
	// after which b.Empty() is true although everything was written. Asking
	// afterwards skipped the publish of the read view and the announce of a
	// large batch's deliveries (many group messages in one batch), so the
	// sessions were never told of them.
	wrote := !b.Empty()
	if err == nil && wrote {
		if h := w.s.testHookCommit; h != nil {
			err = h(len(ops))
		}
		if err == nil {
			err = b.Commit(w.s.wopts)
		}
	}
	if err != nil {
		// Nothing of this batch is stored: drop every cached value it may
		// have advanced, and fail all its ops (even those answered from
		// state an earlier op of the batch created).
		w.dropCaches()
		err = fmt.Errorf("pebble store: commit: %w", err)
		w.s.log.Error("commit failed", "ops", len(ops), "err", err)
		for _, o := range ops {
			o.res, o.err = store.Result{}, err
		}
	} else {
		if wrote {
			if h := w.s.testHookCommitted; h != nil {
				h()
			}
			w.s.publish()
			w.announce(ops)
		}
		if len(w.convHead) > maxCachedHeads {
			w.convHead = make(map[string]uint64)
		}
		if len(w.userHead) > maxCachedHeads {
			w.userHead = make(map[string]uint64)
		}
		if len(w.convs) > maxCachedEntries {
			w.convs = make(map[string]*convState)
		}
		if len(w.dvMark) > maxCachedHeads {
			w.dvMark = make(map[string]deliveredMark)
		}
		if len(w.groups) > maxCachedGroups {
			w.groups = make(map[string]*group)
		}
	}
	clear(w.pendDedup)
	clear(w.pendMsgs)
	w.pend.clear()
	for _, o := range ops {
		close(o.done)
	}
}

// announce hands the deliveries of a committed batch to Options.OnCommit, in
// commit order.
func (w *writer) announce(ops []*op) {
	if w.s.onCommit == nil {
		return
	}
	for _, o := range ops {
		if o.err == nil && len(o.res.Deliveries) > 0 {
			w.s.onCommit(o.res.Deliveries)
		}
	}
}

// set writes into the batch, recording a failure in batchErr.
func (w *writer) set(b *pebble.Batch, k, v []byte) {
	if err := b.Set(k, v, nil); err != nil && w.batchErr == nil {
		w.batchErr = err
	}
}

func (w *writer) del(b *pebble.Batch, k []byte) {
	if err := b.Delete(k, nil); err != nil && w.batchErr == nil {
		w.batchErr = err
	}
}

// convHeadOf returns conv's head, in the batch's view.
func (w *writer) convHeadOf(conv string) (uint64, error) {
	if h, ok := w.convHead[conv]; ok {
		return h, nil
	}
	h, err := lastSeq(w.db, msgPrefix(conv))
	if err != nil {
		return 0, err
	}
	w.convHead[conv] = h
	return h, nil
}

// loadUserHeads makes sure the heads of users are cached.
func (w *writer) loadUserHeads(users []string) error {
	for _, u := range users {
		if _, ok := w.userHead[u]; ok {
			continue
		}
		h, err := lastSeq(w.db, userPrefix(u))
		if err != nil {
			return err
		}
		w.userHead[u] = h
	}
	return nil
}

// groupOf returns conv's group state, in the batch's view.
func (w *writer) groupOf(conv string) (*group, error) {
	if g, ok := w.groups[conv]; ok {
		return g, nil
	}
	g := &group{members: make(map[string]store.Member)}
	meta, err := get(w.db, groupKey(conv))
	if err != nil {
		return nil, err
	}
	if meta != nil {
		g.exists = true
		p := memberPrefix(conv)
		it, err := w.db.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
		if err != nil {
			return nil, err
		}
		for ok := it.First(); ok; ok = it.Next() {
			u := string(it.Key()[len(p):])
			m, err := decodeMember(u, it.Value())
			if err != nil {
				it.Close()
				return nil, err
			}
			g.members[u] = m
		}
		if err := it.Close(); err != nil {
			return nil, err
		}
	}
	w.groups[conv] = g
	return g, nil
}

// findDuplicate returns the message stored under the dedup key, if any.
func (w *writer) findDuplicate(dk []byte) (*pimv1.Message, error) {
	r, ok := w.pendDedup[string(dk)]
	if ok {
		return w.pendMsgs[r], nil
	}
	v, err := get(w.db, dk)
	if err != nil || v == nil {
		return nil, err
	}
	if r, err = decodeRef(v); err != nil {
		return nil, err
	}
	raw, err := get(w.db, msgKey(r.conv, r.seq))
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("dedup entry %q points at missing message %s/%d", dk, r.conv, r.seq)
	}
	m := new(pimv1.Message)
	if err := proto.Unmarshal(raw, m); err != nil {
		return nil, fmt.Errorf("message %s/%d: %w", r.conv, r.seq, err)
	}
	return m, nil
}

// append sequences msg (whose Conv is set) into its conversation at head+1,
// delivers it to recipients (ordered by user; their heads loaded) and records
// dedup key dk (if not nil). Its checks done, it only writes to the overlay
// and the batch.
func (w *writer) append(b *pebble.Batch, msg *pimv1.Message, head uint64, recipients []string, dk []byte) (store.Result, error) {
	msg.Seq = head + 1
	raw, err := proto.Marshal(msg)
	if err != nil {
		return store.Result{}, fmt.Errorf("marshal message: %w", err)
	}
	r := ref{conv: msg.Conv, seq: msg.Seq}
	rv := encodeMsgRef(r, false)
	w.set(b, msgKey(r.conv, r.seq), raw)
	if dk != nil {
		w.set(b, dk, rv)
		w.pendDedup[string(dk)] = r
	}
	w.pendMsgs[r] = msg
	w.convHead[r.conv] = r.seq
	res := store.Result{Message: msg, Deliveries: make([]store.Delivery, len(recipients))}
	for i, u := range recipients {
		us := w.userHead[u] + 1
		w.userHead[u] = us
		if u == msg.Sender {
			w.set(b, userKey(u, us), encodeMsgRef(r, true))
		} else {
			w.set(b, userKey(u, us), rv)
		}
		res.Deliveries[i] = store.Delivery{User: u, Event: &pimv1.Event{
			UserSeq: us,
			Kind:    &pimv1.Event_Message{Message: msg},
		}}
		if err := w.noteMessage(b, u, us, msg); err != nil {
			return store.Result{}, err
		}
	}
	return res, nil
}

// dedup returns the dedup key of (sender, device, id) (nil for an empty id)
// and the message already stored under it, if any.
func (w *writer) dedup(sender, device, id string) ([]byte, *pimv1.Message, error) {
	if id == "" {
		return nil, nil, nil
	}
	dk := dedupKey(sender, device, id)
	orig, err := w.findDuplicate(dk)
	return dk, orig, err
}

func (w *writer) send(b *pebble.Batch, req *store.SendRequest) (store.Result, error) {
	dk, orig, err := w.dedup(req.Sender, req.Device, req.ClientMsgID)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: send: %w", err)
	}
	if orig != nil {
		return store.Result{Message: orig, Duplicate: true}, nil
	}
	recipients, err := w.recipientsOf(req.Conv, req.Sender)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: send: %w", err)
	}
	head, err := w.convHeadOf(req.Conv)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: send: %w", err)
	}
	if err := w.loadUserHeads(recipients); err != nil {
		return store.Result{}, fmt.Errorf("pebble store: send: %w", err)
	}
	msg := &pimv1.Message{
		Conv:         req.Conv,
		MsgId:        req.MsgID,
		Sender:       req.Sender,
		SenderDevice: req.Device,
		ClientMsgId:  req.ClientMsgID,
		Type:         req.Type,
		Body:         req.Body,
		ClientTime:   req.ClientTime,
		ServerTime:   req.ServerTime,
		ClientSeq:    req.ClientSeq,
	}
	res, err := w.append(b, msg, head, recipients, dk)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: send: %w", err)
	}
	return res, nil
}

// dupResult is the answer to a group change whose dedup lookup failed or
// found the change already stored.
func dupResult(orig *pimv1.Message, err error, op string) (store.Result, error) {
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: %s: %w", op, err)
	}
	return store.Result{Message: orig, Duplicate: true}, nil
}

// membershipMsg builds the system message of a group change.
func membershipMsg(ch *store.GroupChange, t pimv1.MessageType, users []string) *pimv1.Message {
	return &pimv1.Message{
		Conv:         ch.Group,
		MsgId:        ch.MsgID,
		Sender:       ch.Actor,
		SenderDevice: ch.Device,
		ClientMsgId:  ch.ClientMsgID,
		Type:         t,
		ServerTime:   ch.ServerTime,
		Members:      users,
	}
}

// uniqueSorted returns the distinct users of us, ordered, without skip.
func uniqueSorted(us []string, skip func(string) bool) []string {
	out := make([]string, 0, len(us))
	for _, u := range us {
		if !skip(u) {
			out = append(out, u)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (w *writer) createGroup(b *pebble.Batch, ch *store.GroupChange) (store.Result, error) {
	dk, orig, err := w.dedup(ch.Actor, ch.Device, ch.ClientMsgID)
	if err != nil || orig != nil {
		return dupResult(orig, err, "create group")
	}
	g, err := w.groupOf(ch.Group)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: create group: %w", err)
	}
	if g.exists {
		return store.Result{}, fmt.Errorf("pebble store: create group %s: %w", ch.Group, store.ErrExists)
	}
	members := uniqueSorted(append([]string{ch.Actor}, ch.Users...), func(string) bool { return false })
	if ch.MaxMembers > 0 && len(members) > ch.MaxMembers {
		return store.Result{}, fmt.Errorf("pebble store: create group %s with %d members (max %d): %w",
			ch.Group, len(members), ch.MaxMembers, store.ErrGroupTooLarge)
	}
	head, err := w.convHeadOf(ch.Group)
	if err == nil {
		err = w.loadUserHeads(members)
	}
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: create group: %w", err)
	}
	msg := membershipMsg(ch, pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, members)
	res, err := w.append(b, msg, head, members, dk)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: create group: %w", err)
	}
	w.set(b, groupKey(ch.Group), []byte(ch.Actor))
	g.exists = true
	for _, u := range members {
		m := store.Member{User: u, JoinSeq: msg.Seq, Role: "member"}
		if u == ch.Actor {
			m.Role = "owner"
		}
		g.members[u] = m
		w.set(b, memberKey(ch.Group, u), encodeMember(m))
	}
	g.sorted = slices.Clone(members)
	return res, nil
}

// changeable returns the group of a change by an actor who must be a member.
func (w *writer) changeable(ch *store.GroupChange) (*group, error) {
	if _, _, ok := store.ParseDirect(ch.Group); ok {
		return nil, fmt.Errorf("%s is not a group: %w", ch.Group, store.ErrNotFound)
	}
	g, err := w.groupOf(ch.Group)
	if err != nil {
		return nil, err
	}
	if !g.exists {
		return nil, fmt.Errorf("group %s: %w", ch.Group, store.ErrNotFound)
	}
	if _, ok := g.members[ch.Actor]; !ok {
		return nil, fmt.Errorf("group %s: actor %s: %w", ch.Group, ch.Actor, store.ErrNotMember)
	}
	return g, nil
}

func (w *writer) addMembers(b *pebble.Batch, ch *store.GroupChange) (store.Result, error) {
	dk, orig, err := w.dedup(ch.Actor, ch.Device, ch.ClientMsgID)
	if err != nil || orig != nil {
		return dupResult(orig, err, "add members")
	}
	g, err := w.changeable(ch)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: add members: %w", err)
	}
	added := uniqueSorted(ch.Users, func(u string) bool { _, ok := g.members[u]; return ok })
	if len(added) == 0 {
		return store.Result{}, nil
	}
	if n := len(g.members) + len(added); ch.MaxMembers > 0 && n > ch.MaxMembers {
		return store.Result{}, fmt.Errorf("pebble store: add members to %s: %d members (max %d): %w",
			ch.Group, n, ch.MaxMembers, store.ErrGroupTooLarge)
	}
	recipients := make([]string, 0, len(g.members)+len(added))
	recipients = append(append(recipients, g.users()...), added...)
	slices.Sort(recipients)
	head, err := w.convHeadOf(ch.Group)
	if err == nil {
		err = w.loadUserHeads(recipients)
	}
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: add members: %w", err)
	}
	msg := membershipMsg(ch, pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED, added)
	res, err := w.append(b, msg, head, recipients, dk)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: add members: %w", err)
	}
	for _, u := range added {
		m := store.Member{User: u, JoinSeq: msg.Seq, Role: "member"}
		g.members[u] = m
		w.set(b, memberKey(ch.Group, u), encodeMember(m))
	}
	g.sorted = recipients
	return res, nil
}

func (w *writer) removeMembers(b *pebble.Batch, ch *store.GroupChange) (store.Result, error) {
	dk, orig, err := w.dedup(ch.Actor, ch.Device, ch.ClientMsgID)
	if err != nil || orig != nil {
		return dupResult(orig, err, "remove members")
	}
	g, err := w.changeable(ch)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: remove members: %w", err)
	}
	removed := uniqueSorted(ch.Users, func(u string) bool { _, ok := g.members[u]; return !ok })
	if len(removed) == 0 {
		return store.Result{}, nil
	}
	recipients := g.users() // everyone, the removed users included
	head, err := w.convHeadOf(ch.Group)
	if err == nil {
		err = w.loadUserHeads(recipients)
	}
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: remove members: %w", err)
	}
	msg := membershipMsg(ch, pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED, removed)
	res, err := w.append(b, msg, head, recipients, dk)
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: remove members: %w", err)
	}
	for _, u := range removed {
		delete(g.members, u)
		w.del(b, memberKey(ch.Group, u))
	}
	g.sorted = nil
	return res, nil
}

// recipientsOf returns the members of conv who may act in it, checking that
// user is one of them.
func (w *writer) recipientsOf(conv, user string) ([]string, error) {
	if a, c, ok := store.ParseDirect(conv); ok {
		if user != a && user != c {
			return nil, fmt.Errorf("%s: %w", conv, store.ErrNotMember)
		}
		return directMembers(a, c), nil
	}
	g, err := w.groupOf(conv)
	if err != nil {
		return nil, err
	}
	if !g.exists {
		return nil, fmt.Errorf("%s: %w", conv, store.ErrNotFound)
	}
	if _, ok := g.members[user]; !ok {
		return nil, fmt.Errorf("%s: %w", conv, store.ErrNotMember)
	}
	return g.users(), nil
}

// Write API.

// MarkRead advances a read position. See store.Store.
func (s *Store) MarkRead(ctx context.Context, user, device, conv string, seq uint64) (uint64, store.Result, error) {
	err := validConv(conv)
	if err == nil {
		err = validUser(user)
	}
	if err == nil {
		err = validDevice(device)
	}
	if err != nil {
		return 0, store.Result{}, fmt.Errorf("pebble store: mark read: %w", err)
	}
	res, err := s.submit(ctx, &op{kind: opRead, read: &pimv1.ReadSync{Conv: conv, Seq: seq, User: user, Device: device}})
	if err != nil {
		return 0, store.Result{}, err
	}
	pos := res.Message.GetSeq()
	res.Message = nil
	return pos, res, nil
}

// Hide hides a message for one user. See store.Store.
func (s *Store) Hide(ctx context.Context, user, device, conv string, seq uint64) (store.Result, error) {
	err := validConv(conv)
	if err == nil {
		err = validUser(user)
	}
	if err == nil {
		err = validDevice(device)
	}
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: hide: %w", err)
	}
	return s.submit(ctx, &op{kind: opHide, args: opArgs{user: user, device: device, conv: conv, seq: seq}})
}

// MarkDelivered turns acknowledged messages into delivered receipts. See store.Store.
func (s *Store) MarkDelivered(ctx context.Context, user string, userSeq uint64) (store.Result, error) {
	if err := validUser(user); err != nil {
		return store.Result{}, fmt.Errorf("pebble store: mark delivered: %w", err)
	}
	return s.submit(ctx, &op{kind: opDelivered, args: opArgs{user: user, seq: userSeq}})
}

// NotifyReads appends coalesced read receipts. See store.Store.
func (s *Store) NotifyReads(ctx context.Context, conv string, from, to uint64) (store.Result, error) {
	if err := validConv(conv); err != nil {
		return store.Result{}, fmt.Errorf("pebble store: notify reads: %w", err)
	}
	return s.submit(ctx, &op{kind: opNotifyReads, args: opArgs{conv: conv, seq: from, seq2: to}})
}

// SetReadReceipts turns a user's read receipts on or off. See store.Store.
func (s *Store) SetReadReceipts(ctx context.Context, user string, on bool) error {
	if err := validUser(user); err != nil {
		return fmt.Errorf("pebble store: settings: %w", err)
	}
	_, err := s.submit(ctx, &op{kind: opSettings, args: opArgs{user: user, on: on}})
	return err
}

// SetGroupSettings replaces a group's settings. See store.Store.
func (s *Store) SetGroupSettings(ctx context.Context, group string, gs store.GroupSettings) error {
	if err := validConv(group); err != nil {
		return fmt.Errorf("pebble store: group settings: %w", err)
	}
	_, err := s.submit(ctx, &op{kind: opGroupSettings, args: opArgs{conv: group, on: gs.ReceiptsVisible}})
	return err
}

// Send sequences and stores one message. See store.Store.
func (s *Store) Send(ctx context.Context, req store.SendRequest) (store.Result, error) {
	err := validConv(req.Conv)
	if err == nil {
		err = validUser(req.Sender)
	}
	if err == nil {
		err = validDevice(req.Device)
	}
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: send: %w", err)
	}
	// The writer may still read the request after we return on ctx.Done.
	req.Body = slices.Clone(req.Body)
	return s.submit(ctx, &op{kind: opSend, send: req})
}

// SendAsync hands one message to the writer without waiting. See
// store.Store and contract 10: the ops channel keeps the calls' order, and
// the writer fails an op whose predecessor failed other than by a refusal.
func (s *Store) SendAsync(ctx context.Context, req store.SendRequest, after store.Pending) store.Pending {
	o := &op{kind: opSend, done: make(chan struct{})}
	if a, ok := after.(*op); ok {
		o.after = a
	}
	err := validConv(req.Conv)
	if err == nil {
		err = validUser(req.Sender)
	}
	if err == nil {
		err = validDevice(req.Device)
	}
	if err != nil {
		return o.failed(fmt.Errorf("pebble store: send: %w", err))
	}
	// The writer reads the request after we return.
	req.Body = slices.Clone(req.Body)
	o.send = req
	if err := s.enqueue(ctx, o); err != nil {
		return o.failed(err)
	}
	return o
}

// CreateGroup creates a group. See store.Store.
func (s *Store) CreateGroup(ctx context.Context, ch store.GroupChange) (store.Result, error) {
	return s.change(ctx, opCreate, ch)
}

// AddMembers adds users to a group. See store.Store.
func (s *Store) AddMembers(ctx context.Context, ch store.GroupChange) (store.Result, error) {
	return s.change(ctx, opAdd, ch)
}

// RemoveMembers removes users from a group. See store.Store.
func (s *Store) RemoveMembers(ctx context.Context, ch store.GroupChange) (store.Result, error) {
	return s.change(ctx, opRemove, ch)
}

func (s *Store) change(ctx context.Context, k opKind, ch store.GroupChange) (store.Result, error) {
	err := validConv(ch.Group)
	if err == nil && k == opCreate && !store.IsGroup(ch.Group) {
		err = fmt.Errorf("%w: %s is not a group id", errInvalid, ch.Group)
	}
	if err == nil {
		err = validUser(ch.Actor)
	}
	if err == nil {
		err = validDevice(ch.Device)
	}
	for _, u := range ch.Users {
		if err != nil {
			break
		}
		err = validUser(u)
	}
	if err != nil {
		return store.Result{}, fmt.Errorf("pebble store: %s: %w", k, err)
	}
	ch.Users = slices.Clone(ch.Users) // the writer reads it after we return on ctx.Done
	return s.submit(ctx, &op{kind: k, ch: ch})
}
