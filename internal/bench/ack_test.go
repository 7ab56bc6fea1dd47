package bench

import (
	"testing"
	"time"
)

func TestAckState(t *testing.T) {
	p := AckPolicy{Every: 4, Delay: 100 * time.Millisecond}
	ms := int64(time.Millisecond)
	type step struct {
		due  bool // call due (else seen)
		seq  uint64
		at   int64 // ms
		want uint64
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"every", []step{{false, 1, 0, 0}, {false, 3, 1, 0}, {false, 4, 2, 4}, {false, 7, 3, 0}, {false, 8, 4, 8}}},
		{"a big batch acks at once", []step{{false, 100, 0, 100}}},
		{"delay from the oldest", []step{{false, 1, 0, 0}, {false, 2, 50, 0}, {true, 0, 99, 0}, {true, 0, 100, 2}, {true, 0, 300, 0}}},
		{"delay restarts after an ack", []step{{false, 4, 0, 4}, {false, 5, 10, 0}, {true, 0, 100, 0}, {true, 0, 110, 5}}},
		{"old seq ignored", []step{{false, 4, 0, 4}, {false, 2, 1, 0}, {true, 0, 500, 0}}},
		{"nothing pending", []step{{true, 0, 1000, 0}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var a ackState
			for i, s := range c.steps {
				var got uint64
				if s.due {
					got = a.due(s.at*ms, p)
				} else {
					got = a.seen(s.seq, s.at*ms, p)
				}
				if got != s.want {
					t.Fatalf("step %d (%+v): got %d, want %d", i, s, got, s.want)
				}
			}
		})
	}
}
