package client

// The reader goroutine is the only reader of the transport. Invariants: it
// never blocks on a consumer (responses go to 1-buffered channels, events
// to an unbounded queue, GoAway is dropped if one is already waiting), so a
// slow consumer cannot stall responses; a fatal server Error ends the
// connection with that error as the terminal error.

import (
	"fmt"

	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func (c *Conn) readLoop() {
	defer c.wg.Done()
	for {
		f := new(pimv1.Frame)
		if err := c.t.read(f); err != nil {
			if isOrderlyEnd(err) {
				c.fail(ErrServerClosed)
			} else {
				c.fail(fmt.Errorf("client: connection lost: %w", err))
			}
			return
		}
		if !c.dispatch(f) {
			return
		}
	}
}

// dispatch handles one frame from the server; false ends the reader.
func (c *Conn) dispatch(f *pimv1.Frame) bool {
	switch b := f.Body.(type) {
	case *pimv1.Frame_Error:
		e := errFromProto(b.Error)
		if f.RequestId != 0 {
			c.deliver(f.RequestId, result{err: e})
		} else if !b.Error.Fatal {
			c.log.Debug("client: unsolicited server error", "code", e.Code, "message", e.Msg)
		}
		if b.Error.Fatal {
			c.fail(e)
			return false
		}
	case *pimv1.Frame_Push:
		if !c.opts.DiscardPushes {
			c.pushes.add(b.Push.Events)
		}
	case *pimv1.Frame_GoAway:
		select {
		case c.goAway <- b.GoAway:
		default:
		}
	default:
		if f.RequestId == 0 {
			c.log.Debug("client: dropped unsolicited frame", "body", bodyName(f))
			return true
		}
		c.deliver(f.RequestId, result{f: f})
	}
	return true
}

// deliver hands r to the request id waits on, if it still waits.
func (c *Conn) deliver(id uint64, r result) {
	c.mu.Lock()
	ch, ok := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if !ok {
		c.log.Debug("client: dropped response to no pending request", "request_id", id)
		return
	}
	ch <- r
}

// errFromProto turns a wire Error into the *errcode.Error callers see.
func errFromProto(e *pimv1.Error) *errcode.Error {
	msg := e.Message
	if msg == "" {
		msg = e.Code.String()
	}
	return &errcode.Error{Code: e.Code, Msg: msg, RetryAfter: e.RetryAfterMs}
}

// bodyName names a frame's body type for messages ("empty" for none).
func bodyName(f *pimv1.Frame) string {
	if f == nil || f.Body == nil {
		return "empty frame"
	}
	return fmt.Sprintf("%T", f.Body)[len("*pimv1.Frame_"):]
}
