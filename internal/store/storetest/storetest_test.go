package storetest

import (
	"sync"
	"testing"

	"github.com/pim-project/pim/internal/store"
)

// TestModel runs the suite against the reference model itself: the suite's
// expectations and the model must agree (a data set per dir, as on disk).
func TestModel(t *testing.T) {
	var mu sync.Mutex
	sets := make(map[string]*memState)
	Run(t, func(t *testing.T, dir string) store.Store {
		mu.Lock()
		defer mu.Unlock()
		st, ok := sets[dir]
		if !ok {
			st = newMemState()
			sets[dir] = st
		}
		return &memStore{st: st}
	})
}
