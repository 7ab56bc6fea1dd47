package client

// pushQueue hands pushed events from the reader to the Pushes channel without
// ever blocking the reader. Invariants: events leave in the order they were
// added; after end, the events already added are still delivered, then the
// channel is closed; a stop signal closes the channel at once.

import (
	"sync"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

type pushQueue struct {
	mu    sync.Mutex
	evs   []*pimv1.Event
	ended bool
	wake  chan struct{} // 1-buffered doorbell
}

func newPushQueue() *pushQueue { return &pushQueue{wake: make(chan struct{}, 1)} }

func (q *pushQueue) add(evs []*pimv1.Event) {
	q.mu.Lock()
	q.evs = append(q.evs, evs...)
	q.mu.Unlock()
	q.ring()
}

func (q *pushQueue) end() {
	q.mu.Lock()
	q.ended = true
	q.mu.Unlock()
	q.ring()
}

func (q *pushQueue) ring() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pump moves events to out until the queue has ended and drained, or stop
// is closed; then it closes out.
func (q *pushQueue) pump(out chan<- *pimv1.Event, stop <-chan struct{}) {
	defer close(out)
	for {
		q.mu.Lock()
		batch, ended := q.evs, q.ended
		q.evs = nil
		q.mu.Unlock()
		for _, ev := range batch {
			select {
			case out <- ev:
			case <-stop:
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		if ended {
			return
		}
		select {
		case <-q.wake:
		case <-stop:
			return
		}
	}
}
