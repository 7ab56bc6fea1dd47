package client

// A transport moves whole frames. Invariants: read is called by one goroutine
// only (the Conn's reader); write is called under the Conn's write lock; close
// may be called any number of times from any goroutine and makes a blocked
// read return.

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

type transport interface {
	read(f *pimv1.Frame) error
	// encode renders f in the transport's framing.
	encode(f *pimv1.Frame) ([]byte, error)
	// write writes b as it is: stream bytes, or one WebSocket message.
	write(ctx context.Context, b []byte) error
	// close ends the transport; graceful asks for an orderly close where the
	// transport has one (a WebSocket close handshake).
	close(graceful bool)
}

func dialTransport(ctx context.Context, opts Options) (transport, error) {
	if opts.WebSocket {
		return dialWS(ctx, opts)
	}
	d := &net.Dialer{}
	var (
		conn net.Conn
		err  error
	)
	if opts.TLS != nil {
		conn, err = (&tls.Dialer{NetDialer: d, Config: opts.TLS}).DialContext(ctx, "tcp", opts.Addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", opts.Addr)
	}
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return &streamTransport{conn: conn, r: wire.NewReader(bufio.NewReader(conn), opts.MaxFrame), timeout: opts.WriteTimeout}, nil
}

// streamTransport carries length-prefixed frames over TCP or TLS.
type streamTransport struct {
	conn    net.Conn
	r       *wire.Reader
	timeout time.Duration
	once    sync.Once
}

func (s *streamTransport) read(f *pimv1.Frame) error { return s.r.ReadFrame(f) }

func (s *streamTransport) encode(f *pimv1.Frame) ([]byte, error) { return wire.AppendFrame(nil, f) }

func (s *streamTransport) write(ctx context.Context, b []byte) error {
	deadline := time.Now().Add(s.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := s.conn.SetWriteDeadline(deadline); err != nil {
		return err
	}
	// A cancelled context interrupts the write at once.
	stop := context.AfterFunc(ctx, func() { s.conn.SetWriteDeadline(time.Unix(1, 0)) })
	defer stop()
	_, err := s.conn.Write(b)
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

func (s *streamTransport) close(bool) { s.once.Do(func() { s.conn.Close() }) }

// wsTransport carries one frame per binary WebSocket message.
type wsTransport struct {
	c       *websocket.Conn
	hc      *http.Client
	ctx     context.Context // cancelled by close: ends a blocked read
	cancel  context.CancelFunc
	timeout time.Duration
	once    sync.Once
}

func dialWS(ctx context.Context, opts Options) (*wsTransport, error) {
	u, err := url.Parse(opts.Addr)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("client: WebSocket address %q is not a ws:// or wss:// URL", opts.Addr)
	}
	if u.Scheme == "ws" && opts.TLS != nil {
		return nil, fmt.Errorf("client: TLS config given for plaintext %s: use wss://", opts.Addr)
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: opts.TLS}
	hc := &http.Client{Transport: tr}
	c, _, err := websocket.Dial(ctx, opts.Addr, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("client: %w", err)
	}
	c.SetReadLimit(int64(opts.MaxFrame))
	rctx, cancel := context.WithCancel(context.Background())
	return &wsTransport{c: c, hc: hc, ctx: rctx, cancel: cancel, timeout: opts.WriteTimeout}, nil
}

func (w *wsTransport) read(f *pimv1.Frame) error {
	typ, b, err := w.c.Read(w.ctx)
	if err != nil {
		return err
	}
	if typ != websocket.MessageBinary {
		return fmt.Errorf("%w: text WebSocket message", wire.ErrMalformed)
	}
	return wire.Unmarshal(b, f)
}

func (w *wsTransport) encode(f *pimv1.Frame) ([]byte, error) { return wire.Marshal(f) }

func (w *wsTransport) write(ctx context.Context, b []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	return w.c.Write(ctx, websocket.MessageBinary, b)
}

// wsCloseWait bounds how long a graceful close waits for the server's side
// of the close handshake.
const wsCloseWait = time.Second

func (w *wsTransport) close(graceful bool) {
	w.once.Do(func() {
		if graceful {
			done := make(chan struct{})
			go func() {
				defer close(done)
				w.c.Close(websocket.StatusNormalClosure, "")
			}()
			select {
			case <-done:
			case <-time.After(wsCloseWait):
			}
			// Cancelling the read aborts it and the close handshake with it.
			w.cancel()
			<-done
		}
		w.cancel()
		w.c.CloseNow()
		w.hc.CloseIdleConnections()
	})
}

// isOrderlyEnd reports whether a read error is the server ending the
// connection in order: end of stream between frames, or a normal WebSocket close.
func isOrderlyEnd(err error) bool {
	return errors.Is(err, io.EOF) || websocket.CloseStatus(err) == websocket.StatusNormalClosure ||
		websocket.CloseStatus(err) == websocket.StatusGoingAway
}
