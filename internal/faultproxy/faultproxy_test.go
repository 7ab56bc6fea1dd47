// Tests of the proxy: forwarding, latency, black holes (stall, no loss),
// cuts and refusals.

package faultproxy

import (
	"io"
	"net"
	"testing"
	"time"
)

// echo starts a TCP echo server.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	b := make([]byte, len(msg))
	_, err := io.ReadFull(c, b)
	return string(b), err
}

func TestProxy(t *testing.T) {
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(t, c, "hello"); got != "hello" || err != nil {
		t.Fatalf("echo: %q %v", got, err)
	}

	// Latency delays, in order.
	p.SetLatency(50 * time.Millisecond)
	start := time.Now()
	if got, err := roundTrip(t, c, "slow"); got != "slow" || err != nil {
		t.Fatalf("echo with latency: %q %v", got, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("round trip took %v with 50 ms each way", d)
	}
	p.SetLatency(0)

	// A black hole stalls without losing bytes.
	p.SetBlackhole(true)
	c.SetDeadline(time.Now().Add(150 * time.Millisecond))
	c.Write([]byte("held"))
	if _, err := c.Read(make([]byte, 4)); err == nil {
		t.Fatal("data passed a black hole")
	}
	p.SetBlackhole(false)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "held" {
		t.Fatalf("after the black hole: %q %v", b, err)
	}

	// A cut ends the connection.
	p.Cut()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read after a cut succeeded")
	}

	// Refusing closes new connections at once.
	p.SetRefuse(true)
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := roundTrip(t, c2, "x"); err == nil {
		t.Fatal("a refused connection echoed")
	}
	if acc, cuts := p.Stats(); acc != 1 || cuts != 1 || p.Refused() != 1 {
		t.Fatalf("stats: %d accepted, %d cuts, %d refused", acc, cuts, p.Refused())
	}
}

// TestCounts: every byte is counted once per direction, before the peer
// can read it, and the tap sees the same bytes in order with the
// connection's number.
func TestCounts(t *testing.T) {
	p, err := New(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	type seen struct {
		conn int
		up   bool
		s    string
	}
	tapped := make(chan seen, 16)
	p.SetTap(func(conn int, up bool, b []byte) { tapped <- seen{conn, up, string(b)} })
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(t, c, "hello"); got != "hello" || err != nil {
		t.Fatalf("echo: %q %v", got, err)
	}
	up, down := p.Counts()
	if up.Bytes != 5 || down.Bytes != 5 || up.Chunks != 1 || down.Chunks != 1 {
		t.Fatalf("counts up %+v down %+v, want 5 bytes in 1 chunk each way", up, down)
	}
	if a, b := <-tapped, <-tapped; a != (seen{1, true, "hello"}) || b != (seen{1, false, "hello"}) {
		t.Fatalf("tap saw %+v then %+v", a, b)
	}
	if got, err := roundTrip(t, c, "again"); got != "again" || err != nil {
		t.Fatalf("echo: %q %v", got, err)
	}
	if up, down := p.Counts(); up.Bytes != 10 || down.Bytes != 10 {
		t.Fatalf("counts up %+v down %+v, want 10 bytes each way", up, down)
	}
}
