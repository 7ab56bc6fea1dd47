// Package gateway is PIM's access layer (the article's connector): it holds
// the long connections (TCP, TLS 1.3 and WebSocket), speaks the wire protocol
// of proto/pim/v1, authenticates the Hello, dispatches requests to the
// business layer (Logic) and streams each device's timeline to it (the push
// stream). It is the only layer with connection state; everything it knows
// can be rebuilt from the store, so a lost connection loses nothing.
//
// A connection is served by a session (session.go) over a transport
// (transport.go). Per connection there is one reader goroutine (the one that
// accepted it: ServeTCP's per-connection goroutine or the HTTP handler) and,
// only while there is something to write or push, one pump goroutine
// (push.go) that writes queued frames, builds Push frames and applies acks.
// An idle connection therefore costs one parked goroutine.
//
// Admission control (admission.Controller, R17) is applied where it is
// cheapest: a connection over the limits is refused right after accept,
// before any TLS handshake or read; a Hello or a send over them gets a
// small Error with a jittered retry_after. Draining (drain.go) sends GoAway
// to the sessions spread over a window, so a restart is no reconnect storm.
//
// Invariants of this file:
//   - Every session is in g.sessions from before its goroutine starts until
//     after all of its goroutines (reader and pump) have ended; Sessions()
//     and Shutdown rely on that. g.open counts them.
//   - After a drain has begun (Drain or Shutdown) no new connection is
//     admitted: listeners are closed and a connection that races in is
//     closed at once.
//   - A refused connection costs no session, no handshake and at most one
//     short-lived goroutine (lingerSlots bound them); every such goroutine
//     ends within refuseLinger and Shutdown waits for them. A connection
//     whose client closed it while it waited to be accepted is dropped
//     before any handshake (tcpinfo_linux.go).
//   - Shutdown never cuts an in-flight request: the session answers it, then
//     sends GoAway, then closes. Only when the drain window plus its grace,
//     or Shutdown's ctx, ends are the remaining connections aborted (and
//     in-flight Logic calls canceled).
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/bus"
	"github.com/pim-project/pim/internal/store"
	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// ProtocolVersion is the wire protocol version this gateway speaks.
const ProtocolVersion = 1

// Defaults for Config's zero values.
const (
	DefaultHeartbeat    = 30 * time.Second
	DefaultHelloTimeout = 10 * time.Second
	DefaultPushWindow   = 4096
	DefaultGoAwaySpread = 5 * time.Second
	DefaultWriteTimeout = 10 * time.Second
	// DefaultMaxQueueBytes bounds the frames queued for one connection
	// (at least twice MaxFrame is always allowed).
	DefaultMaxQueueBytes = 4 << 20
	// DefaultMaxBufferedBytes bounds the frames queued for all connections.
	DefaultMaxBufferedBytes = 256 << 20
	DefaultDrainWindow      = 30 * time.Second
	DefaultDrainRate        = 1000
	DefaultDrainGrace       = 5 * time.Second
)

// refuseLinger bounds how long a refused plaintext connection is kept to
// let the client read its Error frame; lingerSlots bounds how many are.
// maxPace is the longest the accept loop of a TLS listener waits for a
// token (rates under 1/maxPace per second refuse instead).
const (
	refuseLinger = time.Second
	lingerSlots  = 1024
	maxPace      = 250 * time.Millisecond
)

// silenceFactor: a connection silent for this many heartbeat intervals is closed.
const silenceFactor = 2.5

// Logic is the business API the gateway calls (satisfied by *logic.Service).
// user and device are always the session's, fixed at Hello.
type Logic interface {
	Epoch() string
	Session(ctx context.Context, user, device string) (cursor, head uint64, err error)
	// SendAsync validates a send (its errors are returned at once, nothing
	// stored) and hands it to the store without waiting for the commit;
	// Wait gives the ack after the commit. after is nil or the caller's
	// previous pending send: the store keeps their order and stores nothing
	// after a send that failed with a retryable error (logic.SendAsync).
	SendAsync(ctx context.Context, user, device string, req *pimv1.SendReq, after store.Future[*pimv1.SendAck]) (store.Future[*pimv1.SendAck], error)
	Ack(ctx context.Context, user, device string, userSeq uint64) (uint64, error)
	Timeline(ctx context.Context, user string, after uint64, limit int) ([]*pimv1.Event, uint64, error)
	Sync(ctx context.Context, user, device string, req *pimv1.SyncReq) (*pimv1.SyncResp, error)
	History(ctx context.Context, user string, req *pimv1.HistoryReq) (*pimv1.HistoryResp, error)
	Group(ctx context.Context, user, device string, req *pimv1.GroupReq) (*pimv1.GroupResp, error)
	Read(ctx context.Context, user, device string, req *pimv1.ReadReq) (*pimv1.ReadResp, error)
	Hide(ctx context.Context, user, device string, req *pimv1.HideReq) (*pimv1.HideResp, error)
	Conversations(ctx context.Context, user string, req *pimv1.ConvListReq) (*pimv1.ConvListResp, error)
	Receipts(ctx context.Context, user string, req *pimv1.ReceiptsReq) (*pimv1.ReceiptsResp, error)
	Settings(ctx context.Context, user string, req *pimv1.SettingsReq) (*pimv1.SettingsResp, error)
}

// Authenticator verifies a Hello token and returns its user (satisfied by
// *auth.Keys; errors wrap auth.ErrInvalidToken or auth.ErrExpired).
type Authenticator interface {
	Verify(token string) (user string, err error)
}

// Config configures a Gateway. Logic, Bus and Auth are required.
type Config struct {
	Logic Logic
	Bus   bus.Bus
	Auth  Authenticator
	// TLS, when set, wraps every TCP connection in TLS; the gateway enforces
	// TLS 1.3 as the minimum on a clone. nil: plaintext.
	TLS *tls.Config
	// Heartbeat is the ping interval announced in Welcome (default 30s); a
	// connection silent for 2.5x this is closed.
	Heartbeat time.Duration
	// HelloTimeout bounds the wait for the first frame (default 10s).
	HelloTimeout time.Duration
	// MaxFrame is the largest frame accepted, and the size Push frames and
	// trimmed responses are kept under (default wire.DefaultMaxFrame).
	MaxFrame int
	// PushWindow is the most events pushed but not acknowledged on one
	// connection (default 4096).
	PushWindow int
	// GoAwaySpread is the narrowest random spread of GoAway.retry_after_ms
	// (default 5s); see drain.go.
	GoAwaySpread time.Duration
	// DrainWindow is the longest a drain spreads its GoAways over
	// (default 30s).
	DrainWindow time.Duration
	// DrainRate is the GoAways per second a drain aims at: the window shrinks
	// to sessions/DrainRate when that is shorter (default 1000; < 0: always
	// the whole window).
	DrainRate float64
	// DrainGrace is how long sessions have, after the window, to finish and
	// leave before Shutdown aborts them (default 5s).
	DrainGrace time.Duration
	// Alternatives, if set, returns the addresses of other nodes' endpoints
	// for a transport ("tcp" or "ws"), best first, for GoAway.servers.
	Alternatives func(transport string) []string
	// Admission, if set, limits connections, logins and sends; nil: none.
	Admission *admission.Controller
	// CatchupConcurrency bounds the timeline reads of push streams running
	// at once (default 4*GOMAXPROCS, at least 8): a mass reconnect reads
	// backlogs at the pace the store serves them, not all at once.
	CatchupConcurrency int
	// MaxBufferedBytes bounds the frames queued for all connections
	// together (default 256 MiB); a connection that would pass it is
	// treated as slow and disconnected.
	MaxBufferedBytes int64
	// Rand is the randomness of drains (nil: randomly seeded).
	Rand *rand.Rand
	// WriteTimeout bounds one write to a client; a client that does not
	// drain its socket for this long is disconnected (default 10s).
	WriteTimeout time.Duration
	// MaxQueueBytes bounds the frames waiting for one connection's writer;
	// past it the client is slow and is disconnected (default 4 MiB, at
	// least 2*MaxFrame).
	MaxQueueBytes int
	Logger        *slog.Logger
	Registerer    prometheus.Registerer
	// Now is the clock for server_time fields (default time.Now). Deadlines
	// always use the real clock.
	Now func() time.Time
}

// Gateway accepts long connections and runs a session on each.
type Gateway struct {
	cfg  Config
	tls  *tls.Config
	log  *slog.Logger
	m    *metrics
	base context.Context // the context of every Logic call and WebSocket read; canceled on forced shutdown
	kill context.CancelFunc

	admit     *admission.Controller // nil: no limits
	open      atomic.Int64          // len(sessions)
	buffered  atomic.Int64          // bytes queued for all connections
	catchup   chan struct{}         // semaphore of push-stream timeline reads
	lingering chan struct{}         // semaphore of refused connections lingering
	lingerWG  sync.WaitGroup        // their goroutines
	tlFlt     *coalescer[pageResult]

	rndMu sync.Mutex
	rnd   *rand.Rand

	mu         sync.Mutex
	shutdown   bool // a drain has begun: nothing new is admitted
	listeners  map[net.Listener]struct{}
	sessions   map[*session]struct{}
	drained    chan struct{} // closed when shutdown && no session is left
	drainStart time.Time
	drainEnd   time.Time
	drainN     int
	drainWG    sync.WaitGroup // the drain goroutine

	// onPanic, when set (tests), is called with a recovered panic.
	onPanic func(any)
}

// New returns a Gateway with cfg's zero values defaulted.
func New(cfg Config) *Gateway {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = DefaultHelloTimeout
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = wire.DefaultMaxFrame
	}
	if cfg.PushWindow <= 0 {
		cfg.PushWindow = DefaultPushWindow
	}
	if cfg.GoAwaySpread <= 0 {
		cfg.GoAwaySpread = DefaultGoAwaySpread
	}
	if cfg.DrainWindow <= 0 {
		cfg.DrainWindow = DefaultDrainWindow
	}
	if cfg.DrainRate == 0 {
		cfg.DrainRate = DefaultDrainRate
	}
	if cfg.DrainGrace <= 0 {
		cfg.DrainGrace = DefaultDrainGrace
	}
	if cfg.CatchupConcurrency <= 0 {
		cfg.CatchupConcurrency = max(4*runtime.GOMAXPROCS(0), 8)
	}
	if cfg.MaxBufferedBytes <= 0 {
		cfg.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxQueueBytes <= 0 {
		cfg.MaxQueueBytes = DefaultMaxQueueBytes
	}
	cfg.MaxQueueBytes = max(cfg.MaxQueueBytes, 2*cfg.MaxFrame)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		cfg:       cfg,
		log:       cfg.Logger,
		admit:     cfg.Admission,
		catchup:   make(chan struct{}, cfg.CatchupConcurrency),
		lingering: make(chan struct{}, lingerSlots),
		tlFlt:     newCoalescer[pageResult](),
		rnd:       cfg.Rand,
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		drained:   make(chan struct{}),
	}
	g.m = newMetrics(cfg.Registerer, g)
	if cfg.TLS != nil {
		g.tls = cfg.TLS.Clone()
		if g.tls.MinVersion < tls.VersionTLS13 {
			g.tls.MinVersion = tls.VersionTLS13
		}
	}
	g.base, g.kill = context.WithCancel(context.Background())
	return g
}

// Sessions returns the number of open connections (including those still
// in their handshake).
func (g *Gateway) Sessions() int { return int(g.open.Load()) }

// ServeTCP accepts connections on ln until Shutdown (then it returns nil),
// wrapping each in TLS when cfg.TLS is set. It returns an error if ln fails
// otherwise. ServeTCP closes ln.
func (g *Gateway) ServeTCP(ln net.Listener) error {
	g.mu.Lock()
	if g.shutdown {
		g.mu.Unlock()
		ln.Close()
		return nil
	}
	g.listeners[ln] = struct{}{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.listeners, ln)
		g.mu.Unlock()
		ln.Close()
	}()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if g.isShutdown() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("gateway: accept on %s: %w", ln.Addr(), err)
			}
			// Resource exhaustion (EMFILE) or an aborted handshake: back off, go on.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			g.log.Warn("gateway: accept failed, retrying", "addr", ln.Addr().String(), "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-g.base.Done():
				t.Stop()
			}
			continue
		}
		backoff = 0
		if d := g.admitStream(); !d.OK {
			g.refuseStream(c, d)
			continue
		}
		if clientGone(c) { // it waited in the queue longer than its client did
			g.m.gone.Inc()
			c.Close()
			continue
		}
		g.serveStream(c)
	}
}

// admitStream asks admission control about a connection just accepted on a
// stream listener. With TLS, the accept rate paces instead of refusing: a
// refusal before the handshake could only be a reset, without retry_after,
// so the loop waits for the next token (at most one token interval), or
// while the node sheds load, and the clients wait in the kernel's accept
// queue meanwhile. Without TLS, a refusal carries its retry_after
// (refuseStream). A rate too low to pace (a token interval over maxPace)
// refuses, and so does a full node.
func (g *Gateway) admitStream() admission.Decision {
	if g.admit == nil || g.tls == nil {
		return g.admitConn()
	}
	held := false
	for {
		wait, d := g.admit.AcceptWait(time.Now(), g.Sessions())
		if wait > maxPace {
			d = admission.Decision{Reason: admission.ReasonAcceptRate} // a rate too low to pace
		}
		if wait <= 0 || wait > maxPace {
			if !d.OK {
				g.m.refused(d.Reason)
			}
			return d
		}
		if d.Reason == admission.ReasonOverload && !held {
			held = true
			g.m.refused(admission.ReasonOverload) // counted once per connection held
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-g.base.Done():
			t.Stop()
			return admission.Decision{Reason: admission.ReasonMaxConns}
		}
	}
}

// admitConn asks admission control about a new connection.
func (g *Gateway) admitConn() admission.Decision {
	if g.admit == nil {
		return admission.Decision{OK: true}
	}
	d := g.admit.Accept(time.Now(), g.Sessions())
	if !d.OK {
		g.m.refused(d.Reason)
	}
	return d
}

// refuseStream refuses an accepted connection as cheaply as possible: with
// TLS (full, or shedding load), it is reset at once (no handshake is spent
// on it; the client backs off). In plaintext, it gets one small fatal Error frame with the
// retry_after, and is closed after the client has had a moment to read it
// (the lingering is bounded in time and number; beyond, it is just closed).
func (g *Gateway) refuseStream(c net.Conn, d admission.Decision) {
	if g.tls != nil {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
		return
	}
	e := refusalError(d)
	b, err := wire.AppendFrame(nil, errorFrame(0, e))
	if err != nil {
		c.Close()
		return
	}
	g.m.errorOut(e.Code)
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Write(b); err != nil {
		c.Close()
		return
	}
	select {
	case g.lingering <- struct{}{}:
	default:
		c.Close()
		return
	}
	g.lingerWG.Add(1)
	go func() { // owner: the gateway (Shutdown waits); ends within refuseLinger
		defer g.lingerWG.Done()
		defer func() { <-g.lingering }()
		defer c.Close()
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = c.SetReadDeadline(time.Now().Add(refuseLinger))
		var buf [512]byte
		for {
			if _, err := c.Read(buf[:]); err != nil {
				return
			}
		}
	}()
}

// refusalError is the Error frame body of an admission refusal.
func refusalError(d admission.Decision) *pimv1.Error {
	code := pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED
	msg := "server busy (" + d.Reason + "), retry later"
	if d.Reason == admission.ReasonOverload {
		code = pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE
		msg = "server overloaded, retry later"
	}
	return &pimv1.Error{Code: code, Message: msg, RetryAfterMs: admission.Millis(d.RetryAfter), Fatal: true}
}

// serveStream starts a session on an accepted stream connection. The
// session is tracked before its goroutine starts, so Shutdown never misses it.
func (g *Gateway) serveStream(c net.Conn) {
	g.m.admitted()
	var t *streamTransport
	var tc *tls.Conn
	if g.tls != nil {
		tc = tls.Server(c, g.tls)
		t = newStreamTransport(tc, c, g.cfg.MaxFrame)
	} else {
		t = newStreamTransport(c, c, g.cfg.MaxFrame)
	}
	s := newSession(g, t, c.RemoteAddr().String(), transportTCP)
	if !g.track(s) {
		c.Close()
		return
	}
	go func() {
		defer g.untrack(s)
		if tc != nil {
			ctx, cancel := context.WithTimeout(s.ctx, g.cfg.HelloTimeout)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				g.log.Debug("gateway: TLS handshake failed", "remote", s.remote, "err", err)
				t.close()
				return
			}
		}
		s.run()
	}()
}

// serveConn admits c at once and serves it in a new goroutine (tests,
// fuzzing); the returned channel is closed when the session has ended.
func (g *Gateway) serveConn(c net.Conn) <-chan struct{} {
	done := make(chan struct{})
	s := newSession(g, newStreamTransport(c, c, g.cfg.MaxFrame), "pipe", transportTCP)
	if !g.track(s) {
		c.Close()
		close(done)
		return done
	}
	go func() {
		defer close(done)
		defer g.untrack(s)
		s.run()
	}()
	return done
}

func (g *Gateway) snapshotLocked() []*session {
	out := make([]*session, 0, len(g.sessions))
	for s := range g.sessions {
		out = append(out, s)
	}
	return out
}

func (g *Gateway) isShutdown() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.shutdown
}

func (g *Gateway) track(s *session) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shutdown {
		return false
	}
	g.sessions[s] = struct{}{}
	g.open.Add(1)
	g.m.conns.Inc()
	return true
}

func (g *Gateway) untrack(s *session) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.sessions[s]; !ok {
		return
	}
	delete(g.sessions, s)
	g.open.Add(-1)
	g.m.conns.Dec()
	if g.shutdown && len(g.sessions) == 0 {
		close(g.drained)
	}
}

// recovered reports a panic of a session goroutine: it is logged (and
// handed to the test hook) and only that connection is lost.
func (g *Gateway) recovered(s *session, v any, stack []byte) {
	g.log.Error("gateway: panic in session", "session", s.id, "user", s.user, "panic", v, "stack", string(stack))
	if g.onPanic != nil {
		g.onPanic(v)
	}
}
