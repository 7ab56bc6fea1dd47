// Package faultproxy is a fault-injecting TCP proxy: it forwards
// connections to a target and can add latency, cut every connection, refuse
// new ones, and black-hole traffic; it counts the bytes it forwards and can
// show them to a tap. The Go SDK's tests (sdk/go), `pim bench e2e --faults
// cut`, `pim bench catchup` (outages) and `pim bench wire` (bytes on the
// wire) use it (internal/bench).
//
// Invariants:
//   - Bytes are forwarded in order in each direction, never altered, never
//     dropped while the connection lives: a black hole stalls traffic (as a
//     dead path does to TCP, which retransmits) instead of losing bytes, and
//     a cut ends both sides of a connection at once.
//   - Latency delays each chunk by the latency in force when it was read;
//     chunks keep their order.
//   - Every goroutine belongs to the Proxy and ends on Close, which returns
//     after they have.
//   - Counts and the tap see every chunk forwarded, once, just before it is
//     written to its destination: once a peer has read bytes, they are
//     counted. A chunk read but never written (the connection died in a
//     black hole) is not counted.
package faultproxy

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Counts are the bytes forwarded in one direction, and the chunks they
// came in (one read each: on loopback, about one TCP segment each).
type Counts struct {
	Bytes  int64
	Chunks int64
}

// Tap sees each chunk forwarded: the connection's number (1, 2, ... in
// accept order), its direction (up: client to target) and the bytes, which
// it must not keep or modify. It is called from the proxy's goroutines,
// concurrently for different connections and directions, in order within
// one (connection, direction).
type Tap func(conn int, up bool, b []byte)

// Proxy forwards TCP connections from Addr to a target.
type Proxy struct {
	ln net.Listener

	mu        sync.Mutex
	target    string
	latency   time.Duration
	refuse    bool
	blackhole bool
	unblock   chan struct{} // closed when a black hole ends
	conns     map[*pair]struct{}
	closed    bool
	accepted  int
	refused   int
	cuts      int
	tap       Tap

	upBytes, upChunks, downBytes, downChunks atomic.Int64

	wg sync.WaitGroup
}

// pair is one proxied connection.
type pair struct {
	id     int // accept order, from 1
	client net.Conn
	dead   chan struct{} // closed by close

	mu     sync.Mutex
	server net.Conn // nil until dialed
	closed bool
}

func (p *pair) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	close(p.dead)
	p.client.Close()
	if p.server != nil {
		p.server.Close()
	}
}

// setServer attaches the upstream connection; false if the pair was
// closed meanwhile (s is then closed).
func (p *pair) setServer(s net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		s.Close()
		return false
	}
	p.server = s
	return true
}

// New listens on a free loopback port and forwards to target.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: make(map[*pair]struct{}), unblock: make(chan struct{})}
	close(p.unblock)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetTarget changes where new connections go.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// SetLatency delays every chunk by d in each direction (0: none).
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// SetRefuse makes the proxy close new connections at once (the server
// looks down), or accept them again.
func (p *Proxy) SetRefuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// SetBlackhole stalls all traffic, in both directions, on existing and new
// connections, until it is turned off. Nobody is told.
func (p *Proxy) SetBlackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on == p.blackhole {
		return
	}
	p.blackhole = on
	if on {
		p.unblock = make(chan struct{})
	} else {
		close(p.unblock)
	}
}

// Cut closes every current connection (both sides).
func (p *Proxy) Cut() {
	p.mu.Lock()
	ps := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		ps = append(ps, c)
	}
	p.cuts++
	p.mu.Unlock()
	for _, c := range ps {
		c.close()
	}
}

// Counts reports the bytes and chunks forwarded so far: up (client to
// target) and down.
func (p *Proxy) Counts() (up, down Counts) {
	return Counts{p.upBytes.Load(), p.upChunks.Load()}, Counts{p.downBytes.Load(), p.downChunks.Load()}
}

// SetTap installs fn (nil: none) for the chunks forwarded from now on.
func (p *Proxy) SetTap(fn Tap) {
	p.mu.Lock()
	p.tap = fn
	p.mu.Unlock()
}

// Stats reports how many connections were accepted and how many cuts made.
func (p *Proxy) Stats() (accepted, cuts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, p.cuts
}

// Refused reports how many connections were closed at once because of
// SetRefuse.
func (p *Proxy) Refused() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused
}

// Close stops the proxy, closes every connection and waits for its
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	if p.blackhole {
		p.blackhole = false
		close(p.unblock)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed || p.refuse {
			if !p.closed {
				p.refused++
			}
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.accepted++
		pr := &pair{id: p.accepted, client: c, dead: make(chan struct{})}
		p.conns[pr] = struct{}{}
		target := p.target
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(pr, target)
	}
}

func (p *Proxy) serve(pr *pair, target string) {
	defer p.wg.Done()
	defer func() {
		pr.close()
		p.mu.Lock()
		delete(p.conns, pr)
		p.mu.Unlock()
	}()
	s, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		return
	}
	if !pr.setServer(s) { // cut before the dial completed
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(pr, s, pr.client, true) }()
	go func() { defer wg.Done(); p.pipe(pr, pr.client, s, false) }()
	wg.Wait()
}

// chunk is data read at a time, due for writing at due.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst through a delay line; any end closes both sides.
// up says the direction (client to target).
func (p *Proxy) pipe(pr *pair, dst, src net.Conn, up bool) {
	defer pr.close()
	line := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() { // writer: owned by pipe, ends before pipe returns
		defer close(done)
		for ch := range line {
			if d := time.Until(ch.due); d > 0 {
				time.Sleep(d) // the injected latency itself
			}
			if err := p.wait(pr); err != nil {
				pr.close()
				continue
			}
			p.count(pr, up, ch.b)
			if _, err := dst.Write(ch.b); err != nil {
				pr.close()
			}
		}
	}()
	defer func() { close(line); <-done }()
	for {
		if err := p.wait(pr); err != nil {
			return
		}
		buf := make([]byte, 32<<10)
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			lat := p.latency
			p.mu.Unlock()
			line <- chunk{b: buf[:n], due: time.Now().Add(lat)}
		}
		if err != nil {
			return // EOF or error: the delay line drains, then both sides close
		}
	}
}

// count records a chunk about to be written (see Counts and Tap).
func (p *Proxy) count(pr *pair, up bool, b []byte) {
	if up {
		p.upBytes.Add(int64(len(b)))
		p.upChunks.Add(1)
	} else {
		p.downBytes.Add(int64(len(b)))
		p.downChunks.Add(1)
	}
	p.mu.Lock()
	tap := p.tap
	p.mu.Unlock()
	if tap != nil {
		tap(pr.id, up, b)
	}
}

// wait blocks while traffic is black-holed; it fails once the connection
// is gone.
func (p *Proxy) wait(pr *pair) error {
	p.mu.Lock()
	ch := p.unblock
	p.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-pr.dead:
		return net.ErrClosed
	}
}
