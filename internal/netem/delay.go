package netem

// A delayLine holds chunks of bytes (TCP stream pieces or whole IP packets)
// for a fixed time before handing them on. Invariants: items leave in the
// order they entered (FIFO), and none leaves before its arrival time plus the
// delay in force when it arrived; a later change of the delay never reorders
// items (a shorter delay only lets later items wait behind earlier ones).
// The line holds at most its capacity: put either blocks (backpressure, for
// streams) or refuses (a full router queue, for packets).

import (
	"sync/atomic"
	"time"
)

type delayed struct {
	due time.Time
	b   []byte
}

type delayLine struct {
	delay atomic.Int64 // nanoseconds
	ch    chan delayed
}

func newDelayLine(capacity int, d time.Duration) *delayLine {
	l := &delayLine{ch: make(chan delayed, capacity)}
	l.setDelay(d)
	return l
}

func (l *delayLine) setDelay(d time.Duration) {
	if d < 0 {
		d = 0
	}
	l.delay.Store(int64(d))
}

func (l *delayLine) item(b []byte) delayed {
	return delayed{due: time.Now().Add(time.Duration(l.delay.Load())), b: b}
}

// put adds b, waiting while the line is full; false if stop closed first.
func (l *delayLine) put(b []byte, stop <-chan struct{}) bool {
	it := l.item(b)
	select {
	case l.ch <- it:
		return true
	case <-stop:
		return false
	}
}

// offer adds b if there is room; false means it was dropped.
func (l *delayLine) offer(b []byte) bool {
	select {
	case l.ch <- l.item(b):
		return true
	default:
		return false
	}
}

// close says no more items come; run returns once the line is empty.
// Only the single producer may call it, after its last put or offer.
func (l *delayLine) close() { close(l.ch) }

// run hands each item to out at its due time, in order, until the line is
// closed and empty (nil), out fails (its error), or stop is closed (nil).
func (l *delayLine) run(stop <-chan struct{}, out func([]byte) error) error {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		var it delayed
		var ok bool
		select {
		case it, ok = <-l.ch:
			if !ok {
				return nil
			}
		case <-stop:
			return nil
		}
		if wait := time.Until(it.due); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-stop:
				return nil
			}
		}
		if err := out(it.b); err != nil {
			return err
		}
	}
}
