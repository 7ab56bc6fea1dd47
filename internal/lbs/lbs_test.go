// Tests of the LBS with a fake clock and seeded randomness: the per-node
// cap, spreading to other nodes, random choice among equals, ranking by
// load, draining, the retry_after hint and the HTTP handler.
package lbs

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/admission"
)

var t0 = time.Unix(1_700_000_000, 0)

type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) advance(d time.Duration) { c.now = c.now.Add(d) }

type staticRegistry []Node

func (r staticRegistry) Nodes() []Node { return r }

func node(id string, load float64) Node {
	return Node{ID: id, Load: load, Healthy: true, Endpoints: []Endpoint{
		{Transport: TransportTCP, Address: id + ":7400"},
		{Transport: TransportWS, Address: "ws://" + id + ":7480/ws"}}}
}

func newBalancer(reg Registry, l admission.Limit, clk *fakeClock) *Balancer {
	return New(Config{Registry: reg, PerNode: l, Now: clk.Now, Rand: rand.New(rand.NewPCG(1, 2))})
}

func TestCapPerNodeSpreadsToOthers(t *testing.T) {
	clk := &fakeClock{now: t0}
	b := newBalancer(staticRegistry{node("a", 0), node("b", 0), node("c", 0)}, admission.Limit{Rate: 10, Burst: 10}, clk)
	firsts := map[string]int{}
	for i := 0; i < 30; i++ {
		ans, err := b.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		if ans.RetryAfterMs != 0 {
			t.Fatalf("answer %d has retry_after with capacity left", i)
		}
		if len(ans.Endpoints) != 6 || ans.Endpoints[0].Transport != TransportTCP || ans.Endpoints[1].Node != ans.Endpoints[0].Node {
			t.Fatalf("answer %d: %+v", i, ans.Endpoints)
		}
		firsts[ans.Endpoints[0].Node]++
	}
	for _, id := range []string{"a", "b", "c"} {
		if firsts[id] != 10 {
			t.Fatalf("node %s put first %d times in one instant, cap 10: %v", id, firsts[id], firsts)
		}
	}
	// Every node at its cap: a retry_after hint, the nodes still listed.
	ans, _ := b.Resolve()
	if ans.RetryAfterMs == 0 || len(ans.Endpoints) != 6 {
		t.Fatalf("over the cap: %+v", ans)
	}
	// A token per node comes back every 100ms.
	clk.advance(100 * time.Millisecond)
	got := map[string]int{}
	for i := 0; i < 3; i++ {
		ans, _ := b.Resolve()
		if ans.RetryAfterMs != 0 {
			t.Fatalf("refused with tokens back (%d)", i)
		}
		got[ans.Endpoints[0].Node]++
	}
	if len(got) != 3 {
		t.Fatalf("after 100ms the three tokens went to %v", got)
	}
}

func TestCapOverTimeExact(t *testing.T) {
	// Over 10 s of requests every 1 ms, one node gets at most burst + 10*rate.
	clk := &fakeClock{now: t0}
	b := newBalancer(staticRegistry{node("solo", 0)}, admission.Limit{Rate: 50, Burst: 20}, clk)
	sent := 0
	for i := 0; i < 10_000; i++ {
		ans, err := b.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		if ans.RetryAfterMs == 0 {
			sent++
		}
		clk.advance(time.Millisecond)
	}
	// [t0, t0+9.999s]: burst 20 + floor(9.999*50) = 519.
	if sent != 519 {
		t.Fatalf("node handed %d clients in 10s, want exactly 519", sent)
	}
}

func TestRetryAfterSpreadOnOneNode(t *testing.T) {
	// 2,000 clients at once on a node taking 100/s: the hints place them over
	// ~20 s, at about 100 per second, each at a random time.
	clk := &fakeClock{now: t0}
	b := newBalancer(staticRegistry{node("solo", 0)}, admission.Limit{Rate: 100, Burst: 1}, clk)
	b.Resolve() // the one token
	perSecond := map[uint32]int{}
	var last uint32
	for i := 0; i < 2000; i++ {
		ans, _ := b.Resolve()
		if ans.RetryAfterMs == 0 || len(ans.Endpoints) != 2 {
			t.Fatalf("refusal %d: %+v", i, ans)
		}
		perSecond[ans.RetryAfterMs/1000]++
		last = max(last, ans.RetryAfterMs)
	}
	for s, n := range perSecond {
		if n > 130 { // about 100 each, sd ~6 (jitter over 1s of evenly queued clients)
			t.Fatalf("%d clients told to come back in second %d (rate 100): %v", n, s, perSecond)
		}
	}
	if last < 19_000 || last > 22_000 {
		t.Fatalf("last hint %d ms, want about 20 s", last)
	}
}

func TestRandomAmongEqualsAndRankByLoad(t *testing.T) {
	clk := &fakeClock{now: t0}
	// a, b, c equal (loads within one 5% step); d much more loaded.
	b := newBalancer(staticRegistry{node("a", 0.10), node("b", 0.11), node("c", 0.12), node("d", 0.80)}, admission.Limit{}, clk)
	firsts := map[string]int{}
	const n = 3000
	for i := 0; i < n; i++ {
		ans, _ := b.Resolve()
		firsts[ans.Endpoints[0].Node]++
		if last := ans.Endpoints[len(ans.Endpoints)-1].Node; last != "d" {
			t.Fatalf("the loaded node is not last: %+v", ans.Endpoints)
		}
	}
	if firsts["d"] != 0 {
		t.Fatal("the loaded node was put first")
	}
	for _, id := range []string{"a", "b", "c"} {
		// Binomial(3000, 1/3): mean 1000, sd ~26; 6 sd.
		if c := firsts[id]; c < 850 || c > 1150 {
			t.Fatalf("node %s first %d of %d times: %v", id, c, n, firsts)
		}
	}
}

func TestDrainingAndUnhealthy(t *testing.T) {
	clk := &fakeClock{now: t0}
	a, bb, c := node("a", 0), node("b", 0), node("c", 0)
	a.Draining, c.Healthy = true, false
	b := newBalancer(staticRegistry{a, bb, c}, admission.Limit{}, clk)
	for i := 0; i < 50; i++ {
		ans, _ := b.Resolve()
		for _, e := range ans.Endpoints {
			if e.Node != "b" {
				t.Fatalf("listed %s: %+v", e.Node, ans.Endpoints)
			}
		}
	}
	if alt := b.Alternatives("b", TransportWS); len(alt) != 0 {
		t.Fatalf("alternatives of b: %v", alt)
	}
	if alt := b.Alternatives("a", TransportTCP); len(alt) != 1 || alt[0] != "b:7400" {
		t.Fatalf("alternatives of a: %v", alt)
	}
	// Only draining nodes left: listed, with a retry_after.
	solo := node("solo", 0)
	solo.Draining = true
	b = newBalancer(staticRegistry{solo}, admission.Limit{Rate: 100, Burst: 100}, clk)
	ans, err := b.Resolve()
	if err != nil || ans.RetryAfterMs == 0 || len(ans.Endpoints) != 2 {
		t.Fatalf("draining only: %+v %v", ans, err)
	}
	b = newBalancer(staticRegistry{c}, admission.Limit{}, clk)
	if _, err := b.Resolve(); !errors.Is(err, ErrNoNodes) {
		t.Fatalf("no healthy node: err %v", err)
	}
}

type fakeAuth struct{}

func (fakeAuth) Verify(tok string) (string, error) {
	if tok == "good" {
		return "alice", nil
	}
	return "", errors.New("bad token")
}

func TestHandler(t *testing.T) {
	clk := &fakeClock{now: t0}
	local := &Local{ID: "n1", Endpoints: []Endpoint{{Transport: TransportTCP, Address: "127.0.0.1:7400"}}}
	h := Handler(newBalancer(local, admission.Limit{}, clk), fakeAuth{}, nil)
	do := func(method, auth string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "/v1/lbs", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := do("GET", ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", w.Code)
	}
	if w := do("GET", "Bearer nope"); w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
		t.Fatalf("bad token: %d", w.Code)
	}
	if w := do("POST", "Bearer good"); w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", w.Code)
	}
	w := do("GET", "Bearer good")
	if w.Code != http.StatusOK || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("GET: %d %v", w.Code, w.Header())
	}
	var ans Answer
	if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil {
		t.Fatal(err)
	}
	if len(ans.Endpoints) != 1 || ans.Endpoints[0].Address != "127.0.0.1:7400" || ans.Endpoints[0].Node != "n1" ||
		ans.TTLMs != DefaultTTL.Milliseconds() {
		t.Fatalf("answer %s", w.Body.String())
	}
}
