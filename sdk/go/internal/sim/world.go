// The world: server, network and devices of one seeded run, the fault
// schedule, and the heal phase.
//
// Invariants of this file:
//   - Everything random comes from one generator seeded with the run's
//     seed (each core gets its own generator seeded from it), and every
//     iteration over a map is sorted: a seed replays exactly.
//   - A run has two phases: an active phase in which users act and faults
//     strike, then a heal phase with no new faults (everything comes back
//     up, apps go to the foreground and retry what failed) that must reach
//     quiescence, after which the final checks run (check.go).

package sim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

// Options configures a run.
type Options struct {
	Seed uint64
	// Active is how long users act and faults strike (virtual time).
	Active time.Duration
	// HealMax bounds the heal phase.
	HealMax time.Duration
	// Trace keeps a log of the run (printed on failure).
	Trace bool

	// For scripted tests: no random user actions or faults, fixed knobs.
	script     func(w *world)
	quiet      bool
	window     int           // 0: random (1 without the order guard)
	quarantine time.Duration // 0: 5s
	orderGuard *bool         // nil: even seeds
}

// Result is what a run found.
type Result struct {
	Seed       uint64
	Violations []string
	Trace      []string
	Stats      Stats
}

// Stats counts what happened in a run.
type Stats struct {
	Devices, Sent, Shown, Commands, Faults, Restarts, BudgetFailures, ReResolves, Steps int
	DeadConns, GoAways, Learned                                                         int
	// Read state: read, hidden and receipt events shown; ConvListReqs sent;
	// conversation entries that turned stale (and were fetched again).
	Reads, Hidden, Receipts, ListReqs, StaleEntries int
	Virtual                                         time.Duration
}

type stats struct {
	sent, shown, faults, budgetFailures, reResolves, deadConns, goAways int
	reads, hidden, receipts, listReqs, stale                            int
}

type params struct {
	latBase   time.Duration
	latJitter time.Duration
	dup       float64
	dialFail  float64
	dialHang  float64
	faultMean time.Duration
	actMean   time.Duration
	syncLimit uint32
	ackEvery  int
	convPage  uint32
}

type world struct {
	opts       Options
	rnd        *rand.Rand
	s          *sched
	p          params
	srv        *server
	devs       []*device
	users      []string
	natTimeout map[string]time.Duration
	serverSkew time.Duration
	errs       []string
	trace      []string
	stats      stats
	healing    bool
	quietUntil time.Time // nobody acts before this (lets heartbeats learn)
}

var epoch0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// Run runs one seeded simulation.
func Run(opts Options) Result {
	if opts.Active == 0 {
		opts.Active = 40 * time.Second
	}
	if opts.HealMax == 0 {
		opts.HealMax = 5 * time.Minute
	}
	r := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	w := &world{
		opts:  opts,
		rnd:   r,
		s:     newSched(epoch0),
		users: []string{"alice", "bob"},
		natTimeout: map[string]time.Duration{
			"wifi": time.Duration(4000+r.IntN(3000)) * time.Millisecond,
			"cell": time.Duration(2500+r.IntN(2000)) * time.Millisecond,
		},
		serverSkew: time.Duration(r.IntN(20000)-10000) * time.Millisecond,
	}
	w.p = params{
		latBase:   time.Duration(2+r.IntN(60)) * time.Millisecond,
		dup:       []float64{0, 0, 0.01, 0.05}[r.IntN(4)],
		dialFail:  []float64{0, 0.05, 0.2}[r.IntN(3)],
		dialHang:  []float64{0, 0.02}[r.IntN(2)],
		faultMean: time.Duration(300+r.IntN(3000)) * time.Millisecond,
		actMean:   time.Duration(150+r.IntN(600)) * time.Millisecond,
		syncLimit: uint32(1 + r.IntN(40)),
		ackEvery:  1 + r.IntN(16),
		convPage:  uint32(1 + r.IntN(6)),
	}
	w.p.latJitter = w.p.latBase * time.Duration(1+r.IntN(3))
	if opts.quiet {
		w.p.dup, w.p.dialFail, w.p.dialHang = 0, 0, 0
	}
	w.setup()
	w.run()
	res := Result{Seed: opts.Seed, Violations: w.errs, Trace: w.trace}
	res.Stats = Stats{
		Devices: len(w.devs), Sent: w.stats.sent, Shown: w.stats.shown, Faults: w.stats.faults,
		BudgetFailures: w.stats.budgetFailures, ReResolves: w.stats.reResolves, Steps: w.s.steps,
		DeadConns: w.stats.deadConns, GoAways: w.stats.goAways,
		Reads: w.stats.reads, Hidden: w.stats.hidden, Receipts: w.stats.receipts, ListReqs: w.stats.listReqs,
		StaleEntries: w.stats.stale,
		Virtual:      w.s.now.Sub(epoch0),
	}
	for _, d := range w.devs {
		res.Stats.Restarts += d.restarts
		res.Stats.Commands += len(d.disk.cmdOrder)
		for _, h := range d.disk.st.Heartbeats {
			if h.Interval > 2*time.Second {
				res.Stats.Learned++ // a network on which background heartbeats grew
			}
		}
	}
	return res
}

func (w *world) setup() {
	w.srv = &server{w: w, st: newStore("epoch-1"), window: uint64(4 + w.rnd.IntN(60)), hb: 10 * time.Second}
	// Odd seeds: the server as documented, so the SDK must not pipeline
	// (Window 1). Even seeds: the server with the order guard the SDK asks
	// for, and pipelining.
	w.srv.orderGuard = w.opts.Seed%2 == 0
	if w.opts.orderGuard != nil {
		w.srv.orderGuard = *w.opts.orderGuard
	}
	n := 2 + w.rnd.IntN(2)
	for i := 0; i < n; i++ {
		w.srv.gws = append(w.srv.gws, &gateway{srv: w.srv, addr: fmt.Sprintf("gw%d", i), up: true})
	}
	// A group of everyone, created before the devices start.
	st := w.srv.st
	msg := &pimv1.Message{Conv: "g:main", Sender: "alice", SenderDevice: "admin",
		Type: pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, Members: w.users}
	st.appendMsg(msg, w.users)
	st.groups["g:main"] = map[string]*member{"alice": {joinSeq: 1, owner: true}, "bob": {joinSeq: 1}}

	names := []struct{ name, user string }{{"a1", "alice"}, {"a2", "alice"}, {"b1", "bob"}}
	if w.rnd.IntN(2) == 0 {
		names = append(names, struct{ name, user string }{"b2", "bob"})
	}
	for _, nm := range names {
		d := newDevice(w, nm.name, nm.user, time.Duration(w.rnd.IntN(60000)-30000)*time.Millisecond)
		d.window = 1
		if w.srv.orderGuard {
			d.window = 1 + w.rnd.IntN(8)
		}
		if w.opts.window > 0 {
			d.window = w.opts.window
		}
		if w.rnd.IntN(3) == 0 {
			d.network = "cell"
		}
		d.fg = w.rnd.IntN(2) == 0
		w.devs = append(w.devs, d)
	}
	// Half the runs have a device installed late: its first connection
	// loads a long timeline and a conversation list of many pages while
	// the others keep changing it.
	late := -1
	if w.rnd.IntN(2) == 0 && !w.opts.quiet {
		late = len(w.devs) - 1
		w.devs[late].lateUntil = epoch0.Add(time.Duration(5000+w.rnd.IntN(25000)) * time.Millisecond)
	}
	for i, d := range w.devs {
		if i == late {
			w.s.at(d.lateUntil, d.start)
		} else {
			w.s.after(time.Duration(w.rnd.IntN(500))*time.Millisecond, d.start)
		}
	}
}

func (w *world) run() {
	activeEnd := epoch0.Add(w.opts.Active)
	if !w.opts.quiet {
		for _, d := range w.devs {
			w.scheduleActs(d, activeEnd)
		}
		w.scheduleFaults(activeEnd)
		w.scheduleQuiet(activeEnd)
	}
	if w.opts.script != nil {
		w.opts.script(w)
	}
	for w.s.step(activeEnd) {
		if w.runaway() {
			return
		}
	}
	w.heal()
	healEnd := w.s.now.Add(w.opts.HealMax)
	for !w.quiescent() {
		if !w.s.now.Before(healEnd) {
			w.violation("no quiescence %v after the faults stopped: %s", w.opts.HealMax, w.notQuiet())
			return
		}
		next := w.s.now.Add(time.Second)
		for w.s.step(next) {
			if w.runaway() {
				return
			}
		}
		w.s.now = next
		for _, d := range w.devs {
			d.retryFailed()
		}
	}
	w.finalChecks()
}

// maxSteps bounds a run: more events than this means a livelock.
const maxSteps = 3_000_000

func (w *world) runaway() bool {
	if w.s.steps < maxSteps {
		return false
	}
	w.violation("runaway: %d events by %v (livelock?)", w.s.steps, w.s.now.Sub(epoch0))
	return true
}

// scheduleQuiet alternates busy periods with quiet ones in which nobody
// acts, so that idle connections send heartbeats (and learn, and meet NAT
// timeouts).
func (w *world) scheduleQuiet(end time.Time) {
	var next func()
	next = func() {
		if !w.s.now.Before(end) {
			return
		}
		quiet := time.Duration(5000+w.rnd.IntN(15000)) * time.Millisecond
		w.quietUntil = w.s.now.Add(quiet)
		w.logf("quiet for %v", quiet)
		w.s.after(quiet+w.expo(8*time.Second), next)
	}
	w.s.after(w.expo(8*time.Second), next)
}

func (w *world) scheduleActs(d *device, end time.Time) {
	var next func()
	next = func() {
		if !w.s.now.Before(end) {
			return
		}
		if !w.s.now.Before(w.quietUntil) {
			d.act(w.rnd)
		}
		w.s.after(w.expo(w.p.actMean), next)
	}
	w.s.after(w.expo(w.p.actMean), next)
}

func (w *world) scheduleFaults(end time.Time) {
	var next func()
	next = func() {
		if !w.s.now.Before(end) {
			return
		}
		w.fault()
		w.s.after(w.expo(w.p.faultMean), next)
	}
	w.s.after(w.expo(w.p.faultMean), next)
}

// fault strikes one random fault.
func (w *world) fault() {
	w.stats.faults++
	r := w.rnd
	gw := w.srv.gws[r.IntN(len(w.srv.gws))]
	d := w.devs[r.IntN(len(w.devs))]
	short := func() time.Duration { return time.Duration(200+r.IntN(2800)) * time.Millisecond }
	switch r.IntN(14) {
	case 0, 1:
		if nc := w.randomConn(); nc != nil {
			w.logf("fault: reset %s conn %d", nc.dev.name, nc.id)
			nc.reset(r.IntN(3) != 0)
		}
	case 2:
		if nc := w.randomConn(); nc != nil {
			w.logf("fault: blackhole %s conn %d", nc.dev.name, nc.id)
			nc.blackhole()
		}
	case 3:
		if nc := w.randomConn(); nc != nil {
			nc.spike = time.Duration(500+r.IntN(2500)) * time.Millisecond
			w.logf("fault: latency spike %v on %s conn %d", nc.spike, nc.dev.name, nc.id)
		}
	case 4:
		if gw.up {
			gw.crash(short())
		}
	case 5:
		if gw.up {
			var others []string
			for _, g := range w.srv.gws {
				if g != gw {
					others = append(others, g.addr)
				}
			}
			gw.drain(short(), others)
		}
	case 6:
		w.logf("fault: storage outage")
		w.srv.downUntil = w.s.now.Add(short())
	case 7:
		w.logf("fault: server restart")
		w.srv.rc.restart()
		down := short()
		for _, g := range w.srv.gws {
			if g.up {
				g.crash(down)
			}
		}
	case 8:
		d.crash()
		w.s.after(short(), func() { w.restart(d) })
	case 9:
		w.logf("fault: %s crashes after its next write", d.name)
		d.crashAfterPersist = true
		w.s.after(short()+2*time.Second, func() { w.restart(d) })
	case 10:
		net := "wifi"
		if d.network == "wifi" {
			net = "cell"
		}
		w.logf("fault: %s moves to %s", d.name, net)
		d.network = net
		for _, id := range sortedConnIDs(d.conns) {
			d.conns[id].blackhole() // the old interface is gone
		}
		d.input(func(c *core.Core) { c.NetworkChanged(d.local(), net) })
	case 11:
		d.fg = !d.fg
		w.logf("fault: %s foreground=%v", d.name, d.fg)
		d.input(func(c *core.Core) { c.SetForeground(d.local(), d.fg) })
	case 12:
		w.logf("fault: %s refuses new sessions", gw.addr)
		gw.refuseUntil = w.s.now.Add(short())
	case 13:
		w.srv.hiccup = 1 + r.IntN(3)
		w.logf("fault: storage hiccup: the next %d sends are refused", w.srv.hiccup)
	}
}

func (w *world) restart(d *device) {
	if d.c == nil && !w.s.now.Before(d.lateUntil) {
		d.start()
	}
}

// randomConn picks a live connection.
func (w *world) randomConn() *netConn {
	var all []*netConn
	for _, d := range w.devs {
		for _, id := range sortedConnIDs(d.conns) {
			if nc := d.conns[id]; !nc.dead && !nc.black {
				all = append(all, nc)
			}
		}
	}
	if len(all) == 0 {
		return nil
	}
	return all[w.rnd.IntN(len(all))]
}

// heal ends the faults: everything comes back, apps go to the foreground.
func (w *world) heal() {
	w.healing = true
	w.logf("heal")
	w.srv.downUntil = time.Time{}
	for _, g := range w.srv.gws {
		g.up = true
		g.refuseUntil = time.Time{}
	}
	for _, d := range w.devs {
		d.crashAfterPersist = false
		if d.c == nil {
			d.start()
		}
		d.fg = true
		d.input(func(c *core.Core) { c.SetForeground(d.local(), true) })
	}
}

// quiescent: every device is connected, has sent everything it could,
// received its whole timeline, and the server's cursor has caught up.
func (w *world) quiescent() bool { return w.notQuiet() == "" }

func (w *world) notQuiet() string {
	st := w.srv.st
	if !w.srv.rc.idle() {
		return "group read receipts pending"
	}
	for _, d := range w.devs {
		switch {
		case d.c == nil:
			return d.name + " is down"
		case d.c.ConnState() != core.Connected:
			return d.name + " is " + d.c.ConnState().String()
		case len(d.c.PendingCommands()) > 0:
			return fmt.Sprintf("%s has %d commands pending", d.name, len(d.c.PendingCommands()))
		case d.c.Delivered() != st.head(d.user):
			return fmt.Sprintf("%s delivered %d of %d", d.name, d.c.Delivered(), st.head(d.user))
		case st.cursors[[2]string{d.user, d.name}] != st.head(d.user):
			return fmt.Sprintf("%s server cursor %d of %d", d.name, st.cursors[[2]string{d.user, d.name}], st.head(d.user))
		}
		if ls := d.c.ListStatus(); !ls.Loaded || ls.Syncing || !ls.Synced || ls.Stale > 0 {
			return fmt.Sprintf("%s conversation list %+v", d.name, ls)
		}
		for _, e := range d.c.Outbox() {
			if !e.Rejected() {
				return fmt.Sprintf("%s has %s %v in its outbox", d.name, e.ClientMsgID, e.State)
			}
		}
	}
	return ""
}

// dial connects a device to a gateway after a network delay.
func (w *world) dial(d *device, dl core.Dial) {
	c := d.c
	w.s.after(w.latency(), func() {
		if d.c != c || d.closed[dl.Conn] {
			return
		}
		gw := w.gateway(dl.Addr)
		if gw == nil || !gw.up || w.chance(w.p.dialFail) {
			d.input(func(c *core.Core) { c.ConnDown(d.local(), dl.Conn, fmt.Errorf("refused")) })
			return
		}
		if w.chance(w.p.dialHang) {
			w.logf("%s dial %d hangs", d.name, dl.Conn)
			return
		}
		nc := &netConn{w: w, id: dl.Conn, dev: d, gw: gw, network: d.network,
			clientOpen: true, serverOpen: true, lastActivity: w.s.now}
		ss := &session{gw: gw, nc: nc, state: sessHello, lastHeard: w.s.now}
		nc.sess = ss
		gw.sessions = append(gw.sessions, ss)
		d.conns[dl.Conn] = nc
		d.input(func(c *core.Core) { c.ConnUp(d.local(), dl.Conn) })
	})
}

func (w *world) gateway(addr string) *gateway {
	for _, g := range w.srv.gws {
		if g.addr == addr {
			return g
		}
	}
	return nil
}

func (w *world) addrs() []string {
	var out []string
	for _, g := range w.srv.gws {
		out = append(out, g.addr)
	}
	return out
}

func (w *world) coreConfig(d *device) core.Config {
	return core.Config{
		User: d.user, DeviceID: d.name, Token: "tok:" + d.user, Servers: w.addrs(),
		Rand:              rand.New(rand.NewPCG(w.rnd.Uint64(), w.rnd.Uint64())),
		Window:            d.window,
		SendTimeout:       2 * time.Second,
		MaxAttempts:       5,
		MaxSendAge:        20 * time.Second,
		RequestTimeout:    3 * time.Second,
		ConnectTimeout:    3 * time.Second,
		DeadAfterTimeouts: 3,
		SyncLimit:         w.p.syncLimit,
		AckEvery:          w.p.ackEvery,
		AckDelay:          100 * time.Millisecond,
		CommandQuarantine: w.quarantine(),
		ConvList:          true,
		ConvListLimit:     w.p.convPage,
		Backoff: core.BackoffConfig{
			Base: 100 * time.Millisecond, Cap: 3 * time.Second, HealthyAfter: 5 * time.Second, ReResolveAfter: 3,
		},
		Heartbeat: core.HeartbeatConfig{
			Min: 2 * time.Second, Max: 8 * time.Second, Step: time.Second, Successes: 2,
			PongTimeout: 1500 * time.Millisecond, ProbeTimeout: time.Second,
		},
	}
}

func (w *world) quarantine() time.Duration {
	if w.opts.quarantine != 0 {
		return w.opts.quarantine
	}
	return 5 * time.Second
}

func (w *world) verifyToken(tok string) (string, bool) {
	u, ok := strings.CutPrefix(tok, "tok:")
	return u, ok && slices.Contains(w.users, u)
}

func (w *world) other(user string) string {
	if user == w.users[0] {
		return w.users[1]
	}
	return w.users[0]
}

// serverClock is the server's wall clock (Unix ms), skewed from the
// simulation's time.
func (w *world) serverClock() int64 { return w.s.now.Add(w.serverSkew).UnixMilli() }

func (w *world) latency() time.Duration {
	return w.p.latBase + time.Duration(w.rnd.Int64N(int64(w.p.latJitter)+1))
}

func (w *world) expo(mean time.Duration) time.Duration {
	return time.Duration(w.rnd.ExpFloat64() * float64(mean))
}

func (w *world) chance(p float64) bool { return p > 0 && w.rnd.Float64() < p }

// refused records a refusal by the server and returns its error; a refusal
// that the client's behaviour should have made impossible is a violation.
func (w *world) refused(kind, user, device string, code pimv1.ErrorCode, legit bool) *pimv1.Error {
	if !legit {
		w.violation("server refused a %s of %s/%s with %v", kind, user, device, code)
	}
	w.logf("server refuses %s of %s/%s: %v", kind, user, device, code)
	return protoErr(code, "refused")
}

// createdBy reports whether device created group g (so that meeting it
// again is a retried CREATE).
func (w *world) createdBy(g, user, device string) bool {
	for _, op := range w.srv.st.groupLog {
		if op.op == pimv1.GroupOp_GROUP_OP_CREATE && op.group == g && op.user == user && op.device == device {
			return true
		}
	}
	return false
}

func (w *world) violation(format string, args ...any) {
	msg := fmt.Sprintf("%v: ", w.s.now.Sub(epoch0)) + fmt.Sprintf(format, args...)
	w.errs = append(w.errs, msg)
	w.logf("VIOLATION %s", msg)
}

const traceKeep = 400

func (w *world) logf(format string, args ...any) {
	if !w.opts.Trace {
		return
	}
	w.trace = append(w.trace, fmt.Sprintf("%10v ", w.s.now.Sub(epoch0).Truncate(time.Millisecond))+fmt.Sprintf(format, args...))
}
