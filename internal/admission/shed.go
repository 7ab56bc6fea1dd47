// Load shedding on the send pipeline.
//
// The pipeline's queue is the set of sends in flight (received, not yet
// durably committed: they wait for the store's writer). A Shedder counts
// them and measures their latency, CoDel style: per Interval it keeps the
// smallest latency of the sends that completed; if even that one was slow,
// there is a standing queue (or the machine is saturated). New sessions
// (connections, logins) are refused from Target/2: they are what adds load
// in a storm, and refusing them is cheap. Sends of existing sessions are
// refused only when the pipeline is far gone, from SendFactor x Target, or
// when MaxInflight sends are in flight: refusing a send ends its session
// (the gateway keeps sender order that way), so shedding sends early would
// turn overload into reconnects. A window without any completion while
// older sends are still in flight counts as latency of at least the time it
// has lasted (the pipeline is stuck). Refusing more work never slows the work
// already admitted, so the queue drains and the signal clears.
//
// Invariants of this file:
//   - In flight never exceeds MaxInflight: Begin refuses at the bound;
//     BeginPipelined (a send behind others of its session) from half of it.
//   - Every Begin or BeginPipelined that returned ok is matched by exactly one End (the
//     caller's duty); In flight is then back to where it was.
//   - Logins are refused whenever sends are, from half the latency target,
//     and above MaxInflight/2 in flight: existing sessions first.
//   - Decisions depend only on the calls and the times given (no clock).
package admission

import (
	"sync"
	"time"
)

// Shedding defaults.
const (
	DefaultShedTarget   = 250 * time.Millisecond
	DefaultShedInterval = 500 * time.Millisecond
	// SendFactor: sends are shed from SendFactor x Target (new sessions
	// from Target/2).
	SendFactor = 4
)

// ShedConfig configures a Shedder.
type ShedConfig struct {
	// MaxInflight bounds the sends in the pipeline (0: no bound of its own;
	// the gateway's per-connection pipeline bound still holds).
	MaxInflight int
	// Target is the latency above which a standing queue means overload
	// (0: DefaultShedTarget; < 0: latency is not watched).
	Target time.Duration
	// Interval is the measuring window (0: DefaultShedInterval).
	Interval time.Duration
}

// Shedder decides whether the send pipeline takes more work. It is safe
// for concurrent use.
type Shedder struct {
	cfg ShedConfig

	mu          sync.Mutex
	inflight    int
	began       int           // sends begun in the current window
	completed   int           // sends completed in the current window
	minLat      time.Duration // smallest latency completed in the current window
	windowStart time.Time
	stuckFor    time.Duration // consecutive windows without a completion, older sends waiting
	overloaded  bool          // sends are shed
	busy        bool          // new sessions are shed (overloaded implies busy)
}

// NewShedder returns a Shedder.
func NewShedder(cfg ShedConfig) *Shedder {
	if cfg.Target == 0 {
		cfg.Target = DefaultShedTarget
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultShedInterval
	}
	return &Shedder{cfg: cfg}
}

// Config returns the configuration in effect.
func (s *Shedder) Config() ShedConfig { return s.cfg }

// Begin admits one send at now, or refuses it (overload or the in-flight
// bound). An admitted send must be ended with End(begin, end).
func (s *Shedder) Begin(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tickLocked(now)
	if s.overloaded || (s.cfg.MaxInflight > 0 && s.inflight >= s.cfg.MaxInflight) {
		return false
	}
	s.inflight++
	s.began++
	return true
}

// BeginPipelined admits a send pipelined behind sends of the same session
// still in flight, at now: only while the pipeline is not overloaded and at
// most half full, so that pipelined sends never fill it and the first send
// of another session still fits (it is refused only when more than half of
// MaxInflight sessions send at once). When it reports false the caller
// waits for its own sends and asks Begin. An admitted send must be ended
// with End(begin, end).
func (s *Shedder) BeginPipelined(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tickLocked(now)
	if s.overloaded || (s.cfg.MaxInflight > 0 && s.inflight >= (s.cfg.MaxInflight+1)/2) {
		return false
	}
	s.inflight++
	s.began++
	return true
}

// End records that a send admitted at begin completed at end.
func (s *Shedder) End(begin, end time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tickLocked(end)
	s.inflight--
	lat := end.Sub(begin)
	if s.completed == 0 || lat < s.minLat {
		s.minLat = lat
	}
	s.completed++
}

// LoginAllowed reports whether a new session may start at now: not while
// sends are shed, nor while the pipeline is more than half full.
func (s *Shedder) LoginAllowed(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tickLocked(now)
	if s.busy {
		return false
	}
	return s.cfg.MaxInflight <= 0 || s.inflight < (s.cfg.MaxInflight+1)/2
}

// State returns the sends in flight and whether the pipeline is overloaded.
func (s *Shedder) State(now time.Time) (inflight int, overloaded bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tickLocked(now)
	return s.inflight, s.overloaded
}

// tickLocked closes the windows that ended by now and re-evaluates.
func (s *Shedder) tickLocked(now time.Time) {
	if s.windowStart.IsZero() {
		s.windowStart = now
		return
	}
	if now.Sub(s.windowStart) < s.cfg.Interval {
		return
	}
	if s.cfg.Target > 0 {
		lat := s.minLat
		if s.completed == 0 {
			// Nothing completed for a whole window: sends begun before it and
			// still in flight have waited at least as long as it lasted.
			lat = 0
			if old := s.inflight - s.began; old > 0 {
				s.stuckFor += now.Sub(s.windowStart)
				lat = s.stuckFor
			} else {
				s.stuckFor = 0
			}
		} else {
			s.stuckFor = 0
		}
		s.overloaded = lat > SendFactor*s.cfg.Target
		s.busy = lat > s.cfg.Target/2
	}
	// Skipped windows (no calls at all) had nothing in flight or nothing new.
	s.windowStart = now
	s.began, s.completed, s.minLat = 0, 0, 0
}
