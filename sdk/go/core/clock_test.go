package core

import (
	"testing"
	"time"
)

func TestClockOffset(t *testing.T) {
	const ms = time.Millisecond
	local := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	type trip struct {
		up, down time.Duration // one-way delays
		offset   time.Duration // true server minus local
	}
	for _, tc := range []struct {
		name      string
		trips     []trip
		keep      int
		wantOff   time.Duration
		wantBound time.Duration
	}{
		{"symmetric", []trip{{50 * ms, 50 * ms, 3 * time.Second}}, 8, 3 * time.Second, 50 * ms},
		{"asymmetric stays within the bound", []trip{{90 * ms, 10 * ms, -2 * time.Second}}, 8, -2*time.Second + 40*ms, 50 * ms},
		{"best round trip wins", []trip{
			{200 * ms, 200 * ms, time.Second}, {10 * ms, 30 * ms, time.Second}, {100 * ms, 5 * ms, time.Second},
		}, 8, time.Second - 10*ms, 20 * ms},
		{"old samples age out", []trip{
			{1 * ms, 1 * ms, time.Second}, {100 * ms, 100 * ms, 2 * time.Second}, {100 * ms, 100 * ms, 2 * time.Second},
		}, 2, 2 * time.Second, 100 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clock{n: tc.keep}
			at := local
			for _, tr := range tc.trips {
				sent := at
				server := sent.Add(tr.up).Add(tr.offset)
				recv := sent.Add(tr.up + tr.down)
				c.add(sent, recv, server.UnixMilli())
				at = recv.Add(time.Minute)
			}
			b, ok := c.best()
			if !ok {
				t.Fatal("no sample")
			}
			if b.Offset != tc.wantOff || b.RTT/2 != tc.wantBound {
				t.Fatalf("offset %v ± %v, want %v ± %v", b.Offset, b.RTT/2, tc.wantOff, tc.wantBound)
			}
			truth := tc.trips[len(tc.trips)-1].offset
			if d := (b.Offset - truth).Abs(); d > b.RTT/2+ms {
				t.Fatalf("offset %v is %v from the truth %v, bound %v", b.Offset, d, truth, b.RTT/2)
			}
		})
	}
	var c clock
	c.n = 4
	if c.add(local, local.Add(-time.Second), 1) {
		t.Fatal("a negative round trip was accepted")
	}
	if _, ok := c.best(); ok {
		t.Fatal("estimate without samples")
	}
}
