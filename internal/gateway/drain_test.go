// Drain tests in a synctest bubble (fake time, sessions over net.Pipe): the
// GoAways are spread uniformly over the window, the clients are told to come
// back spread as well, the window shrinks for few sessions, alternatives are
// passed on, and Shutdown ends within the window plus the grace.
//
// Invariant: the assertions are on the distribution of the (fake) times,
// never on how long the real machine took.
package gateway

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// goAwayAt is a GoAway a client received and when (fake time).
type goAwayAt struct {
	at time.Time
	ga *pimv1.GoAway
}

// drainSessions logs in n sessions and returns a channel of the GoAways
// they receive (one each).
func drainSessions(t *testing.T, g *Gateway, n int) <-chan goAwayAt {
	t.Helper()
	got := make(chan goAwayAt, n)
	for i := 0; i < n; i++ {
		c, _ := pipeSession(t, g)
		c.login(fmt.Sprint("u", i), "d")
		go func() { // ends when the server closes the connection
			for f := range c.in {
				if ga := f.GetGoAway(); ga != nil {
					got <- goAwayAt{time.Now(), ga}
				}
			}
		}()
	}
	return got
}

// checkUniform fails unless xs (in [lo, hi)) look uniform: chi-square over
// bins, at the 99.9th percentile.
func checkUniform(t *testing.T, what string, xs []time.Duration, lo, hi time.Duration, bins int) {
	t.Helper()
	counts := make([]int, bins)
	for _, x := range xs {
		if x < lo || x >= hi {
			t.Fatalf("%s: %v outside [%v, %v)", what, x, lo, hi)
		}
		counts[int(int64(x-lo)*int64(bins)/int64(hi-lo))]++
	}
	exp := float64(len(xs)) / float64(bins)
	chi := 0.0
	for _, c := range counts {
		chi += (float64(c) - exp) * (float64(c) - exp) / exp
	}
	k := float64(bins - 1)
	if crit := k * math.Pow(1-2/(9*k)+3.09*math.Sqrt(2/(9*k)), 3); chi > crit {
		t.Fatalf("%s not uniform over [%v, %v): chi-square %.1f > %.1f, counts %v", what, lo, hi, chi, crit, counts)
	}
}

func TestDrainSpreadsGoAwaysOverTheWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const n, window = 600, 30 * time.Second
		g, _, reg := newTestGateway(t, func(c *Config) {
			c.DrainWindow, c.DrainRate, c.Heartbeat = window, -1, time.Hour
			c.Rand = rand.New(rand.NewPCG(1, 2))
		})
		got := drainSessions(t, g, n)
		start := time.Now()
		st := g.Drain(0)
		if st.Window != window || st.Sessions != n || !g.Draining() {
			t.Fatalf("drain status %+v", st)
		}
		if v := metricValue(t, reg, "pim_draining", "", ""); v != 1 {
			t.Fatalf("pim_draining = %v", v)
		}
		// Nothing is sent at once: the first GoAway waits for its moment.
		synctest.Wait()
		if len(got) > n/100 {
			t.Fatalf("%d GoAways at the start of the drain", len(got))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if el := time.Since(start); el > window+DefaultDrainGrace {
			t.Fatalf("shutdown took %v (window %v + grace %v)", el, window, DefaultDrainGrace)
		}
		var sent, back []time.Duration
		for i := 0; i < n; i++ {
			r := <-got
			sent = append(sent, r.at.Sub(start))
			// One node, no alternatives: come back after the drain ends,
			// spread over a window: [end+1s, end+1s+window).
			back = append(back, r.at.Add(time.Duration(r.ga.RetryAfterMs)*time.Millisecond).Sub(st.Ends))
			if len(r.ga.Servers) != 0 || r.ga.Reason == "" {
				t.Fatalf("GoAway %v", r.ga)
			}
		}
		checkUniform(t, "GoAway times", sent, 0, window, 10)
		checkUniform(t, "reconnect times", back, time.Second, time.Second+window+time.Millisecond, 10)
		// No reconnect spike: at most ~2x the average in any second.
		perSecond := map[int64]int{}
		for _, b := range back {
			perSecond[int64(b/time.Second)]++
		}
		for s, c := range perSecond {
			if c > 2*n/int(window/time.Second) {
				t.Fatalf("%d clients come back in second %d", c, s)
			}
		}
	})
}

func TestDrainWindowShrinksForFewSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _, _ := newTestGateway(t, func(c *Config) {
			c.DrainWindow, c.DrainRate, c.Heartbeat = 30*time.Second, 1000, time.Hour
		})
		got := drainSessions(t, g, 50)
		start := time.Now()
		if st := g.Drain(0); st.Window != 50*time.Millisecond {
			t.Fatalf("window %v for 50 sessions at 1000/s, want 50ms", st.Window)
		}
		if err := g.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 50; i++ {
			if r := <-got; r.at.Sub(start) >= 50*time.Millisecond {
				t.Fatalf("GoAway after %v", r.at.Sub(start))
			}
		}
		// A second Drain changes nothing.
		if st := g.Drain(time.Minute); st.Window != 50*time.Millisecond {
			t.Fatalf("second drain: %+v", st)
		}
	})
}

func TestDrainPassesAlternatives(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _, _ := newTestGateway(t, func(c *Config) {
			c.DrainWindow, c.DrainRate, c.GoAwaySpread, c.Heartbeat = 10*time.Second, -1, 2*time.Second, time.Hour
			c.Alternatives = func(tr string) []string { return []string{"other-" + tr + ":7400"} }
		})
		got := drainSessions(t, g, 100)
		if err := g.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		var retries []time.Duration
		for i := 0; i < 100; i++ {
			r := <-got
			if !slices.Equal(r.ga.Servers, []string{"other-tcp:7400"}) {
				t.Fatalf("servers %v", r.ga.Servers)
			}
			retries = append(retries, time.Duration(r.ga.RetryAfterMs)*time.Millisecond)
		}
		// Another node is there: go to it soon, at a random moment.
		checkUniform(t, "retry_after", retries, 0, 2*time.Second+time.Millisecond, 4)
	})
}

func TestShutdownAbortsAfterWindowAndGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, l, _ := newTestGateway(t, func(c *Config) {
			c.DrainWindow, c.DrainRate, c.DrainGrace, c.Heartbeat = 2*time.Second, -1, time.Second, time.Hour
		})
		started := make(chan struct{})
		l.sendHook = func(ctx context.Context, _ string, _ *pimv1.SendReq) error {
			close(started)
			<-ctx.Done() // stuck until the forced end
			return ctx.Err()
		}
		c, done := pipeSession(t, g)
		c.login("alice", "d1")
		c.request(sendReq("1", "bob", "stuck"))
		<-started
		start := time.Now()
		err := g.Shutdown(context.Background())
		if err == nil {
			t.Fatal("Shutdown with a stuck session returned nil")
		}
		if el := time.Since(start); el < 3*time.Second || el > 3*time.Second+time.Millisecond {
			t.Fatalf("Shutdown returned after %v, want the window 2s + grace 1s", el)
		}
		waitDone(t, done)
	})
}
