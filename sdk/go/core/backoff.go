// Reconnection backoff with full jitter.
//
// Invariants of this file:
//   - FullJitter never returns a negative delay nor one at or above
//     min(cap, base*2^failures) (and never panics on overflow).
//   - The only randomness is the *rand.Rand passed in.

package core

import (
	"math/rand/v2"
	"time"
)

// FullJitter returns a delay drawn uniformly from [0, min(cap, base*2^failures))
// (AWS's "full jitter"): after a server failure, its clients come back spread
// over the whole window instead of in waves (R16, R18).
func FullJitter(r *rand.Rand, base, cap time.Duration, failures int) time.Duration {
	ceil := backoffCeil(base, cap, failures)
	if ceil <= 0 {
		return 0
	}
	return time.Duration(r.Int64N(int64(ceil)))
}

// backoffCeil is min(cap, base*2^failures), overflow-safe.
func backoffCeil(base, cap time.Duration, failures int) time.Duration {
	if base <= 0 {
		return 0
	}
	if cap < base {
		cap = base
	}
	d := base
	for i := 0; i < failures; i++ {
		if d >= cap/2 {
			return cap
		}
		d *= 2
	}
	return min(d, cap)
}
