// Draining: a node that is about to stop (SIGTERM, an admin call before a
// deploy) tells its sessions to go away spread over a window rather than all
// at once, so that neither the nodes they move to nor this one when it comes
// back sees a reconnect spike (R16, R18).
//
// Drain closes the listeners, draws for each open session a moment uniformly
// at random in [0, w) and sends it GoAway at that moment, where w is the
// configured window, shortened to sessions/DrainRate when that is less (a
// handful of sessions need no 30 s). Each GoAway carries a random
// retry_after and the alternatives the LBS knows (other nodes' endpoints of
// the session's transport):
//
//   - with alternatives, retry_after is uniform in [0, GoAwaySpread): the
//     departures are spread already, the client goes to another node;
//   - without (one node: it is restarting), retry_after is the time left
//     until the drain ends, plus 1 s, plus a uniform [0, max(w,
//     GoAwaySpread)): the clients come back after the node does, at about
//     the rate they left.
//
// Invariants of this file:
//   - Drain is idempotent: the first call fixes the plan; after it no
//     session is admitted, and each session tracked then gets at most one
//     GoAway, at its planned moment (or earlier, if Shutdown is forced).
//   - The planned moments are independent and uniform over [0, w): the plan
//     is drawn at once from the gateway's randomness (seedable), in one
//     place, so a seeded gateway plans the same way every run.
//   - The drain goroutine is owned by the gateway: it ends when every GoAway
//     is sent, when no session is left, or when Shutdown forces the end;
//     Shutdown waits for it.
//   - Shutdown returns once no session is left, or aborts what is left when
//     the window plus DrainGrace, or its ctx, ends (and then reports it).
package gateway

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/pim-project/pim/internal/admission"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Transports of a session, as the LBS names them.
const (
	transportTCP = "tcp"
	transportWS  = "ws"
)

// DrainStatus describes a drain.
type DrainStatus struct {
	Started  time.Time     // when it began
	Window   time.Duration // the window GoAways are spread over
	Ends     time.Time     // Started + Window
	Sessions int           // sessions open when it began
}

// Draining reports whether a drain (or Shutdown) has begun.
func (g *Gateway) Draining() bool { return g.isShutdown() }

// Drain starts draining with the given window (<= 0: the configured one)
// and returns at once. See the file comment.
func (g *Gateway) Drain(window time.Duration) DrainStatus {
	if window <= 0 {
		window = g.cfg.DrainWindow
	}
	g.mu.Lock()
	if g.shutdown {
		defer g.mu.Unlock()
		return g.drainStatusLocked()
	}
	g.shutdown = true
	for ln := range g.listeners {
		ln.Close()
	}
	sessions := g.snapshotLocked()
	n := len(sessions)
	if n == 0 {
		close(g.drained)
	}
	w := window
	if g.cfg.DrainRate > 0 {
		w = min(w, time.Duration(float64(n)/g.cfg.DrainRate*float64(time.Second)))
	}
	now := time.Now()
	g.drainStart, g.drainEnd, g.drainN = now, now.Add(w), n
	st := g.drainStatusLocked()
	if n > 0 {
		g.drainWG.Add(1) // before the unlock: Shutdown's Wait sees it
	}
	g.mu.Unlock()

	g.m.draining.Set(1)
	g.log.Info("gateway: draining", "sessions", n, "window", w)
	if n == 0 {
		return st
	}
	offsets := g.plan(sessions, w)
	// Alternatives may ask about this gateway (load, draining): not under g.mu.
	var alt map[string][]string
	if g.cfg.Alternatives != nil {
		alt = map[string][]string{transportTCP: g.cfg.Alternatives(transportTCP), transportWS: g.cfg.Alternatives(transportWS)}
	}
	go g.runDrain(sessions, offsets, alt)
	return st
}

func (g *Gateway) drainStatusLocked() DrainStatus {
	return DrainStatus{Started: g.drainStart, Window: g.drainEnd.Sub(g.drainStart), Ends: g.drainEnd, Sessions: g.drainN}
}

// plan shuffles sessions in place and returns their GoAway moments, sorted,
// each uniform in [0, w).
func (g *Gateway) plan(sessions []*session, w time.Duration) []time.Duration {
	g.rndMu.Lock()
	defer g.rndMu.Unlock()
	g.rnd.Shuffle(len(sessions), func(i, j int) { sessions[i], sessions[j] = sessions[j], sessions[i] })
	offsets := make([]time.Duration, len(sessions))
	for i := range offsets {
		if w > 0 {
			offsets[i] = time.Duration(g.rnd.Int64N(int64(w)))
		}
	}
	slices.Sort(offsets)
	return offsets
}

// runDrain sends each session its GoAway at its planned moment.
func (g *Gateway) runDrain(sessions []*session, offsets []time.Duration, alt map[string][]string) {
	defer g.drainWG.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for i, s := range sessions {
		if d := time.Until(g.drainStart.Add(offsets[i])); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-g.drained:
				return
			case <-g.base.Done():
				return
			}
		}
		s.goAway(g.goAwayFor(s, alt[s.transport]))
	}
}

// goAwayFor builds the GoAway of s now (see the file comment).
func (g *Gateway) goAwayFor(s *session, servers []string) *pimv1.GoAway {
	w := g.drainEnd.Sub(g.drainStart)
	g.rndMu.Lock()
	var retry time.Duration
	if len(servers) > 0 {
		retry = admission.Jitter(g.rnd, 0, g.cfg.GoAwaySpread)
	} else {
		retry = max(time.Until(g.drainEnd), 0) + time.Second + admission.Jitter(g.rnd, 0, max(w, g.cfg.GoAwaySpread))
	}
	g.rndMu.Unlock()
	return &pimv1.GoAway{RetryAfterMs: admission.Millis(retry), Servers: servers, Reason: "server draining"}
}

// Shutdown drains (with the configured window, unless a drain has begun
// already) and waits until every session has left. It returns nil then, or
// an error once the window plus DrainGrace, or ctx, ends: the remaining
// connections are then aborted and in-flight Logic calls canceled (they end
// shortly after; Shutdown waits for the gateway's own goroutines).
func (g *Gateway) Shutdown(ctx context.Context) error {
	st := g.Drain(0)
	grace := time.NewTimer(max(time.Until(st.Ends.Add(g.cfg.DrainGrace)), 0))
	defer grace.Stop()
	var why error
	select {
	case <-g.drained: // preferred when ctx is done too
	default:
		select {
		case <-g.drained:
		case <-grace.C:
			why = fmt.Errorf("drain window %v plus grace %v passed", st.Window, g.cfg.DrainGrace)
		case <-ctx.Done():
			why = ctx.Err()
		}
	}
	if why == nil {
		g.drainWG.Wait()
		g.lingerWG.Wait()
		return nil
	}
	g.kill()
	g.mu.Lock()
	sessions := g.snapshotLocked()
	g.mu.Unlock()
	for _, s := range sessions {
		s.t.abort()
	}
	g.drainWG.Wait()
	g.lingerWG.Wait()
	return fmt.Errorf("gateway: shutdown with %d connections left: %w", len(sessions), why)
}

// Abort stops the gateway at once, as a crash would for its clients: no
// GoAway; listeners closed, connections reset, in-flight Logic calls
// canceled. The sessions end shortly after (Shutdown waits for them, within
// its ctx). For tests and benchmarks of reconnect storms.
func (g *Gateway) Abort() {
	g.mu.Lock()
	if !g.shutdown {
		g.shutdown = true
		for ln := range g.listeners {
			ln.Close()
		}
		if len(g.sessions) == 0 {
			close(g.drained)
		}
	}
	sessions := g.snapshotLocked()
	g.mu.Unlock()
	g.kill()
	for _, s := range sessions {
		s.t.abort()
	}
}
