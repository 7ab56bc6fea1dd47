// Reads and cursors.
//
// Invariants:
//   - Reads never see the writer's overlay, nor a batch whose commit (fsync,
//     in Sync mode) has not returned: they read the published view, a Pebble
//     snapshot the writer takes after each commit returns (Pebble itself
//     makes a batch visible before its WAL fsync). So nothing a reader sees
//     can be lost in a machine crash and its seqs reused.
//   - Every read holds Store.mu shared and a reference on its view, so
//     neither Pebble nor the snapshot is closed under it. One read uses one
//     view: a Timeline page and its head, or a group's meta and members,
//     are consistent.
//   - Ack is a read-modify-write of one cursor under the lock of its stripe,
//     so concurrent acks of a device never move its cursor backwards; the new
//     value is clamped to the head in the published view. Cursors are read
//     and written on the DB itself (read-your-writes), without fsync: losing
//     an ack only causes a redelivery.
package pebblestore

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"slices"

	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// begin checks ctx, takes the read lock and a reference on the current
// view; the caller must call s.end(v).
func (s *Store) begin(ctx context.Context) (*view, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := s.rlock(); err != nil {
		return nil, err
	}
	return s.acquire(), nil
}

func (s *Store) end(v *view) {
	s.release(v)
	s.mu.RUnlock()
}

// groupExists reports whether group conversation conv exists.
func groupExists(r pebble.Reader, conv string) (bool, error) {
	v, err := get(r, groupKey(conv))
	return v != nil, err
}

// Members lists conv's current members, ordered by user.
func (s *Store) Members(ctx context.Context, conv string) ([]store.Member, error) {
	if err := validConv(conv); err != nil {
		return nil, fmt.Errorf("pebble store: members: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer s.end(v)
	if a, b, ok := store.ParseDirect(conv); ok {
		var ms []store.Member
		for _, u := range directMembers(a, b) {
			ms = append(ms, store.Member{User: u, Role: "member"})
		}
		return ms, nil
	}
	ms, err := members(v.snap, conv)
	if err != nil {
		return nil, fmt.Errorf("pebble store: members of %s: %w", conv, err)
	}
	return ms, nil
}

func members(r pebble.Reader, conv string) ([]store.Member, error) {
	ok, err := groupExists(r, conv)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, store.ErrNotFound
	}
	p := memberPrefix(conv)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	ms := []store.Member{}
	for ok := it.First(); ok; ok = it.Next() {
		m, err := decodeMember(string(it.Key()[len(p):]), it.Value())
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, it.Error()
}

// Membership reports whether user is a member of conv now. ErrNotFound for
// a group that does not exist.
func (s *Store) Membership(ctx context.Context, conv, user string) (store.Member, bool, error) {
	if err := validConv(conv); err != nil {
		return store.Member{}, false, fmt.Errorf("pebble store: membership: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return store.Member{}, false, err
	}
	defer s.end(v)
	if a, b, ok := store.ParseDirect(conv); ok {
		if user == a || user == b {
			return store.Member{User: user, Role: "member"}, true, nil
		}
		return store.Member{}, false, nil
	}
	m, ok, err := membership(v.snap, conv, user)
	if err != nil {
		return store.Member{}, false, fmt.Errorf("pebble store: membership in %s: %w", conv, err)
	}
	return m, ok, nil
}

func membership(r pebble.Reader, conv, user string) (store.Member, bool, error) {
	if validUser(user) == nil { // other ids are no member of anything
		raw, err := get(r, memberKey(conv, user))
		if err != nil {
			return store.Member{}, false, err
		}
		if raw != nil {
			m, err := decodeMember(user, raw)
			return m, err == nil, err
		}
	}
	ok, err := groupExists(r, conv)
	if err == nil && !ok {
		err = store.ErrNotFound
	}
	return store.Member{}, false, err
}

// Timeline returns up to limit events of user after user seq after, each with
// its message, and the user's head.
func (s *Store) Timeline(ctx context.Context, user string, after uint64, limit int) ([]*pimv1.Event, uint64, error) {
	if err := validUser(user); err != nil {
		return nil, 0, fmt.Errorf("pebble store: timeline: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return nil, 0, err
	}
	defer s.end(v)
	evs, head, err := timeline(v.snap, user, after, limit)
	if err != nil {
		return nil, 0, fmt.Errorf("pebble store: timeline of %s: %w", user, err)
	}
	return evs, head, nil
}

func timeline(r pebble.Reader, user string, after uint64, limit int) ([]*pimv1.Event, uint64, error) {
	p := userPrefix(user)
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return nil, 0, err
	}
	defer it.Close()
	var head uint64
	if it.Last() {
		if head, err = seqSuffix(it.Key(), len(p)); err != nil {
			return nil, 0, err
		}
	}
	if err := it.Error(); err != nil {
		return nil, 0, err
	}
	if limit <= 0 || after >= head {
		return []*pimv1.Event{}, head, nil
	}
	n := min(uint64(limit), head-after)
	evs := make([]*pimv1.Event, 0, n)
	refs := make([]ref, 0, n)
	for ok := it.SeekGE(userKey(user, after+1)); ok && len(evs) < limit; ok = it.Next() {
		us, err := seqSuffix(it.Key(), len(p))
		if err != nil {
			return nil, 0, err
		}
		t, err := decodeTimelineRef(it.Value())
		if err != nil {
			return nil, 0, err
		}
		ev := &pimv1.Event{UserSeq: us}
		if t.ev != nil {
			ev.Kind = t.ev.Kind
		}
		evs = append(evs, ev)
		refs = append(refs, t.ref)
	}
	if err := it.Error(); err != nil {
		return nil, 0, err
	}
	for i, rf := range refs {
		if evs[i].Kind != nil {
			continue
		}
		m, err := message(r, rf)
		if err != nil {
			return nil, 0, err
		}
		evs[i].Kind = &pimv1.Event_Message{Message: m}
	}
	return evs, head, nil
}

// message reads one stored message.
func message(r pebble.Reader, rf ref) (*pimv1.Message, error) {
	raw, err := get(r, msgKey(rf.conv, rf.seq))
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("missing message %s/%d", rf.conv, rf.seq)
	}
	m := new(pimv1.Message)
	if err := proto.Unmarshal(raw, m); err != nil {
		return nil, fmt.Errorf("message %s/%d: %w", rf.conv, rf.seq, err)
	}
	return m, nil
}

// Head returns the user's highest user seq.
func (s *Store) Head(ctx context.Context, user string) (uint64, error) {
	if err := validUser(user); err != nil {
		return 0, fmt.Errorf("pebble store: head: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer s.end(v)
	h, err := lastSeq(v.snap, userPrefix(user))
	if err != nil {
		return 0, fmt.Errorf("pebble store: head of %s: %w", user, err)
	}
	return h, nil
}

// History returns up to limit of the newest messages of conv with
// from <= seq < before (before 0: no bound), ascending, and whether older
// ones (seq >= from) exist. ErrNotFound for a group that does not exist.
func (s *Store) History(ctx context.Context, conv string, from, before uint64, limit int) ([]*pimv1.Message, bool, error) {
	if err := validConv(conv); err != nil {
		return nil, false, fmt.Errorf("pebble store: history: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return nil, false, err
	}
	defer s.end(v)
	msgs, more, err := history(v.snap, conv, from, before, limit)
	if err != nil {
		return nil, false, fmt.Errorf("pebble store: history of %s: %w", conv, err)
	}
	return msgs, more, nil
}

func history(r pebble.Reader, conv string, from, before uint64, limit int) ([]*pimv1.Message, bool, error) {
	if store.IsGroup(conv) {
		ok, err := groupExists(r, conv)
		if err != nil {
			return nil, false, err
		}
		if !ok {
			return nil, false, store.ErrNotFound
		}
	}
	from = max(from, 1)
	msgs := []*pimv1.Message{}
	if before != 0 && before <= from {
		return msgs, false, nil
	}
	hi := prefixEnd(msgPrefix(conv))
	if before != 0 {
		hi = msgKey(conv, before)
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: msgKey(conv, from), UpperBound: hi})
	if err != nil {
		return nil, false, err
	}
	defer it.Close()
	ok := it.Last()
	for ; ok && len(msgs) < limit; ok = it.Prev() {
		m := new(pimv1.Message)
		if err := proto.Unmarshal(it.Value(), m); err != nil {
			return nil, false, fmt.Errorf("message %q: %w", it.Key(), err)
		}
		msgs = append(msgs, m)
	}
	if err := it.Error(); err != nil {
		return nil, false, err
	}
	slices.Reverse(msgs)
	return msgs, ok, nil
}

// Ack moves (user, device)'s cursor to max(cursor, min(userSeq, head)).
func (s *Store) Ack(ctx context.Context, user, device string, userSeq uint64) (uint64, error) {
	if err := validUser(user); err != nil {
		return 0, fmt.Errorf("pebble store: ack: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer s.end(v)
	ck := cursorKey(user, device)
	mu := &s.ackLocks[maphash.Bytes(s.ackSeed, ck)%ackStripes]
	mu.Lock()
	defer mu.Unlock()
	cur, err := cursor(s.db, ck)
	if err != nil {
		return 0, fmt.Errorf("pebble store: ack: %w", err)
	}
	if userSeq <= cur {
		return cur, nil
	}
	// Clamp to the head in the view. An ack of an event the view holds needs
	// no head: that event's key is found by a point read (for a recent event,
	// in the memtable) instead of an iterator positioned across every level.
	next := userSeq
	ev, err := get(v.snap, userKey(user, userSeq))
	if err != nil {
		return 0, fmt.Errorf("pebble store: ack: %w", err)
	}
	if ev == nil {
		head, err := lastSeq(v.snap, userPrefix(user))
		if err != nil {
			return 0, fmt.Errorf("pebble store: ack: %w", err)
		}
		next = min(userSeq, head)
	}
	if next <= cur {
		return cur, nil
	}
	if err := s.db.Set(ck, appendBE8(nil, next), pebble.NoSync); err != nil {
		return 0, fmt.Errorf("pebble store: ack: %w", err)
	}
	return next, nil
}

// Cursor returns (user, device)'s cursor (0 if none).
func (s *Store) Cursor(ctx context.Context, user, device string) (uint64, error) {
	if err := validUser(user); err != nil {
		return 0, fmt.Errorf("pebble store: cursor: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.rlock(); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	c, err := cursor(s.db, cursorKey(user, device))
	if err != nil {
		return 0, fmt.Errorf("pebble store: cursor: %w", err)
	}
	return c, nil
}

func cursor(r pebble.Reader, ck []byte) (uint64, error) {
	v, err := get(r, ck)
	if err != nil || v == nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("corrupt cursor %q: %x", ck, v)
	}
	return binary.BigEndian.Uint64(v), nil
}

// ReadPosition returns user's read position in conv.
func (s *Store) ReadPosition(ctx context.Context, user, conv string) (uint64, error) {
	if err := validUser(user); err != nil {
		return 0, fmt.Errorf("pebble store: read position: %w", err)
	}
	if err := validConv(conv); err != nil {
		return 0, fmt.Errorf("pebble store: read position: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return 0, err
	}
	defer s.end(v)
	return readPosition(v.snap, user, conv)
}

func readPosition(r pebble.Reader, user, conv string) (uint64, error) {
	raw, err := get(r, readKey(user, conv))
	if err != nil || raw == nil {
		return 0, err
	}
	pos, _, err := decodeReadPos(raw)
	return pos, err
}
