package core

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffCeil(t *testing.T) {
	for _, tc := range []struct {
		base, cap time.Duration
		failures  int
		want      time.Duration
	}{
		{time.Second, time.Minute, 0, time.Second},
		{time.Second, time.Minute, 1, 2 * time.Second},
		{time.Second, time.Minute, 5, 32 * time.Second},
		{time.Second, time.Minute, 6, time.Minute},
		{time.Second, time.Minute, 1000, time.Minute},   // no overflow
		{time.Second, time.Millisecond, 3, time.Second}, // cap below base: base
		{0, time.Minute, 3, 0},
		{time.Duration(1 << 62), time.Duration(1<<63 - 1), 10, time.Duration(1<<63 - 1)},
	} {
		if got := backoffCeil(tc.base, tc.cap, tc.failures); got != tc.want {
			t.Errorf("backoffCeil(%v, %v, %d) = %v, want %v", tc.base, tc.cap, tc.failures, got, tc.want)
		}
	}
}

// TestFullJitterDistribution: delays are uniform over [0, ceil): never
// negative, never at or above the ceiling, and spread over the whole range.
func TestFullJitterDistribution(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, tc := range []struct {
		base, cap time.Duration
		failures  int
	}{
		{100 * time.Millisecond, 10 * time.Second, 0},
		{100 * time.Millisecond, 10 * time.Second, 3},
		{100 * time.Millisecond, 10 * time.Second, 20},
		{time.Second, 2 * time.Minute, 4},
	} {
		ceil := backoffCeil(tc.base, tc.cap, tc.failures)
		const n = 20000
		var sum float64
		var buckets [10]int
		lo, hi := ceil, time.Duration(0)
		for range n {
			d := FullJitter(r, tc.base, tc.cap, tc.failures)
			if d < 0 || d >= ceil {
				t.Fatalf("%+v: delay %v outside [0, %v)", tc, d, ceil)
			}
			lo, hi = min(lo, d), max(hi, d)
			sum += float64(d)
			buckets[int(int64(d)*10/int64(ceil))]++
		}
		if mean := sum / n; mean < 0.47*float64(ceil) || mean > 0.53*float64(ceil) {
			t.Errorf("%+v: mean %v, want about %v", tc, time.Duration(mean), ceil/2)
		}
		if lo > ceil/100 || hi < ceil*99/100 {
			t.Errorf("%+v: range [%v, %v] does not cover [0, %v)", tc, lo, hi, ceil)
		}
		for i, b := range buckets {
			if b < n/10*8/10 || b > n/10*12/10 {
				t.Errorf("%+v: decile %d has %d of %d samples", tc, i, b, n)
			}
		}
	}
}

// TestHintDelay: the server's hint plus at most a tenth of it (at most 1 s),
// never less than the hint, spread over that range.
func TestHintDelay(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ hint, jitter time.Duration }{
		{0, 0},
		{-time.Second, 0},
		{5 * time.Nanosecond, 0},
		{time.Second, 100 * time.Millisecond},
		{5 * time.Second, 500 * time.Millisecond},
		{time.Minute, time.Second},
	} {
		lo, hi := time.Duration(1<<62), time.Duration(0)
		for range 2000 {
			d := HintDelay(r, tc.hint)
			lo, hi = min(lo, d), max(hi, d)
		}
		want := max(tc.hint, 0)
		if tc.jitter == 0 {
			if lo != want || hi != want {
				t.Errorf("HintDelay(%v) in [%v, %v], want exactly %v", tc.hint, lo, hi, want)
			}
			continue
		}
		if lo < want || hi >= want+tc.jitter || lo > want+tc.jitter/50 || hi < want+tc.jitter*49/50 {
			t.Errorf("HintDelay(%v) in [%v, %v], want spread over [%v, %v)", tc.hint, lo, hi, want, want+tc.jitter)
		}
	}
}
