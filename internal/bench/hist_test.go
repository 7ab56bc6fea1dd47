package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestHistIndexBounds(t *testing.T) {
	// Every value falls inside the bounds of its bucket, and bucket bounds
	// are contiguous.
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 4095, 4096, 1 << 20, 1<<20 + 12345, 1 << 40} {
		i := histIndex(v)
		lo, hi := histBounds(i)
		if v < lo || v > hi {
			t.Errorf("value %d in bucket %d [%d, %d]", v, i, lo, hi)
		}
		if hi > 128 && float64(hi-lo+1)/float64(lo) > 1.0/64+1e-9 {
			t.Errorf("bucket %d [%d, %d] wider than 1/64", i, lo, hi)
		}
	}
	for i := 0; i < 2000; i++ {
		_, hi := histBounds(i)
		lo2, _ := histBounds(i + 1)
		if lo2 != hi+1 {
			t.Fatalf("bucket %d ends at %d, bucket %d starts at %d", i, hi, i+1, lo2)
		}
	}
}

// exactQuantile is the reference: the smallest v with at least q of the values <= v.
func exactQuantile(sorted []uint64, q float64) uint64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = max(rank, 1)
	return sorted[rank-1]
}

func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name string
		gen  func(i int) uint64
		n    int
	}{
		{"single", func(int) uint64 { return 1500 }, 1},
		{"constant", func(int) uint64 { return 42 }, 1000},
		{"uniform 1..10000", func(i int) uint64 { return uint64(i%10000 + 1) }, 10000},
		{"exponential", func(int) uint64 { return uint64(rng.ExpFloat64() * 2000) }, 50000},
		{"bimodal", func(i int) uint64 {
			if i%100 == 0 {
				return 250000
			}
			return 800
		}, 10000},
		{"huge", func(i int) uint64 { return uint64(i) * 1_000_000 }, 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var h Histogram
			vals := make([]uint64, c.n)
			for i := range vals {
				vals[i] = c.gen(i)
				h.RecordMicros(vals[i])
			}
			slices.Sort(vals)
			for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
				want := exactQuantile(vals, q)
				got := uint64(h.Quantile(q) / time.Microsecond)
				tol := max(float64(want)/64, 1)
				if math.Abs(float64(got)-float64(want)) > tol {
					t.Errorf("q%.3f: got %d, want %d (+-%.0f)", q, got, want, tol)
				}
			}
			if got := uint64(h.Max() / time.Microsecond); got != vals[len(vals)-1] {
				t.Errorf("max %d, want %d", got, vals[len(vals)-1])
			}
			if got := uint64(h.Min() / time.Microsecond); got != vals[0] {
				t.Errorf("min %d, want %d", got, vals[0])
			}
			if h.Count() != uint64(c.n) {
				t.Errorf("count %d, want %d", h.Count(), c.n)
			}
		})
	}
}

func TestHistogramEmptyAndMerge(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Max() != 0 || h.Mean() != 0 || h.Count() != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	var a, b, all Histogram
	for i := range 5000 {
		v := time.Duration(i*i) * time.Microsecond
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	a.Merge(&b)
	a.Merge(nil)
	a.Merge(&Histogram{})
	for _, q := range []float64{0.1, 0.5, 0.99, 1} {
		if a.Quantile(q) != all.Quantile(q) {
			t.Errorf("q%v: merged %v, direct %v", q, a.Quantile(q), all.Quantile(q))
		}
	}
	if a.Count() != all.Count() || a.Max() != all.Max() || a.Min() != all.Min() || a.Mean() != all.Mean() {
		t.Errorf("merged summary differs: %+v vs %+v", a.Summary(), all.Summary())
	}
	var neg Histogram
	neg.Record(-time.Second)
	if neg.Max() != 0 || neg.Count() != 1 {
		t.Errorf("a negative duration should record as 0")
	}
}
