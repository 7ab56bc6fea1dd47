package logic

import (
	"fmt"
	"testing"
	"time"
)

// TestCoalescer drives the coalescer with explicit times: the first read of
// a quiet conversation is due at once, later ones wait out the interval and
// are merged, and conversations do not hold each other back.
func TestCoalescer(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	c := newCoalescer(time.Second)
	steps := []struct {
		ms       int
		note     []string // conv:from:to
		wantDue  string
		wantNext int // ms, -1: none
	}{
		{0, []string{"a:0:3"}, "map[a:{0 3}]", -1},
		{100, []string{"a:3:5", "a:1:4", "b:0:1"}, "map[b:{0 1}]", 1000},
		{999, nil, "map[]", 1000},
		{1000, nil, "map[a:{1 5}]", -1},
		{1500, []string{"a:5:6"}, "map[]", 2000},
		{2100, nil, "map[a:{5 6}]", -1},
		{3200, []string{"a:6:7"}, "map[a:{6 7}]", -1}, // quiet for over a second: at once
	}
	for _, s := range steps {
		for _, n := range s.note {
			var conv string
			var from, to uint64
			fmt.Sscanf(n, "%1s:%d:%d", &conv, &from, &to)
			c.note(conv, from, to)
		}
		due, next := c.due(at(s.ms))
		if fmt.Sprint(due) != s.wantDue && !(len(due) == 0 && s.wantDue == "map[]") {
			t.Fatalf("at %d ms: due %v, want %s", s.ms, due, s.wantDue)
		}
		switch {
		case s.wantNext < 0 && !next.IsZero():
			t.Fatalf("at %d ms: next %v, want none", s.ms, next.Sub(t0))
		case s.wantNext >= 0 && !next.Equal(at(s.wantNext)):
			t.Fatalf("at %d ms: next %v, want %d ms", s.ms, next.Sub(t0), s.wantNext)
		}
	}
	if len(c.last) > 1 {
		t.Fatalf("coalescer keeps %d quiet conversations", len(c.last))
	}
}
