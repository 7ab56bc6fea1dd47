// Reads of the read state: conversation lists, receipts, hidden messages and
// settings. Like every read (read.go), they use one published view.
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

// Conversations returns a page of user's conversation list. See store.Store.
func (s *Store) Conversations(ctx context.Context, user string, q store.ConvQuery) ([]*pimv1.Conversation, bool, uint64, error) {
	if err := validUser(user); err != nil {
		return nil, false, 0, fmt.Errorf("pebble store: conversations: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return nil, false, 0, err
	}
	defer s.end(v)
	convs, more, version, err := conversations(v.snap, user, q)
	if err != nil {
		return nil, false, 0, fmt.Errorf("pebble store: conversations of %s: %w", user, err)
	}
	return convs, more, version, nil
}

func conversations(r pebble.Reader, user string, q store.ConvQuery) ([]*pimv1.Conversation, bool, uint64, error) {
	version, err := lastSeq(r, userPrefix(user))
	if err != nil || q.Limit <= 0 {
		return []*pimv1.Conversation{}, false, version, err
	}
	names, more, err := convNames(r, user, q)
	if err != nil {
		return nil, false, 0, err
	}
	convs := make([]*pimv1.Conversation, 0, len(names))
	for _, conv := range names {
		c, err := convEntryAt(r, user, conv)
		if err != nil {
			return nil, false, 0, err
		}
		convs = append(convs, c)
	}
	return convs, more, version, nil
}

func receiptsOffAt(r pebble.Reader, user string) (bool, error) {
	raw, err := get(r, settingsKey(user))
	return len(raw) > 0 && raw[0]&settingNoReadReceipts != 0, err
}

// convNames walks the index: by version (ascending, after
// q.SinceVersion; "both" and "version" keys) or by activity (descending,
// below q.BeforeActivity; "both" and "activity" keys). Each entry has one
// key of each kind, so each is named once.
func convNames(r pebble.Reader, user string, q store.ConvQuery) ([]string, bool, error) {
	p := convIndexPrefix(user)
	opts := &pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)}
	skip := byte(roleVersion)
	if q.SinceVersion > 0 {
		opts.LowerBound, skip = convIndexKey(user, q.SinceVersion+1), roleActivity
	} else if q.BeforeActivity > 0 {
		opts.UpperBound = convIndexKey(user, q.BeforeActivity)
	}
	it, err := r.NewIter(opts)
	if err != nil {
		return nil, false, err
	}
	first, next := it.First, it.Next
	if q.SinceVersion == 0 {
		first, next = it.Last, it.Prev
	}
	var names []string
	more := false
	for ok := first(); ok; ok = next() {
		v := it.Value()
		if len(v) < 2 {
			it.Close()
			return nil, false, fmt.Errorf("corrupt index entry %q: %x", it.Key(), v)
		}
		if v[0] == skip {
			continue
		}
		if len(names) == q.Limit {
			more = true
			break
		}
		names = append(names, string(v[1:]))
	}
	return names, more, it.Close()
}

// convEntryAt reads one entry with its last message.
func convEntryAt(r pebble.Reader, user, conv string) (*pimv1.Conversation, error) {
	raw, err := get(r, convKey(user, conv))
	if err != nil {
		return nil, err
	}
	if raw == nil {
		return nil, fmt.Errorf("index points at missing entry %s/%s", user, conv)
	}
	c := new(pimv1.Conversation)
	if err := proto.Unmarshal(raw, c); err != nil {
		return nil, fmt.Errorf("conversation entry %s/%s: %w", user, conv, err)
	}
	if c.LastSeq > 0 {
		if c.LastMessage, err = message(r, ref{conv: conv, seq: c.LastSeq}); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Receipts counts and pages the readers of conv/seq. See store.Store.
func (s *Store) Receipts(ctx context.Context, conv string, seq uint64, afterUser string, limit int) (int, []string, bool, error) {
	if err := validConv(conv); err != nil {
		return 0, nil, false, fmt.Errorf("pebble store: receipts: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return 0, nil, false, err
	}
	defer s.end(v)
	raw, err := get(v.snap, msgKey(conv, seq))
	if err == nil && raw == nil {
		err = fmt.Errorf("message %s/%d: %w", conv, seq, store.ErrNotFound)
	}
	if err != nil {
		return 0, nil, false, fmt.Errorf("pebble store: receipts: %w", err)
	}
	m := new(pimv1.Message)
	if err := proto.Unmarshal(raw, m); err != nil {
		return 0, nil, false, fmt.Errorf("pebble store: receipts: message %s/%d: %w", conv, seq, err)
	}
	rs, err := receiptReaders(v.snap, conv, seq)
	if err != nil {
		return 0, nil, false, fmt.Errorf("pebble store: receipts: %w", err)
	}
	users := make([]string, 0, len(rs))
	for _, r := range rs {
		if r.readerOf(seq, m.Sender) {
			users = append(users, r.user)
		}
	}
	slices.Sort(users)
	count := len(users)
	i, _ := slices.BinarySearch(users, afterUser)
	if i < len(users) && users[i] == afterUser {
		i++
	}
	users = users[i:]
	if limit <= 0 {
		return count, []string{}, len(users) > 0, nil
	}
	more := len(users) > limit
	if more {
		users = users[:limit]
	}
	return count, users, more, nil
}

// HiddenIn returns the seqs user hid in conv within [from, before). See store.Store.
func (s *Store) HiddenIn(ctx context.Context, user, conv string, from, before uint64) ([]uint64, error) {
	if err := validUser(user); err != nil {
		return nil, fmt.Errorf("pebble store: hidden: %w", err)
	}
	if err := validConv(conv); err != nil {
		return nil, fmt.Errorf("pebble store: hidden: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer s.end(v)
	p := hiddenPrefix(user, conv)
	opts := &pebble.IterOptions{LowerBound: appendBE8(p, from), UpperBound: prefixEnd(p)}
	if before > 0 {
		opts.UpperBound = appendBE8(p, before)
	}
	it, err := v.snap.NewIter(opts)
	if err != nil {
		return nil, fmt.Errorf("pebble store: hidden: %w", err)
	}
	out := []uint64{}
	for ok := it.First(); ok; ok = it.Next() {
		seq, err := seqSuffix(it.Key(), len(p))
		if err != nil {
			it.Close()
			return nil, fmt.Errorf("pebble store: hidden: %w", err)
		}
		out = append(out, seq)
	}
	if err := it.Close(); err != nil {
		return nil, fmt.Errorf("pebble store: hidden: %w", err)
	}
	return out, nil
}

// ReadReceipts reports whether user's read receipts are on. See store.Store.
func (s *Store) ReadReceipts(ctx context.Context, user string) (bool, error) {
	if err := validUser(user); err != nil {
		return false, fmt.Errorf("pebble store: settings: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return false, err
	}
	defer s.end(v)
	off, err := receiptsOffAt(v.snap, user)
	if err != nil {
		return false, fmt.Errorf("pebble store: settings: %w", err)
	}
	return !off, nil
}

// GroupSettings returns a group's settings. See store.Store.
func (s *Store) GroupSettings(ctx context.Context, group string) (store.GroupSettings, error) {
	if err := validConv(group); err != nil {
		return store.GroupSettings{}, fmt.Errorf("pebble store: group settings: %w", err)
	}
	v, err := s.begin(ctx)
	if err != nil {
		return store.GroupSettings{}, err
	}
	defer s.end(v)
	ok, err := groupExists(v.snap, group)
	if err == nil && (!ok || !store.IsGroup(group)) {
		err = fmt.Errorf("group %s: %w", group, store.ErrNotFound)
	}
	var raw []byte
	if err == nil {
		raw, err = get(v.snap, groupSettingsKey(group))
	}
	if err != nil {
		return store.GroupSettings{}, fmt.Errorf("pebble store: group settings: %w", err)
	}
	return store.GroupSettings{ReceiptsVisible: len(raw) > 0 && raw[0]&groupReceiptsVisible != 0}, nil
}
