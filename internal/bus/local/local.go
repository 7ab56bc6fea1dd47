// Package local is the in-process Bus of a single node: a map from user to
// the subscribed sessions, sharded to keep lock contention low.
//
// Invariant: a subscription is in exactly one shard's map from Subscribe
// until cancel; Notify is called under the shard's read lock, so after cancel
// returns no Notify for it is running or will start.
package local

import (
	"hash/maphash"
	"sync"

	"github.com/pim-project/pim/internal/bus"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

const shards = 64

// Bus is an in-process bus.Bus.
type Bus struct {
	seed   maphash.Seed
	shards [shards]shard
}

type shard struct {
	mu   sync.RWMutex
	subs map[string][]*entry
}

type entry struct{ sub bus.Subscriber }

var _ bus.Bus = (*Bus)(nil)

// New returns an empty Bus.
func New() *Bus {
	b := &Bus{seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].subs = make(map[string][]*entry)
	}
	return b
}

func (b *Bus) shard(user string) *shard {
	return &b.shards[maphash.String(b.seed, user)%shards]
}

// Publish hands ev to every subscriber of user.
func (b *Bus) Publish(user string, ev *pimv1.Event) {
	s := b.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, e := range s.subs[user] {
		e.sub.Notify(user, ev)
	}
}

// Subscribe registers sub for user's events.
func (b *Bus) Subscribe(user string, sub bus.Subscriber) (cancel func()) {
	s := b.shard(user)
	e := &entry{sub: sub}
	s.mu.Lock()
	s.subs[user] = append(s.subs[user], e)
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			list := s.subs[user]
			for i, x := range list {
				if x == e {
					list = append(list[:i:i], list[i+1:]...)
					break
				}
			}
			if len(list) == 0 {
				delete(s.subs, user)
			} else {
				s.subs[user] = list
			}
		})
	}
}

// Subscribers returns how many subscriptions user has (for metrics and tests).
func (b *Bus) Subscribers(user string) int {
	s := b.shard(user)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.subs[user])
}
