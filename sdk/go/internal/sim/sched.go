// The virtual clock and event queue of the simulation.
//
// Invariants of this file:
//   - Time only moves forward, to the time of the event being run; events
//     at the same time run in the order they were scheduled (a sequence
//     number breaks ties), so a run is a pure function of its seed.
//   - Nothing here sleeps or reads the real clock.

package sim

import (
	"container/heap"
	"time"
)

type simEvent struct {
	at  time.Time
	seq uint64
	fn  func()
}

type eventHeap []*simEvent

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*simEvent)) }
func (h *eventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// sched is a discrete-event scheduler over a virtual clock.
type sched struct {
	now   time.Time
	seq   uint64
	q     eventHeap
	steps int
}

func newSched(start time.Time) *sched { return &sched{now: start} }

// at runs fn at t (or now, if t is in the past).
func (s *sched) at(t time.Time, fn func()) {
	if t.Before(s.now) {
		t = s.now
	}
	s.seq++
	heap.Push(&s.q, &simEvent{at: t, seq: s.seq, fn: fn})
}

// after runs fn d from now.
func (s *sched) after(d time.Duration, fn func()) { s.at(s.now.Add(d), fn) }

// step runs the next event; it reports false when none is left or the next
// is after until.
func (s *sched) step(until time.Time) bool {
	if len(s.q) == 0 || s.q[0].at.After(until) {
		return false
	}
	e := heap.Pop(&s.q).(*simEvent)
	s.now = e.at
	s.steps++
	e.fn()
	return true
}
