// Package admission decides, cheaply and before any expensive work, whether a
// node takes on more: a new connection, a login, a send (R17). It is made of
// small parts with one job each, all driven by an explicit clock (every
// decision takes `now`), so that tests enforce limits exactly with a fake
// clock:
//
//   - Bucket (bucket.go): a token bucket (GCRA), exact in integer
//     nanoseconds.
//   - Keyed (keyed.go): one bucket per key (user, source IP) in bounded
//     memory.
//   - Spreader (spread.go): jittered retry_after hints that place refused
//     clients in a virtual queue, so they come back at the rate the node
//     takes them, each at a random time.
//   - Shedder (shed.go): load shedding on the send pipeline's depth and
//     latency.
//   - Controller (controller.go): the policy that combines them for the
//     gateway.
//
// Invariants of this file:
//   - A Bucket with rate r per second and burst b allows, over any interval
//     [t, t+d] of its clock, at most b + floor(d*r) events, and never refuses
//     an event that this bound allows (GCRA: it tracks the theoretical
//     arrival time, so refused events cost nothing).
//   - A refused Allow reports how long until the next token exists (> 0).
//   - A Bucket with rate <= 0 is unlimited.
//   - Times are handled as offsets from the bucket's origin, so a clock with
//     a monotonic reading stays monotonic and a fake clock works unchanged.
package admission

import (
	"math"
	"sync"
	"time"
)

// Limit is a rate and a burst. Rate <= 0 means unlimited.
type Limit struct {
	Rate  float64 // events per second
	Burst int     // events allowed at once (at least 1 when Rate > 0)
}

// Unlimited reports whether l limits nothing.
func (l Limit) Unlimited() bool { return l.Rate <= 0 }

// interval is the time between tokens, at least 1 ns.
func (l Limit) interval() int64 {
	if l.Rate <= 0 {
		return 0
	}
	iv := math.Round(float64(time.Second) / l.Rate)
	return int64(max(iv, 1))
}

// tolerance is how far ahead of now the theoretical arrival time may be for
// an event to be allowed: (burst-1) intervals.
func (l Limit) tolerance() int64 {
	return int64(max(l.Burst, 1)-1) * l.interval()
}

// gcra decides one event at now (ns since the origin) for a bucket whose
// theoretical arrival time is *tat. It returns 0 if allowed (and advances
// *tat), else the wait until an event would be allowed.
func gcra(l Limit, tat *int64, now int64) time.Duration {
	iv := l.interval()
	t := max(*tat, now)
	if over := t - now - l.tolerance(); over > 0 {
		return time.Duration(over)
	}
	*tat = t + iv
	return 0
}

// full reports whether a bucket with theoretical arrival time tat has all
// its burst available at now (it is then equivalent to a fresh bucket).
func full(tat, now int64) bool { return tat <= now }

// Bucket is a token bucket safe for concurrent use.
type Bucket struct {
	l      Limit
	origin time.Time

	mu  sync.Mutex
	tat int64 // theoretical arrival time, ns since origin
}

// NewBucket returns a full bucket for l whose clock starts at origin.
func NewBucket(l Limit, origin time.Time) *Bucket {
	return &Bucket{l: l, origin: origin}
}

// Limit returns the bucket's limit.
func (b *Bucket) Limit() Limit { return b.l }

// Allow takes a token at now if there is one. If not, it returns false and
// how long until there is one.
func (b *Bucket) Allow(now time.Time) (bool, time.Duration) {
	if b.l.Unlimited() {
		return true, 0
	}
	n := int64(now.Sub(b.origin))
	b.mu.Lock()
	defer b.mu.Unlock()
	if w := gcra(b.l, &b.tat, n); w > 0 {
		return false, w
	}
	return true, 0
}
