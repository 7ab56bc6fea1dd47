// Package pebblestore implements store.Store on Pebble
// (github.com/cockroachdb/pebble/v2).
//
// Key layout. Every id that appears before a 0x00 separator is a user id
// (store.ValidID), a device id (checked to be 0x00-free) or a conversation id
// (store.ValidateConv), so none contains 0x00 and every prefix below ending in
// 0x00 is unique to its owner. BE8 is a uint64 as 8 big-endian bytes, so keys
// sort by seq.
//
//	!version                                   -> "1"
//	!epoch                                     -> 32 hex chars, random, written on first open (ResetEpoch replaces it)
//	m/<conv>\x00<seq BE8>                      -> marshaled pimv1.Message (the only copy)
//	g/<conv>                                   -> group meta: creating user (present iff the group exists)
//	p/<conv>\x00<user>                         -> group member: joinSeq BE8 | role
//	u/<user>\x00<user seq BE8>                 -> timeline ref: seq BE8 | conv
//	d/<sender>\x00<device>\x00<client_msg_id>  -> dedup ref: seq BE8 | conv
//	c/<user>\x00<device>                       -> device cursor BE8
//	r/<user>\x00<conv>                         -> read position BE8
//
// A u/ value is a message ref (seq BE8 | conv), or a read-sync event: the
// ref of the read position (seq BE8 | conv) then 0x00 'r' <reader> 0x00
// <device>; conversation ids contain no 0x00, so the two cannot be confused.
//
// Invariants:
//   - There are no head counters on disk. A conversation's head is the seq of
//     its last m/ key and a user's head is the user seq of their last u/ key,
//     so heads cannot disagree with the data.
//   - m/<conv> seqs are exactly 1..head and u/<user> seqs exactly 1..head:
//     only the writer goroutine (writer.go) assigns seqs, from counters it
//     loads from the keys above and advances only in the overlay of the one
//     batch it is building; the batch commits whole or not at all, and a
//     failed commit drops the overlay.
//   - A message's m/ key, its d/ key, its u/ refs (one per member at its seq)
//     and the membership changes it records are written in one Pebble batch
//     (contract rule 1). Every u/ and d/ ref points at an existing m/ key;
//     messages are never deleted or rewritten.
//   - p/<conv> keys exist only for a conversation whose g/<conv> key exists;
//     direct conversations ("d:a:b") have neither: their members are implied.
//   - A c/ cursor never exceeds its user's head and never decreases (read.go).
//   - Reads see only batches whose commit returned (durable, in Sync mode):
//     they read the view, a Pebble snapshot the writer publishes after each
//     commit (read.go).
package pebblestore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Options configures a Store.
type Options struct {
	// Sync makes writes durable: a write returns only after its batch was
	// fsynced. When false, the WAL is written but not fsynced, so a machine
	// crash (not a process crash) may lose the last writes.
	Sync bool
	// Logger receives Pebble's messages (informational ones at Debug level).
	// Nil means slog.Default().
	Logger *slog.Logger
	// OnCommit, if set, is called by the writer goroutine with the
	// deliveries of each write, right after the batch holding it is durable
	// and readable, in commit order: so each user's events arrive in user-seq
	// order. It must not block (hand them to a bus.Bus) and must not call
	// the store's write methods.
	OnCommit func([]store.Delivery)
	// NoConvList stops maintaining conversation lists (Conversations then
	// returns nothing). Only for benchmarks that measure what maintaining
	// them costs; read positions, receipts and unread scans still work.
	NoConvList bool
}

const (
	formatVersion = "1"
	// maxBatch is the most ops the writer commits in one Pebble batch.
	maxBatch = 512
	// queueLen is the capacity of the op queue in front of the writer.
	queueLen = 4096
	// ackStripes is the number of locks serializing acks per (user, device).
	ackStripes = 64
	// Pebble's block cache and memtable sizes.
	blockCacheSize = 64 << 20
	memTableSize   = 32 << 20
)

var (
	keyVersion = []byte("!version")
	keyEpoch   = []byte("!epoch")

	errInvalid = errors.New("invalid argument")
)

// Store is a store.Store on Pebble. Create it with Open.
type Store struct {
	db    *pebble.DB
	wopts *pebble.WriteOptions
	log   *slog.Logger
	epoch string
	// onCommit is Options.OnCommit (nil: none); only the writer calls it.
	onCommit func([]store.Delivery)
	// noConvList is Options.NoConvList.
	noConvList bool

	// mu guards db against Close: readers hold it shared while they use db,
	// Close takes it exclusively to set closed.
	mu     sync.RWMutex
	closed bool

	// view is what reads see: a snapshot published by the writer after each
	// commit. viewMu guards the pointer; references keep it open.
	viewMu sync.RWMutex
	view   *view

	// ops feeds the writer goroutine (writer.go). quit is closed by Close;
	// writerDone is closed by the writer when it has returned.
	ops        chan *op
	quit       chan struct{}
	writerDone chan struct{}

	ackSeed  maphash.Seed
	ackLocks [ackStripes]sync.Mutex

	// testHookCommit, when set (by tests, before any write), runs in the
	// writer before each commit of a non-empty batch of n ops; an error it
	// returns is taken as the commit's.
	testHookCommit func(n int) error
	// testHookCommitted, when set, runs after a successful commit, before
	// the batch is published.
	testHookCommitted func()
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "pebble")
	cache := pebble.NewCache(blockCacheSize)
	defer cache.Unref() // Pebble holds its own reference while open
	db, err := pebble.Open(dir, pebbleOptions(log, cache))
	if err != nil {
		return nil, fmt.Errorf("pebble store: open %s: %w", dir, err)
	}
	epoch, err := initMeta(db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("pebble store: open %s: %w", dir, err)
	}
	s := &Store{
		db:         db,
		wopts:      pebble.NoSync,
		log:        log,
		epoch:      epoch,
		onCommit:   opts.OnCommit,
		noConvList: opts.NoConvList,
		ops:        make(chan *op, queueLen),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		ackSeed:    maphash.MakeSeed(),
	}
	if opts.Sync {
		s.wopts = pebble.Sync
	}
	s.publish()
	w := newWriter(s)
	go w.run()
	return s, nil
}

// pebbleOptions are the options every opening of a data set uses (Open and
// the offline tools in backup.go), so none of them changes its format.
func pebbleOptions(log *slog.Logger, cache *pebble.Cache) *pebble.Options {
	popts := &pebble.Options{
		Logger: slogLogger{log},
		// Pinned: raising it is a one-way migration of the data directory, to
		// be done on purpose.
		FormatMajorVersion: pebble.FormatValueSeparation,
		Cache:              cache,
		MemTableSize:       memTableSize,
	}
	// Every Send looks its dedup key up, and almost always misses: bloom
	// filters answer most misses without reading data blocks.
	for i := range popts.Levels {
		popts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return popts
}

// initMeta checks the format version and returns the epoch, creating both
// (durably) on a new data set.
func initMeta(db *pebble.DB) (string, error) {
	v, err := get(db, keyVersion)
	if err != nil {
		return "", err
	}
	if v != nil && string(v) != formatVersion {
		return "", fmt.Errorf("unsupported data format %q (want %q)", v, formatVersion)
	}
	e, err := get(db, keyEpoch)
	if err != nil {
		return "", err
	}
	if e != nil {
		if v == nil {
			return "", errors.New("epoch without format version")
		}
		return string(e), nil
	}
	epoch, err := newEpoch()
	if err != nil {
		return "", err
	}
	return epoch, writeMeta(db, epoch)
}

// newEpoch returns a fresh random epoch: 32 hex chars.
func newEpoch() (string, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(raw[:]), nil
}

// writeMeta writes the format version and epoch in one durable batch.
func writeMeta(db *pebble.DB, epoch string) error {
	b := db.NewBatch()
	defer b.Close()
	if err := b.Set(keyVersion, []byte(formatVersion), nil); err != nil {
		return err
	}
	if err := b.Set(keyEpoch, []byte(epoch), nil); err != nil {
		return err
	}
	return b.Commit(pebble.Sync)
}

// Epoch returns the data set's epoch, created on first open.
func (s *Store) Epoch() string { return s.epoch }

// Close stops the writer (pending writes fail with store.ErrClosed; a batch
// being committed completes) and closes Pebble.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return store.ErrClosed
	}
	s.closed = true
	close(s.quit)
	s.mu.Unlock()
	<-s.writerDone
	// No reader holds a view now (they hold mu while they do), and the
	// writer is gone: this drops the last reference on the view.
	s.viewMu.Lock()
	v := s.view
	s.view = nil
	s.viewMu.Unlock()
	s.release(v)
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("pebble store: close: %w", err)
	}
	return nil
}

// rlock takes the read lock for a read; it fails once the store is closed.
func (s *Store) rlock() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return store.ErrClosed
	}
	return nil
}

// view is a published, reference-counted snapshot of the committed data.
type view struct {
	snap *pebble.Snapshot
	refs atomic.Int64
}

// publish makes everything committed so far visible to reads. Only the
// writer (and Open, before it starts) calls it.
func (s *Store) publish() {
	v := &view{snap: s.db.NewSnapshot()}
	v.refs.Store(1) // the Store's own reference, until the next publish
	s.viewMu.Lock()
	old := s.view
	s.view = v
	s.viewMu.Unlock()
	if old != nil {
		s.release(old)
	}
}

// acquire returns the current view with a reference the caller releases.
// The caller holds mu shared (so the store is open and has a view).
func (s *Store) acquire() *view {
	s.viewMu.RLock()
	v := s.view
	v.refs.Add(1)
	s.viewMu.RUnlock()
	return v
}

func (s *Store) release(v *view) {
	if v.refs.Add(-1) == 0 {
		if err := v.snap.Close(); err != nil {
			s.log.Error("closing snapshot", "err", err)
		}
	}
}

// get returns a copy of key's value, or nil if it is absent.
func get(r pebble.Reader, key []byte) ([]byte, error) {
	v, c, err := r.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := append([]byte(nil), v...)
	if out == nil {
		out = []byte{}
	}
	return out, c.Close()
}

// Keys.

func appendBE8(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// msgPrefix is m/<conv>\x00.
func msgPrefix(conv string) []byte {
	b := make([]byte, 0, len(conv)+11)
	return append(append(append(b, "m/"...), conv...), 0)
}

func msgKey(conv string, seq uint64) []byte { return appendBE8(msgPrefix(conv), seq) }

func groupKey(conv string) []byte { return append([]byte("g/"), conv...) }

// memberPrefix is p/<conv>\x00.
func memberPrefix(conv string) []byte {
	b := make([]byte, 0, len(conv)+3+64)
	return append(append(append(b, "p/"...), conv...), 0)
}

func memberKey(conv, user string) []byte { return append(memberPrefix(conv), user...) }

// userPrefix is u/<user>\x00.
func userPrefix(user string) []byte {
	b := make([]byte, 0, len(user)+11)
	return append(append(append(b, "u/"...), user...), 0)
}

func userKey(user string, useq uint64) []byte { return appendBE8(userPrefix(user), useq) }

func dedupKey(sender, device, clientMsgID string) []byte {
	b := make([]byte, 0, 4+len(sender)+len(device)+len(clientMsgID))
	b = append(append(append(b, "d/"...), sender...), 0)
	b = append(append(b, device...), 0)
	return append(b, clientMsgID...)
}

func cursorKey(user, device string) []byte {
	b := make([]byte, 0, 3+len(user)+len(device))
	return append(append(append(append(b, "c/"...), user...), 0), device...)
}

// prefixEnd returns the smallest key greater than every key with prefix p,
// where p ends in 0x00 (so the end is p with its last byte set to 0x01).
func prefixEnd(p []byte) []byte {
	e := append([]byte(nil), p...)
	e[len(e)-1]++
	return e
}

// ref is a (conversation, seq) pair: the value of u/ and d/ keys.
type ref struct {
	conv string
	seq  uint64
}

func encodeRef(r ref) []byte {
	return append(appendBE8(make([]byte, 0, 8+len(r.conv)), r.seq), r.conv...)
}

func decodeRef(v []byte) (ref, error) {
	if len(v) < 9 || bytes.IndexByte(v[8:], 0) >= 0 {
		return ref{}, fmt.Errorf("corrupt ref %x", v)
	}
	return ref{conv: string(v[8:]), seq: binary.BigEndian.Uint64(v)}, nil
}

// Timeline values (u/ keys). A message event is its ref, followed by
// "\x00o" in the sender's own timeline (so MarkDelivered tells a peer's
// message from one's own without reading it); a read-sync event is the ref
// of its (conv, seq) followed by "\x00r" user "\x00" device; any other event
// is the ref of its (conv, seq) followed by "\x00e" and the event's kind as
// a marshalled pimv1.Event.

// encodeMsgRef is the u/ value of a message event.
func encodeMsgRef(r ref, own bool) []byte {
	v := encodeRef(r)
	if own {
		v = append(v, 0, 'o')
	}
	return v
}

// encodeReadRef is the u/ value of a read-sync event.
func encodeReadRef(rs *pimv1.ReadSync) []byte {
	v := encodeRef(ref{conv: rs.Conv, seq: rs.Seq})
	v = append(append(append(v, 0, 'r'), rs.User...), 0)
	return append(v, rs.Device...)
}

// encodeEventRef is the u/ value of another event about conv/seq.
func encodeEventRef(r ref, ev *pimv1.Event) ([]byte, error) {
	raw, err := proto.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return append(append(encodeRef(r), 0, 'e'), raw...), nil
}

// timelineRef is a decoded u/ value: a message (own set in its sender's
// timeline) or another event (ev set).
type timelineRef struct {
	ref
	own bool
	ev  *pimv1.Event
}

// decodeTimelineRef decodes a u/ value.
func decodeTimelineRef(v []byte) (timelineRef, error) {
	if len(v) < 9 {
		return timelineRef{}, fmt.Errorf("corrupt timeline ref %x", v)
	}
	i := bytes.IndexByte(v[8:], 0)
	if i < 0 {
		r, err := decodeRef(v)
		return timelineRef{ref: r}, err
	}
	rf, err := decodeRef(v[:8+i])
	rest := v[8+i+1:]
	if err != nil || len(rest) < 1 {
		return timelineRef{}, fmt.Errorf("corrupt timeline ref %x", v)
	}
	t := timelineRef{ref: rf}
	switch rest[0] {
	case 'o':
		t.own = true
	case 'r':
		user, device, ok := bytes.Cut(rest[1:], []byte{0})
		if !ok {
			return timelineRef{}, fmt.Errorf("corrupt read ref %x", v)
		}
		t.ev = &pimv1.Event{Kind: &pimv1.Event_Read{Read: &pimv1.ReadSync{
			Conv: rf.conv, Seq: rf.seq, User: string(user), Device: string(device)}}}
	case 'e':
		t.ev = new(pimv1.Event)
		if err := proto.Unmarshal(rest[1:], t.ev); err != nil {
			return timelineRef{}, fmt.Errorf("corrupt event ref %x: %w", v, err)
		}
	default:
		return timelineRef{}, fmt.Errorf("corrupt timeline ref %x", v)
	}
	return t, nil
}

func readKey(user, conv string) []byte {
	k := append(append([]byte("r/"), user...), 0)
	return append(k, conv...)
}

func encodeMember(m store.Member) []byte { return append(appendBE8(nil, m.JoinSeq), m.Role...) }

func decodeMember(user string, v []byte) (store.Member, error) {
	if len(v) < 8 {
		return store.Member{}, fmt.Errorf("corrupt member %q: %x", user, v)
	}
	return store.Member{User: user, JoinSeq: binary.BigEndian.Uint64(v), Role: string(v[8:])}, nil
}

// seqSuffix decodes the BE8 after prefix p in key k.
func seqSuffix(k []byte, p int) (uint64, error) {
	if len(k) != p+8 {
		return 0, fmt.Errorf("corrupt key %q", k)
	}
	return binary.BigEndian.Uint64(k[p:]), nil
}

// lastSeq returns the BE8 suffix of the last key under prefix p (which ends
// in 0x00), or 0 if there is none: the head of a conversation or a user.
func lastSeq(r pebble.Reader, p []byte) (uint64, error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		return 0, err
	}
	var seq uint64
	if it.Last() {
		seq, err = seqSuffix(it.Key(), len(p))
	}
	return seq, errors.Join(err, it.Close())
}

// Validation. Ids end up in keys: user and conversation ids are checked
// against the store's id rules, device ids only for the 0x00 separator.

func validUser(u string) error {
	if !store.ValidID(u) {
		return fmt.Errorf("%w: user id %q", errInvalid, u)
	}
	return nil
}

func validDevice(d string) error {
	if len(d) > 255 {
		return fmt.Errorf("%w: device id too long", errInvalid)
	}
	for i := 0; i < len(d); i++ {
		if d[i] == 0 {
			return fmt.Errorf("%w: device id %q", errInvalid, d)
		}
	}
	return nil
}

func validConv(c string) error {
	if err := store.ValidateConv(c); err != nil {
		return fmt.Errorf("%w: %v", errInvalid, err)
	}
	return nil
}

// directMembers returns the members of a direct conversation, ordered by user.
func directMembers(a, b string) []string {
	if a == b {
		return []string{a}
	}
	return []string{a, b}
}

// slogLogger routes Pebble's logs to slog. Pebble is chatty at info level,
// so that goes to Debug.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Infof(format string, args ...any) {
	if s.l.Enabled(context.Background(), slog.LevelDebug) {
		s.l.Debug(fmt.Sprintf(format, args...))
	}
}

func (s slogLogger) Errorf(format string, args ...any) {
	s.l.Error(fmt.Sprintf(format, args...))
}

// Fatalf is called by Pebble on unrecoverable errors (corruption, a failed
// WAL sync): it must not return.
func (s slogLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	s.l.Error("fatal: " + msg)
	panic("pebble store: fatal: " + msg)
}
