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
// Invariants of this file:
//   - Every session is in g.sessions from before its goroutine starts until
//     after all of its goroutines (reader and pump) have ended; Sessions()
//     and Shutdown rely on that.
//   - After Shutdown has begun no new connection is admitted: listeners are
//     closed and a connection that races in is closed at once.
//   - Shutdown never cuts an in-flight request: the session answers it, then
//     sends GoAway, then closes. Only when Shutdown's ctx ends are the
//     remaining connections aborted (and in-flight Logic calls canceled).
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pim-project/pim/internal/bus"
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
)

// silenceFactor: a connection silent for this many heartbeat intervals is closed.
const silenceFactor = 2.5

// Logic is the business API the gateway calls (satisfied by *logic.Service).
// user and device are always the session's, fixed at Hello.
type Logic interface {
	Epoch() string
	Session(ctx context.Context, user, device string) (cursor, head uint64, err error)
	Send(ctx context.Context, user, device string, req *pimv1.SendReq) (*pimv1.SendAck, error)
	Ack(ctx context.Context, user, device string, userSeq uint64) (uint64, error)
	Timeline(ctx context.Context, user string, after uint64, limit int) ([]*pimv1.Event, uint64, error)
	Sync(ctx context.Context, user, device string, req *pimv1.SyncReq) (*pimv1.SyncResp, error)
	History(ctx context.Context, user string, req *pimv1.HistoryReq) (*pimv1.HistoryResp, error)
	Group(ctx context.Context, user, device string, req *pimv1.GroupReq) (*pimv1.GroupResp, error)
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
	// GoAwaySpread: GoAway.retry_after_ms is drawn from [1s, 1s+spread)
	// (default 5s).
	GoAwaySpread time.Duration
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

	mu        sync.Mutex
	shutdown  bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	drained   chan struct{} // closed when shutdown && no session is left

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
		m:         newMetrics(cfg.Registerer),
		listeners: make(map[net.Listener]struct{}),
		sessions:  make(map[*session]struct{}),
		drained:   make(chan struct{}),
	}
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
func (g *Gateway) Sessions() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sessions)
}

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
		g.serveStream(c)
	}
}

// serveStream starts a session on an accepted stream connection. The
// session is tracked before its goroutine starts, so Shutdown never misses it.
func (g *Gateway) serveStream(c net.Conn) {
	var t *streamTransport
	var tc *tls.Conn
	if g.tls != nil {
		tc = tls.Server(c, g.tls)
		t = newStreamTransport(tc, c, g.cfg.MaxFrame)
	} else {
		t = newStreamTransport(c, c, g.cfg.MaxFrame)
	}
	s := newSession(g, t, c.RemoteAddr().String())
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
	s := newSession(g, newStreamTransport(c, c, g.cfg.MaxFrame), "pipe")
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

// Shutdown stops accepting, lets every session finish the request it is
// processing, sends it GoAway (retry after a random 1s + [0, GoAwaySpread))
// and closes it. It returns nil when every session and its goroutines have
// ended, or ctx's error once ctx is done (the remaining connections are
// then aborted and in-flight Logic calls canceled; they end shortly after).
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	if !g.shutdown {
		g.shutdown = true
		for ln := range g.listeners {
			ln.Close()
		}
		if len(g.sessions) == 0 {
			close(g.drained)
		}
	}
	sessions := g.snapshotLocked()
	g.mu.Unlock()

	spread := g.cfg.GoAwaySpread.Milliseconds()
	for _, s := range sessions {
		retry := 1000 + rand.Int64N(max(spread, 1))
		s.goAway(&pimv1.GoAway{RetryAfterMs: uint32(retry), Reason: "server shutting down"})
	}
	select {
	case <-g.drained:
		return nil
	case <-ctx.Done():
	}
	g.kill()
	g.mu.Lock()
	sessions = g.snapshotLocked()
	g.mu.Unlock()
	for _, s := range sessions {
		s.t.abort()
	}
	return fmt.Errorf("gateway: shutdown with %d connections left: %w", len(sessions), ctx.Err())
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
