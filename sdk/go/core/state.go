// What the core persists, and how the driver gives it back.
//
// Invariants of this file:
//   - Every record is plain data (no pointers into the core, no proto
//     messages: a command's request is kept marshaled), so a driver can store
//     it with any encoding and a restart rebuilds exactly the same core.
//   - State is the union of all records put and not deleted by the Persist
//     of every Ready so far; New(cfg, state) resumes from it.
//   - A Persist is idempotent: applying it twice leaves the same state.

package core

import (
	"slices"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// SendState is the state of an outgoing message.
type SendState uint8

const (
	// Queued: stored in the outbox, not transmitted yet, or waiting behind a
	// failed message of the same conversation.
	Queued SendState = iota + 1
	// Sending: transmitted at least once, not acknowledged yet.
	Sending
	// Sent: the server stored it (SendAck, or its echo in the timeline). A
	// sent message leaves the outbox.
	Sent
	// Failed: the retry budget ran out, or the server refused it (the entry's
	// FailCode says which). It stays in the outbox until RetryFailed or
	// Discard.
	Failed
)

func (s SendState) String() string {
	switch s {
	case Queued:
		return "queued"
	case Sending:
		return "sending"
	case Sent:
		return "sent"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Meta is the core's small, frequently rewritten record.
type Meta struct {
	// Epoch of the data set the cursor belongs to ("" before the first
	// Welcome).
	Epoch string
	// Delivered is the highest user seq handed to the app (the timeline
	// cursor). Hello.last_user_seq carries it; PushAck and SyncReq never
	// acknowledge more.
	Delivered uint64
	// NextOrder numbers outbox entries and commands in creation order.
	NextOrder uint64
	// NextClientSeq is the next SendReq.client_seq (per device, increasing).
	NextClientSeq uint64
	// Clock is the best clock sample known (zero RTT and time: none).
	Clock ClockSample
	// ListLoaded: the conversation list's first full load completed (see
	// convlist.go); ListVersion: the list holds every entry as of this
	// user seq (Stale entries excepted). Both are reset with the epoch.
	ListLoaded  bool
	ListVersion uint64
}

// OutboxEntry is one message in the outbox. Entries leave the outbox once
// sent (or discarded).
type OutboxEntry struct {
	ClientMsgID string
	Conv        string
	Type        pimv1.MessageType
	Body        []byte
	// ClientTime is SendReq.client_time: the local clock at Send corrected by
	// the clock offset known then (Unix ms). Identical on every resend.
	ClientTime int64
	ClientSeq  uint64
	// Order is the creation order among entries and commands.
	Order   uint64
	Created time.Time
	// Since starts the current retry budget (Created, or the last
	// RetryFailed); Attempts counts transmissions within it.
	Since    time.Time
	Attempts int
	State    SendState
	// FailCode is why a Failed entry failed: ERROR_CODE_UNSPECIFIED when its
	// retry budget ran out (it may or may not have been stored), otherwise
	// the code the server refused it with (it was not stored).
	FailCode pimv1.ErrorCode
	FailMsg  string
}

// Rejected reports whether the server refused the entry (nothing stored).
func (e OutboxEntry) Rejected() bool {
	return e.State == Failed && e.FailCode != pimv1.ErrorCode_ERROR_CODE_UNSPECIFIED
}

// CommandEntry is one offline command waiting for the server's answer.
type CommandEntry struct {
	ID    uint64
	Order uint64
	// Request is the marshaled request Frame (request_id 0).
	Request []byte
	// Conv is the conversation the command concerns ("" if none): messages
	// and commands of one conversation are applied in creation order.
	Conv     string
	Created  time.Time
	Attempts int
	// LastSent is the time of the last transmission (zero if none).
	LastSent time.Time
}

// HeartbeatRecord is what the smart heartbeat learned about one network.
type HeartbeatRecord struct {
	Network string
	// Interval is the longest background interval known to work.
	Interval time.Duration
	// Ceiling is the shortest interval seen failing (0: none); learning
	// stays below it.
	Ceiling time.Duration
}

// ConvEntry is one entry of the local conversation list (the server's
// Conversation, plus what the core needs to keep Unread exact). Its key
// is Conv.
type ConvEntry struct {
	Conv    string
	LastSeq uint64
	// LastMessage is the marshaled pimv1.Message at LastSeq (nil: none).
	LastMessage      []byte
	ReadSeq          uint64
	Unread           uint64
	Version          uint64
	Activity         uint64
	JoinSeq          uint64
	Left             bool
	PeerReadSeq      uint64
	PeerDeliveredSeq uint64
	// UnreadSeqs are the unread messages above UnreadFloor, ascending (at
	// most maxUnreadSeqs); the other Unread-len(UnreadSeqs) unread
	// messages are at or below UnreadFloor, not individually known.
	UnreadSeqs  []uint64 `json:",omitempty"`
	UnreadFloor uint64   `json:",omitempty"`
	// Stale: a change could not be derived exactly; the entry is being
	// fetched again from the server.
	Stale bool `json:",omitempty"`
}

func (e ConvEntry) clone() ConvEntry {
	e.LastMessage = slices.Clone(e.LastMessage)
	e.UnreadSeqs = slices.Clone(e.UnreadSeqs)
	return e
}

// ClockSample is one clock-offset measurement.
type ClockSample struct {
	// Offset is server time minus local time.
	Offset time.Duration
	// RTT is the round trip of the measurement; the error bound is RTT/2.
	RTT time.Duration
	// At is the local time of the measurement.
	At time.Time
}

func (s ClockSample) valid() bool { return !s.At.IsZero() }

// State is everything the core persisted, handed back to New after a
// restart. Slices may be in any order.
type State struct {
	Meta       Meta
	Outbox     []OutboxEntry
	Commands   []CommandEntry
	Heartbeats []HeartbeatRecord
	Convs      []ConvEntry
}

// Persist lists the records to write, as one atomic transaction, before
// anything else in the same Ready is done. Puts replace the record with the
// same key (ClientMsgID, ID, Network, Conv). ResetConvs deletes every
// conversation entry first (an epoch change), before PutConvs.
type Persist struct {
	Meta           *Meta
	PutOutbox      []OutboxEntry
	DeleteOutbox   []string
	PutCommands    []CommandEntry
	DeleteCommands []uint64
	PutHeartbeats  []HeartbeatRecord
	ResetConvs     bool
	PutConvs       []ConvEntry
}

// Empty reports whether there is nothing to write.
func (p Persist) Empty() bool {
	return p.Meta == nil && len(p.PutOutbox) == 0 && len(p.DeleteOutbox) == 0 &&
		len(p.PutCommands) == 0 && len(p.DeleteCommands) == 0 && len(p.PutHeartbeats) == 0 &&
		!p.ResetConvs && len(p.PutConvs) == 0
}

// Apply applies p to s (a reference for drivers and tests; a real driver
// writes the records to its store instead). Records are copied.
func (s *State) Apply(p Persist) {
	if p.Meta != nil {
		s.Meta = *p.Meta
	}
	for _, e := range p.PutOutbox {
		e.Body = slices.Clone(e.Body)
		if i := slices.IndexFunc(s.Outbox, func(x OutboxEntry) bool { return x.ClientMsgID == e.ClientMsgID }); i >= 0 {
			s.Outbox[i] = e
		} else {
			s.Outbox = append(s.Outbox, e)
		}
	}
	for _, id := range p.DeleteOutbox {
		s.Outbox = slices.DeleteFunc(s.Outbox, func(x OutboxEntry) bool { return x.ClientMsgID == id })
	}
	for _, c := range p.PutCommands {
		c.Request = slices.Clone(c.Request)
		if i := slices.IndexFunc(s.Commands, func(x CommandEntry) bool { return x.ID == c.ID }); i >= 0 {
			s.Commands[i] = c
		} else {
			s.Commands = append(s.Commands, c)
		}
	}
	for _, id := range p.DeleteCommands {
		s.Commands = slices.DeleteFunc(s.Commands, func(x CommandEntry) bool { return x.ID == id })
	}
	for _, h := range p.PutHeartbeats {
		if i := slices.IndexFunc(s.Heartbeats, func(x HeartbeatRecord) bool { return x.Network == h.Network }); i >= 0 {
			s.Heartbeats[i] = h
		} else {
			s.Heartbeats = append(s.Heartbeats, h)
		}
	}
	if p.ResetConvs {
		s.Convs = nil
	}
	for _, e := range p.PutConvs {
		e = e.clone()
		if i := slices.IndexFunc(s.Convs, func(x ConvEntry) bool { return x.Conv == e.Conv }); i >= 0 {
			s.Convs[i] = e
		} else {
			s.Convs = append(s.Convs, e)
		}
	}
}
