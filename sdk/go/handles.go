// Handles the app holds: Outgoing (one message being sent) and Command
// (one offline command), and the queue that carries events to the app.
//
// Invariants of this file:
//   - Handles are updated only by the driver's loop, from the same events
//     the app receives on Client.Events, and in the same order; readers
//     take the handle's lock, so any goroutine may query them.
//   - A handle's Changed channel is closed at every state change and
//     replaced; Done is closed once, when the outcome is final (Sent; a
//     command's answer). Nothing is ever sent on them.
//   - The event queue never blocks the loop: it is unbounded, and its pump
//     goroutine hands events to the app in order; on Close the pump stops
//     at once (undelivered messages are in the local store).

package pim

import (
	"context"
	"sync"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

// Outgoing is the handle of one outgoing message. Its state moves
// Queued -> Sending -> Sent, or to Failed (from which RetryFailed moves it
// back to Queued). A handle lives as long as the Client; after a restart,
// Client.Pending returns handles for the messages still in the outbox.
type Outgoing struct {
	id, conv string
	stopped  <-chan struct{} // the client's loop ended

	mu       sync.Mutex
	state    SendState
	ack      *pimv1.SendAck
	err      error
	attempts int
	changed  chan struct{}
	done     chan struct{}
}

func newOutgoing(id, conv string, st SendState, stopped <-chan struct{}) *Outgoing {
	return &Outgoing{id: id, conv: conv, state: st, stopped: stopped,
		changed: make(chan struct{}), done: make(chan struct{})}
}

// ClientMsgID is the message's id (the server deduplicates on it).
func (o *Outgoing) ClientMsgID() string { return o.id }

// Conv is the message's conversation.
func (o *Outgoing) Conv() string { return o.conv }

// State is the current state.
func (o *Outgoing) State() SendState {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state
}

// Ack is the server's acknowledgement (seq, msg_id, server time) once Sent.
func (o *Outgoing) Ack() *pimv1.SendAck {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ack
}

// Err is why the message is Failed (ErrRetryBudget or a *ServerError); nil
// in other states.
func (o *Outgoing) Err() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// Attempts is how many times the message was transmitted in its current
// retry budget.
func (o *Outgoing) Attempts() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.attempts
}

// Changed returns a channel closed at the next state change.
func (o *Outgoing) Changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

// Done returns a channel closed once the message is Sent.
func (o *Outgoing) Done() <-chan struct{} { return o.done }

// Wait waits until the message is Sent (nil) or Failed (its error), the
// context ends, or the client is closed (ErrClosed).
func (o *Outgoing) Wait(ctx context.Context) error {
	for {
		o.mu.Lock()
		st, err, ch := o.state, o.err, o.changed
		o.mu.Unlock()
		switch st {
		case Sent:
			return nil
		case Failed:
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-o.stopped:
			return ErrClosed
		}
	}
}

func (o *Outgoing) update(e core.SendStateEvent) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state == Sent {
		return
	}
	o.state, o.attempts = e.State, e.Attempts
	o.err = nil
	switch e.State {
	case Sent:
		o.ack = e.Ack
		close(o.done)
	case Failed:
		o.err = e.Err
	}
	close(o.changed)
	o.changed = make(chan struct{})
}

// Command is the handle of one offline command (a group operation, a read
// mark, a hide, a settings change). It is stored durably and replayed
// after reconnects and restarts until the server answers; the answer also
// arrives as a CommandResultEvent.
type Command struct {
	id      uint64
	group   string
	stopped <-chan struct{}
	done    chan struct{}

	mu       sync.Mutex
	resp     *pimv1.Frame
	err      error
	attempts int
}

func newCommand(id uint64, group string, stopped <-chan struct{}) *Command {
	return &Command{id: id, group: group, stopped: stopped, done: make(chan struct{})}
}

// ID is the command's id (CommandResultEvent.ID).
func (c *Command) ID() uint64 { return c.id }

// Group is the group the command concerns (for CreateGroup, the new
// group's id, known at once so the app can send in it right away).
func (c *Command) Group() string { return c.group }

// Conv is the conversation the command concerns ("" for settings): the
// same as Group for group commands.
func (c *Command) Conv() string { return c.group }

// Response is the server's answer once the command succeeded (a GroupResp,
// ReadResp, HideResp or SettingsResp frame), or nil.
func (c *Command) Response() *pimv1.Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resp
}

// Done returns a channel closed when the server has answered.
func (c *Command) Done() <-chan struct{} { return c.done }

// Err is the server's refusal once answered (a *ServerError), or nil.
func (c *Command) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// GroupResp is the server's answer to a group command once it succeeded.
func (c *Command) GroupResp() *pimv1.GroupResp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resp.GetGroupResp()
}

// Wait waits for the server's answer and returns its refusal, if any.
func (c *Command) Wait(ctx context.Context) error {
	select {
	case <-c.done:
		return c.Err()
	case <-ctx.Done():
		return ctx.Err()
	case <-c.stopped:
		select {
		case <-c.done:
			return c.Err()
		default:
			return ErrClosed
		}
	}
}

func (c *Command) finish(e core.CommandResultEvent) {
	c.mu.Lock()
	c.resp, c.err, c.attempts = e.Response, e.Err, e.Attempts
	c.mu.Unlock()
	close(c.done)
}

// eventQueue carries events from the loop to the app without ever blocking
// the loop.
type eventQueue struct {
	mu    sync.Mutex
	items []Event
	wake  chan struct{} // capacity 1
}

func newEventQueue() *eventQueue { return &eventQueue{wake: make(chan struct{}, 1)} }

func (q *eventQueue) push(evs ...Event) {
	if len(evs) == 0 {
		return
	}
	q.mu.Lock()
	q.items = append(q.items, evs...)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pump hands events to out in order until quit; then it closes out.
func (q *eventQueue) pump(out chan<- Event, quit <-chan struct{}) {
	defer close(out)
	for {
		q.mu.Lock()
		batch := q.items
		q.items = nil
		q.mu.Unlock()
		for _, ev := range batch {
			select {
			case out <- ev:
			case <-quit:
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-q.wake:
		case <-quit:
			return
		}
	}
}
