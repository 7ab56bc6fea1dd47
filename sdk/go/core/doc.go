// Package core is the heart of PIM's Go client SDK: a deterministic state
// machine, in the style of etcd's raft (inputs, then Ready/Advance), that
// keeps the SDK's promises on bad networks: a durable outbox with automatic
// resend, per-conversation sender order, gap-free exactly-once delivery of
// the user's timeline, offline commands replayed in order, a conversation
// list with exact unread counts, reconnection with jittered backoff, a
// smart heartbeat and clock calibration.
//
// The core does no I/O, starts no goroutine and reads no clock: every input
// carries the caller's time (now), randomness comes from Config.Rand. A
// driver (sdk/go) wires it to a socket, a timer and a store; a simulation
// (sdk/go/internal/sim) drives thousands of seeded runs through lossy
// networks, restarts and crashes and checks the invariants of DESIGN.md §4.
//
// # Inputs
//
// ConnUp, ConnDown and Receive report what happened on the connections the
// core asked for (Ready.Dial; each has a ConnID, so late input from an old
// connection is ignored). Tick reports that time passed (call it at
// Deadline). Send, SendTo, RetryFailed, Discard and Command are the app's
// requests; NetworkChanged, SetForeground, SetToken, SetServers and
// RetryAfter report the environment.
//
// # The driver loop
//
//	c, err := core.New(cfg, loadState())   // State as persisted
//	c.Tick(time.Now())                     // dial at once
//	for {
//		for c.HasReady() {
//			rd := c.Ready()
//			store.Commit(rd.Persist, appDataFrom(rd.Events)) // 1. one atomic, durable write
//			for _, id := range rd.Close { conns[id].Close() }  // 2.
//			for _, f := range rd.Frames { conns[rd.Conn].Write(f) } // 3. in order
//			if rd.Dial != nil { go dial(rd.Dial) }           // 4. -> ConnUp / ConnDown
//			if rd.ReResolve { go askLBS() }                  // 5. -> SetServers
//			app.Handle(rd.Events)                            // 6. in order
//			c.Advance()
//		}
//		timer.Reset(time.Until(c.Deadline()))
//		select {
//		case in := <-inputs: in.apply(c, time.Now()) // frames read, dial results, app calls
//		case <-timer.C: c.Tick(time.Now())
//		}
//	}
//
// Persist MUST be durable before the frames of the same Ready are written
// and before its events are shown: a SendReq must never reach the server
// before its outbox entry is on disk (or a crash would lose the only copy of
// an id the server may have stored), and a PushAck must never acknowledge
// an event the device could lose. If the app stores messages (it should),
// it writes those of the Ready's MessageEvents in the same transaction as
// Persist: the cursor and the messages it covers commit together. No input
// may be called between Ready and Advance (it panics). A dial that
// completes after the core listed its ConnID in Ready.Close (it gave up on
// it) must be closed by the driver: the core ignores its ConnUp.
//
// # Guarantees and choices
//
// Sender order: messages of one conversation are transmitted in the order
// Send was called, pipelined up to Config.Window, and the whole unacked
// window is retransmitted in that order on every connection. A message
// whose retry budget (MaxAttempts transmissions or MaxSendAge) runs out
// fails but keeps its place: the later messages and commands of its
// conversation wait (Queued) until RetryFailed or Discard. A message the
// server refuses (nothing stored) does not block the others. See outbox.go.
//
// Pipelining relies on one server rule the protocol does not state yet: a
// SendReq refused with a retryable error (UNAVAILABLE, RATE_LIMITED,
// INTERNAL) must be refused with fatal set, the connection closed, and
// nothing queued behind it processed. Otherwise a send pipelined behind the
// refused one is stored first, and the refused one, resent, lands after it
// (sdk/go/internal/sim: TestSenderOrderNeedsServerGuard). Against a server
// without that rule, set Config.Window to 1.
//
// Receive path: events are delivered when their user seq is Delivered+1;
// duplicates are dropped; a gap is filled by SyncReq(after=Delivered).
// PushAcks are batched and never exceed what was persisted. Every timeline
// event becomes one app event with its UserSeq (MessageEvent, ReadEvent,
// HiddenEvent, ReceiptEvent, UnknownEvent), so the app sees no gap. See
// timeline.go.
//
// Conversation list (Config.ConvList): loaded once with ConvListReq (pages
// by activity, then since the first page's version), synced since
// Meta.ListVersion on every connection, and kept current from the timeline:
// an event applies to its entry iff its user seq is above the entry's
// version, a server entry replaces the local one iff its version is at
// least the local one. Unread is derived exactly from the unread seqs an
// entry knows; what cannot be derived marks the entry Stale and fetches it
// again. Entries are persisted (Persist.PutConvs) and each change yields a
// ConversationEvent. See convlist.go.
//
// Offline commands (GroupReq, ReadReq, HideReq, SettingsReq): one at a
// time, in order, until the server answers; a command and the messages of
// its conversation take effect in the order they were issued. See
// commands.go.
//
// Connection: full-jitter exponential backoff, reset after a connection
// stays healthy; a refusal with Error.retry_after, a GoAway, and the LBS's
// retry_after (RetryAfter) wait for the hint plus a little jitter
// (HintDelay) without raising the backoff exponent; repeated failures ask
// for LBS re-resolution; dead connections are detected by a
// missed Pong or repeated request timeouts; fatal errors stop the core until
// SetToken. See conn.go.
//
// Heartbeat: foreground uses HeartbeatConfig.Min; in the background the
// interval grows step by step while heartbeats succeed, falls back after a
// failure, and is remembered per network. See heartbeat.go.
//
// Clock: the offset to the server's clock comes from Hello/Welcome and
// Ping/Pong round trips (best RTT wins; error bound RTT/2). SendReq.
// client_time is the local clock at Send corrected by that offset (the raw
// local clock before the first sample); Hello and Ping carry the raw local
// clock. See clock.go.
package core
