// A storm client's reconnect schedule: the SDK's own (sdk/go/core), or, to
// compare, the SDK's before a hinted refusal stopped raising its backoff
// exponent.
//
// Invariants of this file:
//   - BackoffSDK is sdk/go/core's connection manager (conn.go: lost and
//     connTick), computed by the SDK's own functions: after a failure
//     without a hint (a dial refused, reset or timed out, a refusal or a
//     connection ended without a retry_after) the next dial waits
//     core.FullJitter(base, cap, failures), then failures grows by one;
//     after a refusal with a retry_after it waits core.HintDelay(retry_after)
//     and failures is unchanged; after a GoAway, core.HintDelay(retry_after),
//     failures unchanged.
//   - BackoffDouble is the SDK before that change: every failure, refusals
//     with a retry_after included, waits max(full jitter, retry_after) and
//     raises failures; a GoAway waits exactly its retry_after.
//   - In both, failures resets when a connection stayed up healthyAfter.
//   - The only randomness is the client's seeded *rand.Rand.
package storm

import (
	"math/rand/v2"
	"time"

	"github.com/pim-project/pim/sdk/go/core"
)

// lossKind says how a dial or a connection ended (sdk/go/core's lossKind).
type lossKind uint8

const (
	lossFailure lossKind = iota // failed or refused; refused with a hint if retryAfter > 0
	lossGoAway                  // an orderly end: the GoAway's retry_after
)

// backoff is one client's reconnect schedule.
type backoff struct {
	policy       string // BackoffSDK or BackoffDouble
	base, cap    time.Duration
	healthyAfter time.Duration
	rnd          *rand.Rand
	failures     int // consecutive failures: the exponent
}

// up records that a connection was up for d: a healthy one resets failures.
func (b *backoff) up(d time.Duration) {
	if d >= b.healthyAfter {
		b.failures = 0
	}
}

// next returns the wait before the next dial after a loss of kind how
// (retryAfter: the server's hint, 0 if none) and updates failures.
func (b *backoff) next(how lossKind, retryAfter time.Duration) time.Duration {
	if b.policy == BackoffDouble {
		return b.nextDouble(how, retryAfter)
	}
	switch {
	case how == lossGoAway:
		return core.HintDelay(b.rnd, retryAfter)
	case retryAfter > 0: // the server's queue, not the client's backoff
		return core.HintDelay(b.rnd, retryAfter)
	}
	d := core.FullJitter(b.rnd, b.base, b.cap, b.failures)
	b.failures++
	return d
}

// nextDouble is next under BackoffDouble.
func (b *backoff) nextDouble(how lossKind, retryAfter time.Duration) time.Duration {
	if how == lossGoAway {
		return retryAfter
	}
	d := max(core.FullJitter(b.rnd, b.base, b.cap, b.failures), retryAfter)
	b.failures++
	return d
}
