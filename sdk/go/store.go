// The local store: one bbolt file in Options.DataDir holding everything the
// core persists (the conversation list included) and the timeline the app
// was shown.
//
// Invariants of this file:
//   - commit writes one Ready's core.Persist and the timeline events of its
//     events in ONE bbolt transaction: one fsync per Ready, and the cursor
//     (Meta.Delivered) is never on disk without the events it covers, nor
//     the events without the cursor. Messages go to the timeline bucket
//     (indexed per conversation), the other timeline events (reads,
//     hidden, receipts, unknown kinds) to the events bucket: together they
//     are the whole timeline up to the cursor, gap-free.
//   - A HiddenEvent removes its message from the per-conversation index in
//     the same transaction (Messages stops returning it; the timeline keeps
//     it, followed by the HiddenEvent).
//   - load returns exactly the union of the records committed (core.State);
//     a restarted core built from it resumes where the last commit left it.
//   - The file belongs to one (user, device): opening it for another fails
//     instead of mixing two identities' outboxes and cursors.
//   - A ResyncEvent clears the stored timeline in the same transaction that
//     resets the cursor, before the new epoch's messages are written; the
//     conversation list is dropped with it (Persist.ResetConvs).
//   - Reads (Messages, Timeline, Conversations) use read-only transactions
//     and may run on any goroutine, concurrently with the driver's commits.

package pim

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

// storeFile is the store's file name inside the data dir.
const storeFile = "pim-sdk.db"

// storeLockTimeout bounds the wait for the store's file lock (another
// Client holding it).
var storeLockTimeout = 2 * time.Second

// storeSchema is the version of the layout below.
const storeSchema = 1

var (
	bktMeta       = []byte("meta")       // keys below
	bktOutbox     = []byte("outbox")     // client_msg_id -> JSON core.OutboxEntry
	bktCommands   = []byte("commands")   // u64 id -> JSON core.CommandEntry
	bktHeartbeats = []byte("heartbeats") // network -> JSON core.HeartbeatRecord
	bktTimeline   = []byte("timeline")   // u64 user seq -> proto pimv1.Message
	bktEvents     = []byte("events")     // u64 user seq -> proto pimv1.Event (not a message)
	bktConvs      = []byte("convs")      // conv -> bucket: u64 seq -> u64 user seq
	bktConvList   = []byte("convlist")   // conv -> JSON core.ConvEntry

	keySchema   = []byte("schema")
	keyIdentity = []byte("identity")
	keyCore     = []byte("core")
	keyLBS      = []byte("lbs")
)

// ErrDataDirInUse: another Client (in this or another process) has the
// data dir open.
var ErrDataDirInUse = errors.New("pim: data dir in use by another client")

type store struct {
	db *bolt.DB
}

type identity struct {
	User   string `json:"user"`
	Device string `json:"device"`
}

// lbsCache is the last LBS answer, used when the LBS is unreachable.
type lbsCache struct {
	Servers []string  `json:"servers"`
	Fetched time.Time `json:"fetched"`
	TTL     int64     `json:"ttl_ms"`
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// openStore opens (or creates) the store of (user, device) in dir.
func openStore(dir, user, device string) (*store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pim: create data dir: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, storeFile), 0o600, &bolt.Options{Timeout: storeLockTimeout})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s", ErrDataDirInUse, dir)
		}
		return nil, fmt.Errorf("pim: open store: %w", err)
	}
	s := &store{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktMeta, bktOutbox, bktCommands, bktHeartbeats, bktTimeline, bktEvents, bktConvs, bktConvList} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bktMeta)
		if v := m.Get(keySchema); v != nil && binary.BigEndian.Uint64(v) != storeSchema {
			return fmt.Errorf("store schema %d, this SDK reads %d", binary.BigEndian.Uint64(v), storeSchema)
		}
		want := identity{User: user, Device: device}
		if v := m.Get(keyIdentity); v != nil {
			var got identity
			if err := json.Unmarshal(v, &got); err != nil {
				return fmt.Errorf("identity record: %w", err)
			}
			if got != want {
				return fmt.Errorf("the data dir belongs to user %q device %q, not %q %q", got.User, got.Device, user, device)
			}
			return nil
		}
		b, _ := json.Marshal(want)
		if err := m.Put(keyIdentity, b); err != nil {
			return err
		}
		return m.Put(keySchema, u64(storeSchema))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("pim: open store %s: %w", dir, err)
	}
	return s, nil
}

func (s *store) close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("pim: close store: %w", err)
	}
	return nil
}

// load reads the core's state.
func (s *store) load() (core.State, error) {
	var st core.State
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bktMeta).Get(keyCore); v != nil {
			if err := json.Unmarshal(v, &st.Meta); err != nil {
				return fmt.Errorf("meta: %w", err)
			}
		}
		if err := tx.Bucket(bktOutbox).ForEach(func(k, v []byte) error {
			var e core.OutboxEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("outbox entry %q: %w", k, err)
			}
			st.Outbox = append(st.Outbox, e)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bktCommands).ForEach(func(k, v []byte) error {
			var c core.CommandEntry
			if err := json.Unmarshal(v, &c); err != nil {
				return fmt.Errorf("command %x: %w", k, err)
			}
			st.Commands = append(st.Commands, c)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket(bktHeartbeats).ForEach(func(k, v []byte) error {
			var h core.HeartbeatRecord
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("heartbeat record %q: %w", k, err)
			}
			st.Heartbeats = append(st.Heartbeats, h)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bktConvList).ForEach(func(k, v []byte) error {
			var e core.ConvEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("conversation entry %q: %w", k, err)
			}
			st.Convs = append(st.Convs, e)
			return nil
		})
	})
	if err != nil {
		return core.State{}, fmt.Errorf("pim: load store: %w", err)
	}
	return st, nil
}

// commit writes one Ready's records and the messages among its events in
// one transaction. It does nothing (and syncs nothing) when there is
// nothing to write.
func (s *store) commit(p core.Persist, evs []core.Event) error {
	if p.Empty() && !hasStoredEvents(evs) {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		if err := putPersist(tx, p); err != nil {
			return err
		}
		for _, ev := range evs {
			var err error
			switch e := ev.(type) {
			case core.ResyncEvent:
				err = clearTimeline(tx)
			case core.MessageEvent:
				err = putMessage(tx, e)
			case core.HiddenEvent:
				if err = putEvent(tx, e.UserSeq, timelineEvent(ev)); err == nil {
					err = unindexMessage(tx, e.Conv, e.Seq)
				}
			case core.ReadEvent:
				err = putEvent(tx, e.UserSeq, timelineEvent(ev))
			case core.ReceiptEvent:
				err = putEvent(tx, e.UserSeq, timelineEvent(ev))
			case core.UnknownEvent:
				err = putEvent(tx, e.UserSeq, e.Event)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pim: commit to the local store: %w", err)
	}
	return nil
}

func hasStoredEvents(evs []core.Event) bool {
	for _, ev := range evs {
		switch ev.(type) {
		case core.MessageEvent, core.ResyncEvent, core.ReadEvent, core.HiddenEvent, core.ReceiptEvent, core.UnknownEvent:
			return true
		}
	}
	return false
}

// timelineEvent is the timeline event a core event (other than a message)
// stands for, as stored and returned by Timeline.
func timelineEvent(ev core.Event) *pimv1.Event {
	switch e := ev.(type) {
	case core.ReadEvent:
		return &pimv1.Event{UserSeq: e.UserSeq, Kind: &pimv1.Event_Read{Read: &pimv1.ReadSync{
			Conv: e.Conv, Seq: e.Seq, User: e.User, Device: e.Device}}}
	case core.HiddenEvent:
		return &pimv1.Event{UserSeq: e.UserSeq, Kind: &pimv1.Event_Hidden{Hidden: &pimv1.Hidden{
			Conv: e.Conv, Seq: e.Seq, Device: e.Device}}}
	case core.ReceiptEvent:
		r := &pimv1.Receipt{Conv: e.Conv, Kind: e.Kind, Seq: e.Seq, User: e.User}
		for _, m := range e.Reads {
			r.Messages = append(r.Messages, &pimv1.MessageReads{Seq: m.Seq, ReadCount: m.ReadCount})
		}
		return &pimv1.Event{UserSeq: e.UserSeq, Kind: &pimv1.Event_Receipt{Receipt: r}}
	case core.UnknownEvent:
		return e.Event
	}
	return nil
}

func putEvent(tx *bolt.Tx, us uint64, ev *pimv1.Event) error {
	raw, err := proto.Marshal(ev)
	if err != nil {
		return fmt.Errorf("event %d: %w", us, err)
	}
	return tx.Bucket(bktEvents).Put(u64(us), raw)
}

// unindexMessage removes conv/seq from the per-conversation index (a
// message hidden for the user).
func unindexMessage(tx *bolt.Tx, conv string, seq uint64) error {
	cb := tx.Bucket(bktConvs).Bucket([]byte(conv))
	if cb == nil {
		return nil
	}
	return cb.Delete(u64(seq))
}

func putPersist(tx *bolt.Tx, p core.Persist) error {
	if p.Meta != nil {
		if err := putJSON(tx.Bucket(bktMeta), keyCore, p.Meta); err != nil {
			return err
		}
	}
	ob := tx.Bucket(bktOutbox)
	for _, e := range p.PutOutbox {
		if err := putJSON(ob, []byte(e.ClientMsgID), e); err != nil {
			return err
		}
	}
	for _, id := range p.DeleteOutbox {
		if err := ob.Delete([]byte(id)); err != nil {
			return err
		}
	}
	cb := tx.Bucket(bktCommands)
	for _, c := range p.PutCommands {
		if err := putJSON(cb, u64(c.ID), c); err != nil {
			return err
		}
	}
	for _, id := range p.DeleteCommands {
		if err := cb.Delete(u64(id)); err != nil {
			return err
		}
	}
	hb := tx.Bucket(bktHeartbeats)
	for _, h := range p.PutHeartbeats {
		if err := putJSON(hb, []byte(h.Network), h); err != nil {
			return err
		}
	}
	if p.ResetConvs {
		if err := resetBucket(tx, bktConvList); err != nil {
			return err
		}
	}
	cl := tx.Bucket(bktConvList)
	for _, e := range p.PutConvs {
		if err := putJSON(cl, []byte(e.Conv), e); err != nil {
			return err
		}
	}
	return nil
}

func resetBucket(tx *bolt.Tx, b []byte) error {
	if err := tx.DeleteBucket(b); err != nil {
		return err
	}
	_, err := tx.CreateBucket(b)
	return err
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

func putMessage(tx *bolt.Tx, e core.MessageEvent) error {
	raw, err := proto.Marshal(e.Message)
	if err != nil {
		return fmt.Errorf("message %d: %w", e.UserSeq, err)
	}
	if err := tx.Bucket(bktTimeline).Put(u64(e.UserSeq), raw); err != nil {
		return err
	}
	cb, err := tx.Bucket(bktConvs).CreateBucketIfNotExists([]byte(e.Message.GetConv()))
	if err != nil {
		return err
	}
	return cb.Put(u64(e.Message.GetSeq()), u64(e.UserSeq))
}

func clearTimeline(tx *bolt.Tx) error {
	for _, b := range [][]byte{bktTimeline, bktEvents, bktConvs} {
		if err := resetBucket(tx, b); err != nil {
			return err
		}
	}
	return nil
}

// saveLBS caches an LBS answer.
func (s *store) saveLBS(c lbsCache) error {
	err := s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bktMeta), keyLBS, c) })
	if err != nil {
		return fmt.Errorf("pim: cache the LBS answer: %w", err)
	}
	return nil
}

// loadLBS returns the cached LBS answer (ok false if none).
func (s *store) loadLBS() (c lbsCache, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktMeta).Get(keyLBS)
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &c)
	})
	if err != nil {
		return lbsCache{}, false, fmt.Errorf("pim: read the cached LBS answer: %w", err)
	}
	return c, ok, nil
}

// TimelineEntry is one event of the user's timeline as stored: a message
// (Message set, Event nil) or another event (Event set: a read, a hidden
// message, a receipt, or a kind this SDK does not know; Message nil).
type TimelineEntry struct {
	UserSeq uint64
	Message *Message
	Event   *pimv1.Event
}

// timeline returns up to limit stored entries after afterUserSeq, in order
// (messages and other events merged by user seq).
func (s *store) timeline(after uint64, limit int) ([]TimelineEntry, error) {
	var out []TimelineEntry
	err := s.db.View(func(tx *bolt.Tx) error {
		mc, ec := tx.Bucket(bktTimeline).Cursor(), tx.Bucket(bktEvents).Cursor()
		mk, mv := mc.Seek(u64(after + 1))
		ek, ev := ec.Seek(u64(after + 1))
		for (mk != nil || ek != nil) && len(out) < limit {
			if ek == nil || (mk != nil && binary.BigEndian.Uint64(mk) < binary.BigEndian.Uint64(ek)) {
				m := new(pimv1.Message)
				if err := proto.Unmarshal(mv, m); err != nil {
					return fmt.Errorf("message at user seq %d: %w", binary.BigEndian.Uint64(mk), err)
				}
				out = append(out, TimelineEntry{UserSeq: binary.BigEndian.Uint64(mk), Message: m})
				mk, mv = mc.Next()
				continue
			}
			e := new(pimv1.Event)
			if err := proto.Unmarshal(ev, e); err != nil {
				return fmt.Errorf("event at user seq %d: %w", binary.BigEndian.Uint64(ek), err)
			}
			out = append(out, TimelineEntry{UserSeq: binary.BigEndian.Uint64(ek), Event: e})
			ek, ev = ec.Next()
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pim: read the local timeline: %w", err)
	}
	return out, nil
}

// conversations returns the stored conversation list, most recent activity
// first.
func (s *store) conversations() ([]Conversation, error) {
	var out []Conversation
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktConvList).ForEach(func(k, v []byte) error {
			var e core.ConvEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("conversation entry %q: %w", k, err)
			}
			out = append(out, e.Conversation())
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pim: read the local conversation list: %w", err)
	}
	core.SortConversations(out)
	return out, nil
}

// conversation returns one stored entry (ok false if none).
func (s *store) conversation(conv string) (c Conversation, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktConvList).Get([]byte(conv))
		if v == nil {
			return nil
		}
		var e core.ConvEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("conversation entry %q: %w", conv, err)
		}
		c, ok = e.Conversation(), true
		return nil
	})
	if err != nil {
		return Conversation{}, false, fmt.Errorf("pim: read the local conversation list: %w", err)
	}
	return c, ok, nil
}

// messages returns up to limit stored messages of conv before beforeSeq (0:
// the newest), ascending.
func (s *store) messages(conv string, before uint64, limit int) ([]*Message, error) {
	var out []*Message
	err := s.db.View(func(tx *bolt.Tx) error {
		cb := tx.Bucket(bktConvs).Bucket([]byte(conv))
		if cb == nil {
			return nil
		}
		tl := tx.Bucket(bktTimeline)
		c := cb.Cursor()
		var k, v []byte
		if before == 0 {
			k, v = c.Last()
		} else if k, _ = c.Seek(u64(before)); k == nil {
			k, v = c.Last() // every stored seq is below before
		} else {
			k, v = c.Prev()
		}
		for ; k != nil && len(out) < limit; k, v = c.Prev() {
			raw := tl.Get(v)
			if raw == nil {
				continue
			}
			m := new(pimv1.Message)
			if err := proto.Unmarshal(raw, m); err != nil {
				return fmt.Errorf("message %s/%d: %w", conv, binary.BigEndian.Uint64(k), err)
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pim: read local messages of %s: %w", conv, err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
