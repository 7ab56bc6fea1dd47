// Package store defines the storage contract of PIM: conversations with
// gap-free sequences, per-user timelines (the article's offline message lists),
// per-device cursors and group membership.
//
// Every implementation (pebble/ now, postgres/ later) must keep this contract,
// and proves it by passing the conformance suite in storetest/.
//
// The contract:
//
//  1. Atomicity. Send, CreateGroup, AddMembers and RemoveMembers each either
//     happen completely (the message, its dedup index entry, the conversation
//     seq, membership changes and one timeline event per recipient) or not at
//     all, whatever crash happens when.
//  2. Durability. When one of those returns nil (and the store was opened in a
//     durable mode), the write survives a process or machine crash. Concurrent
//     calls may share one fsync (group commit).
//  3. Idempotency. Send (or a group change) with a (Sender, Device,
//     ClientMsgID) that was already stored returns the original message with
//     Duplicate set and writes nothing, even after a restart.
//  4. Gap-free order. Conversation seqs are 1, 2, 3, ... per conversation and
//     user seqs are 1, 2, 3, ... per user, with no gap and no reuse, under any
//     concurrency; the order of seqs in a conversation agrees with the order
//     of user seqs in every member's timeline.
//  5. Membership. A message is appended to the timeline of exactly the users
//     who are members of its conversation when it is sequenced (membership is
//     read in the same serialization as the seq). A direct conversation
//     "d:<a>:<b>" has exactly users a and b as members, from seq 1; it exists
//     implicitly. A user's visible range in a group starts at the seq of the
//     membership message that added them (JoinSeq).
//  6. Monotonic cursors. Ack never moves a device's cursor backwards and never
//     past the user's head; cursors are independent per device.
//  7. Epoch. Epoch is a random id created with the data and stable across
//     reopen; a replaced data set has a different one.
//  8. Reads show only durable writes: no read returns a message, event or
//     head whose write has not returned (a client must never sync something
//     that a machine crash could take back and reuse the seq of).
//  9. Details every implementation keeps alike (storetest checks them): a
//     duplicate is recognised before the membership check; an empty
//     ClientMsgID is never deduplicated; group changes check not-found, then
//     not-member, then "nothing to do", then too-large; membership messages
//     list all members at creation (the actor included) or the users added
//     or removed, sorted; a group operation on a "d:" id, and History,
//     Members or Membership of an unknown group, return ErrNotFound; a
//     limit <= 0 returns no rows; a second Close returns ErrClosed; a call
//     whose context is already done writes nothing. A context error returned
//     while waiting does NOT mean nothing was written: a retry with the same
//     ClientMsgID resolves it.
//
// Messages and events are the wire types (pimv1); the store owns the values
// it returns only until the caller changes them, so callers must not mutate
// them in place.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

var (
	// ErrNotFound: the conversation or group does not exist.
	ErrNotFound = errors.New("store: not found")
	// ErrNotMember: the acting user is not a member of the conversation.
	ErrNotMember = errors.New("store: not a member")
	// ErrExists: a group with that id already exists.
	ErrExists = errors.New("store: already exists")
	// ErrGroupTooLarge: the change would take a group past its maximum size.
	ErrGroupTooLarge = errors.New("store: group too large")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrPredecessorFailed: a pipelined send was not stored because the send
	// before it in its chain failed (see SendAsync). Retryable.
	ErrPredecessorFailed = errors.New("store: an earlier send of the pipeline failed")
)

// Refusal reports whether err is a definitive refusal of a write (the
// request itself is wrong or not allowed; retrying it cannot succeed), as
// opposed to a failure that may pass (contract 10). A send after a refused
// one in a chain is still sequenced.
func Refusal(err error) bool {
	return errors.Is(err, ErrNotMember) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrExists) || errors.Is(err, ErrGroupTooLarge)
}

// Future is an answer to come: a write handed over without waiting.
type Future[T any] interface {
	// Wait returns the answer once it is there (for a write: durable or
	// failed), or ctx's error if ctx ends first (which does NOT mean nothing
	// was written). It may be called more than once.
	Wait(ctx context.Context) (T, error)
}

// Pending is a send handed to the store by SendAsync; Wait answers as Send
// would.
type Pending = Future[Result]

// SendRequest is one message to sequence and store.
type SendRequest struct {
	Conv        string // "d:<a>:<b>" or "g:<id>"
	Sender      string
	Device      string
	ClientMsgID string
	MsgID       string // server-assigned, unique
	Type        pimv1.MessageType
	Body        []byte
	ClientTime  int64
	ServerTime  int64
	ClientSeq   uint64
}

// Delivery is one timeline event written for one user.
type Delivery struct {
	User  string
	Event *pimv1.Event
}

// Result is the outcome of a write that sequences a message.
type Result struct {
	// Message is the stored message (the original one for a duplicate).
	Message *pimv1.Message
	// Duplicate is set when the message had been stored before; nothing was written.
	Duplicate bool
	// Deliveries are the timeline events written, one per recipient, to be
	// pushed to online devices. Empty for a duplicate.
	Deliveries []Delivery
}

// GroupChange creates a group or changes its membership. The store writes a
// membership message (type GROUP_CREATED, MEMBERS_ADDED or MEMBERS_REMOVED)
// from Actor into the group's conversation and delivers it.
type GroupChange struct {
	Group      string // "g:<id>"
	Actor      string // must be a member (except for CreateGroup, where Actor becomes the owner)
	Device     string
	Users      []string
	MsgID      string
	ServerTime int64
	// ClientMsgID, if set, deduplicates the change like a Send: a change with
	// an (Actor, Device, ClientMsgID) already stored (by a change or a send)
	// writes nothing and returns the original message with Duplicate set.
	ClientMsgID string
	// MaxMembers caps the group's size after the change (0: no cap).
	MaxMembers int
}

// ConvQuery selects a page of a conversation list.
type ConvQuery struct {
	// SinceVersion > 0 asks for the entries with Version > SinceVersion,
	// ascending by Version (incremental sync).
	SinceVersion uint64
	// Otherwise the list is sorted by Activity, newest first, starting
	// below BeforeActivity (0: from the top).
	BeforeActivity uint64
	Limit          int
}

// GroupSettings are a group's options.
type GroupSettings struct {
	// ReceiptsVisible lets every member read the read receipts of the
	// group's messages (by default only each message's sender may).
	ReceiptsVisible bool
}

// MaxNotifySpan bounds the messages one NotifyReads call reports on.
const MaxNotifySpan = 256

// CountsAsUnread reports whether m counts in user's unread count when it is
// above user's read position: content from someone else.
func CountsAsUnread(m *pimv1.Message, user string) bool {
	return m.GetSender() != user && m.GetType() < pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED
}

// Member is one user's membership in a conversation.
type Member struct {
	User    string
	JoinSeq uint64 // the seq of the membership message that added the user (0 for direct)
	Role    string // "owner" or "member"
}

// Store is the storage engine. All methods are safe for concurrent use.
type Store interface {
	// Send sequences and stores one message and appends it to the timeline
	// of every member of req.Conv. ErrNotMember if the sender is not a member;
	// ErrNotFound if the group does not exist.
	Send(ctx context.Context, req SendRequest) (Result, error)
	// SendAsync is Send without waiting: it hands req to the store and
	// returns at once (it may block while the store's queue is full). after
	// is nil or the Pending of the caller's previous send (contract 10:
	// order, and nothing stored after a send that failed). ctx bounds the
	// send like Send's: a send whose ctx is done before it is sequenced
	// writes nothing.
	SendAsync(ctx context.Context, req SendRequest, after Pending) Pending

	// CreateGroup creates ch.Group with ch.Actor as owner and ch.Users as
	// members (duplicates ignored). ErrExists if the id is taken.
	CreateGroup(ctx context.Context, ch GroupChange) (Result, error)
	// AddMembers adds the users who are not members yet. When none is new it
	// writes nothing and returns a Result with a nil Message.
	AddMembers(ctx context.Context, ch GroupChange) (Result, error)
	// RemoveMembers removes the users who are members. The membership message
	// is delivered to the remaining members and to the removed users (so
	// they learn of it); later messages are not. When none of the users is a
	// member it writes nothing and returns a Result with a nil Message.
	RemoveMembers(ctx context.Context, ch GroupChange) (Result, error)

	// Members lists a conversation's current members, ordered by user.
	Members(ctx context.Context, conv string) ([]Member, error)
	// Membership reports whether user is a member of conv now.
	Membership(ctx context.Context, conv, user string) (Member, bool, error)

	// Timeline returns up to limit events of user with user_seq > after, in
	// order, each with its message filled in, and the user's head user seq.
	Timeline(ctx context.Context, user string, after uint64, limit int) (events []*pimv1.Event, head uint64, err error)
	// Head returns the user's highest user seq (0 if none).
	Head(ctx context.Context, user string) (uint64, error)

	// History returns up to limit messages of conv with from <= seq < before
	// (before == 0 means no upper bound), the newest ones, in ascending seq
	// order, and whether older messages with seq >= from exist.
	History(ctx context.Context, conv string, from, before uint64, limit int) (msgs []*pimv1.Message, more bool, err error)

	// MarkRead moves user's read position in conv to max(position, seq),
	// with seq capped at the conversation's head, and returns the new
	// position. When the position moves, a ReadSync event (conv, seq, user,
	// device) is appended, in the same atomic durable write, to the reader's
	// timeline and, in a direct conversation, to the peer's (a read
	// receipt); they are returned in Result.Deliveries (Result.Message is
	// nil). A read that does not move the position writes nothing, so a late
	// or repeated read has the same result. ErrNotMember / ErrNotFound as for
	// Send. Read positions never move back.
	MarkRead(ctx context.Context, user, device, conv string, seq uint64) (uint64, Result, error)
	// ReadPosition returns user's read position in conv (0 if none).
	ReadPosition(ctx context.Context, user, conv string) (uint64, error)

	// Conversations returns a page of user's conversation list (see
	// ConvQuery) with each entry's LastMessage filled in, whether more
	// entries match, and the list's version (the user's head user seq).
	// Entries are kept in the same atomic write as the event that changes
	// them (a message, a read, a receipt, a membership change, a hide), and an
	// entry's Version is the user seq of that event, so "changed since V"
	// is exactly the entries whose Version > V. Unread is exact: messages
	// (not membership messages) from other users delivered to user with seq
	// > max(ReadSeq, JoinSeq), less those user hid (Hide changes the entry).
	// PeerReadSeq is the highest read of the 1:1 peer reported while both
	// users had read receipts on (turning them off stops new reports; it
	// does not take back what was reported, which no event could version).
	Conversations(ctx context.Context, user string, q ConvQuery) (convs []*pimv1.Conversation, more bool, version uint64, err error)

	// Receipts returns how many users other than the message's sender have
	// read conv up to at least seq, having joined at or before seq, and a
	// page of them (sorted, after afterUser). It costs O(log n + readers) over an index of read
	// positions. A user who had read receipts off when they read is not
	// counted for that read. ErrNotFound if the message does not exist.
	Receipts(ctx context.Context, conv string, seq uint64, afterUser string, limit int) (count int, readers []string, more bool, err error)
	// NotifyReads appends one RECEIPT_KIND_READ event to the timeline of each
	// sender (with read receipts on) of a content message in conv with
	// from < seq <= to (the newest MaxNotifySpan of them) that someone else
	// has read, carrying the read counts of those of the sender's messages. The server calls it at most once a
	// second per conversation (coalescing).
	NotifyReads(ctx context.Context, conv string, from, to uint64) (Result, error)
	// MarkDelivered records that a device of user acknowledged its timeline
	// up to userSeq; for each direct conversation with messages from the
	// peer in the newly acknowledged range, it appends a
	// RECEIPT_KIND_DELIVERED event to the peer's timeline (once per
	// conversation per call) and raises the peer's PeerDeliveredSeq.
	MarkDelivered(ctx context.Context, user string, userSeq uint64) (Result, error)

	// Hide deletes conv/seq for user only ("delete for me"): it appends a
	// Hidden event to user's timeline and records the message as hidden for
	// HiddenIn. Hiding twice writes nothing the second time. The message
	// must exist and be visible to user (ErrNotFound, ErrNotMember).
	Hide(ctx context.Context, user, device, conv string, seq uint64) (Result, error)
	// HiddenIn returns the seqs in [from, before) of conv that user hid
	// (before == 0: no bound), ascending.
	HiddenIn(ctx context.Context, user, conv string, from, before uint64) ([]uint64, error)

	// SetReadReceipts turns user's read receipts on or off. With them off
	// the user's reads are not reported to others (no ReadSync to the 1:1
	// peer, not counted by Receipts from then on) and the user gets none
	// (no peer ReadSync, no READ receipt events).
	SetReadReceipts(ctx context.Context, user string, on bool) error
	// ReadReceipts reports whether user's read receipts are on (default).
	ReadReceipts(ctx context.Context, user string) (bool, error)

	// SetGroupSettings replaces group's settings. ErrNotFound for an
	// unknown group (or a direct conversation). The caller checks who may.
	SetGroupSettings(ctx context.Context, group string, gs GroupSettings) error
	// GroupSettings returns group's settings (the zero value by default).
	// ErrNotFound for an unknown group.
	GroupSettings(ctx context.Context, group string) (GroupSettings, error)

	// Ack moves (user, device)'s cursor to max(cursor, min(userSeq, head)) and
	// returns the new cursor. Acks need not be durable: losing one only causes
	// a redelivery that the client drops.
	Ack(ctx context.Context, user, device string, userSeq uint64) (uint64, error)
	// Cursor returns (user, device)'s cursor (0 if none).
	Cursor(ctx context.Context, user, device string) (uint64, error)

	// Epoch returns the data set's epoch.
	Epoch() string
	// Close flushes and releases the store. Calls after Close return ErrClosed.
	Close() error
}

// DirectConv returns the conversation id of the 1:1 conversation between a and b.
func DirectConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "d:" + a + ":" + b
}

// ParseDirect returns the two users of a direct conversation id.
func ParseDirect(conv string) (a, b string, ok bool) {
	rest, ok := strings.CutPrefix(conv, "d:")
	if !ok {
		return "", "", false
	}
	a, b, ok = strings.Cut(rest, ":")
	if !ok || a == "" || b == "" || b < a || strings.Contains(b, ":") {
		return "", "", false
	}
	return a, b, true
}

// IsGroup reports whether conv names a group conversation.
func IsGroup(conv string) bool {
	return strings.HasPrefix(conv, "g:") && len(conv) > 2
}

// ValidID reports whether s is a valid user, device or group-suffix id:
// 1-64 characters of [A-Za-z0-9._@-].
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-', c == '@':
		default:
			return false
		}
	}
	return true
}

// ValidateConv checks that conv is a well-formed conversation id.
func ValidateConv(conv string) error {
	if a, b, ok := ParseDirect(conv); ok {
		if ValidID(a) && ValidID(b) {
			return nil
		}
	} else if IsGroup(conv) && ValidID(conv[2:]) {
		return nil
	}
	return fmt.Errorf("invalid conversation id %q", conv)
}
