// The driver loop: the one goroutine that owns the core, and the
// connections it runs.
//
// Invariants of this file:
//   - Only the loop goroutine touches the core, the conns map, the handle
//     maps and the calls; everything else reaches them through inputs.
//   - Each Ready is carried out in the order package core demands: (1) its
//     Persist and the messages of its events are committed in one store
//     transaction, (2) the connections it closes are closed, (3) its frames
//     are queued, in order, on its connection's writer, (4) a dial starts,
//     (5) an LBS look-up starts, (6) handles are updated and events queued
//     for the app, then Advance. Nothing of a Ready leaves the process
//     before its commit returned; a failed commit stops the Client before
//     anything else of that Ready is done.
//   - Inputs that arrive together are applied together and followed by one
//     flush (group commit: one fsync for a burst of sends or frames); the
//     callers of app inputs are answered only after that flush.
//   - Every connection has one dialer-then-reader goroutine and, once up,
//     one writer goroutine; both end when the loop closes the connection
//     (or the Client's context ends). A dial that completes after the core
//     gave up on it is closed at once.
//   - The driver's own requests (History, Members) use request ids with the
//     top bit set, which the core never allocates; their answers never
//     reach the core (except fatal errors, which end the connection).
//   - The LBS's hints are honoured: an answer with retry_after holds the
//     core's next dial (Core.RetryAfter); after an error answer with one,
//     the LBS is not asked again before it (a ReResolve or an expired answer
//     meanwhile keeps the known servers; the next dial after the hint asks).

package pim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
	"github.com/pim-project/pim/sdk/go/internal/transport"
)

// maxBatch bounds how many queued inputs one flush covers.
const maxBatch = 256

// maxQueuedFrames bounds a connection's write queue; beyond it the peer
// is not reading and the connection is dropped.
const maxQueuedFrames = 1 << 16

// callBit marks request ids of the driver's own requests.
const callBit = uint64(1) << 63

// input is something for the loop to do.
type input struct {
	apply func(l *loop, now time.Time)
	// done, if set, is called after the flush that followed apply, with
	// that flush's error.
	done func(err error)
}

type loop struct {
	cl *Client
	c  *core.Core

	conns    map[core.ConnID]*conn
	lastDial core.ConnID // the core's current connection is its latest dial
	active   core.ConnID // the current connection, once welcomed (0: none)

	outgoing map[string]*Outgoing
	commands map[uint64]*Command
	calls    map[uint64]*call
	nextCall uint64

	token        string
	resolving    bool
	lbsFetched   time.Time
	lbsTTL       time.Duration
	lbsNotBefore time.Time // the LBS asked not to be asked before (zero: none)
}

// call is one of the driver's own requests.
type call struct {
	f      *pimv1.Frame
	reply  chan callResult // capacity 1
	sentOn core.ConnID     // 0: not on the current connection yet
}

type callResult struct {
	f   *pimv1.Frame
	err error
}

// post hands an input to the loop from a goroutine the Client owns; false
// if the Client is stopping.
func (cl *Client) post(in input) bool {
	select {
	case cl.inputs <- in:
		return true
	case <-cl.ctx.Done():
		return false
	}
}

func (l *loop) run() {
	cl := l.cl
	defer close(cl.loopDone)
	defer l.shutdown()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	l.c.Tick(time.Now()) // the first dial is due at once
	if err := l.flush(); err != nil {
		l.fail(err)
		return
	}
	var dones []func(error)
	for {
		if dl := l.c.Deadline(); dl.IsZero() {
			timer.Stop()
		} else {
			timer.Reset(max(time.Until(dl), 0))
		}
		dones = dones[:0]
		select {
		case <-cl.ctx.Done():
			return
		case in := <-cl.inputs:
			dones = l.apply(in, dones)
		batch:
			for range maxBatch - 1 {
				select {
				case in := <-cl.inputs:
					dones = l.apply(in, dones)
				default:
					break batch
				}
			}
		case <-timer.C:
			l.c.Tick(time.Now())
		}
		err := l.flush()
		for _, d := range dones {
			d(err)
		}
		if err != nil {
			l.fail(err)
			return
		}
	}
}

func (l *loop) apply(in input, dones []func(error)) []func(error) {
	in.apply(l, time.Now())
	if in.done != nil {
		dones = append(dones, in.done)
	}
	return dones
}

// fail stops the Client after the store failed.
func (l *loop) fail(err error) {
	l.cl.opts.Logger.Error("pim: stopping: the local store failed", "err", err)
	l.cl.setErr(err)
	l.cl.cancel()
}

// shutdown closes every connection as the loop ends.
func (l *loop) shutdown() {
	for id := range l.conns {
		l.closeConn(id)
	}
}

// flush carries out every Ready (see the file comment for the order).
func (l *loop) flush() error {
	for l.c.HasReady() {
		rd := l.c.Ready()
		if err := l.cl.st.commit(rd.Persist, rd.Events); err != nil { // 1
			return err
		}
		for _, id := range rd.Close { // 2
			l.closeConn(id)
		}
		if len(rd.Frames) > 0 { // 3
			if cn := l.conns[rd.Conn]; cn != nil && cn.w != nil {
				cn.w.enqueue(rd.Frames...)
			}
		}
		if rd.Dial != nil { // 4
			l.dial(*rd.Dial)
		}
		if rd.ReResolve { // 5
			l.resolve()
		}
		l.deliver(rd.Events) // 6
		l.c.Advance()
	}
	l.afterFlush()
	return nil
}

// deliver updates handles and queues the events for the app.
func (l *loop) deliver(evs []core.Event) {
	log := l.cl.opts.Logger
	for _, ev := range evs {
		switch e := ev.(type) {
		case core.SendStateEvent:
			if o := l.outgoing[e.ClientMsgID]; o != nil {
				o.update(e)
				if e.State == Sent {
					delete(l.outgoing, e.ClientMsgID)
				}
			}
		case core.CommandResultEvent:
			if cmd := l.commands[e.ID]; cmd != nil {
				cmd.finish(e)
				delete(l.commands, e.ID)
			}
		case core.ConnStateEvent:
			log.Debug("pim: connection", "state", e.State.String(), "addr", e.Addr, "err", e.Err, "retry", e.Retry)
		case core.ResyncEvent:
			log.Warn("pim: the server's data set changed: timeline reset", "old", e.OldEpoch, "new", e.NewEpoch)
		}
	}
	l.cl.evq.push(evs...)
}

// afterFlush tracks the welcomed connection, (re)sends the driver's own
// requests on it, and publishes the snapshot.
func (l *loop) afterFlush() {
	st := l.c.ConnState()
	l.active = 0
	if st == core.Connected {
		l.active = l.lastDial
	}
	if cn := l.conns[l.active]; cn != nil && cn.w != nil {
		for _, c := range l.calls {
			if c.sentOn != l.active {
				c.sentOn = l.active
				cn.w.enqueue(c.f)
			}
		}
	} else {
		for _, c := range l.calls {
			c.sentOn = 0
		}
	}
	l.cl.publish(l)
}

// startCall registers one of the driver's own requests; afterFlush sends
// it once a connection is welcomed.
func (l *loop) startCall(f *pimv1.Frame, reply chan callResult) uint64 {
	l.nextCall++
	id := callBit | l.nextCall
	f.RequestId = id
	l.calls[id] = &call{f: f, reply: reply}
	return id
}

// answer routes the answer of one of the driver's requests.
func (l *loop) answer(f *pimv1.Frame) {
	c := l.calls[f.RequestId]
	if c == nil {
		return // abandoned, or answered on an earlier connection
	}
	delete(l.calls, f.RequestId)
	if e := f.GetError(); e != nil {
		c.reply <- callResult{err: &ServerError{Code: e.GetCode(), Message: e.GetMessage(),
			RetryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond, Fatal: e.GetFatal()}}
		return
	}
	c.reply <- callResult{f: f}
}

// conn is one connection the core asked for.
type conn struct {
	id     core.ConnID
	addr   string
	cancel context.CancelFunc // ends the dial
	t      transport.Conn     // nil until up
	w      *writer            // nil until up
}

// closeConn closes a connection and forgets it.
func (l *loop) closeConn(id core.ConnID) {
	cn := l.conns[id]
	if cn == nil {
		return
	}
	delete(l.conns, id)
	cn.cancel()
	if cn.t != nil {
		cn.t.Close()
	}
	if cn.w != nil {
		cn.w.stop()
	}
}

// dial starts a connection: its goroutine dials, reports, then reads.
func (l *loop) dial(d core.Dial) {
	cl := l.cl
	timeout := cl.opts.Tuning.ConnectTimeout
	if timeout <= 0 {
		timeout = core.DefaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(cl.ctx, timeout)
	l.conns[d.Conn] = &conn{id: d.Conn, addr: d.Addr, cancel: cancel}
	l.lastDial = d.Conn
	if cl.opts.LBSURL != "" && (l.lbsFetched.IsZero() || (l.lbsTTL > 0 && time.Since(l.lbsFetched) > l.lbsTTL)) {
		l.resolve() // the answer expired: refresh it for the next dials
	}
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		cl.dialAndRead(ctx, cancel, d)
	}()
}

func (cl *Client) dialAndRead(ctx context.Context, cancel context.CancelFunc, d core.Dial) {
	t, err := cl.dialTransport(ctx, d.Addr)
	cancel()
	if err != nil {
		cl.post(input{apply: func(l *loop, now time.Time) { l.connDown(now, d.Conn, err) }})
		return
	}
	if !cl.post(input{apply: func(l *loop, now time.Time) { l.connUp(now, d.Conn, t) }}) {
		t.Close()
		return
	}
	for {
		f := new(pimv1.Frame)
		if err := t.ReadFrame(f); err != nil {
			t.Close()
			cl.post(input{apply: func(l *loop, now time.Time) { l.connDown(now, d.Conn, err) }})
			return
		}
		if !cl.post(input{apply: func(l *loop, now time.Time) { l.receive(now, d.Conn, f) }}) {
			t.Close()
			return
		}
	}
}

func (cl *Client) dialTransport(ctx context.Context, addr string) (transport.Conn, error) {
	ep, err := cl.opts.endpoint(addr)
	if err != nil {
		return nil, err
	}
	var tc *tls.Config
	if ep.TLS {
		if tc, err = cl.opts.TLS.forHost(ep.Host()); err != nil {
			return nil, err
		}
	}
	t, err := transport.Dial(ctx, ep, transport.Options{TLS: tc, WriteTimeout: cl.opts.Tuning.WriteTimeout})
	if err != nil {
		return nil, fmt.Errorf("pim: %w", err)
	}
	return t, nil
}

func (l *loop) connUp(now time.Time, id core.ConnID, t transport.Conn) {
	cn := l.conns[id]
	if cn == nil { // the core gave up on it (Ready.Close) meanwhile
		t.Close()
		return
	}
	cn.t = t
	cn.w = newWriter(l.cl.st, t)
	l.cl.wg.Add(1)
	go func() {
		defer l.cl.wg.Done()
		cn.w.run()
	}()
	l.c.ConnUp(now, id)
}

func (l *loop) connDown(now time.Time, id core.ConnID, err error) {
	l.closeConn(id)
	l.c.ConnDown(now, id, err)
}

func (l *loop) receive(now time.Time, id core.ConnID, f *pimv1.Frame) {
	if f.RequestId&callBit != 0 {
		l.answer(f)
		if e := f.GetError(); e == nil || !e.GetFatal() {
			return
		}
	}
	l.c.Receive(now, id, f)
}

// resolve starts an LBS look-up, unless one is running; its answer
// replaces the core's server list and the cached answer.
func (l *loop) resolve() {
	cl := l.cl
	if cl.opts.LBSURL == "" || l.resolving || time.Now().Before(l.lbsNotBefore) {
		return
	}
	l.resolving = true
	token := l.token
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		ctx, cancel := context.WithTimeout(cl.ctx, 15*time.Second)
		a, err := ResolveLBS(ctx, cl.hc, cl.opts.LBSURL, token)
		cancel()
		cl.post(input{apply: func(l *loop, now time.Time) {
			l.resolving = false
			if err != nil {
				l.lbsFailed(now, err)
				cl.opts.Logger.Warn("pim: LBS look-up failed; keeping the known servers", "err", err)
				return
			}
			servers := cl.lbsServers(a)
			if len(servers) == 0 {
				return
			}
			l.lbsFetched, l.lbsTTL = time.Now(), a.TTL
			l.c.SetServers(now, servers)
			if a.RetryAfter > 0 {
				l.c.RetryAfter(now, a.RetryAfter) // every gateway is full: wait as asked
			}
			if err := cl.st.saveLBS(lbsCache{Servers: servers, Fetched: l.lbsFetched, TTL: a.TTL.Milliseconds()}); err != nil {
				cl.opts.Logger.Warn("pim: caching the LBS answer", "err", err)
			}
		}})
	}()
}

// lbsFailed remembers an error answer's retry_after: no look-up before it.
func (l *loop) lbsFailed(now time.Time, err error) {
	var le *LBSError
	if errors.As(err, &le) && le.RetryAfter > 0 {
		l.lbsNotBefore = now.Add(le.RetryAfter)
	}
}

// writeHook, if set (by tests, before any Client starts), sees every batch
// of frames just before it is written.
var writeHook func(st *store, fs []*pimv1.Frame)

// writer writes a connection's frames, in order, on its own goroutine, so
// that a slow or black-holed peer never blocks the loop.
type writer struct {
	st   *store
	t    transport.Conn
	wake chan struct{} // capacity 1
	quit chan struct{}
	once sync.Once

	mu sync.Mutex
	q  []*pimv1.Frame
}

func newWriter(st *store, t transport.Conn) *writer {
	return &writer{st: st, t: t, wake: make(chan struct{}, 1), quit: make(chan struct{})}
}

func (w *writer) enqueue(fs ...*pimv1.Frame) {
	w.mu.Lock()
	w.q = append(w.q, fs...)
	over := len(w.q) > maxQueuedFrames
	w.mu.Unlock()
	if over {
		w.t.Close() // the reader reports the end
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *writer) stop() { w.once.Do(func() { close(w.quit) }) }

func (w *writer) run() {
	for {
		select {
		case <-w.quit:
			return
		case <-w.wake:
		}
		w.mu.Lock()
		fs := w.q
		w.q = nil
		w.mu.Unlock()
		if len(fs) == 0 {
			continue
		}
		if writeHook != nil {
			writeHook(w.st, fs)
		}
		if err := w.t.WriteFrames(fs); err != nil {
			w.t.Close() // the reader reports the end
			return
		}
	}
}
