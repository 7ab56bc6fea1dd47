// Keyed limits: one token bucket per key (a user, a source IP).
//
// Invariants of this file:
//   - For any key, Allow enforces the Limit exactly as a Bucket would, as
//     long as the key's entry is kept (see below).
//   - Memory is bounded: at most MaxKeys entries (plus one per shard) are
//     held. An entry whose bucket is full again is equivalent to no entry and
//     is dropped first; only when every entry is busy is an arbitrary busy
//     one dropped, which can only ever let that key through more (its bucket
//     starts full again), never refuse anyone wrongly.
//   - Each shard has its own lock; no lock is held across shards.
package admission

import (
	"hash/maphash"
	"sync"
	"time"
)

// DefaultMaxKeys bounds a Keyed limiter's entries when none is given.
const DefaultMaxKeys = 100_000

const keyedShards = 16

// Keyed is a set of token buckets, one per key, safe for concurrent use.
type Keyed struct {
	l       Limit
	origin  time.Time
	seed    maphash.Seed
	perShrd int
	shards  [keyedShards]keyedShard
}

type keyedShard struct {
	mu sync.Mutex
	m  map[string]int64 // key -> theoretical arrival time (ns since origin)
}

// NewKeyed returns a keyed limiter holding at most maxKeys entries
// (DefaultMaxKeys if maxKeys <= 0).
func NewKeyed(l Limit, maxKeys int, origin time.Time) *Keyed {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	k := &Keyed{l: l, origin: origin, seed: maphash.MakeSeed(), perShrd: max(maxKeys/keyedShards, 1)}
	for i := range k.shards {
		k.shards[i].m = make(map[string]int64)
	}
	return k
}

// Limit returns the per-key limit.
func (k *Keyed) Limit() Limit { return k.l }

// Allow takes a token from key's bucket at now if there is one; otherwise it
// returns false and how long until there is one.
func (k *Keyed) Allow(key string, now time.Time) (bool, time.Duration) {
	if k.l.Unlimited() {
		return true, 0
	}
	n := int64(now.Sub(k.origin))
	s := &k.shards[maphash.String(k.seed, key)%keyedShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	tat, ok := s.m[key]
	if !ok && len(s.m) >= k.perShrd {
		s.evict(n, k.perShrd)
	}
	if w := gcra(k.l, &tat, n); w > 0 {
		return false, w
	}
	s.m[key] = tat
	return true, 0
}

// evict makes room: it drops every entry whose bucket is full again, and if
// that leaves the shard above 3/4 of its size, arbitrary entries until it
// does not (amortized O(1) per insertion).
func (s *keyedShard) evict(now int64, size int) {
	for key, tat := range s.m {
		if full(tat, now) {
			delete(s.m, key)
		}
	}
	for key := range s.m {
		if len(s.m) <= size*3/4 {
			break
		}
		delete(s.m, key)
	}
}

// Len is the number of entries held (for tests and metrics).
func (k *Keyed) Len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
