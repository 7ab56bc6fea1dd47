package bench

import (
	"sync"
	"time"
)

// AckPolicy batches PushAcks as the SDK does (sdk/go/core: AckEvery,
// AckDelay): a device acknowledges once Every events are unacknowledged, or
// Delay after the first of them arrived.
type AckPolicy struct {
	Every int
	Delay time.Duration
}

// DefaultAckPolicy is the SDK's default.
var DefaultAckPolicy = AckPolicy{Every: 64, Delay: 500 * time.Millisecond}

// ackState is one device's PushAck batching. Its methods are safe for
// concurrent use (the reader and the ack ticker).
type ackState struct {
	mu      sync.Mutex
	last    uint64 // highest user seq received
	acked   uint64 // highest user seq acknowledged
	since   int64  // when the oldest unacknowledged event arrived (Unix ns), if pending
	pending bool
}

// seen records that every event up to seq arrived at now; it returns the
// user seq to acknowledge at once (0: none yet).
func (a *ackState) seen(seq uint64, now int64, p AckPolicy) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = max(a.last, seq)
	if a.last <= a.acked {
		return 0
	}
	if a.last-a.acked >= uint64(max(p.Every, 1)) {
		a.acked, a.pending = a.last, false
		return a.acked
	}
	if !a.pending {
		a.since, a.pending = now, true
	}
	return 0
}

// due returns the user seq to acknowledge because the oldest unacknowledged
// event has waited Delay (0: none).
func (a *ackState) due(now int64, p AckPolicy) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.pending || now-a.since < int64(p.Delay) || a.last <= a.acked {
		return 0
	}
	a.acked, a.pending = a.last, false
	return a.acked
}
