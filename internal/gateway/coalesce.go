// Coalescing of identical reads: when many devices reconnect at once (a
// restart, a network coming back), push streams that need the same page of
// the same timeline at the same time (devices of one user with the same
// cursor, a device that reconnected twice) share one read instead of
// repeating it (R16: a mass reconnect must cost little).
//
// Logic.Session is deliberately not coalesced: its read must begin after
// the session subscribed to the bus (or an event stored in between would
// not be pushed until the next one), so only a read begun after the
// subscription could be shared, and that window is too small to matter.
//
// Invariants of this file:
//   - A result is shared read-only: callers must not modify it (the pump
//     never does; see push.go).
//   - A shared result may predate the caller's need (the call began before
//     the caller learned of newer events): callers treat it as a possibly
//     short page, and read alone if it is empty (push.go).
//   - A call ends with its function (also on panic); nothing is cached
//     after it.
package gateway

import (
	"errors"
	"sync"
)

// coalescer runs calls keyed by a string, one at a time per key.
type coalescer[T any] struct {
	mu    sync.Mutex
	calls map[string]*flight[T]
}

type flight[T any] struct {
	done chan struct{}
	val  T
	err  error
}

func newCoalescer[T any]() *coalescer[T] {
	return &coalescer[T]{calls: make(map[string]*flight[T])}
}

// do returns fn's result for key: from the call in progress for key if
// there is one (shared is then true), or from a new call.
func (c *coalescer[T]) do(key string, fn func() (T, error)) (val T, err error, shared bool) {
	c.mu.Lock()
	if f, ok := c.calls[key]; ok {
		c.mu.Unlock()
		<-f.done
		return f.val, f.err, true
	}
	f := &flight[T]{done: make(chan struct{}), err: errCoalescedPanic}
	c.calls[key] = f
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.calls, key)
		c.mu.Unlock()
		close(f.done) // also on panic: joiners see errCoalescedPanic
	}()
	f.val, f.err = fn()
	return f.val, f.err, false
}

// errCoalescedPanic is what joiners of a call whose function panicked get.
var errCoalescedPanic = errors.New("gateway: coalesced read panicked")
