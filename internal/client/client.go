// Package client is a lean, synchronous client of the PIM wire protocol, for
// the pim CLI and for integration tests (the full SDK, with outbox, resend
// and reconnect, lives in sdk/go).
//
// A Conn is one long connection (TCP, TLS or WebSocket) after Hello/Welcome.
// Requests are pipelined: any number of goroutines may call Send, Sync,
// History, Group, Ping and Call at once; one reader goroutine matches each
// response to its request by request_id and queues pushed events in order.
//
// Invariants:
//   - Every request gets a fresh non-zero request_id and exactly one outcome:
//     its response, the server's Error for it (an *errcode.Error), the
//     connection's terminal error, or its context's error.
//   - Once the connection ends (a fatal server Error, a read or write failure,
//     or Close) the terminal error is fixed, every pending and later request
//     fails with it, and Done is closed.
//   - Pushes delivers events in the order the server sent them; events that
//     arrived before the connection ended are still delivered, then the
//     channel is closed (at once on Close).
//   - A write failure ends the connection: a partly written frame would
//     corrupt the stream.
//   - After Close returns, every goroutine the Conn started has ended.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// ProtocolVersion is the protocol version Dial announces by default.
const ProtocolVersion = 1

// DefaultWriteTimeout bounds a write when the caller's context has no deadline.
const DefaultWriteTimeout = 10 * time.Second

var (
	// ErrClosed is the terminal error of a Conn closed by Close.
	ErrClosed = errors.New("client: connection closed")
	// ErrServerClosed is the terminal error when the server ended the
	// connection in order (end of stream between frames, WebSocket close).
	ErrServerClosed = errors.New("client: connection closed by the server")
	// ErrNoWelcome is in the chain of a Dial error when the transport was up
	// but the connection ended before Welcome without a server Error (e.g. a
	// plaintext client at a TLS port).
	ErrNoWelcome = errors.New("client: connection ended before Welcome")
)

// noWelcomeError reports a connection that ended before Welcome.
type noWelcomeError struct{ err error }

func (e noWelcomeError) Error() string {
	return "client: connection ended before Welcome: " + strings.TrimPrefix(e.err.Error(), "client: ")
}
func (e noWelcomeError) Unwrap() []error { return []error{ErrNoWelcome, e.err} }

// Options configures Dial.
type Options struct {
	// Addr is host:port for TCP (and TLS), or a ws:// or wss:// URL when
	// WebSocket is set.
	Addr string
	// TLS, if set, wraps the TCP connection in TLS, or is the TLS config of
	// a wss:// URL. Nil means plaintext TCP (wss:// then uses the defaults).
	TLS       *tls.Config
	WebSocket bool

	Token       string
	Device      string
	LastUserSeq uint64
	Epoch       string

	// ProtocolVersion overrides the version sent in Hello (0: ProtocolVersion).
	ProtocolVersion uint32
	// NoHello skips the handshake: Dial returns as soon as the transport is
	// up and Welcome returns nil (tests use it to send frames before Hello,
	// e.g. a Hello of their own through Call).
	NoHello bool
	// DiscardPushes drops pushed events instead of queueing them (for
	// connections that only send). Pushes is then closed only at the end.
	DiscardPushes bool
	// MaxFrame is the largest frame accepted from the server
	// (0: wire.DefaultMaxFrame).
	MaxFrame int
	// WriteTimeout bounds each write whose context has no earlier deadline
	// (0: DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Logger receives debug logs about dropped frames (nil: discarded).
	Logger *slog.Logger
}

// Conn is a client connection. Its methods are safe for concurrent use.
type Conn struct {
	t       transport
	opts    Options
	log     *slog.Logger
	welcome *pimv1.Welcome

	wmu sync.Mutex // serializes writes: one frame at a time on the stream

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan result
	err     error // terminal error, set once

	done      chan struct{} // closed when err is set
	closing   chan struct{} // closed by Close
	closeOnce sync.Once

	pushes *pushQueue
	out    chan *pimv1.Event
	goAway chan *pimv1.GoAway
	wg     sync.WaitGroup
}

type result struct {
	f   *pimv1.Frame
	err error
}

// Dial connects to opts.Addr, sends Hello and waits for Welcome. ctx bounds
// the dial and the handshake. An Error answering Hello is returned as the
// server's *errcode.Error.
func Dial(ctx context.Context, opts Options) (*Conn, error) {
	if opts.MaxFrame <= 0 {
		opts.MaxFrame = wire.DefaultMaxFrame
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.ProtocolVersion == 0 {
		opts.ProtocolVersion = ProtocolVersion
	}
	t, err := dialTransport(ctx, opts)
	if err != nil {
		return nil, err
	}
	c := newConn(t, opts)
	if opts.NoHello {
		return c, nil
	}
	w, err := c.hello(ctx)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.welcome = w
	return c, nil
}

func newConn(t transport, opts Options) *Conn {
	c := &Conn{
		t: t, opts: opts, log: opts.Logger,
		pending: make(map[uint64]chan result),
		done:    make(chan struct{}),
		closing: make(chan struct{}),
		pushes:  newPushQueue(),
		out:     make(chan *pimv1.Event),
		goAway:  make(chan *pimv1.GoAway, 1),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.wg.Add(2)
	go c.readLoop()
	go func() {
		defer c.wg.Done()
		c.pushes.pump(c.out, c.closing)
	}()
	return c
}

func (c *Conn) hello(ctx context.Context) (*pimv1.Welcome, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_Hello{Hello: &pimv1.Hello{
		Token: c.opts.Token, DeviceId: c.opts.Device, ProtocolVersion: c.opts.ProtocolVersion,
		LastUserSeq: c.opts.LastUserSeq, Epoch: c.opts.Epoch, ClientTime: time.Now().UnixMilli(),
	}}})
	if err != nil {
		var ce *errcode.Error
		if errors.As(err, &ce) {
			return nil, ce
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("client: hello: %w", err)
		}
		return nil, noWelcomeError{err}
	}
	w := f.GetWelcome()
	if w == nil {
		return nil, fmt.Errorf("client: hello: expected Welcome, got %s", bodyName(f))
	}
	return w, nil
}

// Welcome returns the server's Welcome (nil with Options.NoHello).
func (c *Conn) Welcome() *pimv1.Welcome { return c.welcome }

// Pushes returns the events of the server's Push frames, in order. It is
// closed when the connection has ended and every event received before that
// was delivered, or at once on Close. Events not read are kept in memory.
func (c *Conn) Pushes() <-chan *pimv1.Event { return c.out }

// GoAway delivers the server's first GoAway, if it sends one.
func (c *Conn) GoAway() <-chan *pimv1.GoAway { return c.goAway }

// Done is closed when the connection has ended; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns the terminal error: nil while the connection is up, ErrClosed
// after Close, ErrServerClosed after the server ended the connection in
// order, the server's *errcode.Error after a fatal Error, or the transport
// error that ended it.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection and waits for the Conn's goroutines to end.
// Pending requests fail with ErrClosed. It is safe to call more than once.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closing)
		c.setErr(ErrClosed)
		c.t.close(true) // graceful where the transport has an orderly close
	})
	c.wg.Wait()
	return nil
}

// fail makes err the terminal error (if there is none yet), fails every
// pending request with it and tears down the transport.
func (c *Conn) fail(err error) {
	c.setErr(err)
	c.t.close(false)
}

// setErr makes err the terminal error if there is none yet and fails every
// pending request with it.
func (c *Conn) setErr(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	pending := c.pending
	c.pending = nil
	close(c.done)
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: err}
	}
	c.pushes.end()
}
