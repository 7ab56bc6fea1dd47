// The outbox: durable, per-conversation FIFO sending with pipelining,
// resend and a retry budget.
//
// Invariants of this file:
//   - An entry's client_msg_id, client_seq and client_time are fixed when
//     Send creates it, and it is persisted in the same Ready as its first
//     SendReq (so before it); every resend is byte-identical. The server's
//     dedup on (user, device, client_msg_id) makes resends harmless.
//   - One entry per client_msg_id: Send draws a fresh random one;
//     SendWithID (an id the app chose) never queues a second entry under
//     an id already in the outbox.
//   - Within a conversation, entries are transmitted in creation order, at
//     most Window in flight on a connection; after every reconnect the
//     whole unacknowledged window is transmitted again in the same order.
//     Since the server processes one connection's sends in order, the first
//     stored copy of each message is in creation order (sender order,
//     invariant 4).
//   - A message whose retry budget runs out becomes Failed and keeps its
//     place: the later messages and commands of its conversation wait
//     behind it (Queued, not transmitted) until RetryFailed resumes it or
//     Discard drops it. Nothing ever overtakes a message that may still be
//     stored. A message the server refused (a non-retryable error: nothing
//     stored) does not block; RetryFailed sends it again at the end of its
//     conversation.
//   - A message of a conversation is not transmitted while an older command
//     of the same conversation is unanswered (and vice versa, commands.go).
//   - An entry leaves the outbox only when it is Sent (SendAck or its echo)
//     or discarded; a Failed entry that turns out to be stored becomes Sent.

package core

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Send queues a message to conv and returns its client_msg_id. It is
// persisted and sent as soon as possible; SendStateEvents follow.
func (c *Core) Send(now time.Time, conv string, typ pimv1.MessageType, body []byte) (string, error) {
	c.input(now)
	defer c.pump(now)
	if err := checkMessage(conv, typ, body); err != nil {
		return "", err
	}
	id := c.NewID()
	for c.byID[id] != nil { // only with a broken Rand
		id = c.NewID()
	}
	return c.enqueue(now, id, conv, typ, body), nil
}

// SendWithID is Send with a client_msg_id the caller chose (1-64 bytes of
// UTF-8) instead of a random one, e.g. one a script keeps so that running
// it again cannot store the message twice: the server stores one message
// per (user, device, client_msg_id) and answers a repeat with the first
// one's ack (Duplicate). If id is already in the outbox, nothing is queued
// and id is returned, provided the entry is the same message (conv, type,
// body); otherwise it is an error.
func (c *Core) SendWithID(now time.Time, conv, id string, typ pimv1.MessageType, body []byte) (string, error) {
	c.input(now)
	defer c.pump(now)
	if err := checkMessage(conv, typ, body); err != nil {
		return "", err
	}
	if len(id) == 0 || len(id) > maxIDLen || !utf8.ValidString(id) {
		return "", fmt.Errorf("core: client_msg_id must be 1-%d bytes of UTF-8, got %q", maxIDLen, id)
	}
	if e := c.byID[id]; e != nil {
		if e.Conv != conv || e.Type != typ || !bytes.Equal(e.Body, body) {
			return "", fmt.Errorf("core: client_msg_id %q is already in the outbox for another message", id)
		}
		return id, nil
	}
	return c.enqueue(now, id, conv, typ, body), nil
}

// checkMessage validates a message an app wants to send.
func checkMessage(conv string, typ pimv1.MessageType, body []byte) error {
	if !ValidConv(conv) {
		return fmt.Errorf("core: invalid conversation %q", conv)
	}
	switch typ {
	case pimv1.MessageType_MESSAGE_TYPE_TEXT:
		if !utf8.Valid(body) {
			return errors.New("core: text body is not valid UTF-8")
		}
	case pimv1.MessageType_MESSAGE_TYPE_BINARY:
	default:
		return fmt.Errorf("core: message type %v cannot be sent", typ)
	}
	if len(body) == 0 || len(body) > MaxBody {
		return fmt.Errorf("core: body must be 1-%d bytes, got %d", MaxBody, len(body))
	}
	return nil
}

// enqueue appends a new outbox entry with id (not in the outbox).
func (c *Core) enqueue(now time.Time, id, conv string, typ pimv1.MessageType, body []byte) string {
	e := &entry{OutboxEntry: OutboxEntry{
		ClientMsgID: id,
		Conv:        conv,
		Type:        typ,
		Body:        slices.Clone(body),
		ClientTime:  c.ServerNow(now).UnixMilli(),
		ClientSeq:   c.meta.NextClientSeq,
		Order:       c.meta.NextOrder,
		Created:     now,
		Since:       now,
		State:       Queued,
	}}
	c.meta.NextClientSeq++
	c.meta.NextOrder++
	c.dirtyMeta()
	c.outbox = append(c.outbox, e)
	c.byID[e.ClientMsgID] = e
	c.dirtyEntry(e.ClientMsgID)
	c.emitState(e, nil, nil)
	return e.ClientMsgID
}

// SendTo queues a 1:1 message to user (the conversation DirectConv(User, user)).
func (c *Core) SendTo(now time.Time, user string, typ pimv1.MessageType, body []byte) (string, error) {
	if !validID(user) {
		c.input(now)
		c.pump(now)
		return "", fmt.Errorf("core: invalid user %q", user)
	}
	return c.Send(now, DirectConv(c.cfg.User, user), typ, body)
}

// RetryFailed gives a failed message a fresh retry budget. If its budget
// had run out, the failed messages before it in its conversation are
// retried too (they must go first), and it resumes in place; if the server
// had refused it, it is sent again at the end of its conversation, with the
// same client_msg_id.
func (c *Core) RetryFailed(now time.Time, id string) error {
	c.input(now)
	defer c.pump(now)
	e := c.byID[id]
	if e == nil || e.State != Failed {
		return fmt.Errorf("core: %q is not a failed message", id)
	}
	if e.Rejected() {
		i := slices.Index(c.outbox, e)
		c.outbox = append(slices.Delete(c.outbox, i, i+1), e)
		e.Order = c.meta.NextOrder
		e.ClientSeq = c.meta.NextClientSeq
		c.meta.NextOrder++
		c.meta.NextClientSeq++
		c.dirtyMeta()
		c.requeue(now, e)
	} else {
		for _, x := range c.outbox {
			if x.Conv == e.Conv && x.Order <= e.Order && x.State == Failed && !x.Rejected() {
				c.requeue(now, x)
			}
		}
		c.resumeBehind(now, e)
	}
	return nil
}

// Discard drops a failed message from the outbox. If it had been stored
// after all (its budget ran out but a copy got through), it still appears
// in the timeline, as an Own message with no outbox entry.
func (c *Core) Discard(now time.Time, id string) error {
	c.input(now)
	defer c.pump(now)
	e := c.byID[id]
	if e == nil || e.State != Failed {
		return fmt.Errorf("core: %q is not a failed message", id)
	}
	c.remove(e)
	c.resumeBehind(now, e)
	return nil
}

func (c *Core) requeue(now time.Time, e *entry) {
	e.State = Queued
	e.FailCode, e.FailMsg = 0, ""
	e.Since, e.Attempts = now, 0
	e.sentOn, e.notBefore = 0, time.Time{}
	c.dirtyEntry(e.ClientMsgID)
	c.emitState(e, nil, nil)
}

// resumeBehind gives a fresh budget to the messages that waited behind e
// (up to the next failed one), now that e no longer blocks them.
func (c *Core) resumeBehind(now time.Time, e *entry) {
	for _, x := range c.outbox {
		if x.Conv != e.Conv || x.Order <= e.Order || x.Rejected() {
			continue
		}
		if x.State == Failed {
			return
		}
		x.Since, x.Attempts = now, 0
		c.dirtyEntry(x.ClientMsgID)
	}
}

func (c *Core) remove(e *entry) {
	if i := slices.Index(c.outbox, e); i >= 0 {
		c.outbox = slices.Delete(c.outbox, i, i+1)
	}
	delete(c.byID, e.ClientMsgID)
	c.dirtyEntry(e.ClientMsgID)
}

func (c *Core) emitState(e *entry, ack *pimv1.SendAck, err error) {
	c.emit(SendStateEvent{
		ClientMsgID: e.ClientMsgID, Conv: e.Conv, State: e.State, Ack: ack, Err: err, Attempts: e.Attempts,
	})
}

// commandBarrier returns, per conversation, the order of its oldest
// pending command.
func (c *Core) commandBarrier() map[string]uint64 {
	var b map[string]uint64
	for _, cm := range c.cmds {
		if cm.Conv == "" {
			continue
		}
		if b == nil {
			b = make(map[string]uint64)
		}
		if _, ok := b[cm.Conv]; !ok {
			b[cm.Conv] = cm.Order
		}
	}
	return b
}

// outboxPump transmits what the window allows, conversation by conversation
// in creation order.
func (c *Core) outboxPump(now time.Time) {
	if len(c.outbox) == 0 {
		return
	}
	barrier := c.commandBarrier()
	blocked := make(map[string]bool)
	inflight := make(map[string]int)
	conn := c.cn.conn
	for _, e := range slices.Clone(c.outbox) {
		if e.Rejected() || blocked[e.Conv] {
			continue
		}
		switch {
		case e.State == Failed:
			blocked[e.Conv] = true
		case e.sentOn == conn:
			inflight[e.Conv]++
		case now.Before(e.notBefore), inflight[e.Conv] >= c.cfg.Window:
			blocked[e.Conv] = true
		case hasBarrier(barrier, e.Conv, e.Order):
			blocked[e.Conv] = true
		case c.exhausted(e, now):
			c.fail(now, e)
			blocked[e.Conv] = true
		default:
			c.transmit(now, e)
			inflight[e.Conv]++
		}
	}
}

func hasBarrier(b map[string]uint64, conv string, order uint64) bool {
	o, ok := b[conv]
	return ok && o < order
}

func (c *Core) exhausted(e *entry, now time.Time) bool {
	return e.Attempts >= c.cfg.MaxAttempts || now.Sub(e.Since) >= c.cfg.MaxSendAge
}

func (c *Core) transmit(now time.Time, e *entry) {
	e.Attempts++
	e.sentOn = c.cn.conn
	if e.State != Sending {
		e.State = Sending
		c.emitState(e, nil, nil)
	}
	c.dirtyEntry(e.ClientMsgID)
	r := c.reqs.add(&request{kind: reqSend, sent: now, deadline: now.Add(c.cfg.SendTimeout), entry: e})
	c.write(now, &pimv1.Frame{RequestId: r.id, Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
		ClientMsgId: e.ClientMsgID,
		Conv:        e.Conv,
		Type:        e.Type,
		Body:        e.Body,
		ClientTime:  e.ClientTime,
		ClientSeq:   e.ClientSeq,
	}}})
}

// fail marks e failed because its budget ran out; the later messages of its
// conversation now wait behind it.
func (c *Core) fail(now time.Time, e *entry) {
	e.State = Failed
	e.FailCode = pimv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	e.FailMsg = ErrRetryBudget.Error()
	e.sentOn = 0
	c.dirtyEntry(e.ClientMsgID)
	c.emitState(e, nil, ErrRetryBudget)
	for _, x := range c.outbox {
		if x.Conv == e.Conv && x.Order > e.Order && x.State == Sending {
			x.State = Queued
			c.dirtyEntry(x.ClientMsgID)
			c.emitState(x, nil, nil)
		}
	}
}

// markSent records that e was stored.
func (c *Core) markSent(now time.Time, e *entry, ack *pimv1.SendAck) {
	wasFailed := e.State == Failed && !e.Rejected()
	c.remove(e)
	e.State = Sent
	c.emitState(e, ack, nil)
	if wasFailed {
		c.resumeBehind(now, e)
	}
}

func (c *Core) onSendAck(now time.Time, r *request, ack *pimv1.SendAck) {
	id := ack.GetClientMsgId()
	if id == "" {
		id = r.entry.ClientMsgID
	}
	if e := c.byID[id]; e != nil {
		c.markSent(now, e, ack)
	}
}

func (c *Core) onSendError(now time.Time, r *request, se *ServerError) {
	e := c.byID[r.entry.ClientMsgID]
	if e == nil || e != r.entry || e.Rejected() {
		return
	}
	if se.retryable() {
		if e.State != Failed {
			e.notBefore = now.Add(max(se.RetryAfter, DefaultRetryAfter))
			e.sentOn = 0
		}
		return
	}
	// Refused: nothing was stored. (A message whose budget had run out
	// learns it was not stored, and stops blocking its conversation.)
	wasFailed := e.State == Failed
	e.State = Failed
	e.FailCode = se.Code
	e.FailMsg = se.Message
	e.sentOn = 0
	c.dirtyEntry(e.ClientMsgID)
	c.emitState(e, nil, se)
	if wasFailed {
		c.resumeBehind(now, e)
	}
}

// sendTimedOut resends a send that got no answer in time (same id), or
// fails it when its budget is spent.
func (c *Core) sendTimedOut(now time.Time, r *request) {
	e := r.entry
	if c.byID[e.ClientMsgID] != e || e.sentOn != c.cn.conn || e.State == Failed {
		return
	}
	e.sentOn = 0 // outboxPump transmits it again, or fails it
}

// outboxTick fails messages that waited longer than MaxSendAge, and forgets
// retry_after pauses that are over.
func (c *Core) outboxTick(now time.Time) {
	blocked := make(map[string]bool)
	for _, e := range slices.Clone(c.outbox) {
		if !e.notBefore.IsZero() && !now.Before(e.notBefore) {
			e.notBefore = time.Time{}
		}
		if e.Rejected() || blocked[e.Conv] {
			continue
		}
		if e.State == Failed {
			blocked[e.Conv] = true
			continue
		}
		if now.Sub(e.Since) >= c.cfg.MaxSendAge {
			c.fail(now, e)
			blocked[e.Conv] = true
		}
	}
}

func (c *Core) outboxDeadlines(at func(time.Time)) {
	blocked := make(map[string]bool)
	for _, e := range c.outbox {
		if e.Rejected() || blocked[e.Conv] {
			continue
		}
		if e.State == Failed {
			blocked[e.Conv] = true
			continue
		}
		at(e.Since.Add(c.cfg.MaxSendAge))
		if c.cn.phase == phaseActive && e.sentOn != c.cn.conn {
			at(e.notBefore)
		}
	}
}
