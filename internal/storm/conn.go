// One connection of a storm client: dial, Hello/Welcome, framed reads and
// writes. It reuses the benchmark's hand-written frame codecs
// (internal/bench: AppendSendFrame, AppendPushAckFrame, ScanFrame,
// ScanPush) so the load generator spends little of the shared CPU.
//
// Invariants of this file:
//   - One goroutine reads (next); writes are serialized by wmu and bounded
//     by writeTimeout, so a stuck connection never blocks the pacer for long.
//   - A server refusal (an Error frame at accept or in answer to Hello) is
//     returned as *refusal with its code and retry_after; every other dial
//     failure is a plain error (refused, reset, timeout).
//   - close may be called from anywhere, any number of times.
package storm

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
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pim-project/pim/internal/bench"
	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Field numbers of pim.v1.Frame's body the storm reads.
const (
	fWelcome = 11
	fError   = 12
	fSendAck = 14
	fPush    = 15
	fGoAway  = 23
)

const writeTimeout = 2 * time.Second

// refusal is a server's refusal of a connection or a Hello.
type refusal struct {
	code       pimv1.ErrorCode
	msg        string
	retryAfter time.Duration
}

func (r *refusal) Error() string {
	return fmt.Sprintf("refused: %s (%s, retry after %v)", r.msg, r.code, r.retryAfter)
}

type conn struct {
	nc   net.Conn // TLS or raw
	raw  net.Conn
	br   *bufio.Reader
	rbuf []byte

	wmu  sync.Mutex
	wbuf []byte

	closeOnce sync.Once
}

// dialOpts is what a dial needs.
type dialOpts struct {
	addr        string
	tls         *tls.Config
	localIP     netip.Addr
	token       string
	device      string
	lastUserSeq uint64
	timeout     time.Duration
}

// dial connects and logs in; it returns the connection and its Welcome.
func dial(ctx context.Context, o dialOpts) (*conn, *pimv1.Welcome, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	d := net.Dialer{}
	if o.localIP.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.localIP.AsSlice()}
	}
	raw, err := d.DialContext(ctx, "tcp", o.addr)
	if err != nil {
		return nil, nil, err
	}
	c := &conn{nc: raw, raw: raw}
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if o.tls != nil {
		tc := tls.Client(raw, o.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, nil, fmt.Errorf("TLS handshake: %w", err)
		}
		c.nc = tc
	}
	c.br = bufio.NewReaderSize(c.nc, 4096)
	hello := &pimv1.Frame{RequestId: 1, Body: &pimv1.Frame_Hello{Hello: &pimv1.Hello{
		Token: o.token, DeviceId: o.device, ProtocolVersion: 1, LastUserSeq: o.lastUserSeq,
		ClientTime: time.Now().UnixMilli()}}}
	b, err := wire.AppendFrame(nil, hello)
	if err != nil {
		raw.Close()
		return nil, nil, err
	}
	// A refusal at accept may already be waiting, and the write may then
	// fail: read the answer in any case.
	_, werr := c.nc.Write(b)
	_, kind, body, err := c.next()
	if err != nil {
		raw.Close()
		if werr != nil {
			err = werr
		}
		return nil, nil, fmt.Errorf("waiting for Welcome: %w", err)
	}
	f, err := bench.DecodeBody(kind, body)
	if err != nil {
		raw.Close()
		return nil, nil, err
	}
	switch {
	case f.GetWelcome() != nil:
		return c, f.GetWelcome(), nil
	case f.GetError() != nil:
		raw.Close()
		e := f.GetError()
		return nil, nil, &refusal{code: e.Code, msg: e.Message, retryAfter: time.Duration(e.RetryAfterMs) * time.Millisecond}
	}
	raw.Close()
	return nil, nil, fmt.Errorf("expected Welcome, got frame field %d", kind)
}

// next reads the next frame: its request id, body field number and body
// (valid until the next call).
func (c *conn) next() (uint64, protowire.Number, []byte, error) {
	var hdr [wire.HeaderLen]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > wire.DefaultMaxFrame {
		return 0, 0, nil, fmt.Errorf("%w: %d bytes", wire.ErrFrameTooLarge, n)
	}
	if cap(c.rbuf) < int(n) {
		c.rbuf = make([]byte, max(int(n), 256))
	}
	buf := c.rbuf[:n]
	if _, err := io.ReadFull(c.br, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, 0, nil, err
	}
	return bench.ScanFrame(buf)
}

// write appends frames with fn and writes them at once.
func (c *conn) write(fn func([]byte) []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = fn(c.wbuf[:0])
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.nc.Write(c.wbuf)
	if cap(c.wbuf) > 64<<10 {
		c.wbuf = nil
	}
	return err
}

func (c *conn) close() { c.closeOnce.Do(func() { c.raw.Close() }) }
