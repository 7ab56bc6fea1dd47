package netem

// DelayProxy is a userspace TCP proxy that delays each direction of every
// connection. Invariants: bytes leave in the order they arrived, per
// direction; no byte is written before its arrival plus the one-way delay in
// force when it arrived; end of stream in one direction is passed on (as a
// half-close) only after every byte before it; an error on either side closes
// both sides of that connection; after Close returns, every goroutine of the
// proxy has ended and every connection it made is closed.
//
// The proxy adds delay at the application level only: the TCP connections
// on each side of it see no extra delay, so packet loss below it is
// recovered at their (short) round trip. The Topology's packet delay adds
// the delay to every packet instead; use the proxy where that is not needed
// (or not possible, without root).

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

const (
	proxyChunk    = 32 << 10 // largest read, so the largest delayed chunk
	proxyInFlight = 128      // chunks held per direction before reads stop (backpressure)
	proxyDialWait = 10 * time.Second
)

// DelayProxy forwards every connection accepted on its listener to a target
// address, delaying each direction by the same one-way delay.
type DelayProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration // guarded by mu; applies to connections accepted later
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)

	stop chan struct{}
	wg   sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	lines  map[*delayLine]struct{}
	closed bool
}

// NewDelayProxy serves ln, forwarding each accepted connection to target
// (host:port) with oneWay added to each direction (so a round trip gains
// 2*oneWay). The proxy owns ln: Close closes it.
func NewDelayProxy(ln net.Listener, target string, oneWay time.Duration) *DelayProxy {
	d := &net.Dialer{}
	p := &DelayProxy{
		ln: ln, target: target, delay: oneWay, dial: d.DialContext,
		stop:  make(chan struct{}),
		conns: make(map[net.Conn]struct{}),
		lines: make(map[*delayLine]struct{}),
	}
	p.wg.Add(1)
	go p.accept()
	return p
}

// Addr is the address the proxy accepts on.
func (p *DelayProxy) Addr() net.Addr { return p.ln.Addr() }

// SetDelay changes the one-way delay of every connection, open or future.
// Bytes already held keep their release time.
func (p *DelayProxy) SetDelay(oneWay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = oneWay
	for l := range p.lines {
		l.setDelay(oneWay)
	}
}

// Close stops accepting, closes every connection and waits for the proxy's
// goroutines to end. Bytes still held are dropped.
func (p *DelayProxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	close(p.stop)
	err := p.ln.Close()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// track registers c to be closed by Close; false if the proxy is closed.
func (p *DelayProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *DelayProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *DelayProxy) newLine() *delayLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := newDelayLine(proxyInFlight, p.delay)
	p.lines[l] = struct{}{}
	return l
}

func (p *DelayProxy) dropLine(l *delayLine) {
	p.mu.Lock()
	delete(p.lines, l)
	p.mu.Unlock()
}

func (p *DelayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed (or a listener that cannot go on)
		}
		if !p.track(c) {
			c.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *DelayProxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), proxyDialWait)
	dialDone := make(chan struct{})
	go func() { // Close interrupts a dial in progress
		defer close(dialDone)
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	server, err := p.dial(ctx, "tcp", p.target)
	cancel()
	<-dialDone
	if err != nil {
		return
	}
	defer server.Close()
	if !p.track(server) {
		return
	}
	defer p.untrack(server)

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(client, server) }()
	go func() { defer wg.Done(); p.pipe(server, client) }()
	wg.Wait()
}

// pipe copies src to dst through a delay line. A clean end of src becomes a
// half-close of dst once every byte before it was written; any error closes
// both connections (which ends the other direction too).
func (p *DelayProxy) pipe(src, dst net.Conn) {
	l := p.newLine()
	defer p.dropLine(l)
	readErr := make(chan error, 1)
	go func() {
		var err error
		defer func() {
			l.close()
			readErr <- err
		}()
		for {
			buf := make([]byte, proxyChunk)
			var n int
			n, err = src.Read(buf)
			if n > 0 && !l.put(buf[:n], p.stop) {
				err = net.ErrClosed
				return
			}
			if err != nil {
				return
			}
		}
	}()
	werr := l.run(p.stop, func(b []byte) error {
		_, err := dst.Write(b)
		return err
	})
	stopped := false
	select {
	case <-p.stop:
		stopped = true
	default:
	}
	if werr != nil || stopped {
		src.Close()
		dst.Close()
		for range l.ch { // unblock a reader waiting in put; ends when it closes the line
		}
		<-readErr
		return
	}
	// The line is closed and empty: the reader has ended.
	if err := <-readErr; errors.Is(err, io.EOF) {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
			return
		}
	}
	src.Close()
	dst.Close()
}
