// Jittered retry_after hints.
//
// When a node refuses clients because it takes only r per second, telling
// them all "retry after 1s" brings them back in one wave, and telling each a
// random time in a fixed window brings them back faster than r if they are
// many. A Spreader hands out places in a virtual queue instead: it keeps the
// debt, the number of refused clients still expected back (+1 per refusal,
// paid back at r per second, the rate at which the node takes them), and
// tells the k-th refused client to come back after k/r seconds plus a random
// jitter uniform in [0, Min). Refused clients then come back at about r per
// second in all, however many they are, each at a random time.
//
// Invariants of this file:
//   - Every hint is in [wait, wait + Max + Min): wait (the time until the
//     node could take one more) + the queue position min(debt/r, Max) + a
//     jitter uniform in [0, Min).
//   - The debt never goes negative and decays at exactly r per second of
//     the clock given.
//   - The only randomness is the Spreader's own generator (seedable), used
//     under its lock.
package admission

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Spread bounds when none are given.
const (
	DefaultSpreadMin = time.Second
	DefaultSpreadMax = time.Minute
)

// Spreader draws retry_after hints; it is safe for concurrent use.
type Spreader struct {
	rate     float64 // clients the node takes per second (<= 0: no queue, jitter only)
	min, max time.Duration

	mu   sync.Mutex
	rnd  *rand.Rand
	debt float64
	last time.Time
}

// NewSpreader returns a Spreader for a node taking rate clients per second,
// with jitter width min and queue positions capped at max (defaults for zero
// values), drawing from rnd (nil: randomly seeded).
func NewSpreader(rate float64, min, max time.Duration, rnd *rand.Rand) *Spreader {
	if min <= 0 {
		min = DefaultSpreadMin
	}
	if max <= 0 {
		max = DefaultSpreadMax
	}
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	return &Spreader{rate: rate, min: min, max: max, rnd: rnd}
}

// Refused records one refusal at now and returns its retry_after hint (see
// the file comment).
func (s *Spreader) Refused(now time.Time, wait time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.decayLocked(now)
	pos := s.queueLocked()
	s.debt++
	return max(wait, 0) + pos + time.Duration(s.rnd.Int64N(int64(s.min)))
}

// Queue is the queue position a refusal at now would get: how long the node
// needs to take the clients it refused (for tests and metrics).
func (s *Spreader) Queue(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.decayLocked(now)
	return s.queueLocked()
}

func (s *Spreader) decayLocked(now time.Time) {
	if !s.last.IsZero() && s.rate > 0 {
		if d := now.Sub(s.last); d > 0 {
			s.debt = max(s.debt-s.rate*d.Seconds(), 0)
		}
	}
	if now.After(s.last) {
		s.last = now
	}
}

func (s *Spreader) queueLocked() time.Duration {
	if s.rate <= 0 {
		return 0
	}
	return min(time.Duration(s.debt/s.rate*float64(time.Second)), s.max)
}

// Jitter returns a duration drawn uniformly from [base, base+spread) with
// rnd (spread <= 0: base).
func Jitter(rnd *rand.Rand, base, spread time.Duration) time.Duration {
	if spread <= 0 {
		return base
	}
	return base + time.Duration(rnd.Int64N(int64(spread)))
}

// Millis converts a retry_after hint to the wire's milliseconds, rounding
// up, at least 1 ms (0 means "no hint" on the wire), at most ~49 days.
func Millis(d time.Duration) uint32 {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return uint32(min(max(ms, 1), 1<<32-1))
}
