package netem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// These tests need root, ip and nft; they skip otherwise.

// TCP from the client namespace to the server namespace works, sees the
// round trip set, and UDP datagrams are really dropped at the loss rate's
// whim (both ends see fewer than were sent, the counters agree).
func TestTopologyDelayAndLoss(t *testing.T) {
	topo := Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ln, err := topo.Server.Listen("tcp", ServerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	c, err := topo.Client.Dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != ClientIP {
		t.Fatalf("client address %s, want %s", got, ClientIP)
	}
	roundTrip := func() time.Duration {
		start := time.Now()
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	t.Logf("round trip without delay: %v", roundTrip())
	const rtt = 200 * time.Millisecond
	topo.SetRTT(rtt)
	for range 3 {
		if got := roundTrip(); got < rtt {
			t.Fatalf("round trip %v, want >= %v", got, rtt)
		}
	}

	topo.SetRTT(0)
	if err := topo.SetLoss(ctx, 30); err != nil {
		t.Fatal(err)
	}
	pc, err := topo.Server.ListenPacket("udp", ServerIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	u, err := topo.Client.Dial(ctx, "udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	const sent = 400
	got := make(chan int)
	go func() {
		n := 0
		buf := make([]byte, 64)
		for {
			pc.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, _, err := pc.ReadFrom(buf); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	for i := range sent {
		if _, err := fmt.Fprintf(u, "%d", i); err != nil {
			t.Fatal(err)
		}
		if i%20 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	n := <-got
	st, err := topo.LossStats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("30%% loss: %d of %d datagrams arrived; router saw %d packets, dropped %d (%.1f%%)", n, sent, st.Seen, st.Dropped, 100*st.Rate())
	if n == 0 || n >= sent {
		t.Fatalf("%d of %d datagrams arrived at 30%% loss", n, sent)
	}
	if st.Dropped == 0 || st.Seen < sent {
		t.Fatalf("loss counters %+v after %d datagrams", st, sent)
	}
}

// Close removes every namespace the topology made.
func TestTopologyClose(t *testing.T) {
	if err := Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	topo, err := New(context.Background())
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	list := func() string {
		out, err := exec.Command("ip", "netns", "list").Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if !strings.Contains(list(), topo.Name+"-m") {
		t.Fatalf("namespace %s-m not listed", topo.Name)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if l := list(); strings.Contains(l, topo.Name) {
		t.Fatalf("namespaces left after Close:\n%s", l)
	}
}
