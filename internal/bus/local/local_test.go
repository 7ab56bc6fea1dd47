package local

import (
	"sync"
	"testing"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

type recorder struct {
	mu  sync.Mutex
	got []uint64
}

func (r *recorder) Notify(_ string, ev *pimv1.Event) {
	r.mu.Lock()
	r.got = append(r.got, ev.UserSeq)
	r.mu.Unlock()
}

func TestPublishSubscribeCancel(t *testing.T) {
	b := New()
	a1, a2, other := &recorder{}, &recorder{}, &recorder{}
	c1 := b.Subscribe("alice", a1)
	c2 := b.Subscribe("alice", a2)
	defer c2()
	defer b.Subscribe("bob", other)()
	b.Publish("alice", &pimv1.Event{UserSeq: 1})
	c1()
	c1() // idempotent
	b.Publish("alice", &pimv1.Event{UserSeq: 2})
	if len(a1.got) != 1 || a1.got[0] != 1 {
		t.Fatalf("cancelled subscriber got %v, want [1]", a1.got)
	}
	if len(a2.got) != 2 {
		t.Fatalf("live subscriber got %v, want [1 2]", a2.got)
	}
	if len(other.got) != 0 {
		t.Fatalf("other user's subscriber got %v", other.got)
	}
	if n := b.Subscribers("alice"); n != 1 {
		t.Fatalf("Subscribers(alice) = %d, want 1", n)
	}
}
