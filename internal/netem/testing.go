package netem

// Test glue. Invariant: a topology made by Require is removed at the end of
// the test (t.Cleanup), whether it passed, failed or was skipped later.

import (
	"context"
	"errors"
	"testing"
)

// Require makes a Topology for the test and removes it when the test ends.
// It skips the test, saying why, if this machine or user cannot (not root,
// ip or nft missing, `ip netns add` refused), and fails it on other errors.
func Require(t testing.TB) *Topology {
	t.Helper()
	if err := Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	topo, err := New(context.Background())
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("removing namespaces %s-*: %v", topo.Name, err)
		}
	})
	t.Logf("network namespaces %s-{a,m,b} (server %s, client %s)", topo.Name, ServerIP, ClientIP)
	return topo
}
