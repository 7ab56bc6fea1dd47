// Reconnection backoff: full jitter after failures, the server's hint after
// a refusal that carries one.
//
// Invariants of this file:
//   - FullJitter never returns a negative delay nor one at or above
//     min(cap, base*2^failures) (and never panics on overflow).
//   - HintDelay(hint) is in [hint, hint + min(hint/HintJitterDiv,
//     HintJitterMax)): the server's retry_after plus a little jitter, never
//     less than the hint; 0 for a hint <= 0.
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

// The jitter added to a server's retry_after hint: at most 1/HintJitterDiv
// of the hint, and never more than HintJitterMax.
const (
	HintJitterDiv = 10
	HintJitterMax = time.Second
)

// HintDelay is how long to wait after the server (or the LBS) said "retry
// after hint": the hint plus a little jitter, so that clients the server
// gave the same hint do not come back in the same millisecond. The server
// already spreads its hints over its queue (internal/admission), so the
// jitter stays small; and a hinted refusal is not a failure of the client's
// path, so the caller does not raise its backoff exponent for it.
func HintDelay(r *rand.Rand, hint time.Duration) time.Duration {
	if hint <= 0 {
		return 0
	}
	j := min(hint/HintJitterDiv, HintJitterMax)
	if j <= 0 {
		return hint
	}
	return hint + time.Duration(r.Int64N(int64(j)))
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
