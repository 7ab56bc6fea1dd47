package bench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram is a log-linear histogram of durations with microsecond
// resolution: values below 128 us are exact, larger ones fall into buckets
// 1/64 of their power of two wide, so a quantile is off by less than 1%. Min,
// max and mean are exact. It grows as needed (about 8 KB for values up to a
// second) and is not safe for concurrent use: record into one per goroutine
// and Merge.
type Histogram struct {
	counts []uint64
	n      uint64
	sum    uint64 // microseconds
	min    uint64
	max    uint64
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits // exact values below this
	histHalf    = histSub / 2      // buckets per power of two above it
)

// histIndex returns the bucket of v (microseconds).
func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits // >= 1
	return histSub + (shift-1)*histHalf + int(v>>shift) - histHalf
}

// histBounds returns the smallest and largest value of bucket i.
func histBounds(i int) (lo, hi uint64) {
	if i < histSub {
		return uint64(i), uint64(i)
	}
	shift := (i-histSub)/histHalf + 1
	j := uint64((i-histSub)%histHalf + histHalf)
	lo = j << shift
	return lo, lo + (1 << shift) - 1
}

// Record adds one duration (negative durations count as zero).
func (h *Histogram) Record(d time.Duration) {
	v := uint64(0)
	if d > 0 {
		v = uint64(d / time.Microsecond)
	}
	h.RecordMicros(v)
}

// RecordMicros adds one value in microseconds.
func (h *Histogram) RecordMicros(v uint64) {
	i := histIndex(v)
	if i >= len(h.counts) {
		n := max(i+1, 2*len(h.counts), 256)
		c := make([]uint64, n)
		copy(c, h.counts)
		h.counts = c
	}
	h.counts[i]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		c := make([]uint64, len(o.counts))
		copy(c, h.counts)
		h.counts = c
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest value recorded (0 if none).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) * time.Microsecond }

// Min is the smallest value recorded (0 if none).
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) * time.Microsecond }

// Mean is the average of the values recorded (0 if none).
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(float64(h.sum)/float64(h.n)) * time.Microsecond
}

// Quantile returns the value at quantile q in [0, 1]: the smallest recorded
// value v such that at least q of all values are <= v, to within the bucket
// width (the middle of the bucket, clamped to the exact min and max).
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	q = min(max(q, 0), 1)
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			lo, hi := histBounds(i)
			v := lo + (hi-lo)/2
			v = min(max(v, h.min), h.max)
			return time.Duration(v) * time.Microsecond
		}
	}
	return h.Max()
}

// Latency is the summary of a Histogram in the reports, in milliseconds.
type Latency struct {
	P50, P90, P99, P999, Max, Mean float64
	Count                          uint64
}

// Summary returns h's percentiles in milliseconds.
func (h *Histogram) Summary() Latency {
	ms := func(d time.Duration) float64 { return roundTo(float64(d)/float64(time.Millisecond), 3) }
	return Latency{
		P50: ms(h.Quantile(0.50)), P90: ms(h.Quantile(0.90)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()), Mean: ms(h.Mean()), Count: h.n,
	}
}

// roundTo rounds v to d decimals.
func roundTo(v float64, d int) float64 {
	p := math.Pow10(d)
	return math.Round(v*p) / p
}
