// The core's output: Ready, and the events it carries to the app.
//
// Invariants of this file:
//   - A Ready is a batch of effects to carry out in this order: write
//     Persist (atomically, together with whatever the app stores from
//     Events), close the connections in Close, write Frames on Conn in
//     order, start Dial, ask the LBS if ReResolve, hand Events to the app in
//     order, then call Advance. Writing Persist first is what makes acks
//     honest: a PushAck or SyncReq in Frames never covers an event that is
//     not durably stored, and a SendReq is never on the wire before its
//     outbox entry is on disk.
//   - Frames always belong to Conn, the current connection; frames queued
//     for a connection that is closed before the Ready is taken are dropped.
//   - Events are values the app may keep; the core keeps no reference to
//     them that it later mutates.
//   - Every timeline event reaches the app as exactly one event carrying
//     its UserSeq (MessageEvent, ReadEvent, HiddenEvent, ReceiptEvent, or
//     UnknownEvent for a kind this core does not know), so the user seqs
//     the app sees are gap-free. ConversationEvents follow the timeline
//     events of the same Ready that changed the list, one per entry, in
//     its state at the end of the Ready.

package core

import (
	"fmt"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// ConnID names one connection attempt. The core allocates them (Dial.Conn);
// the driver passes them back with ConnUp, Receive and ConnDown so that
// input from an old connection is recognised and ignored.
type ConnID uint64

// Dial asks the driver to open a connection now.
type Dial struct {
	Conn ConnID
	Addr string
}

// Ready is what the core wants done. See the file comment for the order.
type Ready struct {
	Persist Persist
	// Close lists connections to close (abort) at once.
	Close []ConnID
	// Conn is the connection Frames are for.
	Conn   ConnID
	Frames []*pimv1.Frame
	// Dial, if set, asks for a new connection; the driver answers with
	// ConnUp or ConnDown for Dial.Conn.
	Dial *Dial
	// ReResolve asks the driver to fetch a fresh server list from the LBS
	// and hand it over with SetServers. The core keeps dialing meanwhile.
	ReResolve bool
	Events    []Event
}

// Empty reports whether the Ready carries nothing.
func (r Ready) Empty() bool {
	return r.Persist.Empty() && len(r.Close) == 0 && len(r.Frames) == 0 && r.Dial == nil &&
		!r.ReResolve && len(r.Events) == 0
}

// Event is something the app should know. The concrete types are
// MessageEvent, ReadEvent, HiddenEvent, ReceiptEvent and UnknownEvent (the
// timeline, each with its UserSeq), SendStateEvent, ConnStateEvent,
// CaughtUpEvent, ResyncEvent, GroupEvent, CommandResultEvent and
// ConversationEvent.
type Event interface{ isEvent() }

// MessageEvent hands one timeline message to the app: each exactly once, in
// user-seq order (which is conversation-seq order within a conversation).
type MessageEvent struct {
	UserSeq uint64
	Message *pimv1.Message
	// Own is set for this device's own messages (matched to its outbox
	// entry by client_msg_id): the app already shows them, and should
	// update the bubble rather than add one.
	Own bool
}

// SendStateEvent reports a change of an outgoing message's state.
type SendStateEvent struct {
	ClientMsgID string
	Conv        string
	State       SendState
	// Ack is set when State is Sent.
	Ack *pimv1.SendAck
	// Err is set when State is Failed: ErrRetryBudget, or a *ServerError.
	Err      error
	Attempts int
}

// ConnState is the state of the long connection.
type ConnState uint8

const (
	// Disconnected: waiting to dial (Retry says when).
	Disconnected ConnState = iota + 1
	// Connecting: dialing or in the Hello handshake.
	Connecting
	// Connected: Welcome received.
	Connected
	// Stopped: a fatal error (bad token, unsupported version); nothing is
	// dialed until SetToken.
	Stopped
)

func (s ConnState) String() string {
	switch s {
	case Disconnected:
		return "disconnected"
	case Connecting:
		return "connecting"
	case Connected:
		return "connected"
	case Stopped:
		return "stopped"
	}
	return "unknown"
}

// ConnStateEvent reports a connection state change.
type ConnStateEvent struct {
	State ConnState
	Addr  string
	// Err is why the connection ended or stopped (nil when it is up).
	Err error
	// Retry is when the next dial is due (Disconnected only).
	Retry time.Time
}

// ReadEvent: a read position moved. Own is set when this user read (on this
// or another device: the app clears its unread marks up to Seq); otherwise
// it is the peer's read receipt in a 1:1 conversation.
type ReadEvent struct {
	UserSeq uint64
	Conv    string
	Seq     uint64
	User    string
	Device  string
	Own     bool
}

// HiddenEvent: this user deleted message Conv/Seq for themselves ("delete
// for me") on Device (this one or another): the app stops showing it.
type HiddenEvent struct {
	UserSeq uint64
	Conv    string
	Seq     uint64
	Device  string
}

// MessageReads is the read count of one of the user's messages.
type MessageReads struct {
	Seq       uint64
	ReadCount uint32
}

// ReceiptEvent tells the user what happened to their messages in Conv.
// Kind DELIVERED (1:1): every message of the user up to Seq reached a
// device of User, the peer. Kind READ (groups): Reads lists new read
// counts of the user's messages, ascending by seq (coalesced by the server,
// at most one per conversation per second). 1:1 read receipts are
// ReadEvents.
type ReceiptEvent struct {
	UserSeq uint64
	Conv    string
	Kind    pimv1.ReceiptKind
	Seq     uint64
	User    string
	Reads   []MessageReads
}

// UnknownEvent is a timeline event of a kind this core does not know (a
// newer server): it is acknowledged like any other, and handed over so
// that the user seqs the app sees stay gap-free.
type UnknownEvent struct {
	UserSeq uint64
	Event   *pimv1.Event
}

// ConversationEvent reports that an entry of the local conversation list
// changed (Conversations has the whole list).
type ConversationEvent struct {
	Conversation Conversation
}

// CaughtUpEvent: every event that existed when the connection was welcomed
// has been delivered (once per connection).
type CaughtUpEvent struct{ UserSeq uint64 }

// ResyncEvent: the server's data set is not the one the local state came
// from (a different epoch). The cursor was reset: the timeline is delivered
// again from the start, and the app should drop what it derived from the old
// one.
type ResyncEvent struct{ OldEpoch, NewEpoch string }

// GroupEvent accompanies the MessageEvent of a membership message.
type GroupEvent struct {
	Conv    string
	Seq     uint64
	Type    pimv1.MessageType
	Actor   string
	Members []string
	// Me is set when this user is among Members (created with, added, or
	// removed: after a removal the user no longer receives the group).
	Me bool
}

// CommandResultEvent is the server's final answer to an offline command.
type CommandResultEvent struct {
	ID uint64
	// Response is the answer frame (a GroupResp, ReadResp, HideResp or
	// SettingsResp) when it succeeded.
	Response *pimv1.Frame
	// Err is the server's refusal (*ServerError), if any.
	Err error
	// Attempts is how many times the command was transmitted. Above 1, an
	// earlier transmission may have been applied (group commands are
	// deduplicated by client_req_id; reads, hides and settings are
	// idempotent), so a refusal such as "not a member" after a leave may mean
	// it worked.
	Attempts int
}

func (MessageEvent) isEvent()       {}
func (SendStateEvent) isEvent()     {}
func (ConnStateEvent) isEvent()     {}
func (CaughtUpEvent) isEvent()      {}
func (ReadEvent) isEvent()          {}
func (ResyncEvent) isEvent()        {}
func (GroupEvent) isEvent()         {}
func (CommandResultEvent) isEvent() {}
func (HiddenEvent) isEvent()        {}
func (ReceiptEvent) isEvent()       {}
func (UnknownEvent) isEvent()       {}
func (ConversationEvent) isEvent()  {}

// ServerError is an Error frame from the server.
type ServerError struct {
	Code       pimv1.ErrorCode
	Message    string
	RetryAfter time.Duration
	Fatal      bool
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("pim: %s: %s", e.Code, e.Message)
}

func serverError(e *pimv1.Error) *ServerError {
	return &ServerError{
		Code: e.GetCode(), Message: e.GetMessage(),
		RetryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond, Fatal: e.GetFatal(),
	}
}

// retryable reports whether a request refused with e may succeed later
// unchanged.
func (e *ServerError) retryable() bool {
	switch e.Code {
	case pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE,
		pimv1.ErrorCode_ERROR_CODE_INTERNAL:
		return true
	}
	return false
}

// stops reports whether e, answering Hello, means reconnecting cannot help
// until the app changes something (token, app version, device id).
func (e *ServerError) stops() bool {
	switch e.Code {
	case pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, pimv1.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION,
		pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST:
		return true
	}
	return false
}

// Errors the core reports.
var (
	// ErrRetryBudget: a message's retry budget ran out. It may or may not
	// have been stored: if it was, its echo turns it into Sent later.
	ErrRetryBudget = fmt.Errorf("core: retry budget exhausted")
	// ErrDeadConnection: the connection stopped answering (missed Pong or
	// repeated request timeouts).
	ErrDeadConnection = fmt.Errorf("core: connection dead")
	// ErrConnectTimeout: no Welcome within ConnectTimeout.
	ErrConnectTimeout = fmt.Errorf("core: connect timeout")
	// ErrGoAway: the server asked the client to reconnect elsewhere.
	ErrGoAway = fmt.Errorf("core: server going away")
	// ErrWrongUser: the token belongs to another user than Config.User.
	ErrWrongUser = fmt.Errorf("core: the token belongs to another user")
	// ErrNetworkChanged: the network changed and the probe failed.
	ErrNetworkChanged = fmt.Errorf("core: network changed")
	// ErrRetryLater: the location service asked the client to wait before
	// connecting (RetryAfter).
	ErrRetryLater = fmt.Errorf("core: asked to retry later")
)
