// The vocabulary the app sees: events, states and errors, shared with the
// core (type aliases, so a value from the core is the value the app gets).
//
// Invariants of this file:
//   - Nothing here has behaviour of its own: every type is the core's, so
//     the documentation and guarantees of package core apply unchanged.

package pim

import (
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

// Event is one item of Client.Events. The concrete types are the
// timeline's (MessageEvent, ReadEvent, HiddenEvent, ReceiptEvent,
// UnknownEvent: each with its UserSeq, gap-free, exactly once, in order),
// SendStateEvent, ConnStateEvent, CaughtUpEvent, ResyncEvent, GroupEvent,
// CommandResultEvent and ConversationEvent.
type Event = core.Event

type (
	// MessageEvent is one message of the user's timeline: each exactly once,
	// in user-seq order, across reconnects and app restarts. It is already
	// in the local store when the app sees it (Client.Timeline).
	MessageEvent = core.MessageEvent
	// SendStateEvent reports a change of an outgoing message's state (the
	// same change its Outgoing handle shows).
	SendStateEvent = core.SendStateEvent
	// ConnStateEvent reports a change of the long connection's state.
	ConnStateEvent = core.ConnStateEvent
	// CaughtUpEvent: everything stored before this connection was
	// established has been delivered (once per connection).
	CaughtUpEvent = core.CaughtUpEvent
	// ReadEvent: a read position moved, on one of this user's devices
	// (Own: clear unread marks up to Seq) or, in a 1:1, the peer's (a read
	// receipt).
	ReadEvent = core.ReadEvent
	// HiddenEvent: the user deleted a message for themselves ("delete for
	// me") on one of their devices: stop showing it. Messages no longer
	// returns it.
	HiddenEvent = core.HiddenEvent
	// ReceiptEvent: what happened to the user's own messages: DELIVERED
	// (1:1: they reached a device of the peer, up to Seq) or READ (groups:
	// new read counts, coalesced by the server).
	ReceiptEvent = core.ReceiptEvent
	// UnknownEvent: a timeline event of a kind this SDK does not know (a
	// newer server), handed over so that user seqs stay gap-free.
	UnknownEvent = core.UnknownEvent
	// ConversationEvent: an entry of the conversation list changed (its new
	// state; Client.Conversations has the whole list).
	ConversationEvent = core.ConversationEvent
	// ResyncEvent: the server's data set changed (another epoch); the local
	// timeline and conversation list were cleared and are delivered again
	// from the start.
	ResyncEvent = core.ResyncEvent
	// GroupEvent accompanies the MessageEvent of a membership change.
	GroupEvent = core.GroupEvent
	// CommandResultEvent is the server's final answer to an offline command
	// (group operations), also after an app restart.
	CommandResultEvent = core.CommandResultEvent
)

// Message is a message of a conversation, as the server stored it.
type Message = pimv1.Message

// Conversation is one entry of the local conversation list: the last
// message, the read position and the exact unread count, and for 1:1 the
// peer's read and delivered positions (see Client.Conversations).
type Conversation = core.Conversation

// ListStatus is the conversation list's synchronisation state.
type ListStatus = core.ListStatus

// MessageReads is the read count of one message (ReceiptEvent.Reads).
type MessageReads = core.MessageReads

// Receipt kinds (ReceiptEvent.Kind).
const (
	ReceiptDelivered = pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED
	ReceiptRead      = pimv1.ReceiptKind_RECEIPT_KIND_READ
)

// SendState is the state of an outgoing message.
type SendState = core.SendState

// Send states: Queued -> Sending -> Sent, or Failed (retry budget spent or
// refused by the server), from which RetryFailed resumes it.
const (
	Queued  = core.Queued
	Sending = core.Sending
	Sent    = core.Sent
	Failed  = core.Failed
)

// ConnState is the state of the long connection.
type ConnState = core.ConnState

// Connection states.
const (
	Disconnected = core.Disconnected
	Connecting   = core.Connecting
	Connected    = core.Connected
	// Stopped: the server refused the token (or the protocol version);
	// nothing is dialed until SetToken.
	Stopped = core.Stopped
)

// ServerError is an error answered by the server (its code is stable).
type ServerError = core.ServerError

// BackoffConfig configures reconnection (full-jitter exponential backoff).
type BackoffConfig = core.BackoffConfig

// HeartbeatConfig configures the smart heartbeat.
type HeartbeatConfig = core.HeartbeatConfig

// Errors the core reports in events.
var (
	// ErrRetryBudget: a message's retry budget ran out (it may still have
	// been stored: its echo then turns it Sent).
	ErrRetryBudget = core.ErrRetryBudget
	// ErrDeadConnection: the connection stopped answering.
	ErrDeadConnection = core.ErrDeadConnection
	// ErrConnectTimeout: no Welcome within the connect timeout.
	ErrConnectTimeout = core.ErrConnectTimeout
	// ErrGoAway: the server asked the client to reconnect (draining).
	ErrGoAway = core.ErrGoAway
	// ErrWrongUser: the token belongs to another user than Options.User.
	ErrWrongUser = core.ErrWrongUser
	// ErrRetryLater: the LBS asked the client to wait before connecting.
	ErrRetryLater = core.ErrRetryLater
)

// DirectConv is the conversation id of the 1:1 conversation of users a and
// b.
func DirectConv(a, b string) string { return core.DirectConv(a, b) }
