// Package bench is the machinery behind `pim bench`: whole-system benchmarks
// of a real PIM server over real sockets, each with a correctness check.
//
// The pieces are shared by every benchmark so that later ones (the
// avalanche `storm`, fault injection) plug into the same frame:
//
//   - Target (target.go): where the server is and how to get tokens for it;
//     Spawn (spawn.go) starts a fresh `pim serve` on a temporary data dir and
//     free ports and stops it with SIGTERM at the end.
//   - Meter (measure.go): CPU seconds of the server, of the load generator
//     (this process and its workers) and of the whole machine over a measured
//     phase, from /proc; RSS sampling and peak RSS (proc.go).
//   - Conn (rawconn.go, frames.go): a lean protocol client (one goroutine
//     or none per connection, hand-encoded hot frames, byte counting), so the
//     load generator leaves as much of the shared CPU as it can to the server.
//   - Checker (check.go): the invariant check of one receiving device: lost,
//     duplicated, out of order.
//   - Histogram (hist.go): log-linear latency histogram (under 1% error).
//   - Report (report.go): the common JSON fields and the human summary;
//     Progress (progress.go): the live progress line.
//
// The benchmarks are RunConns (conns.go), RunE2E (e2e.go), RunGroup
// (group.go) and RunSync (sync.go), and RunE2EFaults (faults.go): 1:1
// traffic between Go SDK devices while the spawned server is killed and
// restarted in place (Spawned.Kill, Spawned.Restart) and connections are cut
// through internal/faultproxy. Each returns a result whose JSON fields are
// documented in docs/benchmarks.md.
//
// Invariants: a benchmark never leaves a process it started running (a
// spawned server gets SIGTERM, then SIGKILL after a grace period; workers are
// killed when their stdin closes); traffic only ever goes to the target's
// address; every benchmark that sends messages checks every acknowledged
// message is delivered exactly once and in order before it reports success.
package bench
