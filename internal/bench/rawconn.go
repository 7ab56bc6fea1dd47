package bench

// Conn is the load generator's lean protocol client. Compared with
// internal/client it starts no goroutine (the benchmark decides who reads),
// allocates nothing per frame on the hot path (frames.go), batches writes
// (Queue, then Flush) and counts the bytes on the wire (below TLS).
//
// Invariants: one goroutine at a time reads (Next); writes are serialized by
// wmu, so any goroutine may Queue and Flush; Close may be called from
// anywhere, any number of times, and makes a blocked Next or Flush return.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// DialOptions configures Dial.
type DialOptions struct {
	Addr        string
	TLS         *tls.Config // nil: plaintext
	LocalIP     netip.Addr  // the source address (zero: the kernel's choice)
	Token       string
	Device      string
	LastUserSeq uint64
	// ReadBuffer is the size of the read buffer (0: 16 KiB). Idle connections
	// of the conns benchmark use a small one.
	ReadBuffer int
}

// Conn is one authenticated connection (after Welcome).
type Conn struct {
	raw     net.Conn // the TCP connection
	nc      net.Conn // raw, or TLS over it
	cnt     *counter
	br      *bufio.Reader
	rbuf    []byte
	welcome *pimv1.Welcome

	wmu  sync.Mutex
	wbuf []byte
	werr error

	closeOnce sync.Once
}

// counter counts the bytes of a connection in each direction.
type counter struct {
	net.Conn
	in, out atomic.Int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(int64(n))
	return n, err
}

// HelloError is a server's refusal of the Hello.
type HelloError struct {
	Code    pimv1.ErrorCode
	Message string
}

func (e *HelloError) Error() string {
	return fmt.Sprintf("hello refused: %s (%s)", e.Message, e.Code)
}

// Dial connects, sends Hello and waits for Welcome; ctx bounds all of it.
func Dial(ctx context.Context, o DialOptions) (*Conn, error) {
	d := net.Dialer{}
	if o.LocalIP.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.LocalIP.AsSlice()}
	}
	raw, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	cnt := &counter{Conn: raw}
	c := &Conn{raw: raw, nc: cnt, cnt: cnt}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if o.TLS != nil {
		tc := tls.Client(cnt, o.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		c.nc = tc
	}
	size := o.ReadBuffer
	if size <= 0 {
		size = 16 << 10
	}
	c.br = bufio.NewReaderSize(c.nc, size)
	hello := &pimv1.Frame{RequestId: 1, Body: &pimv1.Frame_Hello{Hello: &pimv1.Hello{
		Token: o.Token, DeviceId: o.Device, ProtocolVersion: 1, LastUserSeq: o.LastUserSeq,
		ClientTime: time.Now().UnixMilli(),
	}}}
	b, err := wire.AppendFrame(nil, hello)
	if err != nil {
		raw.Close()
		return nil, err
	}
	if _, err := c.nc.Write(b); err != nil {
		raw.Close()
		return nil, ctxErr(ctx, err)
	}
	_, kind, body, err := c.Next()
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("waiting for Welcome: %w", ctxErr(ctx, err))
	}
	f := new(pimv1.Frame)
	switch kind {
	case fWelcome, fError:
		if err := proto2Frame(kind, body, f); err != nil {
			raw.Close()
			return nil, err
		}
	default:
		raw.Close()
		return nil, fmt.Errorf("expected Welcome, got frame field %d", kind)
	}
	if e := f.GetError(); e != nil {
		raw.Close()
		return nil, &HelloError{Code: e.Code, Message: e.Message}
	}
	c.welcome = f.GetWelcome()
	c.rbuf = nil // the Welcome was the largest frame an idle connection sees
	return c, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// proto2Frame decodes one frame body (the oneof field kind, bytes body) with
// the generated code, for the frames the benchmark does not scan by hand.
func proto2Frame(kind protowire.Number, body []byte, f *pimv1.Frame) error {
	var b []byte
	b = protowire.AppendTag(b, kind, protowire.BytesType)
	b = protowire.AppendBytes(b, body)
	return wire.Unmarshal(b, f)
}

// DecodeBody decodes a frame body of the given kind with the generated code.
func DecodeBody(kind protowire.Number, body []byte) (*pimv1.Frame, error) {
	f := new(pimv1.Frame)
	return f, proto2Frame(kind, body, f)
}

// Welcome is the server's Welcome.
func (c *Conn) Welcome() *pimv1.Welcome { return c.welcome }

// Next reads the next frame: its request id, the field number of its body
// and the body's bytes, valid until the next call. Only one goroutine may
// call it at a time.
func (c *Conn) Next() (reqID uint64, kind protowire.Number, body []byte, err error) {
	var hdr [wire.HeaderLen]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > wire.DefaultMaxFrame {
		return 0, 0, nil, fmt.Errorf("%w: %d bytes", wire.ErrFrameTooLarge, n)
	}
	if cap(c.rbuf) < int(n) {
		c.rbuf = make([]byte, max(int(n), 512))
	}
	buf := c.rbuf[:n]
	if _, err := io.ReadFull(c.br, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, nil, err
	}
	reqID, kind, body, err = ScanFrame(buf)
	if err != nil {
		return 0, 0, nil, frameErr("incoming", err)
	}
	return reqID, kind, body, nil
}

// Buffered is the number of bytes read from the connection and not yet
// consumed by Next: 0 means the next Next will block on the network.
func (c *Conn) Buffered() int { return c.br.Buffered() }

// Queue appends encoded frames to the write buffer (fn appends to the slice
// it is given and returns it). Nothing is written until Flush.
func (c *Conn) Queue(fn func([]byte) []byte) {
	c.wmu.Lock()
	c.wbuf = fn(c.wbuf)
	c.wmu.Unlock()
}

// Flush writes what is queued, in one write. A failed write fails every
// later one: the stream is broken.
func (c *Conn) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.wbuf)
	if cap(c.wbuf) > 1<<20 {
		c.wbuf = nil
	} else {
		c.wbuf = c.wbuf[:0]
	}
	if err != nil {
		c.werr = err
	}
	return err
}

// Send queues fn's frames and flushes.
func (c *Conn) Send(fn func([]byte) []byte) error {
	c.Queue(fn)
	return c.Flush()
}

// SetReadDeadline bounds the next reads.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// BytesIn and BytesOut are the bytes read and written on the TCP connection,
// the Hello/Welcome exchange and any TLS handshake included.
func (c *Conn) BytesIn() int64  { return c.cnt.in.Load() }
func (c *Conn) BytesOut() int64 { return c.cnt.out.Load() }

// Close closes the connection at once.
func (c *Conn) Close() {
	c.closeOnce.Do(func() { c.raw.Close() })
}

// Call writes f and waits for the answer to its request id (set by the
// caller; use ids that the hot path never uses), skipping pushed events (they
// stay unacknowledged until a later PushAck). For set-up requests. A server
// Error answer is returned as an error.
func (c *Conn) Call(ctx context.Context, f *pimv1.Frame) (*pimv1.Frame, error) {
	b, err := wire.AppendFrame(nil, f)
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		c.nc.SetReadDeadline(d)
		defer c.nc.SetReadDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { c.nc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.Send(func(dst []byte) []byte { return append(dst, b...) }); err != nil {
		return nil, ctxErr(ctx, err)
	}
	for {
		id, kind, body, err := c.Next()
		if err != nil {
			return nil, ctxErr(ctx, err)
		}
		if id != f.RequestId || kind == fPush {
			continue
		}
		out, err := DecodeBody(kind, body)
		if err != nil {
			return nil, err
		}
		out.RequestId = id
		if e := out.GetError(); e != nil {
			return nil, fmt.Errorf("%s (%s)", e.GetMessage(), e.GetCode())
		}
		return out, nil
	}
}
