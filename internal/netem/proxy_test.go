package netem

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echoServer echoes every connection on loopback until the test ends.
func echoServer(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				io.Copy(c, c) // echo until the client half-closes, then close
			}()
		}
	}()
	return ln
}

func startProxy(t *testing.T, target string, oneWay time.Duration) *DelayProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := NewDelayProxy(ln, target, oneWay)
	t.Cleanup(func() { p.Close() })
	return p
}

// Through the proxy to an echo server, every byte comes back in order, each
// round trip takes at least twice the one-way delay, and a half-close is
// passed on after the data.
func TestDelayProxyOrderAndDelay(t *testing.T) {
	const oneWay = 25 * time.Millisecond
	echo := echoServer(t)
	p := startProxy(t, echo.Addr().String(), oneWay)
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))

	// One round trip first: measured from write to echo.
	start := time.Now()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 2*oneWay {
		t.Fatalf("round trip %v through the proxy, want >= %v", rtt, 2*oneWay)
	}

	// Many small writes: the echo is the same bytes in the same order.
	var want bytes.Buffer
	go func() {
		for i := range 2000 {
			b := binary.BigEndian.AppendUint32(nil, uint32(i))
			c.Write(b)
			if i%100 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		c.(*net.TCPConn).CloseWrite()
	}()
	for i := range 2000 {
		want.Write(binary.BigEndian.AppendUint32(nil, uint32(i)))
	}
	got, err := io.ReadAll(c) // ends when the half-close went through and the echo server closed
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("echo through the proxy differs: %d bytes, want %d", len(got), want.Len())
	}
}

// SetDelay applies to open connections; Close ends open connections and
// returns only after the proxy's goroutines are done.
func TestDelayProxySetDelayAndClose(t *testing.T) {
	echo := echoServer(t)
	p := startProxy(t, echo.Addr().String(), 0)
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	const oneWay = 40 * time.Millisecond
	p.SetDelay(oneWay)
	start := time.Now()
	c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if rtt := time.Since(start); rtt < 2*oneWay {
		t.Fatalf("round trip %v after SetDelay, want >= %v", rtt, 2*oneWay)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after Close")
	}
	if _, err := net.Dial("tcp", p.Addr().String()); err == nil {
		t.Fatal("proxy still accepts after Close")
	}
}

// A target that refuses connections makes the proxy close the client's.
func TestDelayProxyTargetDown(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := dead.Addr().String()
	dead.Close()
	p := startProxy(t, addr, time.Millisecond)
	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded with the target down")
	}
}
