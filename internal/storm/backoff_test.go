// Backoff tests: the storm clients' reconnect schedule against sdk/go/core's
// own functions and rules.
//
// Invariants: each test draws from a seeded *rand.Rand and logs its seed
// (-storm.seed=N replays one); a twin generator with the same seed gives
// the delay the SDK's function returns for the same draw.
package storm

import (
	"flag"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pim-project/pim/sdk/go/core"
)

var backoffSeed = flag.Uint64("storm.seed", 0, "seed of the backoff tests (0: from the clock)")

// seeded returns two generators with the same seed (one for the client,
// one to replay its draws) and a third for the test's own choices.
func seeded(t *testing.T) (rnd, twin, test *rand.Rand) {
	t.Helper()
	seed := *backoffSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-storm.seed=%d replays it)", seed, seed)
	return rand.New(rand.NewPCG(seed, 0)), rand.New(rand.NewPCG(seed, 0)), rand.New(rand.NewPCG(seed, 1))
}

// hintJitter is the widest jitter core.HintDelay adds to hint.
func hintJitter(hint time.Duration) time.Duration {
	return min(hint/core.HintJitterDiv, core.HintJitterMax)
}

func TestSDKBackoffHintedRefusal(t *testing.T) {
	rnd, twin, test := seeded(t)
	b := backoff{policy: BackoffSDK, base: time.Second, cap: 2 * time.Minute, healthyAfter: 30 * time.Second, rnd: rnd}
	hints := []time.Duration{time.Nanosecond, 9, 10, time.Millisecond, 100 * time.Millisecond, 10 * time.Second,
		15 * time.Second, time.Minute}
	for range 1000 {
		hints = append(hints, 1+time.Duration(test.Int64N(int64(time.Minute))))
	}
	for i, hint := range hints {
		failures := i % 8
		b.failures = failures
		for _, how := range []lossKind{lossFailure, lossGoAway} {
			d := b.next(how, hint)
			if d < hint || d >= hint+max(hintJitter(hint), 1) {
				t.Fatalf("kind %d, hint %v: waited %v, want [%v, %v)", how, hint, d, hint, hint+hintJitter(hint))
			}
			if want := core.HintDelay(twin, hint); d != want {
				t.Fatalf("kind %d, hint %v: waited %v, core.HintDelay %v", how, hint, d, want)
			}
			if b.failures != failures {
				t.Fatalf("kind %d, hint %v: failures %d -> %d", how, hint, failures, b.failures)
			}
		}
	}
}

func TestSDKBackoffFailure(t *testing.T) {
	rnd, twin, _ := seeded(t)
	base, cap := time.Second, 2*time.Minute
	b := backoff{policy: BackoffSDK, base: base, cap: cap, healthyAfter: 30 * time.Second, rnd: rnd}
	for i := range 200 {
		f := b.failures
		d := b.next(lossFailure, 0)
		ceil := min(cap, base<<min(f, 20))
		if d < 0 || d >= ceil {
			t.Fatalf("failure %d: waited %v, want [0, %v)", f, d, ceil)
		}
		if want := core.FullJitter(twin, base, cap, f); d != want {
			t.Fatalf("failure %d: waited %v, core.FullJitter %v", f, d, want)
		}
		if b.failures != f+1 {
			t.Fatalf("failure %d: failures now %d", f, b.failures)
		}
		if i%20 == 19 { // a connection that was up, but not long enough, then a healthy one
			b.up(b.healthyAfter - time.Nanosecond)
			if b.failures != f+1 {
				t.Fatalf("up %v reset failures", b.healthyAfter-time.Nanosecond)
			}
			b.up(b.healthyAfter)
			if b.failures != 0 {
				t.Fatalf("up %v left failures at %d", b.healthyAfter, b.failures)
			}
		}
	}
}

func TestDoubleBackoff(t *testing.T) {
	rnd, twin, _ := seeded(t)
	base, cap := time.Second, 30*time.Second
	b := backoff{policy: BackoffDouble, base: base, cap: cap, healthyAfter: 5 * time.Second, rnd: rnd}
	hint := 3 * time.Second
	for f := range 10 {
		d := b.next(lossFailure, hint) // refusals double too
		if want := max(core.FullJitter(twin, base, cap, f), hint); d != want {
			t.Fatalf("refusal %d: waited %v, want %v", f, d, want)
		}
		if b.failures != f+1 {
			t.Fatalf("refusal %d: failures now %d", f, b.failures)
		}
	}
	if d := b.next(lossGoAway, hint); d != hint || b.failures != 10 {
		t.Fatalf("GoAway: waited %v (want %v), failures %d", d, hint, b.failures)
	}
}

func TestBackoffConfig(t *testing.T) {
	c := Config{Clients: 2}
	if err := c.defaults(); err != nil {
		t.Fatal(err)
	}
	if c.Backoff != BackoffSDK || c.BackoffBase != core.DefaultBackoffBase || c.BackoffCap != core.DefaultBackoffCap ||
		c.HealthyAfter != core.DefaultHealthyAfter {
		t.Fatalf("defaults: %s, base %v, cap %v, healthy after %v", c.Backoff, c.BackoffBase, c.BackoffCap, c.HealthyAfter)
	}
	for in, want := range map[string]string{BackoffHint: BackoffSDK, BackoffSDK: BackoffSDK, BackoffDouble: BackoffDouble} {
		c := Config{Clients: 2, Backoff: in}
		if err := c.defaults(); err != nil || c.Backoff != want {
			t.Fatalf("--backoff %s: %q, %v; want %q", in, c.Backoff, err, want)
		}
	}
	if c := (Config{Clients: 2, Backoff: "exact"}); c.defaults() == nil {
		t.Fatal("--backoff exact accepted")
	}
}
