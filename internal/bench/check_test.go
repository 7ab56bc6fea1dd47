package bench

import "testing"

func TestBitset(t *testing.T) {
	var a, b Bitset
	for _, n := range []uint64{0, 1, 63, 64, 65, 1000, 5000} {
		if a.Set(n) {
			t.Fatalf("%d reported present before Set", n)
		}
		if !a.Set(n) || !a.Has(n) {
			t.Fatalf("%d not present after Set", n)
		}
	}
	if a.Has(2) || a.Has(100000) {
		t.Fatal("Has of an absent number")
	}
	if a.Count() != 7 {
		t.Fatalf("Count = %d, want 7", a.Count())
	}
	b.Set(1)
	b.Set(1000)
	if got := a.CountNotIn(&b); got != 5 {
		t.Fatalf("CountNotIn = %d, want 5", got)
	}
	if got := b.CountNotIn(&Bitset{}); got != 2 {
		t.Fatalf("CountNotIn(empty) = %d, want 2", got)
	}
}

// ev is one event as a receiver sees it.
type ev struct {
	userSeq uint64
	conv    string
	seq     uint64
	bench   bool
	sender  int
	n       uint64
}

func TestChecker(t *testing.T) {
	msg := func(us uint64, conv string, seq uint64, sender int, n uint64) ev {
		return ev{us, conv, seq, true, sender, n}
	}
	sys := func(us uint64, conv string, seq uint64) ev { return ev{us, conv, seq, false, 0, 0} }
	cases := []struct {
		name                  string
		pushFrom              uint64
		evs                   []ev
		delivered, dup, order int64
	}{
		{"in order", 0, []ev{msg(1, "d:a:b", 1, 0, 0), msg(2, "d:a:b", 2, 0, 1), msg(3, "d:a:b", 3, 0, 2)}, 3, 0, 0},
		{"starts after push_from, conv mid-way", 10, []ev{msg(11, "g:x", 57, 0, 0), msg(12, "g:x", 58, 1, 0)}, 2, 0, 0},
		{"membership messages then chat", 0, []ev{sys(1, "g:x", 3), sys(2, "g:x", 4), msg(3, "g:x", 5, 0, 0)}, 1, 0, 0},
		{"duplicate push", 0, []ev{msg(1, "d:a:b", 1, 0, 0), msg(1, "d:a:b", 1, 0, 0), msg(2, "d:a:b", 2, 0, 1)}, 2, 1, 0},
		{"user seq gap", 0, []ev{msg(1, "d:a:b", 1, 0, 0), msg(3, "d:a:b", 2, 0, 1)}, 2, 0, 1},
		{"first event not after push_from", 5, []ev{msg(7, "d:a:b", 1, 0, 0)}, 1, 0, 1},
		{"conv seq gap", 0, []ev{msg(1, "g:x", 1, 0, 0), msg(2, "g:x", 3, 1, 0)}, 2, 0, 1},
		{"conv seq step back", 0, []ev{msg(1, "g:x", 5, 0, 0), msg(2, "g:x", 4, 1, 0), msg(3, "g:x", 6, 1, 1)}, 3, 0, 1},
		{"sender order swapped", 0, []ev{msg(1, "d:a:b", 1, 0, 1), msg(2, "d:a:b", 2, 0, 0)}, 2, 0, 1},
		{"sender gap is not disorder", 0, []ev{msg(1, "d:a:b", 1, 0, 0), msg(2, "d:a:b", 2, 0, 2)}, 2, 0, 0},
		{"two convs interleaved", 0, []ev{msg(1, "d:a:b", 1, 0, 0), msg(2, "d:a:c", 1, 1, 0), msg(3, "d:a:b", 2, 0, 1), msg(4, "d:a:c", 2, 1, 1)}, 4, 0, 0},
		{"one event, several faults, counted once", 0, []ev{msg(1, "g:x", 1, 0, 5), msg(5, "g:x", 9, 0, 1)}, 2, 0, 1},
		{"non-bench replay is disorder", 0, []ev{sys(1, "g:x", 1), sys(1, "g:x", 1)}, 0, 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch := NewChecker(c.pushFrom)
			for _, e := range c.evs {
				ch.Observe(e.userSeq, []byte(e.conv), e.seq, e.bench, e.sender, e.n)
			}
			if ch.Delivered != c.delivered || ch.Duplicated != c.dup || ch.OutOfOrder != c.order {
				t.Errorf("delivered %d dup %d order %d; want %d %d %d",
					ch.Delivered, ch.Duplicated, ch.OutOfOrder, c.delivered, c.dup, c.order)
			}
			if ch.Events != int64(len(c.evs)) {
				t.Errorf("events %d, want %d", ch.Events, len(c.evs))
			}
		})
	}
}

func TestCheckerLost(t *testing.T) {
	ch := NewChecker(0)
	var acked0, acked1, acked2 Bitset
	for n := range uint64(10) {
		acked0.Set(n)
		acked1.Set(n)
		if n != 3 && n != 7 {
			ch.Observe(2*n+1, []byte("d:a:b"), n+1, true, 0, n)
		}
		ch.Observe(2*n+2, []byte("d:a:c"), n+1, true, 1, n)
	}
	acked2.Set(0)
	ch.Observe(21, []byte("d:a:c"), 11, true, 1, 10) // delivered, never acked: not an error
	if got := ch.Lost(0, &acked0); got != 2 {
		t.Errorf("sender 0: lost %d, want 2", got)
	}
	if got := ch.Lost(1, &acked1); got != 0 {
		t.Errorf("sender 1: lost %d, want 0", got)
	}
	if got := ch.Lost(2, &acked2); got != 1 {
		t.Errorf("sender 2 (never seen): lost %d, want 1", got)
	}
	if ch.Seen(-1) != nil || ch.Seen(5) != nil || ch.Seen(1).Count() != 11 {
		t.Error("Seen")
	}
}

// Events that are not messages take their place in the user seq order.
func TestCheckerOtherEvents(t *testing.T) {
	c := NewChecker(0)
	c.Observe(1, []byte("c"), 1, true, 0, 0)
	c.ObserveOther(2)
	c.Observe(3, []byte("c"), 2, true, 0, 1)
	if c.OutOfOrder != 0 || c.Events != 3 || c.Delivered != 2 {
		t.Fatalf("in order: %+v", c)
	}
	c.ObserveOther(5) // a gap
	c.ObserveOther(5) // a repeat
	if c.OutOfOrder != 2 {
		t.Fatalf("gap and repeat: %d out of order, want 2", c.OutOfOrder)
	}
}

// AllowGaps: skipping ahead is fine, going back or repeating is not.
func TestCheckerAllowGaps(t *testing.T) {
	c := NewChecker(0)
	c.AllowGaps = true
	c.Observe(1, []byte("c"), 1, true, 0, 0)
	c.Observe(3, []byte("c"), 2, true, 0, 1) // user seq 2 was not shown
	if c.OutOfOrder != 0 {
		t.Fatalf("a gap counted: %+v", c)
	}
	c.Observe(3, []byte("c"), 3, true, 0, 2)
	c.Observe(6, []byte("c"), 5, true, 0, 3) // conversation seq 4 is missing
	if c.OutOfOrder != 2 {
		t.Fatalf("a repeated user seq and a conversation gap: %d out of order, want 2", c.OutOfOrder)
	}
}
