// Push stream tests: gap-free order from the cache and from the store, the
// flow-control window, cache overflow, acks.
//
// Invariant: every test checks the exact sequence of pushed user seqs.
package gateway

import (
	"fmt"
	"testing"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func TestPushLiveEventsFromCache(t *testing.T) {
	g, l, reg := newTestGateway(t, nil)
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	for i := 1; i <= 20; i++ {
		l.deliver("alice", fmt.Sprint(i))
		checkSeqs(t, c.events(1), uint64(i), uint64(i))
	}
	if n := l.timelineCalls.Load(); n != 0 {
		t.Fatalf("live events in order needed %d store reads", n)
	}
	if v := metricValue(t, reg, "pim_pushed_events_total", "", ""); v != 20 {
		t.Fatalf("pim_pushed_events_total = %v", v)
	}
}

func TestPushGapFilledFromTimeline(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	// Events 1 and 2 are stored but their notifications are lost; 3 arrives.
	l.appendEvent("alice", "bob", "1")
	l.appendEvent("alice", "bob", "2")
	l.deliver("alice", "3")
	checkSeqs(t, c.events(3), 1, 3)
	if l.timelineCalls.Load() == 0 {
		t.Fatal("the gap was not read from the store")
	}
	// Later ones flow from notifications again.
	l.deliver("alice", "4")
	checkSeqs(t, c.events(1), 4, 4)
}

func TestPushBacklogThenLive(t *testing.T) {
	g, l, _ := newTestGateway(t, func(c *Config) { c.MaxFrame = 4096 })
	for i := 0; i < 1000; i++ {
		l.appendEvent("alice", "bob", fmt.Sprintf("%0100d", i)) // ~150 bytes each: many frames
	}
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	l.deliver("alice", "live") // may be notified while the backlog is read
	var evs []*pimv1.Event
	frames := 0
	for len(evs) < 1001 {
		f := c.recv()
		p := f.GetPush()
		if p == nil {
			t.Fatalf("want Push, got %v", f)
		}
		if s := protoSize(f); s > 4096 {
			t.Fatalf("Push frame of %d bytes over MaxFrame", s)
		}
		evs = append(evs, p.Events...)
		frames++
	}
	checkSeqs(t, evs, 1, 1001)
	if frames < 30 {
		t.Fatalf("only %d Push frames for 1001 events under a 4 KiB frame limit", frames)
	}
}

func TestPushWindow(t *testing.T) {
	g, l, _ := newTestGateway(t, func(c *Config) { c.PushWindow = 4 })
	for i := 0; i < 10; i++ {
		l.appendEvent("alice", "bob", "x")
	}
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	checkSeqs(t, c.events(4), 1, 4)
	var extra []*pimv1.Event
	c.ping(&extra) // nothing beyond the window before an ack
	if len(extra) != 0 {
		t.Fatalf("pushed %v beyond the window", seqs(extra))
	}
	c.send(&pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: 2}}})
	checkSeqs(t, c.events(2), 5, 6)
	c.send(&pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: 6}}})
	checkSeqs(t, c.events(4), 7, 10)
	c.ping(&extra)
	if len(extra) != 0 {
		t.Fatalf("pushed %v beyond the head", seqs(extra))
	}
	// A PushAck is applied before a later request is answered.
	if got := l.cursor("alice", "d1"); got != 6 {
		t.Fatalf("cursor %d, want 6", got)
	}
}

func TestPushCacheOverflowFallsBackToStore(t *testing.T) {
	g, l, _ := newTestGateway(t, func(c *Config) { c.PushWindow = 2 })
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	const n = 3 * cacheMax
	for i := 0; i < n; i++ {
		l.deliver("alice", fmt.Sprint(i)) // the window holds the stream: the cache overflows
	}
	var evs []*pimv1.Event
	for len(evs) < n {
		evs = append(evs, c.events(1)...)
		c.send(&pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: evs[len(evs)-1].UserSeq}}})
	}
	checkSeqs(t, evs, 1, n)
	if l.timelineCalls.Load() == 0 {
		t.Fatal("dropped notifications were not read from the store")
	}
}

func TestSyncAcksForFlowControl(t *testing.T) {
	g, l, _ := newTestGateway(t, func(c *Config) { c.PushWindow = 4 })
	for i := 0; i < 12; i++ {
		l.appendEvent("alice", "bob", "x")
	}
	c, _ := pipeSession(t, g)
	c.login("alice", "d1")
	checkSeqs(t, c.events(4), 1, 4)
	// The client pages through the store itself: SyncReq acknowledges 8.
	id := c.request(&pimv1.Frame{Body: &pimv1.Frame_SyncReq{SyncReq: &pimv1.SyncReq{AfterUserSeq: 8, Limit: 2}}})
	var pushed []*pimv1.Event
	f := c.recvNonPush(&pushed)
	if r := f.GetSyncResp(); r == nil || f.RequestId != id || !r.HasMore || r.UserSeq != 12 {
		t.Fatalf("got %v", f)
	} else {
		checkSeqs(t, r.Events, 9, 10)
	}
	// The push stream continues after what the client acknowledged.
	for len(pushed) < 4 {
		pushed = append(pushed, c.events(1)...)
	}
	checkSeqs(t, pushed, 9, 12)
	if got := l.cursor("alice", "d1"); got != 8 {
		t.Fatalf("cursor %d, want 8", got)
	}
}

func TestTwoDevicesHaveTheirOwnStreams(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	for i := 0; i < 3; i++ {
		l.appendEvent("alice", "bob", "x")
	}
	l.cursors["alice/phone"] = 2
	phone, _ := pipeSession(t, g)
	phone.login("alice", "phone")
	laptop, _ := pipeSession(t, g)
	laptop.login("alice", "laptop")
	checkSeqs(t, phone.events(1), 3, 3)
	checkSeqs(t, laptop.events(3), 1, 3)
	l.deliver("alice", "4")
	checkSeqs(t, phone.events(1), 4, 4)
	checkSeqs(t, laptop.events(1), 4, 4)
	phone.send(&pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: 4}}})
	phone.ping(nil)
	if l.cursor("alice", "phone") != 4 || l.cursor("alice", "laptop") != 0 {
		t.Fatalf("cursors phone %d laptop %d", l.cursor("alice", "phone"), l.cursor("alice", "laptop"))
	}
}
