// The connection manager: dialing, the Hello/Welcome handshake, backoff,
// GoAway, dead-connection detection, heartbeats, and dispatch of received
// frames.
//
// Invariants of this file:
//   - At most one connection is current (cn.conn); input naming any other
//     ConnID is ignored. A connection the core gives up on is listed in
//     Ready.Close, and from then on is not current.
//   - phase moves waiting -> dialing -> handshake -> active, and back to
//     waiting on any loss; stopped is left only by SetToken. Nothing but
//     Hello is written before Welcome.
//   - Every loss goes through lost(), which drops the connection's queued
//     frames and pending requests and schedules the next dial: after a
//     failure, at now + FullJitter(failures), rotating to the next server;
//     after a refusal that carries a retry_after (RATE_LIMITED,
//     UNAVAILABLE, ...), at now + HintDelay(retry_after), rotating too;
//     after an orderly end (GoAway), at now + HintDelay(retry_after), to a
//     server the GoAway named. RetryAfter (e.g. the LBS's hint) postpones
//     a waiting dial to at least now + HintDelay(d).
//   - failures (the backoff exponent) grows only on failures without a
//     hint: a server that answers "retry after X" is up and has placed the
//     client in its queue, and growing the exponent for it only makes the
//     client later than the server asked (a restart storm settled in 27 s
//     instead of 16.8 s that way: BENCHMARKS.md, Storm). It resets only
//     when a connection stays up HealthyAfter (or on a network change).
//     Every ReResolveAfter losses in a row (failures and hinted refusals)
//     set Ready.ReResolve once.
//   - A connection is declared dead when a ping gets no Pong in time, or
//     when DeadAfterTimeouts requests time out with nothing received since.
//   - The first ping after the cursor moved is preceded by
//     PushAck(Delivered), so the server's cursor converges even if it failed
//     to store an earlier ack.

package core

import (
	"slices"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

type phase uint8

const (
	phaseWaiting   phase = iota // waiting for dialAt
	phaseDialing                // Dial emitted, waiting for ConnUp/ConnDown
	phaseHandshake              // Hello written, waiting for Welcome
	phaseActive                 // welcomed
	phaseStopped                // fatal error: wait for SetToken
)

type connMgr struct {
	phase    phase
	conn     ConnID // current connection (dialing, handshake or active)
	lastConn ConnID
	addr     string
	dialAt   time.Time // phaseWaiting: when to dial (zero: at once)
	deadline time.Time // dialing/handshake: give up at

	token    string
	servers  []string
	idx      int      // next server in servers
	goAway   []string // servers a GoAway suggested, for the next dial
	failures int      // consecutive failures (backoff exponent)
	streak   int      // failures since the last ReResolve

	healthyAt time.Time // active: when the connection counts as healthy
	lastWrite time.Time
	lastRead  time.Time
	serverHB  time.Duration // Welcome.heartbeat_ms
	timeouts  int           // consecutive request timeouts
	helloID   uint64
	ping      *request // pending ping, if any
}

func (m *connMgr) state() ConnState {
	switch m.phase {
	case phaseDialing, phaseHandshake:
		return Connecting
	case phaseActive:
		return Connected
	case phaseStopped:
		return Stopped
	}
	return Disconnected
}

// reqKind says what a request was.
type reqKind uint8

const (
	reqHello reqKind = iota + 1
	reqSend
	reqSync
	reqCommand
	reqPing
	reqConvList
)

// request is a request written on the current connection and not answered.
type request struct {
	id       uint64
	kind     reqKind
	sent     time.Time
	deadline time.Time // zero: none (Hello: the connect deadline applies)
	timedOut bool
	entry    *entry        // reqSend
	cmd      *command      // reqCommand
	idle     time.Duration // reqPing: idle time before a heartbeat (0: not a heartbeat)
	probe    bool          // reqPing: a probe
	full     bool          // reqConvList: a page by activity (else since a version)
}

type requests struct {
	next    uint64
	pending map[uint64]*request
}

func (rs *requests) add(r *request) *request {
	rs.next++
	r.id = rs.next
	rs.pending[r.id] = r
	return r
}

func (rs *requests) deadlines(at func(time.Time)) {
	for _, r := range rs.pending {
		if !r.timedOut {
			at(r.deadline)
		}
	}
}

// ConnUp reports that Dial.Conn is connected: the core writes Hello.
func (c *Core) ConnUp(now time.Time, conn ConnID) {
	c.input(now)
	if conn != c.cn.conn || c.cn.phase != phaseDialing {
		c.pump(now)
		return
	}
	c.cn.phase = phaseHandshake
	c.cn.lastRead = now
	r := c.reqs.add(&request{kind: reqHello, sent: now})
	c.cn.helloID = r.id
	c.write(now, &pimv1.Frame{RequestId: r.id, Body: &pimv1.Frame_Hello{Hello: &pimv1.Hello{
		Token:           c.cn.token,
		DeviceId:        c.cfg.DeviceID,
		ProtocolVersion: c.cfg.ProtocolVersion,
		LastUserSeq:     c.meta.Delivered,
		Epoch:           c.meta.Epoch,
		ClientTime:      now.UnixMilli(),
	}}})
	c.pump(now)
}

// ConnDown reports that conn failed to connect or was closed (by the peer,
// the network, or after Ready.Close). err is for the app's information.
func (c *Core) ConnDown(now time.Time, conn ConnID, err error) {
	c.input(now)
	if conn == c.cn.conn && c.cn.phase != phaseWaiting && c.cn.phase != phaseStopped {
		c.lost(now, err, lossFailure, 0, false)
	}
	c.pump(now)
}

// Receive hands over a frame read from conn.
func (c *Core) Receive(now time.Time, conn ConnID, f *pimv1.Frame) {
	c.input(now)
	if conn == c.cn.conn && f != nil {
		switch c.cn.phase {
		case phaseHandshake:
			c.cn.lastRead = now
			c.receiveHandshake(now, f)
		case phaseActive:
			c.cn.lastRead = now
			c.cn.timeouts = 0
			c.receiveActive(now, f)
		}
	}
	c.pump(now)
}

// NetworkChanged reports that the device moved to another network (id is
// the app's name for it, e.g. a Wi-Fi SSID or "cellular"): heartbeats use
// what was learned on it, a live connection is probed at once, a waiting
// reconnect happens at once.
func (c *Core) NetworkChanged(now time.Time, network string) {
	c.input(now)
	c.hb = newHeartbeat(c.cfg.Heartbeat, c.hbRecord(network), c.hb.foreground)
	c.cn.failures, c.cn.streak = 0, 0
	switch c.cn.phase {
	case phaseWaiting:
		c.cn.dialAt = now
	case phaseDialing, phaseHandshake:
		// The attempt may be bound to the old network: start over.
		c.lost(now, ErrNetworkChanged, lossImmediate, 0, true)
	case phaseActive:
		c.probe(now)
	}
	c.pump(now)
}

func (c *Core) hbRecord(network string) HeartbeatRecord {
	if r, ok := c.hbRecs[network]; ok {
		return r
	}
	return HeartbeatRecord{Network: network, Interval: c.cfg.Heartbeat.Min}
}

// SetForeground reports whether the app is in the foreground: foreground
// heartbeats use the minimum interval, and a waiting reconnect happens at
// once.
func (c *Core) SetForeground(now time.Time, fg bool) {
	c.input(now)
	c.hb.foreground = fg
	if fg && c.cn.phase == phaseWaiting {
		c.cn.dialAt = now
	}
	c.pump(now)
}

// SetToken replaces the token (e.g. after UNAUTHENTICATED stopped the core)
// and resumes dialing if stopped. A live connection keeps its session.
func (c *Core) SetToken(now time.Time, token string) {
	c.input(now)
	c.cn.token = token
	if c.cn.phase == phaseStopped {
		c.cn.phase = phaseWaiting
		c.cn.dialAt = now
		c.cn.failures, c.cn.streak = 0, 0
	}
	c.pump(now)
}

// RetryAfter reports that something outside the core (the LBS answering
// with retry_after_ms) asked the client not to connect for d: a waiting
// dial is postponed to at least now + HintDelay(d). The backoff exponent is
// unchanged, and a connection already dialing or up is left alone.
func (c *Core) RetryAfter(now time.Time, d time.Duration) {
	c.input(now)
	if m := &c.cn; m.phase == phaseWaiting && d > 0 {
		if at := now.Add(HintDelay(c.rnd, d)); at.After(m.dialAt) {
			m.dialAt = at
			c.emit(ConnStateEvent{State: Disconnected, Addr: m.addr, Err: ErrRetryLater, Retry: at})
		}
	}
	c.pump(now)
}

// SetServers replaces the server list (e.g. from the LBS after
// Ready.ReResolve); the next dial starts at its first entry.
func (c *Core) SetServers(now time.Time, servers []string) {
	c.input(now)
	if len(servers) > 0 {
		c.cn.servers = slices.Clone(servers)
		c.cn.idx = 0
	}
	c.pump(now)
}

// connPump dials when due.
func (c *Core) connPump(now time.Time) {
	m := &c.cn
	if m.phase != phaseWaiting || (!m.dialAt.IsZero() && now.Before(m.dialAt)) {
		return
	}
	m.lastConn++
	m.conn = m.lastConn
	if len(m.goAway) > 0 {
		m.addr = m.goAway[c.rnd.IntN(len(m.goAway))]
		m.goAway = nil
	} else {
		m.addr = m.servers[m.idx%len(m.servers)]
	}
	m.phase = phaseDialing
	m.deadline = now.Add(c.cfg.ConnectTimeout)
	c.out.dial = &Dial{Conn: m.conn, Addr: m.addr}
	c.emit(ConnStateEvent{State: Connecting, Addr: m.addr})
}

func (c *Core) connDeadlines(at func(time.Time)) {
	m := &c.cn
	switch m.phase {
	case phaseWaiting:
		if m.dialAt.IsZero() {
			at(time.Unix(0, 0)) // at once
		} else {
			at(m.dialAt)
		}
	case phaseDialing, phaseHandshake:
		at(m.deadline)
	case phaseActive:
		at(m.healthyAt)
		if m.ping == nil {
			at(c.pingDue())
		}
	}
}

func (c *Core) connTick(now time.Time) {
	m := &c.cn
	switch m.phase {
	case phaseDialing, phaseHandshake:
		if !now.Before(m.deadline) {
			c.lost(now, ErrConnectTimeout, lossFailure, 0, true)
		}
	case phaseActive:
		if !m.healthyAt.IsZero() && !now.Before(m.healthyAt) {
			m.healthyAt = time.Time{}
			m.failures, m.streak = 0, 0
		}
	}
}

// lossKind says how a connection ended, for the reconnect schedule.
type lossKind uint8

const (
	lossFailure   lossKind = iota // count a failure, back off
	lossOrderly                   // GoAway: retry_after only
	lossImmediate                 // reconnect at once (network change)
)

// lost ends the current connection and schedules the next dial.
func (c *Core) lost(now time.Time, err error, how lossKind, retryAfter time.Duration, closeIt bool) {
	m := &c.cn
	if closeIt && m.conn != 0 {
		c.out.close = append(c.out.close, m.conn)
	}
	c.out.frames = nil
	c.reqs.pending = make(map[uint64]*request)
	m.ping = nil
	m.conn = 0
	m.healthyAt = time.Time{}
	m.timeouts = 0
	c.tl.reset()
	c.ls.connLost()
	var delay time.Duration
	switch how {
	case lossFailure:
		if retryAfter > 0 {
			// Refused with a hint: the server's queue, not our backoff.
			delay = HintDelay(c.rnd, retryAfter)
		} else {
			delay = FullJitter(c.rnd, c.cfg.Backoff.Base, c.cfg.Backoff.Cap, m.failures)
			m.failures++
		}
		m.streak++
		if m.addr == m.servers[m.idx%len(m.servers)] {
			m.idx = (m.idx + 1) % len(m.servers) // try the next one
		}
		if m.streak >= c.cfg.Backoff.ReResolveAfter {
			m.streak = 0
			c.out.reResolve = true
		}
	case lossOrderly:
		delay = HintDelay(c.rnd, retryAfter)
		if m.addr == m.servers[m.idx%len(m.servers)] {
			m.idx = (m.idx + 1) % len(m.servers) // away from the draining server
		}
	}
	delay = max(delay, retryAfter)
	m.phase = phaseWaiting
	m.dialAt = now.Add(delay)
	c.emit(ConnStateEvent{State: Disconnected, Addr: m.addr, Err: err, Retry: m.dialAt})
}

// stop ends the current connection for good (until SetToken).
func (c *Core) stop(err error) {
	m := &c.cn
	if m.conn != 0 {
		c.out.close = append(c.out.close, m.conn)
	}
	c.out.frames = nil
	c.reqs.pending = make(map[uint64]*request)
	m.ping = nil
	m.conn = 0
	c.tl.reset()
	c.ls.connLost()
	m.phase = phaseStopped
	c.emit(ConnStateEvent{State: Stopped, Addr: m.addr, Err: err})
}

func (c *Core) receiveHandshake(now time.Time, f *pimv1.Frame) {
	if ga := f.GetGoAway(); ga != nil {
		c.onGoAway(now, ga)
		return
	}
	if f.RequestId != c.cn.helloID {
		if e := f.GetError(); e != nil && e.GetFatal() {
			c.helloRefused(now, serverError(e))
		}
		return
	}
	hello := c.reqs.pending[f.RequestId]
	delete(c.reqs.pending, f.RequestId)
	switch b := f.Body.(type) {
	case *pimv1.Frame_Welcome:
		c.onWelcome(now, hello, b.Welcome)
	case *pimv1.Frame_Error:
		c.helloRefused(now, serverError(b.Error))
	}
}

func (c *Core) helloRefused(now time.Time, se *ServerError) {
	if se.stops() {
		c.stop(se)
		return
	}
	c.lost(now, se, lossFailure, se.RetryAfter, true)
}

func (c *Core) onWelcome(now time.Time, hello *request, w *pimv1.Welcome) {
	if w.GetUser() != "" && w.GetUser() != c.cfg.User {
		c.stop(ErrWrongUser)
		return
	}
	m := &c.cn
	if hello != nil && c.clk.add(hello.sent, now, w.GetServerTime()) {
		c.meta.Clock, _ = c.clk.best()
		c.dirtyMeta()
	}
	m.phase = phaseActive
	m.healthyAt = now.Add(c.cfg.Backoff.HealthyAfter)
	m.serverHB = time.Duration(w.GetHeartbeatMs()) * time.Millisecond
	m.timeouts = 0
	m.lastRead = now
	c.emit(ConnStateEvent{State: Connected, Addr: m.addr})
	c.timelineWelcome(now, w)
}

func (c *Core) onGoAway(now time.Time, ga *pimv1.GoAway) {
	c.cn.goAway = slices.Clone(ga.GetServers())
	c.lost(now, ErrGoAway, lossOrderly, time.Duration(ga.GetRetryAfterMs())*time.Millisecond, true)
}

func (c *Core) receiveActive(now time.Time, f *pimv1.Frame) {
	switch b := f.Body.(type) {
	case *pimv1.Frame_Push:
		c.onPush(now, b.Push)
		return
	case *pimv1.Frame_GoAway:
		c.onGoAway(now, b.GoAway)
		return
	}
	r := c.reqs.pending[f.RequestId]
	if f.RequestId == 0 || r == nil {
		if e := f.GetError(); e != nil && e.GetFatal() {
			c.lost(now, serverError(e), lossFailure, serverError(e).RetryAfter, true)
		}
		return
	}
	delete(c.reqs.pending, f.RequestId)
	var se *ServerError
	if e := f.GetError(); e != nil {
		se = serverError(e)
	}
	switch r.kind {
	case reqSend:
		if se != nil {
			c.onSendError(now, r, se)
		} else if ack := f.GetSendAck(); ack != nil {
			c.onSendAck(now, r, ack)
		}
	case reqSync:
		c.onSyncAnswer(now, r, f.GetSyncResp(), se)
	case reqCommand:
		c.onCommandAnswer(now, r, f, se)
	case reqConvList:
		c.onConvListAnswer(now, r, f.GetConvListResp(), se)
	case reqPing:
		if c.cn.ping == r {
			c.cn.ping = nil
		}
		if pong := f.GetPong(); pong != nil {
			c.onPong(now, r, pong)
		}
	}
	if se != nil && se.Fatal && c.cn.phase == phaseActive {
		c.lost(now, se, lossFailure, se.RetryAfter, true)
	}
}

// requestTimeouts handles requests past their deadline.
func (c *Core) requestTimeouts(now time.Time) {
	ids := make([]uint64, 0, len(c.reqs.pending))
	for id, r := range c.reqs.pending {
		if !r.timedOut && !r.deadline.IsZero() && !now.Before(r.deadline) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		if c.cn.phase != phaseActive {
			return
		}
		r := c.reqs.pending[id]
		switch r.kind {
		case reqPing:
			c.cn.ping = nil
			delete(c.reqs.pending, id)
			if r.probe {
				c.lost(now, ErrNetworkChanged, lossImmediate, 0, true)
			} else {
				if r.idle > 0 && c.hb.failure(r.idle) {
					c.saveHeartbeat()
				}
				c.lost(now, ErrDeadConnection, lossFailure, 0, true)
			}
			return
		case reqSend:
			r.timedOut = true
			c.cn.timeouts++
			c.sendTimedOut(now, r)
		case reqSync:
			r.timedOut = true
			c.cn.timeouts++
			c.tl.syncTimedOut(r.id)
		case reqConvList:
			r.timedOut = true
			c.cn.timeouts++
			c.ls.timedOut(r.id)
		case reqCommand:
			// Commands are not sent twice on one connection: keep waiting,
			// and let the timeouts count towards declaring it dead.
			c.cn.timeouts++
			r.deadline = now.Add(c.cfg.RequestTimeout)
		}
	}
	if c.cn.timeouts >= c.cfg.DeadAfterTimeouts {
		c.lost(now, ErrDeadConnection, lossFailure, 0, true)
	}
}

// pingInterval is the idle time after which a heartbeat is due.
func (c *Core) pingInterval() time.Duration {
	iv := c.hb.interval()
	if hb := c.cn.serverHB; hb > 0 {
		iv = min(iv, hb)
	}
	return iv
}

// pingDue is when the next heartbeat is due on the active connection.
func (c *Core) pingDue() time.Time {
	m := &c.cn
	last := m.lastWrite
	if m.lastRead.After(last) {
		last = m.lastRead
	}
	due := last.Add(c.hb.interval())
	if hb := m.serverHB; hb > 0 {
		// The server closes connections silent for ~2x its heartbeat.
		if d := m.lastWrite.Add(hb); d.Before(due) {
			due = d
		}
	}
	return due
}

func (c *Core) heartbeatPump(now time.Time) {
	m := &c.cn
	if m.ping != nil || now.Before(c.pingDue()) {
		return
	}
	last := m.lastWrite
	if m.lastRead.After(last) {
		last = m.lastRead
	}
	c.sendPing(now, now.Sub(last), false, c.cfg.Heartbeat.PongTimeout)
}

// probe checks a live connection at once (network change).
func (c *Core) probe(now time.Time) {
	if p := c.cn.ping; p != nil {
		p.probe = true
		p.idle = 0
		if d := now.Add(c.cfg.Heartbeat.ProbeTimeout); d.Before(p.deadline) {
			p.deadline = d
		}
		return
	}
	c.sendPing(now, 0, true, c.cfg.Heartbeat.ProbeTimeout)
}

func (c *Core) sendPing(now time.Time, idle time.Duration, probe bool, timeout time.Duration) {
	if d := c.meta.Delivered; d != c.tl.hbAcked {
		// Acknowledge the cursor again with the first heartbeat after it
		// moved: an ack the server failed to store (it cannot tell us) gets
		// a second chance, and an idle device sends none.
		c.reqs.next++
		c.write(now, &pimv1.Frame{RequestId: c.reqs.next, Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: d}}})
		c.tl.acked = max(c.tl.acked, d)
		c.tl.hbAcked = d
	}
	r := c.reqs.add(&request{kind: reqPing, sent: now, deadline: now.Add(timeout), idle: idle, probe: probe})
	c.cn.ping = r
	c.write(now, &pimv1.Frame{RequestId: r.id, Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{ClientTime: now.UnixMilli()}}})
}

func (c *Core) onPong(now time.Time, r *request, pong *pimv1.Pong) {
	if r.idle > 0 && c.hb.success(r.idle) {
		c.saveHeartbeat()
	}
	if c.clk.add(r.sent, now, pong.GetServerTime()) {
		c.meta.Clock, _ = c.clk.best()
		c.dirtyMeta()
	}
}

func (c *Core) saveHeartbeat() {
	rec := c.hb.rec
	c.hbRecs[rec.Network] = rec
	c.out.hbDty[rec.Network] = true
}
