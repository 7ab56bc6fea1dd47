// The memory bounds of a session: the notification cache by bytes, the
// page kept after a read, and the global budget of queued responses.
package gateway

import (
	"testing"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func bigEvent(seq uint64, size int) *pimv1.Event {
	return &pimv1.Event{UserSeq: seq, Kind: &pimv1.Event_Message{Message: &pimv1.Message{Body: make([]byte, size)}}}
}

func TestCacheBoundedByBytes(t *testing.T) {
	g, _, _ := newTestGateway(t, nil)
	s := newSession(g, nil, "pipe", transportTCP)
	for seq := uint64(1); seq <= 20; seq++ {
		s.cacheLocked(bigEvent(seq, 60<<10))
		if s.cacheBytes > cacheMaxBytes {
			t.Fatalf("cache holds %d bytes after event %d", s.cacheBytes, seq)
		}
	}
	// The lowest events stay (they are pushed next).
	if len(s.cache) == 0 || s.cache[0].UserSeq != 1 || len(s.cache) != cacheMaxBytes/(60<<10+96) {
		t.Fatalf("cache %v", seqs(s.cache))
	}
	// A lower event arriving late takes the place of the highest.
	s.cache = s.cache[1:]
	s.cacheBytes -= eventBytes(bigEvent(1, 60<<10))
	s.cacheLocked(bigEvent(1, 60<<10))
	if s.cache[0].UserSeq != 1 {
		t.Fatalf("cache %v", seqs(s.cache))
	}
	s.pushed = s.cache[len(s.cache)-1].UserSeq
	s.trimCacheLocked()
	if len(s.cache) != 0 || s.cacheBytes != 0 {
		t.Fatalf("after trimming everything: %d events, %d bytes", len(s.cache), s.cacheBytes)
	}
}

func TestTrimPage(t *testing.T) {
	var page []*pimv1.Event
	for i := 1; i <= 100; i++ {
		page = append(page, bigEvent(uint64(i), 30<<10))
	}
	kept := trimPage(page)
	if n := len(kept); n == 0 || n >= 100 || n*(30<<10+96) > pageMaxBytes {
		t.Fatalf("kept %d events of 30 KiB", n)
	}
	if one := trimPage([]*pimv1.Event{bigEvent(1, 1<<20)}); len(one) != 1 {
		t.Fatal("a single large event was dropped")
	}
	// The caller's slice is not written: appending to the kept part cannot
	// overwrite the page.
	_ = append(kept, bigEvent(999, 1))
	if page[len(kept)].UserSeq != uint64(len(kept)+1) {
		t.Fatal("trimPage let an append overwrite the page")
	}
}

func TestGlobalBufferBudgetDisconnectsSlowClient(t *testing.T) {
	g, _, _ := newTestGateway(t, func(c *Config) { c.MaxFrame = 1024; c.MaxBufferedBytes = 4096 })
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	ping := &pimv1.Frame{Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{}}}
	c.stopReading()
	var err error
	for i := 0; i < 100000 && err == nil; i++ {
		err = c.write(ping)
	}
	if err == nil {
		t.Fatal("a client that never reads was not disconnected by the global budget")
	}
	waitDone(t, done)
	if n := g.buffered.Load(); n != 0 {
		t.Fatalf("%d bytes still counted after the session ended", n)
	}
}

func TestPeakRate(t *testing.T) {
	p := &peakRate{}
	t0 := time.UnixMilli(1_700_000_000_000)
	for i := 0; i < 100; i++ {
		p.add(t0)
	}
	for i := 0; i < 50; i++ {
		p.add(t0.Add(950 * time.Millisecond))
	}
	if p.max() != 150 {
		t.Fatalf("peak %d, want 150 (both within one second)", p.max())
	}
	for i := 0; i < 30; i++ {
		p.add(t0.Add(1050 * time.Millisecond)) // the first bucket has left the window
	}
	if p.max() != 150 || p.sum != 80 {
		t.Fatalf("peak %d sum %d, want 150 and 80", p.max(), p.sum)
	}
	p.add(t0.Add(time.Hour))
	if p.sum != 1 || p.max() != 150 {
		t.Fatalf("after an hour: sum %d peak %d", p.sum, p.max())
	}
}
