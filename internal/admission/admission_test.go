// Tests of the admission parts with a fake clock: limits enforced exactly,
// retry_after hints distributed as designed, shedding on depth and latency.
//
// Invariants: no test reads the real clock or sleeps; randomness is seeded,
// so every run makes the same decisions.
package admission

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

// refBucket is the reference token bucket in exact integer arithmetic:
// tokens are held in nanoseconds of refill time (one token = interval ns).
type refBucket struct {
	interval, capacity, tokens int64
	last                       int64
}

func newRef(l Limit) *refBucket {
	iv := l.interval()
	c := int64(l.Burst) * iv
	return &refBucket{interval: iv, capacity: c, tokens: c}
}

func (r *refBucket) allow(now int64) bool {
	r.tokens = min(r.capacity, r.tokens+(now-r.last))
	r.last = now
	if r.tokens >= r.interval {
		r.tokens -= r.interval
		return true
	}
	return false
}

func TestBucketExact(t *testing.T) {
	for _, l := range []Limit{{Rate: 10, Burst: 5}, {Rate: 1000, Burst: 1}, {Rate: 250, Burst: 100}, {Rate: 3, Burst: 2}} {
		t.Run(fmt.Sprintf("%v/%d", l.Rate, l.Burst), func(t *testing.T) {
			b := NewBucket(l, t0)
			// A fresh bucket allows exactly Burst at once, then tells the wait.
			for i := 0; i < l.Burst; i++ {
				if ok, _ := b.Allow(t0); !ok {
					t.Fatalf("event %d of the burst refused", i)
				}
			}
			ok, wait := b.Allow(t0)
			if ok || wait != time.Duration(l.interval()) {
				t.Fatalf("after the burst: ok=%v wait=%v, want refused, wait %v", ok, wait, time.Duration(l.interval()))
			}
			if ok, _ := b.Allow(t0.Add(wait - 1)); ok {
				t.Fatal("allowed 1ns before the next token")
			}
			if ok, _ := b.Allow(t0.Add(wait)); !ok {
				t.Fatal("refused when the next token is there")
			}

			// Random arrivals: the same decisions as the reference bucket, and
			// never more than burst + d*rate in any window of length d.
			b = NewBucket(l, t0)
			ref := newRef(l)
			rnd := rand.New(rand.NewPCG(1, uint64(l.Burst)))
			var now int64
			var allowed []int64
			for i := 0; i < 20000; i++ {
				now += rnd.Int64N(3 * l.interval() / max(int64(l.Burst), 1))
				got, _ := b.Allow(t0.Add(time.Duration(now)))
				if want := ref.allow(now); got != want {
					t.Fatalf("event %d at %v: got %v, reference %v", i, time.Duration(now), got, want)
				}
				if got {
					allowed = append(allowed, now)
				}
			}
			// Sliding window check with two pointers, several window lengths.
			for _, d := range []int64{0, l.interval() / 2, l.interval(), 10 * l.interval(), int64(time.Second)} {
				bound := int64(l.Burst) + d/l.interval()
				j := 0
				for i := range allowed {
					for allowed[i]-allowed[j] > d {
						j++
					}
					if n := int64(i - j + 1); n > bound {
						t.Fatalf("%d events within %v, bound %d", n, time.Duration(d), bound)
					}
				}
			}
			if len(allowed) < 100 {
				t.Fatalf("only %d events allowed: the schedule does not exercise the bucket", len(allowed))
			}
		})
	}
}

func TestBucketUnlimited(t *testing.T) {
	b := NewBucket(Limit{}, t0)
	for i := 0; i < 1000; i++ {
		if ok, _ := b.Allow(t0); !ok {
			t.Fatal("unlimited bucket refused")
		}
	}
}

func TestKeyedExactAndIndependent(t *testing.T) {
	k := NewKeyed(Limit{Rate: 2, Burst: 3}, 0, t0)
	for _, key := range []string{"alice", "bob"} {
		for i := 0; i < 3; i++ {
			if ok, _ := k.Allow(key, t0); !ok {
				t.Fatalf("%s: event %d of the burst refused", key, i)
			}
		}
		if ok, wait := k.Allow(key, t0); ok || wait != 500*time.Millisecond {
			t.Fatalf("%s: after the burst ok=%v wait=%v", key, ok, wait)
		}
	}
	if ok, _ := k.Allow("alice", t0.Add(500*time.Millisecond)); !ok {
		t.Fatal("alice refused after a token came back")
	}
	if ok, _ := k.Allow("alice", t0.Add(500*time.Millisecond)); ok {
		t.Fatal("alice allowed a second event on one token")
	}
}

func TestKeyedBoundedMemory(t *testing.T) {
	const maxKeys = 1600
	k := NewKeyed(Limit{Rate: 1, Burst: 1}, maxKeys, t0)
	now := t0
	for i := 0; i < 100_000; i++ {
		if ok, _ := k.Allow(fmt.Sprint("ip", i), now); !ok {
			t.Fatalf("new key %d refused", i)
		}
		if n := k.Len(); n > maxKeys+keyedShards {
			t.Fatalf("%d entries held, bound %d", n, maxKeys)
		}
		now = now.Add(time.Microsecond)
	}
	// A key held busy is still limited while its entry stays (idle ones go first).
	k = NewKeyed(Limit{Rate: 1, Burst: 1}, maxKeys, t0)
	k.Allow("busy", t0)
	for i := 0; i < 50; i++ {
		k.Allow(fmt.Sprint("idle", i), t0.Add(-2*time.Second)) // full again at t0
	}
	if ok, _ := k.Allow("busy", t0.Add(time.Millisecond)); ok {
		t.Fatal("busy key allowed twice within its interval")
	}
}

// chiSquareUniform fails unless samples (in [lo, hi)) look uniform over
// bins equal bins (chi-square, p ~ 0.001).
func chiSquareUniform(t *testing.T, samples []time.Duration, lo, hi time.Duration, bins int) {
	t.Helper()
	counts := make([]int, bins)
	for _, s := range samples {
		if s < lo || s >= hi {
			t.Fatalf("sample %v outside [%v, %v)", s, lo, hi)
		}
		counts[int(int64(s-lo)*int64(bins)/int64(hi-lo))]++
	}
	exp := float64(len(samples)) / float64(bins)
	chi := 0.0
	for _, c := range counts {
		chi += (float64(c) - exp) * (float64(c) - exp) / exp
	}
	// 99.9th percentile of chi-square with bins-1 degrees of freedom
	// (Wilson-Hilferty approximation).
	k := float64(bins - 1)
	crit := k * math.Pow(1-2/(9*k)+3.09*math.Sqrt(2/(9*k)), 3)
	if chi > crit {
		t.Fatalf("not uniform over [%v, %v): chi-square %.1f > %.1f, counts %v", lo, hi, chi, crit, counts)
	}
}

func TestSpreaderJitterUniform(t *testing.T) {
	// Refusals far apart in time: the queue is empty each time, so hints are
	// wait + uniform [0, Min).
	s := NewSpreader(100, time.Second, time.Minute, rand.New(rand.NewPCG(7, 7)))
	var hints []time.Duration
	now := t0
	for i := 0; i < 5000; i++ {
		now = now.Add(time.Second)
		hints = append(hints, s.Refused(now, 30*time.Millisecond))
	}
	chiSquareUniform(t, hints, 30*time.Millisecond, 30*time.Millisecond+time.Second, 20)
}

func TestSpreaderComesBackAtTheRate(t *testing.T) {
	// 15,000 clients refused at once by a node taking 1,000 per second: they
	// come back at about 1,000 per second (never a wave), the last after
	// about 15 s, each at a random time.
	const n, rate = 15000, 1000
	s := NewSpreader(rate, time.Second, time.Minute, rand.New(rand.NewPCG(1, 2)))
	back := make([]time.Duration, n)
	for i := range back {
		back[i] = s.Refused(t0, 0)
	}
	perSecond := map[int64]int{}
	for _, d := range back {
		perSecond[int64(d/time.Second)]++
	}
	peak := 0
	for _, c := range perSecond {
		peak = max(peak, c)
	}
	if peak > rate*11/10 {
		t.Fatalf("%d clients come back within one second; rate %d: %v", peak, rate, perSecond)
	}
	slices.Sort(back)
	if last := back[n-1]; last < 14*time.Second || last >= 16*time.Second {
		t.Fatalf("last client back after %v, want about 15s", last)
	}
	// Over a 10 ms window, no burst either (jitter smooths the queue).
	j := 0
	for i := range back {
		for back[i]-back[j] > 10*time.Millisecond {
			j++
		}
		if i-j+1 > 3*rate/100 {
			t.Fatalf("%d clients within 10ms at %v", i-j+1, back[i])
		}
	}
	// The queue drains at the rate: after 10 s, 5 s of it are left.
	if q := s.Queue(t0.Add(10 * time.Second)); q < 4900*time.Millisecond || q > 5100*time.Millisecond {
		t.Fatalf("queue after 10s = %v, want 5s", q)
	}
	if q := s.Queue(t0.Add(20 * time.Second)); q != 0 {
		t.Fatalf("queue after 20s = %v, want 0", q)
	}
}

func TestSpreaderCapped(t *testing.T) {
	s := NewSpreader(10, 100*time.Millisecond, 2*time.Second, rand.New(rand.NewPCG(3, 3)))
	for i := 0; i < 1000; i++ {
		if h := s.Refused(t0, 0); h >= 2*time.Second+100*time.Millisecond {
			t.Fatalf("hint %v beyond Max+Min", h)
		}
	}
}

func TestMillis(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want uint32
	}{{0, 1}, {time.Microsecond, 1}, {time.Millisecond, 1}, {time.Millisecond + 1, 2}, {1500 * time.Millisecond, 1500}} {
		if got := Millis(c.d); got != c.want {
			t.Errorf("Millis(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestShedderDepth(t *testing.T) {
	s := NewShedder(ShedConfig{MaxInflight: 4, Target: -1})
	for i := 0; i < 4; i++ {
		if !s.Begin(t0) {
			t.Fatalf("send %d refused below the bound", i)
		}
	}
	if s.Begin(t0) {
		t.Fatal("send admitted past MaxInflight")
	}
	if s.LoginAllowed(t0) {
		t.Fatal("login allowed with the pipeline full")
	}
	s.End(t0, t0.Add(time.Millisecond))
	s.End(t0, t0.Add(time.Millisecond))
	if s.LoginAllowed(t0) {
		t.Fatal("login allowed with the pipeline half full")
	}
	s.End(t0, t0.Add(time.Millisecond))
	if !s.LoginAllowed(t0) || !s.Begin(t0) {
		t.Fatal("refused below half the bound")
	}
}

// Pipelined sends are admitted only while the pipeline is at most half
// full, so that they leave the rest to first sends of other sessions; they
// count like any other.
func TestShedderPipelined(t *testing.T) {
	s := NewShedder(ShedConfig{MaxInflight: 4, Target: -1})
	if !s.BeginPipelined(t0) || !s.BeginPipelined(t0) {
		t.Fatal("pipelined send refused below half the bound")
	}
	if s.BeginPipelined(t0) {
		t.Fatal("pipelined send admitted at half the bound")
	}
	if !s.Begin(t0) || !s.Begin(t0) {
		t.Fatal("first send refused below the bound")
	}
	if s.Begin(t0) || s.BeginPipelined(t0) {
		t.Fatal("send admitted past MaxInflight")
	}
	for range 3 {
		s.End(t0, t0.Add(time.Millisecond))
	}
	if n, _ := s.State(t0); n != 1 || !s.BeginPipelined(t0) {
		t.Fatalf("%d in flight; a pipelined send refused below half the bound", n)
	}
}

func TestShedderLatency(t *testing.T) {
	// Each case calls in time order, as a real pipeline does. Target 50 ms:
	// new sessions shed from 25 ms, sends from 200 ms; windows of 100 ms.
	const iv = 100 * time.Millisecond
	at := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	newS := func() *Shedder {
		s := NewShedder(ShedConfig{Target: 50 * time.Millisecond, Interval: iv})
		s.LoginAllowed(at(0)) // the first window starts at 0
		return s
	}

	t.Run("fast", func(t *testing.T) {
		s := newS()
		for i := 0; i < 10; i++ {
			if !s.Begin(at(i * 20)) {
				t.Fatal("refused while healthy")
			}
			s.End(at(i*20), at(i*20+5))
		}
		if !s.LoginAllowed(at(201)) || !s.Begin(at(201)) {
			t.Fatal("refused after fast sends")
		}
	})
	t.Run("slow: new sessions shed, sends not", func(t *testing.T) {
		s := newS()
		s.Begin(at(1))
		s.End(at(1), at(81)) // 80 ms: over 25, under 200
		if s.LoginAllowed(at(101)) {
			t.Fatal("login allowed after a window whose fastest send took 80 ms")
		}
		if !s.Begin(at(102)) {
			t.Fatal("send refused at 80 ms")
		}
	})
	t.Run("very slow: sends shed too, then recovery", func(t *testing.T) {
		s := newS()
		s.Begin(at(1))
		s.End(at(1), at(251)) // recorded in the window that starts at 251
		if s.Begin(at(352)) || s.LoginAllowed(at(352)) {
			t.Fatal("admitted after a window whose fastest send took 250 ms")
		}
		// [352, 453): nothing in flight, nothing completed: healthy.
		if !s.LoginAllowed(at(453)) || !s.Begin(at(453)) {
			t.Fatal("still shedding after the queue drained")
		}
	})
	t.Run("stuck", func(t *testing.T) {
		s := newS()
		s.Begin(at(1)) // never completes
		if !s.LoginAllowed(at(101)) {
			t.Fatal("refused one window early (the send began in it)")
		}
		// [101, 202): no completion, the send of 1 ms waits: stuck 101 ms.
		if s.LoginAllowed(at(202)) || !s.Begin(at(202)) {
			t.Fatal("stuck 101 ms: want logins refused, sends admitted")
		}
		// [202, 303): still nothing: stuck 202 ms > 200 ms.
		if s.Begin(at(303)) {
			t.Fatal("a pipeline stuck 202 ms still admits sends")
		}
	})
}

func TestControllerOrderAndReasons(t *testing.T) {
	c := New(Config{
		MaxConns: 2, Accept: Limit{Rate: 1, Burst: 1}, Login: Limit{Rate: 100, Burst: 100},
		IPLogin: Limit{Rate: 1, Burst: 1}, UserLogin: Limit{Rate: 1, Burst: 1},
		IPSend: Limit{Rate: 1, Burst: 2}, UserSend: Limit{Rate: 1, Burst: 1},
		Rand: rand.New(rand.NewPCG(1, 1)),
	}, t0)
	if d := c.Accept(t0, 2); d.OK || d.Reason != ReasonMaxConns || d.RetryAfter < 5*time.Second {
		t.Fatalf("full node: %+v", d)
	}
	if d := c.Accept(t0, 0); !d.OK {
		t.Fatalf("first accept: %+v", d)
	}
	if d := c.Accept(t0, 1); d.OK || d.Reason != ReasonAcceptRate || d.RetryAfter < time.Second {
		t.Fatalf("second accept: %+v", d)
	}
	if d := c.LoginSource(t0, "10.0.0.1"); !d.OK {
		t.Fatalf("login: %+v", d)
	}
	if d := c.LoginSource(t0, "10.0.0.1"); d.OK || d.Reason != ReasonIPLogin {
		t.Fatalf("second login from the IP: %+v", d)
	}
	if d := c.LoginUser(t0, "alice"); !d.OK {
		t.Fatalf("alice: %+v", d)
	}
	if d := c.LoginUser(t0, "alice"); d.OK || d.Reason != ReasonUserLogin {
		t.Fatalf("alice again: %+v", d)
	}
	if d := c.Send(t0, "alice", "10.0.0.1"); !d.OK {
		t.Fatalf("send: %+v", d)
	}
	d := c.Send(t0, "alice", "10.0.0.1")
	if d.OK || d.Reason != ReasonUserSend || d.RetryAfter < time.Second || d.RetryAfter >= 2*time.Second {
		t.Fatalf("second send of alice: %+v (want retry in [1s, 2s))", d)
	}
	if d := c.Send(t0, "bob", "10.0.0.1"); d.OK || d.Reason != ReasonIPSend {
		t.Fatalf("third send from the IP: %+v", d)
	}
	// A zero Config admits everything.
	z := New(Config{}, t0)
	for i := 0; i < 100; i++ {
		if !z.Accept(t0, i).OK || !z.LoginSource(t0, "x").OK || !z.LoginUser(t0, "u").OK ||
			!z.Send(t0, "u", "x").OK || !z.BeginSend(t0).OK {
			t.Fatal("zero config refused")
		}
	}
}

func TestAcceptOverloadAndPacing(t *testing.T) {
	shed := ShedConfig{MaxInflight: 2, Target: -1}
	c := New(Config{Accept: Limit{Rate: 100, Burst: 1}, Shed: &shed, Rand: rand.New(rand.NewPCG(2, 2))}, t0)
	// Pacing: the rate says "wait 10 ms", nothing is refused or recorded.
	if w, d := c.AcceptWait(t0, 0); w != 0 || !d.OK {
		t.Fatalf("first: %v %+v", w, d)
	}
	if w, d := c.AcceptWait(t0, 1); w != 10*time.Millisecond || d.OK {
		t.Fatalf("second at once: wait %v %+v", w, d)
	}
	if w, d := c.AcceptWait(t0.Add(10*time.Millisecond), 1); w != 0 || !d.OK {
		t.Fatalf("after the wait: %v %+v", w, d)
	}
	// A pipeline half full takes no new sessions, at accept already.
	if !c.BeginSend(t0).OK {
		t.Fatal("send refused")
	}
	if d := c.Accept(t0.Add(time.Second), 1); d.OK || d.Reason != ReasonOverload || d.RetryAfter == 0 {
		t.Fatalf("accept with the pipeline half full: %+v", d)
	}
	if w, d := c.AcceptWait(t0.Add(time.Second), 1); w != holdWhileShedding || d.OK || d.Reason != ReasonOverload {
		t.Fatalf("paced accept with the pipeline half full: want a hold, got %v %+v", w, d)
	}
	c.EndSend(t0, t0.Add(time.Millisecond))
	if d := c.Accept(t0.Add(2*time.Second), 1); !d.OK {
		t.Fatalf("accept after the send ended: %+v", d)
	}
}
