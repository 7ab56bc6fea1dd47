// Package transport moves whole PIM frames over one connection: TCP
// (plaintext or TLS, length-prefixed frames) or WebSocket (ws:// or wss://,
// one binary message per frame). It is the SDK driver's socket layer; it
// knows nothing of the protocol's meaning.
//
// Invariants:
//   - ReadFrame is called by one goroutine at a time (the connection's
//     reader); WriteFrames by one goroutine at a time (its writer); Close by
//     anyone, any number of times, and it makes blocked reads and writes
//     return.
//   - WriteFrames writes its frames in order and either all of them reach
//     the socket or the connection is unusable (an error): a partly written
//     stream is never reused.
//   - Every write is bounded by the write timeout; nothing blocks forever on
//     a black-holed peer.
package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Kind is the transport of an endpoint.
type Kind uint8

const (
	// TCP carries length-prefixed frames over TCP, optionally in TLS.
	TCP Kind = iota + 1
	// WebSocket carries one frame per binary message.
	WebSocket
)

// Endpoint is one way to reach a gateway.
type Endpoint struct {
	Kind Kind
	// Addr is host:port for TCP, a ws:// or wss:// URL for WebSocket.
	Addr string
	// TLS: TLS on TCP; for WebSocket it follows the URL scheme (wss).
	TLS bool
}

// String is the endpoint's canonical address: tcp://host:port,
// tls://host:port, or the WebSocket URL. Parse(String()) returns the
// endpoint.
func (e Endpoint) String() string {
	switch {
	case e.Kind == WebSocket:
		return e.Addr
	case e.TLS:
		return "tls://" + e.Addr
	}
	return "tcp://" + e.Addr
}

// Host is the endpoint's host name or address (for SNI and certificates).
func (e Endpoint) Host() string {
	if e.Kind == WebSocket {
		if u, err := url.Parse(e.Addr); err == nil {
			return u.Hostname()
		}
		return ""
	}
	h, _, err := net.SplitHostPort(e.Addr)
	if err != nil {
		return e.Addr
	}
	return h
}

// Parse reads an address: tcp://host:port, tls://host:port, ws://... or
// wss://... URLs, or a bare host:port, which means TCP (TLS if defTLS), or
// with defWS the WebSocket endpoint ws(s)://host:port/ws.
func Parse(s string, defTLS, defWS bool) (Endpoint, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return Endpoint{}, fmt.Errorf("transport: address %q: %w", s, err)
		}
		if defWS {
			sc := "ws"
			if defTLS {
				sc = "wss"
			}
			return Endpoint{Kind: WebSocket, Addr: sc + "://" + s + "/ws", TLS: defTLS}, nil
		}
		return Endpoint{Kind: TCP, Addr: s, TLS: defTLS}, nil
	}
	switch strings.ToLower(scheme) {
	case "tcp", "tls":
		if _, _, err := net.SplitHostPort(rest); err != nil {
			return Endpoint{}, fmt.Errorf("transport: address %q: %w", s, err)
		}
		return Endpoint{Kind: TCP, Addr: rest, TLS: strings.EqualFold(scheme, "tls")}, nil
	case "ws", "wss":
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return Endpoint{}, fmt.Errorf("transport: WebSocket address %q is not a URL with a host", s)
		}
		if u.Path == "" {
			u.Path = "/ws"
		}
		return Endpoint{Kind: WebSocket, Addr: u.String(), TLS: u.Scheme == "wss"}, nil
	}
	return Endpoint{}, fmt.Errorf("transport: address %q: unknown scheme %q (want tcp, tls, ws or wss)", s, scheme)
}

// Options configures Dial.
type Options struct {
	// TLS is the client TLS configuration for TLS endpoints (nil: the
	// defaults, verifying against the system roots).
	TLS *tls.Config
	// MaxFrame is the largest frame accepted (0: wire.DefaultMaxFrame).
	MaxFrame int
	// WriteTimeout bounds each WriteFrames (0: 10 s).
	WriteTimeout time.Duration
}

// Conn is one connection.
type Conn interface {
	// ReadFrame reads the next frame into f.
	ReadFrame(f *pimv1.Frame) error
	// WriteFrames writes fs in order.
	WriteFrames(fs []*pimv1.Frame) error
	// Close ends the connection (idempotent, any goroutine).
	Close() error
}

// ErrClosed is returned by operations on a closed connection.
var ErrClosed = errors.New("transport: connection closed")

// Dial opens a connection to ep; ctx bounds the dial (and the TLS or
// WebSocket handshake).
func Dial(ctx context.Context, ep Endpoint, opts Options) (Conn, error) {
	if opts.MaxFrame <= 0 {
		opts.MaxFrame = wire.DefaultMaxFrame
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if ep.Kind == WebSocket {
		return dialWS(ctx, ep, opts)
	}
	d := &net.Dialer{KeepAlive: 30 * time.Second}
	var (
		c   net.Conn
		err error
	)
	if ep.TLS {
		cfg := opts.TLS
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS13}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = ep.Host()
		}
		c, err = (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", ep.Addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", ep.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("transport: dial %s: %w", ep, err)
	}
	return &stream{c: c, r: wire.NewReader(bufio.NewReaderSize(c, 16<<10), opts.MaxFrame), timeout: opts.WriteTimeout}, nil
}

// stream is a TCP or TLS connection.
type stream struct {
	c       net.Conn
	r       *wire.Reader
	timeout time.Duration
	buf     []byte
	once    sync.Once
}

func (s *stream) ReadFrame(f *pimv1.Frame) error { return s.r.ReadFrame(f) }

func (s *stream) WriteFrames(fs []*pimv1.Frame) error {
	s.buf = s.buf[:0]
	for _, f := range fs {
		var err error
		if s.buf, err = wire.AppendFrame(s.buf, f); err != nil {
			return err
		}
	}
	if err := s.c.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil {
		return fmt.Errorf("transport: %w", err)
	}
	if _, err := s.c.Write(s.buf); err != nil {
		return fmt.Errorf("transport: write: %w", err)
	}
	if cap(s.buf) > 256<<10 {
		s.buf = nil // do not keep a burst's buffer on an idle connection
	}
	return nil
}

func (s *stream) Close() error {
	s.once.Do(func() { s.c.Close() })
	return nil
}

// ws is a WebSocket connection.
type ws struct {
	c       *websocket.Conn
	hc      *http.Client
	ctx     context.Context // cancelled by Close: ends blocked reads and writes
	cancel  context.CancelFunc
	timeout time.Duration
	once    sync.Once
}

func dialWS(ctx context.Context, ep Endpoint, opts Options) (Conn, error) {
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment}
	if ep.TLS {
		cfg := opts.TLS
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS13}
		}
		if cfg.ServerName == "" {
			cfg = cfg.Clone()
			cfg.ServerName = ep.Host()
		}
		tr.TLSClientConfig = cfg
	}
	hc := &http.Client{Transport: tr}
	c, _, err := websocket.Dial(ctx, ep.Addr, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("transport: dial %s: %w", ep, err)
	}
	c.SetReadLimit(int64(opts.MaxFrame))
	cctx, cancel := context.WithCancel(context.Background())
	return &ws{c: c, hc: hc, ctx: cctx, cancel: cancel, timeout: opts.WriteTimeout}, nil
}

func (w *ws) ReadFrame(f *pimv1.Frame) error {
	typ, b, err := w.c.Read(w.ctx)
	if err != nil {
		return fmt.Errorf("transport: read: %w", err)
	}
	if typ != websocket.MessageBinary {
		return fmt.Errorf("transport: %w: text WebSocket message", wire.ErrMalformed)
	}
	return wire.Unmarshal(b, f)
}

func (w *ws) WriteFrames(fs []*pimv1.Frame) error {
	ctx, cancel := context.WithTimeout(w.ctx, w.timeout)
	defer cancel()
	for _, f := range fs {
		b, err := wire.Marshal(f)
		if err != nil {
			return err
		}
		if err := w.c.Write(ctx, websocket.MessageBinary, b); err != nil {
			return fmt.Errorf("transport: write: %w", err)
		}
	}
	return nil
}

func (w *ws) Close() error {
	w.once.Do(func() {
		w.cancel()
		w.c.CloseNow()
		w.hc.CloseIdleConnections()
	})
	return nil
}
