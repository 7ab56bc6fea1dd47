// Transports: how frames get on and off one connection. The session logic
// (session.go, push.go) is shared by every transport and sees only the
// transport interface, so it is tested over net.Pipe.
//
// Invariants of this file:
//   - readFrame is called by one goroutine only (the session's reader);
//     writeFrames by one goroutine at a time (the session's pump); finish
//     only by the goroutine that writes, after its last write; abort and
//     close from anywhere, any number of times.
//   - readFrame reports the protocol-relevant failures as sentinel errors:
//     wire.ErrFrameTooLarge (before the body is read or buffered),
//     wire.ErrMalformed, errNotBinary, errTimeout, io.EOF for an orderly end.
//   - No transport keeps a large buffer while idle: write buffers come from
//     a pool for the duration of one write.
package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// lingerTime bounds how long a connection being closed gracefully waits for
// the peer to read our last frames and close its side.
const lingerTime = 2 * time.Second

var (
	// errTimeout: the read deadline passed (hello timeout, silence, linger).
	errTimeout = errors.New("gateway: read timeout")
	// errNotBinary: a WebSocket text message (frames are binary messages).
	errNotBinary = errors.New("gateway: WebSocket text message")
)

// closeReason tells finish why the connection ends (WebSocket close codes).
type closeReason int

const (
	closeNormal closeReason = iota
	closeGoingAway
	closeFatal
)

type transport interface {
	// readFrame reads the next frame into f, failing with errTimeout at deadline.
	readFrame(f *pimv1.Frame, deadline time.Time) error
	// writeFrames writes fs in order and flushes, failing at deadline.
	writeFrames(fs []*pimv1.Frame, deadline time.Time) error
	// finish starts an orderly close after the last write: the peer reads
	// everything written and then sees the end (TCP FIN, TLS close_notify,
	// WebSocket close frame). Reads still pending end within lingerTime. It
	// reports false if the transport cannot close half-way (the caller then
	// closes it).
	finish(why closeReason) bool
	// drain discards what the peer still sends until it closes or lingerTime
	// passes, so that closing does not reset the connection under frames
	// the peer has not read yet. Only the reader goroutine calls it.
	drain()
	// abort closes the connection at once, unblocking every pending call.
	abort()
	// close releases the connection; called once by the session's owner at the end.
	close()
}

// ---- stream transport: TCP, TLS, net.Pipe ----------------------------------

// streamTransport frames a byte stream with wire's 4-byte length prefix.
type streamTransport struct {
	conn net.Conn // frames are read from and written to conn (a *tls.Conn or raw)
	raw  net.Conn // the underlying connection, closed by abort
	max  int

	mu     sync.Mutex // orders read-deadline changes between readFrame and finish
	linger time.Time  // when set, reads end by then
	once   sync.Once
}

func newStreamTransport(conn, raw net.Conn, maxFrame int) *streamTransport {
	return &streamTransport{conn: conn, raw: raw, max: maxFrame}
}

func (t *streamTransport) readFrame(f *pimv1.Frame, deadline time.Time) error {
	t.mu.Lock()
	if !t.linger.IsZero() && t.linger.Before(deadline) {
		deadline = t.linger
	}
	err := t.conn.SetReadDeadline(deadline)
	t.mu.Unlock()
	if err != nil {
		return fmt.Errorf("gateway: set read deadline: %w", err)
	}
	err = t.read(f)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return errTimeout
	}
	return err
}

// read reads one length-prefixed frame (the format of wire.Reader). Unlike
// wire.Reader it keeps no buffer between frames: the body buffer is pooled
// for the duration of one read, so an idle connection holds none.
func (t *streamTransport) read(f *pimv1.Frame) error {
	var hdr [wire.HeaderLen]byte
	if _, err := io.ReadFull(t.conn, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("gateway: truncated frame header: %w", err)
		}
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(t.max) {
		return fmt.Errorf("%w: %d bytes, limit %d", wire.ErrFrameTooLarge, n, t.max)
	}
	bp := wbufPool.Get().(*[]byte)
	body := slices.Grow((*bp)[:0], int(n))[:n]
	defer func() {
		if cap(body) <= maxPooledBuf {
			*bp = body[:0]
			wbufPool.Put(bp)
		}
	}()
	if _, err := io.ReadFull(t.conn, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("gateway: truncated frame body: %w", err)
	}
	proto.Reset(f)
	return wire.Unmarshal(body, f) // copies what it keeps: body is reused
}

// wbufPool holds write buffers; one is used per write and given back.
var wbufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxPooledBuf = 256 << 10

func (t *streamTransport) writeFrames(fs []*pimv1.Frame, deadline time.Time) error {
	bp := wbufPool.Get().(*[]byte)
	b := (*bp)[:0]
	defer func() {
		if cap(b) <= maxPooledBuf {
			*bp = b[:0]
			wbufPool.Put(bp)
		}
	}()
	var err error
	for _, f := range fs {
		if b, err = wire.AppendFrame(b, f); err != nil {
			return err
		}
	}
	if err := t.conn.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("gateway: set write deadline: %w", err)
	}
	if _, err := t.conn.Write(b); err != nil {
		return fmt.Errorf("gateway: write %d frames: %w", len(fs), err)
	}
	return nil
}

type closeWriter interface{ CloseWrite() error }

func (t *streamTransport) finish(closeReason) bool {
	ok := false
	t.once.Do(func() {
		if tc, isTLS := t.conn.(*tls.Conn); isTLS {
			// close_notify; it does not half-close the TCP connection itself.
			if tc.CloseWrite() != nil {
				return
			}
		}
		cw, can := t.raw.(closeWriter)
		if !can || cw.CloseWrite() != nil {
			return
		}
		ok = true
		t.mu.Lock()
		t.linger = time.Now().Add(lingerTime)
		_ = t.conn.SetReadDeadline(t.linger)
		t.mu.Unlock()
	})
	return ok
}

func (t *streamTransport) drain() {
	t.mu.Lock()
	if t.linger.IsZero() {
		t.linger = time.Now().Add(lingerTime)
	}
	_ = t.conn.SetReadDeadline(t.linger)
	t.mu.Unlock()
	_, _ = io.Copy(io.Discard, io.LimitReader(t.conn, 1<<20))
}

func (t *streamTransport) abort() { t.raw.Close() }
func (t *streamTransport) close() { t.raw.Close() }

// ---- WebSocket transport ---------------------------------------------------

// WebSocketHandler returns the handler that upgrades to WebSocket (mounted at
// /ws by the server). Each binary message carries one Frame, no length
// prefix. Any Origin is accepted: the connection authenticates in-band with
// the Hello token, never with cookies, so a cross-site page gains nothing.
// Once draining it answers 503; refused by admission control, 429 (a rate)
// or 503 (full, overloaded), before the upgrade, with a jittered Retry-After
// (seconds) and X-Retry-After-Ms.
func (g *Gateway) WebSocketHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.isShutdown() {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "server shutting down", http.StatusServiceUnavailable)
			return
		}
		if d := g.admitConn(); !d.OK {
			ms := admission.Millis(d.RetryAfter)
			w.Header().Set("Retry-After", strconv.Itoa(int((ms+999)/1000)))
			w.Header().Set("X-Retry-After-Ms", strconv.FormatUint(uint64(ms), 10))
			status := http.StatusTooManyRequests
			if d.Reason == admission.ReasonMaxConns || d.Reason == admission.ReasonOverload {
				status = http.StatusServiceUnavailable
			}
			http.Error(w, "server busy ("+d.Reason+"), retry later", status)
			return
		}
		g.m.admitted()
		hw := &hijackWatch{ResponseWriter: w}
		c, err := websocket.Accept(hw, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			// Accept has answered the request.
			g.log.Debug("gateway: WebSocket upgrade failed", "remote", r.RemoteAddr, "err", err)
			return
		}
		c.SetReadLimit(int64(g.cfg.MaxFrame) + 1)
		t := &wsTransport{c: c, raw: hw.conn, max: g.cfg.MaxFrame}
		s := newSession(g, t, r.RemoteAddr, transportWS)
		t.ctx = s.ctx
		if !g.track(s) {
			t.close()
			return
		}
		defer g.untrack(s)
		s.run()
	})
}

// hijackWatch records the connection websocket.Accept hijacks, so that abort
// can close it without waiting for the library's close handshake.
type hijackWatch struct {
	http.ResponseWriter
	conn net.Conn
}

func (h *hijackWatch) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	h.conn = c
	return c, brw, err
}

func (h *hijackWatch) Unwrap() http.ResponseWriter { return h.ResponseWriter }

type wsTransport struct {
	c    *websocket.Conn
	raw  net.Conn // hijacked connection; nil if unknown
	max  int
	ctx  context.Context
	once sync.Once
}

func (t *wsTransport) readFrame(f *pimv1.Frame, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(t.ctx, deadline)
	defer cancel()
	typ, r, err := t.c.Reader(ctx)
	if err != nil {
		return wsErr(ctx, err)
	}
	// Read one byte past the limit to tell "too large" from "exactly max".
	b, err := io.ReadAll(io.LimitReader(r, int64(t.max)+1))
	if err != nil {
		return wsErr(ctx, err)
	}
	if len(b) > t.max {
		return fmt.Errorf("%w: message over %d bytes", wire.ErrFrameTooLarge, t.max)
	}
	if typ != websocket.MessageBinary {
		return errNotBinary
	}
	proto.Reset(f)
	return wire.Unmarshal(b, f)
}

func wsErr(ctx context.Context, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return errTimeout
	case websocket.CloseStatus(err) == websocket.StatusNormalClosure,
		websocket.CloseStatus(err) == websocket.StatusGoingAway,
		errors.Is(err, io.EOF):
		return io.EOF
	}
	return err
}

func (t *wsTransport) writeFrames(fs []*pimv1.Frame, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(t.ctx, deadline)
	defer cancel()
	bp := wbufPool.Get().(*[]byte)
	b := (*bp)[:0]
	defer func() {
		if cap(b) <= maxPooledBuf {
			*bp = b[:0]
			wbufPool.Put(bp)
		}
	}()
	for _, f := range fs {
		var err error
		b, err = proto.MarshalOptions{}.MarshalAppend(b[:0], f)
		if err != nil {
			return fmt.Errorf("gateway: marshal frame: %w", err)
		}
		if err := t.c.Write(ctx, websocket.MessageBinary, b); err != nil {
			return fmt.Errorf("gateway: write WebSocket message: %w", err)
		}
	}
	return nil
}

func (t *wsTransport) finish(why closeReason) bool {
	t.once.Do(func() {
		code := websocket.StatusNormalClosure
		switch why {
		case closeGoingAway:
			code = websocket.StatusGoingAway
		case closeFatal:
			code = websocket.StatusPolicyViolation
		}
		// Close writes the close frame and waits (at most 5s) for the peer's.
		_ = t.c.Close(code, "")
	})
	return true
}

func (t *wsTransport) drain() {} // the close handshake in finish has drained

func (t *wsTransport) abort() {
	if t.raw != nil {
		t.raw.Close()
		return
	}
	_ = t.c.CloseNow() // not reached: Accept always hijacks through hijackWatch
}

func (t *wsTransport) close() {
	if t.raw != nil {
		t.raw.Close()
	}
	_ = t.c.CloseNow()
}
