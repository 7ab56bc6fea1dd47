// The Core type: construction, the Ready/Advance cycle, Tick and Deadline.
//
// Invariants of this file:
//   - The core does no I/O, starts no goroutine and never reads a clock:
//     time comes from the now argument of each input, randomness from
//     Config.Rand. The same inputs therefore give the same outputs.
//   - Every input method starts with tick(now), which handles what fell due,
//     and ends with pump(now), which emits whatever became possible; so
//     after any input Deadline() is after now. Outputs accumulate until
//     Ready/Advance hand them over.
//   - Between Ready and Advance no input may be called (it panics): the
//     Ready taken is exactly what Advance acknowledges.
//   - Dirty records are materialized at Ready time from the current values,
//     so a record changed several times is written once, in its last state;
//     likewise each conversation entry changed in a Ready yields one
//     ConversationEvent, after the Ready's other events.

package core

import (
	"cmp"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"slices"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Core is the client SDK's state machine. It is not safe for concurrent
// use: one goroutine (the driver's loop) owns it.
type Core struct {
	cfg Config
	rnd *rand.Rand

	// Persisted state (see State).
	meta   Meta
	outbox []*entry // by Order
	byID   map[string]*entry
	cmds   []*command // by Order
	hbRecs map[string]HeartbeatRecord
	convs  map[string]*ConvEntry // the conversation list (convlist.go)
	staleN int                   // entries in convs marked Stale

	cn   connMgr
	tl   timeline
	hb   heartbeat
	clk  clock
	reqs requests
	ls   listSync

	out     outputs
	inReady bool
}

// entry is an outbox entry with its in-memory sending state.
type entry struct {
	OutboxEntry
	sentOn    ConnID    // connection it was last transmitted on (0: none)
	notBefore time.Time // retry_after from the server
}

// command is a pending offline command with its in-memory state.
type command struct {
	CommandEntry
	sentOn    ConnID
	notBefore time.Time
}

// outputs accumulates what the next Ready carries.
type outputs struct {
	metaDirty bool
	outboxDty map[string]bool
	cmdDty    map[uint64]bool
	hbDty     map[string]bool
	convDty   map[string]bool
	convEv    []string // entries whose app-visible state changed, in order
	convEvSet map[string]bool
	convReset bool
	close     []ConnID
	frames    []*pimv1.Frame
	dial      *Dial
	reResolve bool
	events    []Event
}

// New returns a core resuming from st (State{} for a fresh install). The
// first dial is due at once: call Ready.
func New(cfg Config, st State) (*Core, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Core{
		cfg:    cfg,
		rnd:    cfg.Rand,
		meta:   st.Meta,
		byID:   make(map[string]*entry),
		hbRecs: make(map[string]HeartbeatRecord),
		convs:  make(map[string]*ConvEntry),
	}
	if c.rnd == nil {
		var seed [16]byte
		_, _ = crand.Read(seed[:])
		c.rnd = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	}
	c.resetOutputs()
	for _, e := range st.Outbox {
		e.Body = slices.Clone(e.Body)
		if e.State == Sent || e.State == 0 {
			e.State = Queued
		}
		en := &entry{OutboxEntry: e}
		c.outbox = append(c.outbox, en)
		c.byID[e.ClientMsgID] = en
		c.meta.NextOrder = max(c.meta.NextOrder, e.Order+1)
		c.meta.NextClientSeq = max(c.meta.NextClientSeq, e.ClientSeq+1)
	}
	slices.SortFunc(c.outbox, func(a, b *entry) int { return cmp.Compare(a.Order, b.Order) })
	for _, ce := range st.Commands {
		ce.Request = slices.Clone(ce.Request)
		c.cmds = append(c.cmds, &command{CommandEntry: ce})
		c.meta.NextOrder = max(c.meta.NextOrder, ce.Order+1)
	}
	slices.SortFunc(c.cmds, func(a, b *command) int { return cmp.Compare(a.Order, b.Order) })
	for _, h := range st.Heartbeats {
		c.hbRecs[h.Network] = h
	}
	for _, e := range st.Convs {
		e = e.clone()
		c.convs[e.Conv] = &e
		if e.Stale {
			c.staleN++
		}
	}
	c.meta.NextOrder = max(c.meta.NextOrder, 1)
	c.meta.NextClientSeq = max(c.meta.NextClientSeq, 1)
	c.clk = clock{n: cfg.ClockSamples}
	if st.Meta.Clock.valid() {
		c.clk.samples = []ClockSample{st.Meta.Clock}
	}
	c.hb = newHeartbeat(cfg.Heartbeat, c.hbRecord(""), true)
	c.reqs = requests{pending: make(map[uint64]*request)}
	c.cn = connMgr{token: cfg.Token, servers: cfg.Servers, dialAt: time.Time{}, phase: phaseWaiting}
	return c, nil
}

func (c *Core) resetOutputs() {
	c.out = outputs{
		outboxDty: make(map[string]bool),
		cmdDty:    make(map[uint64]bool),
		hbDty:     make(map[string]bool),
		convDty:   make(map[string]bool),
		convEvSet: make(map[string]bool),
	}
}

// HasReady reports whether Ready has anything to hand over.
func (c *Core) HasReady() bool {
	o := &c.out
	return o.metaDirty || len(o.outboxDty) > 0 || len(o.cmdDty) > 0 || len(o.hbDty) > 0 ||
		len(o.convDty) > 0 || o.convReset ||
		len(o.close) > 0 || len(o.frames) > 0 || o.dial != nil || o.reResolve || len(o.events) > 0
}

// Ready returns what to do now (see Ready). The caller must carry it out
// and call Advance before calling any input method.
func (c *Core) Ready() Ready {
	c.inReady = true
	o := &c.out
	rd := Ready{
		Close:     slices.Clone(o.close),
		Conn:      c.cn.conn,
		Frames:    slices.Clone(o.frames),
		Dial:      o.dial,
		ReResolve: o.reResolve,
		Events:    slices.Clone(o.events),
	}
	if o.metaDirty {
		m := c.meta
		rd.Persist.Meta = &m
	}
	for _, id := range sortedKeys(o.outboxDty) {
		if e, ok := c.byID[id]; ok {
			oe := e.OutboxEntry
			oe.Body = slices.Clone(oe.Body)
			rd.Persist.PutOutbox = append(rd.Persist.PutOutbox, oe)
		} else {
			rd.Persist.DeleteOutbox = append(rd.Persist.DeleteOutbox, id)
		}
	}
	for _, id := range sortedKeys(o.cmdDty) {
		if cm := c.command(id); cm != nil {
			ce := cm.CommandEntry
			ce.Request = slices.Clone(ce.Request)
			rd.Persist.PutCommands = append(rd.Persist.PutCommands, ce)
		} else {
			rd.Persist.DeleteCommands = append(rd.Persist.DeleteCommands, id)
		}
	}
	for _, n := range sortedKeys(o.hbDty) {
		rd.Persist.PutHeartbeats = append(rd.Persist.PutHeartbeats, c.hbRecs[n])
	}
	rd.Persist.ResetConvs = o.convReset
	for _, conv := range sortedKeys(o.convDty) {
		if e := c.convs[conv]; e != nil {
			rd.Persist.PutConvs = append(rd.Persist.PutConvs, e.clone())
		}
	}
	for _, conv := range o.convEv {
		if e := c.convs[conv]; e != nil {
			rd.Events = append(rd.Events, ConversationEvent{Conversation: e.view()})
		}
	}
	return rd
}

// Advance acknowledges the last Ready: everything in it has been done.
func (c *Core) Advance() {
	c.inReady = false
	c.resetOutputs()
}

func sortedKeys[K string | uint64, V any](m map[K]V) []K {
	ks := make([]K, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// input is called first by every input method: it handles whatever fell
// due (so that after any input, Deadline is in the future).
func (c *Core) input(now time.Time) {
	if c.inReady {
		panic("core: input between Ready and Advance")
	}
	c.tick(now)
}

// Tick tells the core that time has passed: call it at Deadline (earlier or
// later is harmless).
func (c *Core) Tick(now time.Time) {
	c.input(now)
	c.pump(now)
}

// Deadline is when the core next needs Tick (zero: nothing scheduled).
func (c *Core) Deadline() time.Time {
	var d time.Time
	at := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	c.connDeadlines(at)
	c.reqs.deadlines(at)
	c.outboxDeadlines(at)
	c.commandDeadlines(at)
	c.timelineDeadlines(at)
	c.listDeadlines(at)
	return d
}

func (c *Core) tick(now time.Time) {
	c.connTick(now)
	if c.cn.phase == phaseActive {
		c.requestTimeouts(now)
	}
	c.outboxTick(now)
}

// pump emits whatever became possible.
func (c *Core) pump(now time.Time) {
	c.connPump(now)
	if c.cn.phase != phaseActive {
		return
	}
	c.timelinePump(now)
	c.listPump(now)
	c.commandPump(now)
	c.outboxPump(now)
	c.heartbeatPump(now)
}

// emit queues an event for the app.
func (c *Core) emit(ev Event) { c.out.events = append(c.out.events, ev) }

// write queues a frame on the current connection.
func (c *Core) write(now time.Time, f *pimv1.Frame) {
	c.out.frames = append(c.out.frames, f)
	c.cn.lastWrite = now
}

func (c *Core) dirtyMeta()             { c.out.metaDirty = true }
func (c *Core) dirtyEntry(id string)   { c.out.outboxDty[id] = true }
func (c *Core) dirtyCommand(id uint64) { c.out.cmdDty[id] = true }

// NewID returns a random id (32 hex digits) from the core's random source,
// e.g. to name a group before creating it offline.
func (c *Core) NewID() string {
	var b [idBytes]byte
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], c.rnd.Uint64())
	}
	return hex.EncodeToString(b[:])
}

// Delivered is the highest user seq handed to the app.
func (c *Core) Delivered() uint64 { return c.meta.Delivered }

// Epoch is the data epoch of the cursor.
func (c *Core) Epoch() string { return c.meta.Epoch }

// Outbox returns a copy of the outbox, in creation order.
func (c *Core) Outbox() []OutboxEntry {
	out := make([]OutboxEntry, len(c.outbox))
	for i, e := range c.outbox {
		out[i] = e.OutboxEntry
		out[i].Body = slices.Clone(e.Body)
	}
	return out
}

// PendingCommands returns the commands not answered yet, in order.
func (c *Core) PendingCommands() []CommandEntry {
	out := make([]CommandEntry, len(c.cmds))
	for i, cm := range c.cmds {
		out[i] = cm.CommandEntry
		out[i].Request = slices.Clone(cm.Request)
	}
	return out
}

// ConnState is the current connection state.
func (c *Core) ConnState() ConnState { return c.cn.state() }

// HeartbeatInterval is the idle time after which the next heartbeat is sent.
func (c *Core) HeartbeatInterval() time.Duration { return c.pingInterval() }

// Offset returns the estimated clock offset (server minus local) and its
// error bound (RTT/2 of the best sample); ok is false with no sample yet.
func (c *Core) Offset() (offset, errorBound time.Duration, ok bool) {
	s, ok := c.clk.best()
	if !ok {
		return 0, 0, false
	}
	return s.Offset, s.RTT / 2, true
}

// ServerNow is the local time now corrected by the clock offset: the
// core's best estimate of the server's clock.
func (c *Core) ServerNow(now time.Time) time.Time {
	off, _, _ := c.Offset()
	return now.Add(off)
}
