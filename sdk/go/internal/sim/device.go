// A simulated device: the app, a driver for its core, and its disk.
//
// Invariants of this file:
//   - The driver follows the contract of package core: for each Ready it
//     writes Persist and the app's data derived from the events to the disk
//     (one atomic step), then closes, writes frames, dials, and only then
//     hands the events to the app, and calls Advance.
//   - The disk is all that survives an app crash: a restarted core is built
//     from exactly the records persisted (deep copies), and the app's own
//     database (messages shown, messages sent, commands issued) was written
//     in the same atomic steps.
//   - Each device has its own clock (the simulated time plus a fixed skew):
//     the core only ever sees device time.
//   - Checks that need the moment (what is on disk when a frame leaves,
//     what the server holds when an event is shown) run here; the rest is in
//     check.go.

package sim

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

// shown is one timeline event the app showed (its database row): a
// message, or (msgID "") a read, hidden or receipt event.
type shown struct {
	userSeq uint64
	conv    string
	seq     uint64
	msgID   string
}

// sentRec is the app's record of a message it sent.
type sentRec struct {
	cmid     string
	conv     string
	state    core.SendState
	rejected bool
	failCode pimv1.ErrorCode
	ack      *pimv1.SendAck
	appSeq   int // when the app sent it, among its sends and commands
}

// cmdRec is the app's record of an offline command.
type cmdRec struct {
	id       uint64
	req      *pimv1.GroupReq // nil for reads and hides
	f        *pimv1.Frame    // the command as issued
	done     bool
	err      error
	attempts int
}

// disk is what survives an app crash.
type disk struct {
	st        core.State
	shown     []shown
	sent      map[string]*sentRec
	sentOrder map[string][]string // conv -> client_msg_ids in the order the app sent them
	cmds      map[uint64]*cmdRec
	cmdOrder  []uint64
	groups    map[string]bool // groups the app believes its user is in
	created   map[string]bool // groups this device created (its commands)
	xusers    map[string][]string
	nextK     int
	appSeq    int            // counts sends and commands as the app issues them
	leaveSeq  map[string]int // group -> appSeq of this device's leave command
	// seen: per conversation, the content messages shown (what a user can
	// read up to or hide).
	seen map[string][]uint64
}

type device struct {
	w      *world
	name   string
	user   string
	skew   time.Duration
	c      *core.Core
	disk   disk
	conns  map[core.ConnID]*netConn
	closed map[core.ConnID]bool
	gen    uint64 // timer generation
	// environment
	network string
	fg      bool
	// crashAfterPersist makes the next Ready crash the app right after its
	// Persist is written (before frames leave and events are shown).
	crashAfterPersist bool
	// lateUntil: the app is installed then (zero: at the start).
	lateUntil time.Time
	// statistics
	restarts int
	window   int
}

func newDevice(w *world, name, user string, skew time.Duration) *device {
	return &device{
		w: w, name: name, user: user, skew: skew,
		disk: disk{
			sent: make(map[string]*sentRec), sentOrder: make(map[string][]string),
			cmds: make(map[uint64]*cmdRec), groups: map[string]bool{"g:main": true},
			created: make(map[string]bool), xusers: make(map[string][]string),
			leaveSeq: make(map[string]int), seen: make(map[string][]uint64),
		},
		conns: make(map[core.ConnID]*netConn), closed: make(map[core.ConnID]bool),
		network: "wifi", fg: true,
	}
}

// local is the device's clock.
func (d *device) local() time.Time { return d.w.s.now.Add(d.skew) }

func (d *device) alive() bool { return d.c != nil }

// start (re)starts the app from its disk.
func (d *device) start() {
	w := d.w
	st := deepCopy(d.disk.st)
	cfg := w.coreConfig(d)
	c, err := core.New(cfg, st)
	if err != nil {
		w.violation("%s: core.New: %v", d.name, err)
		return
	}
	d.c = c
	d.conns = make(map[core.ConnID]*netConn)
	d.closed = make(map[core.ConnID]bool)
	w.logf("%s starts (delivered %d, outbox %d, commands %d)", d.name, st.Meta.Delivered, len(st.Outbox), len(st.Commands))
	now := d.local()
	c.NetworkChanged(now, d.network)
	d.flush()
	d.input(func(c *core.Core) { c.SetForeground(d.local(), d.fg) })
}

// crash kills the app: the core and everything not on disk are gone; the
// operating system closes its sockets.
func (d *device) crash() {
	if d.c == nil {
		return
	}
	d.w.logf("%s crashes", d.name)
	d.c = nil
	d.gen++
	d.restarts++
	for _, id := range sortedConnIDs(d.conns) {
		d.conns[id].closeFromClient()
	}
	d.conns = make(map[core.ConnID]*netConn)
}

func sortedConnIDs(m map[core.ConnID]*netConn) []core.ConnID {
	ids := make([]core.ConnID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// input runs fn on the core, then drives its Ready.
func (d *device) input(fn func(c *core.Core)) {
	if d.c == nil {
		return
	}
	fn(d.c)
	d.flush()
}

// flush carries out Readies until there is none.
func (d *device) flush() {
	for d.c != nil && d.c.HasReady() {
		rd := d.c.Ready()
		d.persist(rd)
		if d.crashAfterPersist {
			d.crashAfterPersist = false
			d.crash()
			return
		}
		for _, id := range rd.Close {
			if nc := d.conns[id]; nc != nil {
				nc.closeFromClient()
				delete(d.conns, id)
			}
			d.closed[id] = true
		}
		if len(rd.Frames) > 0 {
			nc := d.conns[rd.Conn]
			for _, f := range rd.Frames {
				d.checkOutgoing(f)
				if f.GetConvListReq() != nil {
					d.w.stats.listReqs++
				}
				if sr := f.GetSendReq(); sr != nil {
					d.w.logf("%s conn %d: SendReq %s cs=%d", d.name, rd.Conn, sr.GetClientMsgId()[:6], sr.GetClientSeq())
				}
				if nc != nil {
					nc.fromClient(f)
				}
			}
		}
		if rd.Dial != nil {
			d.w.dial(d, *rd.Dial)
		}
		if rd.ReResolve {
			d.w.stats.reResolves++
			d.w.s.after(d.w.latency()*2, func() {
				d.input(func(c *core.Core) { c.SetServers(d.local(), d.w.addrs()) })
			})
		}
		d.show(rd.Events)
		d.c.Advance()
	}
	d.arm()
}

// arm sets the single timer the driver keeps, at the core's Deadline.
func (d *device) arm() {
	if d.c == nil {
		return
	}
	dl := d.c.Deadline()
	if dl.IsZero() {
		return
	}
	if !dl.After(d.local()) {
		// Every input handles what is due: a deadline not in the future
		// would make a driver spin.
		d.w.violation("%s: Deadline %v is not after now %v", d.name, dl, d.local())
		dl = d.local().Add(time.Millisecond)
	}
	d.gen++
	gen := d.gen
	d.w.s.at(dl.Add(-d.skew), func() {
		if d.gen == gen && d.c != nil {
			d.input(func(c *core.Core) { c.Tick(d.local()) })
		}
	})
}

// persist writes the Ready's records and the app's data to the disk,
// checking them on the way.
func (d *device) persist(rd core.Ready) {
	w := d.w
	dk := &d.disk
	for _, ce := range rd.Persist.PutCommands {
		if _, ok := dk.cmds[ce.ID]; ok {
			continue
		}
		f := new(pimv1.Frame)
		if err := proto.Unmarshal(ce.Request, f); err != nil {
			w.violation("%s: command %d does not decode: %v", d.name, ce.ID, err)
			continue
		}
		dk.cmds[ce.ID] = &cmdRec{id: ce.ID, req: f.GetGroupReq(), f: f}
		dk.cmdOrder = append(dk.cmdOrder, ce.ID)
		dk.appSeq++
		if g := f.GetGroupReq(); g.GetOp() == pimv1.GroupOp_GROUP_OP_REMOVE && slices.Equal(g.GetUsers(), []string{d.user}) {
			dk.leaveSeq[g.GetGroup()] = dk.appSeq
		}
	}
	dk.st.Apply(rd.Persist)
	for _, ev := range rd.Events {
		switch e := ev.(type) {
		case core.MessageEvent:
			d.onMessage(e)
		case core.ReadEvent, core.HiddenEvent, core.ReceiptEvent, core.UnknownEvent:
			d.onOther(ev)
		case core.ConversationEvent:
			if e.Conversation.Stale {
				w.stats.stale++
			}
			if v := e.Conversation.Version; v > uint64(len(w.srv.st.timelines[d.user])) {
				w.violation("%s: conversation %s at version %d beyond the timeline", d.name, e.Conversation.Conv, v)
			}
		case core.GroupEvent:
			if e.Me {
				dk.groups[e.Conv] = e.Type != pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED
			}
		case core.SendStateEvent:
			d.onSendState(e)
		case core.CommandResultEvent:
			r := dk.cmds[e.ID]
			switch {
			case r == nil:
				w.violation("%s: result for unknown command %d", d.name, e.ID)
			case r.done:
				w.violation("%s: second result for command %d", d.name, e.ID)
			default:
				r.done, r.err, r.attempts = true, e.Err, e.Attempts
			}
		case core.ResyncEvent:
			w.violation("%s: unexpected resync %v", d.name, e)
		}
	}
	if m := rd.Persist.Meta; m != nil {
		if m.Delivered != uint64(len(dk.shown)) {
			w.violation("%s: cursor %d persisted with %d messages shown", d.name, m.Delivered, len(dk.shown))
		}
	}
}

// nextShown checks that us is the next user seq to show and exists.
func (d *device) nextShown(us uint64) bool {
	w := d.w
	want := uint64(len(d.disk.shown)) + 1
	if us != want {
		w.violation("%s: shown user seq %d, want %d (duplicate, gap or reorder)", d.name, us, want)
		return false
	}
	if tl := w.srv.st.timelines[d.user]; us > uint64(len(tl)) {
		w.violation("%s: shown user seq %d beyond the timeline (%d)", d.name, us, len(tl))
		return false
	}
	return true
}

// onOther checks a timeline event other than a message against the
// server's timeline.
func (d *device) onOther(ev core.Event) {
	w := d.w
	var got *pimv1.Event
	switch e := ev.(type) {
	case core.ReadEvent:
		w.stats.reads++
		got = &pimv1.Event{UserSeq: e.UserSeq, Kind: &pimv1.Event_Read{Read: &pimv1.ReadSync{
			Conv: e.Conv, Seq: e.Seq, User: e.User, Device: e.Device}}}
		if e.Own != (e.User == d.user) {
			w.violation("%s: read at user seq %d by %s with Own=%v", d.name, e.UserSeq, e.User, e.Own)
		}
	case core.HiddenEvent:
		w.stats.hidden++
		got = &pimv1.Event{UserSeq: e.UserSeq, Kind: &pimv1.Event_Hidden{Hidden: &pimv1.Hidden{
			Conv: e.Conv, Seq: e.Seq, Device: e.Device}}}
	case core.ReceiptEvent:
		w.stats.receipts++
		r := &pimv1.Receipt{Conv: e.Conv, Kind: e.Kind, Seq: e.Seq, User: e.User}
		for _, m := range e.Reads {
			r.Messages = append(r.Messages, &pimv1.MessageReads{Seq: m.Seq, ReadCount: m.ReadCount})
		}
		got = &pimv1.Event{UserSeq: e.UserSeq, Kind: &pimv1.Event_Receipt{Receipt: r}}
	case core.UnknownEvent:
		w.violation("%s: unknown event at user seq %d", d.name, e.UserSeq)
		got = e.Event
	}
	if !d.nextShown(got.GetUserSeq()) {
		return
	}
	if want := w.srv.st.event(d.user, got.GetUserSeq()); !proto.Equal(got, want) {
		w.violation("%s: user seq %d shows %v, the server has %v", d.name, got.GetUserSeq(), got, want)
	}
	r := w.srv.st.timelines[d.user][got.GetUserSeq()-1]
	d.disk.shown = append(d.disk.shown, shown{userSeq: got.GetUserSeq(), conv: r.conv, seq: r.seq})
	w.stats.shown++
}

func (d *device) onMessage(e core.MessageEvent) {
	w := d.w
	dk := &d.disk
	if !d.nextShown(e.UserSeq) {
		return
	}
	tl := w.srv.st.timelines[d.user]
	r := tl[e.UserSeq-1]
	if r.ev != nil {
		w.violation("%s: user seq %d shown as a message, the server has %v", d.name, e.UserSeq, r.ev)
		return
	}
	m := w.srv.st.msgs[r.conv][r.seq-1]
	if e.Message.GetMsgId() != m.MsgId || e.Message.GetConv() != r.conv || e.Message.GetSeq() != r.seq ||
		!bytes.Equal(e.Message.GetBody(), m.Body) {
		w.violation("%s: user seq %d shows %s/%d %s, the server has %s/%d %s", d.name, e.UserSeq,
			e.Message.GetConv(), e.Message.GetSeq(), e.Message.GetMsgId(), r.conv, r.seq, m.MsgId)
	}
	own := m.Sender == d.user && m.SenderDevice == d.name
	if e.Own != own {
		w.violation("%s: user seq %d Own=%v, want %v", d.name, e.UserSeq, e.Own, own)
	}
	dk.shown = append(dk.shown, shown{e.UserSeq, r.conv, r.seq, m.MsgId})
	if m.Type < pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED { // content: to read or hide
		dk.seen[r.conv] = append(dk.seen[r.conv], r.seq)
	}
	w.stats.shown++
}

func (d *device) onSendState(e core.SendStateEvent) {
	w := d.w
	dk := &d.disk
	r := dk.sent[e.ClientMsgID]
	if r == nil {
		if e.State != core.Queued {
			w.violation("%s: first state of %s is %v", d.name, e.ClientMsgID, e.State)
		}
		dk.appSeq++
		r = &sentRec{cmid: e.ClientMsgID, conv: e.Conv, appSeq: dk.appSeq}
		dk.sent[e.ClientMsgID] = r
		dk.sentOrder[e.Conv] = append(dk.sentOrder[e.Conv], e.ClientMsgID)
		w.stats.sent++
	}
	if r.state == core.Sent {
		w.violation("%s: %s changes state after Sent", d.name, e.ClientMsgID)
	}
	if e.State == core.Queued && r.rejected {
		// Retried after a refusal: it goes to the end of its conversation.
		o := dk.sentOrder[e.Conv]
		o = slices.DeleteFunc(o, func(x string) bool { return x == e.ClientMsgID })
		dk.sentOrder[e.Conv] = append(o, e.ClientMsgID)
		dk.appSeq++
		r.appSeq = dk.appSeq
	}
	r.state = e.State
	r.rejected = false
	switch e.State {
	case core.Sent:
		r.ack = e.Ack
		ref, ok := w.srv.st.dedup[dedupKey{d.user, d.name, e.ClientMsgID}]
		if !ok || e.Ack.GetConv() != ref.conv || e.Ack.GetSeq() != ref.seq {
			w.violation("%s: %s Sent with ack %v, server has %v (%v)", d.name, e.ClientMsgID, e.Ack, ref, ok)
		}
	case core.Failed:
		if se, ok := e.Err.(*core.ServerError); ok {
			r.rejected = true
			r.failCode = se.Code
		} else {
			w.stats.budgetFailures++
		}
	}
}

// checkOutgoing checks a frame as it leaves the device against its disk.
func (d *device) checkOutgoing(f *pimv1.Frame) {
	w := d.w
	dk := &d.disk
	delivered := dk.st.Meta.Delivered
	switch b := f.GetBody().(type) {
	case *pimv1.Frame_Hello:
		if b.Hello.GetLastUserSeq() > delivered || b.Hello.GetEpoch() != dk.st.Meta.Epoch {
			w.violation("%s: Hello(%d, %q) with %d, %q on disk", d.name, b.Hello.GetLastUserSeq(),
				b.Hello.GetEpoch(), delivered, dk.st.Meta.Epoch)
		}
	case *pimv1.Frame_PushAck:
		if b.PushAck.GetUserSeq() > delivered {
			w.violation("%s: PushAck(%d) with %d on disk", d.name, b.PushAck.GetUserSeq(), delivered)
		}
	case *pimv1.Frame_SyncReq:
		if b.SyncReq.GetAfterUserSeq() > delivered {
			w.violation("%s: SyncReq(%d) with %d on disk", d.name, b.SyncReq.GetAfterUserSeq(), delivered)
		}
	case *pimv1.Frame_SendReq:
		i := slices.IndexFunc(dk.st.Outbox, func(e core.OutboxEntry) bool { return e.ClientMsgID == b.SendReq.GetClientMsgId() })
		if i < 0 {
			w.violation("%s: SendReq %s before its outbox entry is on disk", d.name, b.SendReq.GetClientMsgId())
			return
		}
		e := dk.st.Outbox[i]
		if e.ClientSeq != b.SendReq.GetClientSeq() || e.Conv != b.SendReq.GetConv() ||
			!bytes.Equal(e.Body, b.SendReq.GetBody()) || e.ClientTime != b.SendReq.GetClientTime() {
			w.violation("%s: SendReq %s differs from its entry on disk", d.name, e.ClientMsgID)
		}
	case *pimv1.Frame_GroupReq, *pimv1.Frame_ReadReq, *pimv1.Frame_HideReq:
		sent := proto.Clone(f).(*pimv1.Frame)
		sent.RequestId = 0
		found := false
		for _, ce := range dk.st.Commands {
			g := new(pimv1.Frame)
			if proto.Unmarshal(ce.Request, g) == nil && proto.Equal(g, sent) {
				found = true
			}
		}
		if !found {
			w.violation("%s: %T %v is not a command on disk", d.name, b, f)
		}
	}
}

// show hands events to the app (its database was written in persist).
func (d *device) show(evs []core.Event) {
	for _, ev := range evs {
		switch e := ev.(type) {
		case core.ConnStateEvent:
			d.w.logf("%s: conn %v %s %v", d.name, e.State, e.Addr, e.Err)
			switch {
			case errors.Is(e.Err, core.ErrDeadConnection):
				d.w.stats.deadConns++
			case errors.Is(e.Err, core.ErrGoAway):
				d.w.stats.goAways++
			}
		case core.SendStateEvent:
			d.w.logf("%s: %s %v", d.name, e.ClientMsgID[:6], e.State)
		case core.MessageEvent:
			d.w.logf("%s: shows %d %s/%d", d.name, e.UserSeq, e.Message.GetConv(), e.Message.GetSeq())
		case core.CommandResultEvent:
			d.w.logf("%s: command %d answered (attempts %d, err %v)", d.name, e.ID, e.Attempts, e.Err)
		}
	}
}

// receive hands a frame from the network to the core.
func (d *device) receive(nc *netConn, f *pimv1.Frame) {
	if d.conns[nc.id] != nc {
		return
	}
	d.input(func(c *core.Core) { c.Receive(d.local(), nc.id, f) })
}

// connDown reports the end of a connection to the core.
func (d *device) connDown(nc *netConn, why string) {
	if d.conns[nc.id] != nc {
		return
	}
	delete(d.conns, nc.id)
	nc.clientOpen = false
	d.input(func(c *core.Core) { c.ConnDown(d.local(), nc.id, fmt.Errorf("%s", why)) })
}

// act is one random thing the user does.
func (d *device) act(r *rand.Rand) {
	if d.c == nil {
		return
	}
	dk := &d.disk
	now := d.local()
	x := r.IntN(100)
	switch {
	case x < 68:
		convs := []string{core.DirectConv(d.user, d.w.other(d.user)), core.DirectConv(d.user, d.user)}
		for _, g := range sortedTrue(dk.groups) {
			convs = append(convs, g)
		}
		conv := convs[r.IntN(len(convs))]
		body := fmt.Sprintf("%s-%d", d.name, dk.nextK)
		dk.nextK++
		d.input(func(c *core.Core) {
			if _, err := c.Send(now, conv, pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte(body)); err != nil {
				d.w.violation("%s: Send: %v", d.name, err)
			}
		})
	case x < 76:
		g := fmt.Sprintf("g:%s-%d", d.name, dk.nextK)
		dk.nextK++
		dk.created[g] = true
		dk.groups[g] = true
		d.command(&pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_CREATE, Group: g, Users: []string{d.w.other(d.user)}})
	case x < 84:
		gs := sortedTrue(dk.created)
		if len(gs) == 0 {
			return
		}
		g := gs[r.IntN(len(gs))]
		if xs := dk.xusers[g]; len(xs) > 0 && r.IntN(2) == 0 {
			u := xs[0]
			dk.xusers[g] = xs[1:]
			d.command(&pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_REMOVE, Group: g, Users: []string{u}})
			return
		}
		u := fmt.Sprintf("x-%s-%d", d.name, dk.nextK)
		dk.nextK++
		dk.xusers[g] = append(dk.xusers[g], u)
		d.command(&pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_ADD, Group: g, Users: []string{u}})
	case x < 86:
		gs := sortedTrue(dk.created)
		if len(gs) == 0 {
			return
		}
		g := gs[r.IntN(len(gs))]
		delete(dk.created, g)
		dk.groups[g] = false
		d.command(&pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_REMOVE, Group: g, Users: []string{d.user}})
	case x < 96:
		convs := sortedKeys(dk.seen)
		if len(convs) == 0 {
			return
		}
		conv := convs[r.IntN(len(convs))]
		seqs := dk.seen[conv]
		seq := seqs[len(seqs)-1] // read to the bottom, usually
		if r.IntN(3) == 0 {
			seq = seqs[r.IntN(len(seqs))] // or only so far
		}
		if x < 93 {
			d.commandFrame(&pimv1.Frame{Body: &pimv1.Frame_ReadReq{ReadReq: &pimv1.ReadReq{Conv: conv, Seq: seq}}})
		} else {
			d.commandFrame(&pimv1.Frame{Body: &pimv1.Frame_HideReq{HideReq: &pimv1.HideReq{Conv: conv, Seq: seqs[r.IntN(len(seqs))]}}})
		}
	default:
		d.retryFailed()
	}
}

func (d *device) command(g *pimv1.GroupReq) {
	d.commandFrame(&pimv1.Frame{Body: &pimv1.Frame_GroupReq{GroupReq: g}})
}

func (d *device) commandFrame(f *pimv1.Frame) {
	d.input(func(c *core.Core) {
		id, err := c.Command(d.local(), f)
		if err != nil {
			d.w.violation("%s: Command: %v", d.name, err)
		}
		d.w.logf("%s: command %d: %v", d.name, id, f.GetBody())
	})
}

// retryFailed retries every message whose budget ran out (the user taps
// "retry"); refused messages are retried too, rarely, before the heal.
func (d *device) retryFailed() {
	if d.c == nil {
		return
	}
	for _, e := range d.c.Outbox() {
		if e.State != core.Failed || (e.Rejected() && (d.w.healing || d.w.rnd.IntN(4) != 0)) {
			continue
		}
		d.input(func(c *core.Core) {
			if cur := entryState(c, e.ClientMsgID); cur == core.Failed {
				if err := c.RetryFailed(d.local(), e.ClientMsgID); err != nil {
					d.w.violation("%s: RetryFailed: %v", d.name, err)
				}
			}
		})
	}
}

func entryState(c *core.Core, id string) core.SendState {
	for _, e := range c.Outbox() {
		if e.ClientMsgID == id {
			return e.State
		}
	}
	return 0
}

func sortedTrue(m map[string]bool) []string {
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// deepCopy returns a copy of st sharing no memory with it.
func deepCopy(st core.State) core.State {
	var out core.State
	out.Apply(core.Persist{Meta: &st.Meta, PutOutbox: st.Outbox, PutCommands: st.Commands, PutHeartbeats: st.Heartbeats,
		PutConvs: st.Convs})
	return out
}
