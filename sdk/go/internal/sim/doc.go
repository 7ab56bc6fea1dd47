// Package sim is a deterministic simulation of PIM clients on a bad
// network: several cores of package core (each with a driver, an app and a
// disk), a faithful in-memory model of the server, and a network between
// them, all on a virtual clock. A run is a pure function of its seed; the
// test runs thousands of seeds and checks the invariants of DESIGN.md §4.
//
//	go test ./sdk/go/internal/sim                          # 1,000 seeds
//	go test ./sdk/go/internal/sim -sim.seeds=20000         # more
//	go test ./sdk/go/internal/sim -run 'TestSimulation$' -v -sim.seed=S   # replay one, with a trace
//
// # The world
//
// Two users (alice, bob), three or four devices (a1, a2, b1, maybe b2), two
// or three gateways in front of one durable store (server.go), a group of
// everyone created beforehand. Each device's clock is skewed (±30 s), the
// server's too (±10 s). Users send text to their 1:1 conversation, their
// self-conversation, the common group and groups they know of; they issue
// offline commands (create a group, add and remove members, leave, mark
// read, to the bottom or partly, delete a message for themselves); they
// retry failed messages now and then. In half the runs one device is
// installed late, in the middle of the active phase: it catches up a long
// timeline and loads the conversation list in several pages while the
// others keep changing it. Busy periods alternate with quiet ones
// so that idle connections heartbeat (and learn, and meet NAT timeouts);
// devices are in the foreground or background.
//
// # The server model
//
// Auth by token and device; dedup on (user, device, client_msg_id)
// returning the original ack; gap-free conversation seqs and user
// timelines (write diffusion); per-device cursors that only move forward;
// Welcome with push_from = max(min(last_user_seq, head), cursor) for the
// same epoch; a gap-free Push stream with a window of unacknowledged events;
// SyncReq pages that acknowledge after_user_seq; GroupReq create, add,
// remove (owner or self) and members with membership messages in the
// group; Ping/Pong; a connection silent for 2.5 heartbeats is closed; GoAway
// on drain. The read state as the real server keeps it (readstate.go):
// ReadReq (positions move forward; a ReadSync to the reader and a 1:1
// peer), HideReq (idempotent; a Hidden event), delivered receipts appended
// to the sender when a device of the recipient acknowledges, coalesced
// group READ receipts (at most one per group per second, lost with a
// server restart), and conversation entries versioned by the event that
// changed them, answered by ConvListReq (by activity or since a version,
// in pages). Requests of a connection are processed one at a time in
// arrival order. A gateway restart loses its sessions and in-flight frames,
// never the store.
//
// Odd seeds run the server as documented, with devices that do not
// pipeline (Window 1). Even seeds run it with the order guard the SDK asks
// for (a send refused with a retryable error is refused fatally: the
// connection ends and nothing behind it is processed), with Window 1-8. See
// TestSenderOrderNeedsServerGuard for why.
//
// # Fault model
//
// Per seed, random latency (2-60 ms base plus jitter), duplication rate,
// dial failure and dial hang rates, fault rate and user activity. Faults
// strike at random times during the active phase (40 s of virtual time, 20 s
// under the race detector; -sim.active sets it):
//   - connection reset (in-flight frames lost; the device is told, or not);
//   - blackhole (nothing more gets through and nobody is told);
//   - latency spike on a connection (0.5-3 s): its frames reach the server
//     after those of the device's next connection (reordering across
//     reconnects), as do frames flushed by a client-side close;
//   - NAT timeout per network: a connection idle longer than its network's
//     NAT timeout (2.5-7 s) is silently dead;
//   - duplicated frames in either direction (never Hello);
//   - gateway crash (down 0.2-3 s), gateway drain with GoAway naming the
//     other gateways, whole-server restart, admission refusal
//     (RATE_LIMITED with retry_after at Hello), storage outage (requests
//     answer UNAVAILABLE; cursor writes are retried), storage hiccup (the
//     next 1-3 sends refused);
//   - app crash, and app crash right after a Persist was written but before
//     its frames left; the app restarts from exactly what its disk holds;
//   - network change (the old connection is blackholed) and
//     foreground/background switches.
//
// Then the heal phase: no new faults, everything up, apps in the
// foreground retrying what failed, until quiescence (every device
// connected, outbox empty but for refused messages, no pending command,
// whole timeline delivered, server cursors caught up, conversation lists
// loaded and synced with nothing stale, no group receipt pending) or 5
// virtual minutes.
//
// # Checks
//
// As the run goes (device.go, server.go): each timeline event the app
// shows (messages, reads, hidden, receipts) is user seq Delivered+1 and is
// exactly what the server's timeline holds there (no loss, no duplicate,
// no reorder: invariants 1, 2, 3, 5); the persisted cursor equals what
// the app has shown; no Hello, PushAck or SyncReq claims more than is on
// disk; no SendReq or command leaves before its record is on disk, and
// resends are identical to it; every ack matches the stored message; a device's messages are stored with
// increasing client_seq per conversation (invariant 4); the server refuses
// nothing the client should not have sent (a send overtaking its group's
// CREATE, for example); every input leaves Deadline in the future.
//
// At the end (check.go): every device showed its user's whole timeline and
// the server's cursor matches (1, 5, 6); every device's conversation list
// equals its user's entries on the server exactly (unread, read, join,
// peer read and delivered positions, versions; none stale), and the
// server's incremental entries equal their derivation from the timeline
// (6); every message the app sent was
// stored exactly once, in the order the app sent it (1, 2, 4), or was
// refused legitimately (and not because it was overtaken by its own
// device's leave); every command was answered exactly once, and the group
// changes the server applied for a device are its commands, each at most
// once, in order within each group (7); each clock offset is within its
// error bound of the truth (R9); learned heartbeats stay in bounds (R23).
//
// Not covered here: epoch changes and gaps in the push stream (an honest
// server never makes one); package core's unit tests cover both.
package sim
