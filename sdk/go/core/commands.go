// Offline commands (R22, invariant 7): requests the user made, possibly
// while offline, replayed in order after reconnecting until the server
// answers.
//
// A command is a request Frame body (its kind) with its payload, kept
// marshaled in the outbox-like command queue: group operations, reads,
// hides ("delete for me") and settings. Supporting a new kind means adding
// a case to commandConv: which body types are commands, and which
// conversation they concern. Every kind must be safe to apply twice (a
// dedup key, or an idempotent request).
//
// Invariants of this file:
//   - Commands of one conversation are transmitted in creation order, each
//     only once the previous one is answered (a success, or a refusal that
//     is final); commands of different conversations keep creation order
//     unless one conversation is blocked (see below), in which case the
//     others go ahead. One command is in flight at a time. Retryable
//     refusals (RATE_LIMITED, UNAVAILABLE, INTERNAL: nothing was applied)
//     are retried after retry_after.
//   - A command is never transmitted twice on one connection (the server
//     answers a connection's requests in order, so waiting is enough); after
//     a reconnect or restart it is transmitted again with the same
//     client_req_id (GroupReq), which the server deduplicates, and not
//     sooner than CommandQuarantine after its previous transmission, so
//     that a copy still in flight on the old connection has been processed
//     first and cannot land after a later command.
//   - A command concerning conversation C waits for every older message of
//     C still in the outbox, failed ones included (they keep their place),
//     except those the server refused; newer messages of C wait for it
//     (outbox.go). Within a conversation, messages and commands take effect
//     in the order the app issued them (create a group, then send in it;
//     send a goodbye, then leave).
//   - Each command yields exactly one CommandResultEvent, in the same Ready
//     that deletes it from the store.

package core

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// commandConv reports whether f's body is a command kind and which
// conversation it concerns.
func commandConv(f *pimv1.Frame) (conv string, ok bool) {
	switch b := f.GetBody().(type) {
	case *pimv1.Frame_GroupReq:
		return b.GroupReq.GetGroup(), true
	case *pimv1.Frame_ReadReq:
		// Read positions only move forward on the server, so a replayed
		// read is idempotent without a dedup key.
		return b.ReadReq.GetConv(), true
	case *pimv1.Frame_HideReq:
		// Hiding is idempotent on the server (a repeat writes nothing).
		return b.HideReq.GetConv(), true
	case *pimv1.Frame_SettingsReq:
		// Setting a value is idempotent; a SettingsReq without a field only
		// reads, which is not a command (Command refuses it).
		return "", true
	}
	return "", false
}

// Command queues an offline command: req is a request frame (its
// request_id is ignored) whose body is a command kind (GroupReq, ReadReq,
// HideReq, or a SettingsReq that sets a field).
// It returns the command's id, which its CommandResultEvent carries. A
// GroupReq CREATE without a group id gets a random one here (so that a
// retry cannot create a second group); name the group yourself (NewID) to
// send in it before the answer comes.
func (c *Core) Command(now time.Time, req *pimv1.Frame) (uint64, error) {
	c.input(now)
	defer c.pump(now)
	if _, ok := commandConv(req); !ok {
		return 0, fmt.Errorf("core: %T is not a command", req.GetBody())
	}
	if sr := req.GetSettingsReq(); sr != nil && sr.ReadReceipts == nil {
		return 0, errors.New("core: a SettingsReq that changes nothing is a read, not a command")
	}
	req = proto.Clone(req).(*pimv1.Frame)
	req.RequestId = 0
	if g := req.GetGroupReq(); g != nil {
		if g.Op == pimv1.GroupOp_GROUP_OP_CREATE && g.Group == "" {
			g.Group = "g:" + c.NewID()
		}
		// The server applies a change with a given client_req_id once, so a
		// command retried after a lost answer is not applied twice.
		if g.ClientReqId == "" {
			g.ClientReqId = c.NewID()
		}
	}
	conv, _ := commandConv(req)
	raw, err := proto.Marshal(req)
	if err != nil {
		return 0, fmt.Errorf("core: command: %w", err)
	}
	id := c.meta.NextOrder
	c.meta.NextOrder++
	c.dirtyMeta()
	c.cmds = append(c.cmds, &command{CommandEntry: CommandEntry{
		ID: id, Order: id, Request: raw, Conv: conv, Created: now,
	}})
	c.dirtyCommand(id)
	return id, nil
}

func (c *Core) command(id uint64) *command {
	for _, cm := range c.cmds {
		if cm.ID == id {
			return cm
		}
	}
	return nil
}

// commandReadyAt picks the next command to transmit and when it may go
// (nil: one is in flight, or every conversation's next command waits for
// messages).
func (c *Core) commandReadyAt() (*command, time.Time) {
	for _, cm := range c.cmds {
		if cm.sentOn == c.cn.conn {
			return nil, time.Time{}
		}
	}
	lanes := make(map[string]bool)
	for _, cm := range c.cmds {
		if lanes[cm.Conv] {
			continue
		}
		lanes[cm.Conv] = true
		if c.messagesBefore(cm.Conv, cm.Order) {
			continue
		}
		at := cm.notBefore
		if !cm.LastSent.IsZero() {
			if q := cm.LastSent.Add(c.cfg.CommandQuarantine); q.After(at) {
				at = q
			}
		}
		return cm, at
	}
	return nil, time.Time{}
}

// messagesBefore reports whether a message of conv older than order is
// still in the outbox (failed ones included, refused ones not).
func (c *Core) messagesBefore(conv string, order uint64) bool {
	if conv == "" {
		return false
	}
	for _, e := range c.outbox {
		if e.Order >= order {
			return false
		}
		if e.Conv == conv && !e.Rejected() {
			return true
		}
	}
	return false
}

func (c *Core) commandPump(now time.Time) {
	cm, at := c.commandReadyAt()
	if cm == nil || now.Before(at) {
		return
	}
	f := new(pimv1.Frame)
	if err := proto.Unmarshal(cm.Request, f); err != nil {
		// Cannot happen for a request Command marshaled; drop it rather
		// than block every later command.
		c.finishCommand(cm, nil, fmt.Errorf("core: corrupt command: %w", err))
		return
	}
	cm.Attempts++
	cm.LastSent = now
	cm.sentOn = c.cn.conn
	c.dirtyCommand(cm.ID)
	r := c.reqs.add(&request{kind: reqCommand, sent: now, deadline: now.Add(c.cfg.RequestTimeout), cmd: cm})
	f.RequestId = r.id
	c.write(now, f)
}

func (c *Core) onCommandAnswer(now time.Time, r *request, f *pimv1.Frame, se *ServerError) {
	cm := r.cmd
	if !slices.Contains(c.cmds, cm) {
		return
	}
	if se != nil && se.retryable() {
		cm.notBefore = now.Add(max(se.RetryAfter, DefaultRetryAfter))
		cm.sentOn = 0
		cm.LastSent = time.Time{} // answered: no copy left in flight
		c.dirtyCommand(cm.ID)
		return
	}
	if se != nil {
		c.finishCommand(cm, nil, se)
		return
	}
	c.finishCommand(cm, f, nil)
}

func (c *Core) finishCommand(cm *command, resp *pimv1.Frame, err error) {
	c.cmds = slices.DeleteFunc(c.cmds, func(x *command) bool { return x == cm })
	c.dirtyCommand(cm.ID)
	c.emit(CommandResultEvent{ID: cm.ID, Response: resp, Err: err, Attempts: cm.Attempts})
}

func (c *Core) commandDeadlines(at func(time.Time)) {
	if c.cn.phase != phaseActive {
		return
	}
	if cm, t := c.commandReadyAt(); cm != nil {
		at(t)
	}
}
