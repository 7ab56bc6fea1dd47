package bench

import "math/bits"

// Bitset is a growable set of small non-negative integers (message numbers).
type Bitset struct{ w []uint64 }

// Set adds n and reports whether it was already there.
func (b *Bitset) Set(n uint64) (was bool) {
	i := int(n / 64)
	if i >= len(b.w) {
		b.w = append(b.w, make([]uint64, max(i+1-len(b.w), len(b.w)))...)
	}
	m := uint64(1) << (n % 64)
	was = b.w[i]&m != 0
	b.w[i] |= m
	return was
}

// Has reports whether n is in the set.
func (b *Bitset) Has(n uint64) bool {
	i := int(n / 64)
	return i < len(b.w) && b.w[i]&(1<<(n%64)) != 0
}

// Count is the number of members.
func (b *Bitset) Count() int {
	c := 0
	for _, w := range b.w {
		c += bits.OnesCount64(w)
	}
	return c
}

// CountNotIn is the number of members of b that are not in o.
func (b *Bitset) CountNotIn(o *Bitset) int {
	c := 0
	for i, w := range b.w {
		if i < len(o.w) {
			w &^= o.w[i]
		}
		c += bits.OnesCount64(w)
	}
	return c
}

// Checker checks what one receiving device gets against the delivery
// invariants, event by event, as the events arrive on its connection. It is
// not safe for concurrent use (one per receiver goroutine).
//
// Every event is judged once, and counted at most once:
//   - duplicated: a benchmark message (sender, n) that this device already got;
//   - out of order: otherwise, if the event's user seq is not the one after
//     the previous event's (a gap or a step back in the device's stream), or
//     its conversation seq is not the one after the previous one this device
//     saw in that conversation (gap-free, increasing), or a benchmark message
//     arrives after a later message of the same sender (sender order).
//
// Lost messages are counted at the end (Lost): acknowledged to their sender
// but never seen here.
type Checker struct {
	// AllowGaps accepts a user seq that skips ahead (it must still grow):
	// for a stream that does not show every event, e.g. an SDK device's
	// MessageEvents when the SDK does not surface some event kinds.
	AllowGaps bool

	lastUserSeq uint64
	conv        map[string]*uint64
	senders     []senderSeen

	Delivered  int64 // distinct benchmark messages
	Duplicated int64
	OutOfOrder int64
	Events     int64 // every event, benchmark or not
}

type senderSeen struct {
	seen Bitset
	last uint64 // highest n seen + 1 (0: none yet)
}

// NewChecker returns a Checker for a stream that starts after pushFrom (the
// Welcome's push_from_user_seq).
func NewChecker(pushFrom uint64) *Checker {
	return &Checker{lastUserSeq: pushFrom, conv: make(map[string]*uint64)}
}

// Observe judges one event: its user seq, its conversation and conversation
// seq, and, for a benchmark message (bench true), its sender index and
// message number. It reports whether the event was a benchmark message
// delivered for the first time.
func (c *Checker) Observe(userSeq uint64, conv []byte, seq uint64, bench bool, sender int, n uint64) (fresh bool) {
	c.Events++
	if bench {
		for sender >= len(c.senders) {
			c.senders = append(c.senders, senderSeen{})
		}
		if c.senders[sender].seen.Set(n) {
			c.Duplicated++
			return false
		}
		c.Delivered++
	}
	bad := !c.follows(userSeq)
	c.lastUserSeq = max(c.lastUserSeq, userSeq)
	if p, ok := c.conv[string(conv)]; ok {
		if seq != *p+1 {
			bad = true
		}
		*p = max(*p, seq)
	} else {
		v := seq
		c.conv[string(conv)] = &v
	}
	if bench {
		s := &c.senders[sender]
		if n+1 < s.last {
			bad = true // a later message of this sender came first
		}
		s.last = max(s.last, n+1)
	}
	if bad {
		c.OutOfOrder++
	}
	return bench
}

// ObserveOther judges an event of the stream that is not a message (a read
// position, ...): only its user seq, which must follow the previous one.
func (c *Checker) ObserveOther(userSeq uint64) {
	c.Events++
	if !c.follows(userSeq) {
		c.OutOfOrder++
	}
	c.lastUserSeq = max(c.lastUserSeq, userSeq)
}

// follows reports whether userSeq may come after the last one seen.
func (c *Checker) follows(userSeq uint64) bool {
	if c.AllowGaps {
		return userSeq > c.lastUserSeq
	}
	return userSeq == c.lastUserSeq+1
}

// Seen returns the set of message numbers received from sender (nil if none).
func (c *Checker) Seen(sender int) *Bitset {
	if sender < 0 || sender >= len(c.senders) {
		return nil
	}
	return &c.senders[sender].seen
}

// Lost is the number of messages in acked (the numbers acknowledged to
// sender) that this device never received.
func (c *Checker) Lost(sender int, acked *Bitset) int {
	seen := c.Seen(sender)
	if seen == nil {
		return acked.Count()
	}
	return acked.CountNotIn(seen)
}
