// Package pim is PIM's Go client SDK: a connection to a PIM server that
// keeps its promises on bad networks and across app restarts.
//
//	cl, err := pim.Connect(ctx, pim.Options{
//		Servers:  []string{"tls://chat.example.com:7400"},
//		Token:    token,
//		DeviceID: "phone",
//		DataDir:  filepath.Join(appDir, "pim"),
//	})
//	defer cl.Close()
//	out, err := cl.SendTo(ctx, "bob", "hello") // durable once it returns
//	for ev := range cl.Events() {              // one stream, in order
//		switch e := ev.(type) {
//		case pim.MessageEvent:   // each message exactly once, in order
//		case pim.ReadEvent, pim.HiddenEvent, pim.ReceiptEvent: // the rest of the timeline
//		case pim.ConversationEvent: // the conversation list changed
//		case pim.SendStateEvent: // queued -> sending -> sent | failed
//		case pim.ConnStateEvent, pim.CaughtUpEvent, pim.GroupEvent, pim.CommandResultEvent:
//		}
//	}
//	convs, err := cl.Conversations() // unread counts, read marks; offline too
//
// # Guarantees
//
//   - Sending: Send returns once the message is in the local outbox on
//     disk. It is then sent, resent on timeout and after every reconnect
//     with the same client_msg_id (the server deduplicates), in order per
//     conversation, until the server stores it (Sent) or its retry budget
//     runs out (Failed; RetryFailed resends it with the same id). An app
//     killed at any point resumes its outbox at the next Connect: every
//     message is stored once, in the order it was sent.
//   - Receiving: every event of the user's timeline (messages, reads,
//     hidden messages, receipts) reaches Events exactly once and in order
//     (user-seq order, gap-free, which is seq order within a conversation),
//     across reconnects and restarts. Gaps are filled by sync, duplicates
//     dropped; a CaughtUpEvent marks the end of the backlog after each
//     connect.
//   - Offline commands: group operations, MarkRead, Hide and
//     SetReadReceipts are stored and replayed in order after reconnecting;
//     the server applies each once (client_req_id, or an idempotent
//     request).
//   - The conversation list (Conversations): loaded once, synced by version
//     at every connection (O(changed)), kept current from the timeline in
//     between; its unread counts and read positions equal the server's once
//     the device is caught up (an entry it cannot derive exactly is fetched
//     again, never guessed).
//   - Connection: the SDK reconnects by itself (full-jitter backoff,
//     retry_after and GoAway honoured), detects dead connections (missed
//     Pong, repeated timeouts), keeps NAT mappings alive with a heartbeat
//     that learns per network (NetworkChanged, SetForeground), and
//     estimates the server's clock (ServerNow, ClockOffset).
//
// # Design
//
// All protocol logic lives in package core, a deterministic state machine
// with no I/O (inputs: app calls, frames, connection up/down, time; output:
// a Ready with records to persist, frames to write, connections to dial or
// close, events). This package is its driver: one goroutine owns the core
// and runs the loop of core's documentation; each connection has a reader
// goroutine feeding frames in and a writer goroutine draining its frames;
// dials and LBS look-ups run in goroutines that report back as inputs.
//
// The persistence rule: each Ready's records, together with the messages
// of its events, are committed in ONE transaction of the local bbolt store
// (one fsync) before any of its frames is written or its events are shown.
// So a SendReq never leaves before its outbox entry is on disk, and an
// acknowledgement never covers a message the device could lose.
//
// The local store (Options.DataDir) holds the outbox, pending commands,
// the timeline cursor, learned heartbeat intervals, the clock estimate, the
// last LBS answer, the conversation list, and every timeline event
// delivered (Timeline, Messages).
package pim
