// Real-network faults through a TCP proxy: latency, connections cut every
// few hundred milliseconds, and black holes (traffic stalls, nobody is
// told).
//
// Invariants checked: N messages each way between three devices are each
// delivered exactly once, in order, to every device; dead connections are
// detected and replaced.

package pim

import (
	"sync"
	"testing"
	"time"
)

func TestFaultyNetworkEachOnceInOrder(t *testing.T) {
	srv := startServer(t)
	px := proxyTo(t, srv)
	px.SetLatency(15 * time.Millisecond)
	const n = 40
	conv := DirectConv("alice", "bob")
	devs := []*device{
		newDevice(t, "alice", "phone", token(t, srv, "alice"), px.Addr()),
		newDevice(t, "bob", "phone", token(t, srv, "bob"), px.Addr()),
		newDevice(t, "bob", "pc", token(t, srv, "bob"), px.Addr()),
	}
	senders := make(map[string]int)
	for _, d := range devs {
		d.open()
		senders[d.user+"."+d.id] = n
	}

	// Faults for a few seconds while the devices send: a cut every 300 ms,
	// and a 2.4 s black hole in the middle (longer than dead-connection
	// detection takes); then the network heals.
	faultsDone := make(chan struct{})
	go func() {
		defer close(faultsDone)
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < 16; i++ {
			<-tick.C
			switch {
			case i == 5:
				px.SetBlackhole(true)
			case i == 13:
				px.SetBlackhole(false)
			case i < 5 || i > 13:
				px.Cut()
			}
		}
	}()

	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond) // spread the sends over the faults
			defer tick.Stop()
			var out []*Outgoing
			for i := range n {
				<-tick.C
				out = append(out, sendAll(t, d.cl, conv, d.user+"."+d.id, i, 1)...)
			}
			waitSent(t, out)
		}()
	}
	<-faultsDone
	wg.Wait()
	total := n * len(devs)
	for _, d := range devs {
		d.rec.waitMessages(t, total)
		d.rec.check(t, senders)
	}
	accepted, cuts := px.Stats()
	dead, connects := 0, 0
	for _, d := range devs {
		d.rec.mu.Lock()
		dead += d.rec.dead
		connects += d.rec.connects
		d.rec.mu.Unlock()
	}
	t.Logf("proxy: %d connections accepted, %d cuts; devices: %d connects, %d dead connections detected",
		accepted, cuts, connects, dead)
	if connects < 3*5 || dead == 0 {
		t.Errorf("the faults did not bite: %d connects, %d dead connections", connects, dead)
	}
}
