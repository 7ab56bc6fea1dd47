// Smart heartbeat (R23): per-network learning of the longest ping interval
// that keeps the connection (and the NAT mappings on its path) alive.
//
// Invariants of this file:
//   - The interval used is always within [Min, Max] (then capped by the
//     server's heartbeat in the core); in the foreground it is Min.
//   - Learning happens only in the background, only from heartbeats sent
//     after the connection was idle for the whole interval: a success at
//     the probed interval makes it the known-good Interval; Successes
//     successes in a row step the probe up by Step, never to or past a
//     Ceiling (an interval seen failing) nor past Max.
//   - A failure of a probe above the known-good interval falls back to it
//     and sets the Ceiling; a failure at the known-good interval steps it
//     down by Step (not below Min).
//   - Every change to a network's record is reported (changed=true) so the
//     core persists it.

package core

import "time"

// heartbeat is the learner for the current network.
type heartbeat struct {
	cfg        HeartbeatConfig
	rec        HeartbeatRecord // the current network's record
	probe      time.Duration   // background interval being tried
	successes  int             // consecutive successes at probe
	foreground bool
}

func newHeartbeat(cfg HeartbeatConfig, rec HeartbeatRecord, foreground bool) heartbeat {
	h := heartbeat{cfg: cfg, rec: rec, foreground: foreground}
	h.rec.Interval = h.clamp(h.rec.Interval)
	if h.rec.Ceiling != 0 && h.rec.Ceiling <= h.rec.Interval {
		h.rec.Ceiling = 0
	}
	h.probe = h.rec.Interval
	return h
}

func (h *heartbeat) clamp(d time.Duration) time.Duration {
	return min(max(d, h.cfg.Min), h.cfg.Max)
}

// interval is the idle time after which a heartbeat is sent.
func (h *heartbeat) interval() time.Duration {
	if h.foreground {
		return h.cfg.Min
	}
	return h.probe
}

// success records a Pong for a heartbeat sent after idling for used.
func (h *heartbeat) success(used time.Duration) (changed bool) {
	if h.foreground || used < h.probe {
		return false
	}
	if h.probe > h.rec.Interval {
		h.rec.Interval = h.probe
		changed = true
	}
	h.successes++
	if h.successes >= h.cfg.Successes {
		h.successes = 0
		next := min(h.probe+h.cfg.Step, h.cfg.Max)
		if h.rec.Ceiling != 0 && next >= h.rec.Ceiling {
			next = h.probe
		}
		h.probe = next
	}
	return changed
}

// failure records a heartbeat sent after idling for used that got no Pong.
func (h *heartbeat) failure(used time.Duration) (changed bool) {
	if h.foreground {
		return false
	}
	h.successes = 0
	if used > h.rec.Interval {
		// The probe failed: back to the last good value, and stay below.
		if h.rec.Ceiling == 0 || used < h.rec.Ceiling {
			h.rec.Ceiling = used
			changed = true
		}
	} else {
		// The known-good interval failed: step down.
		h.rec.Ceiling = h.rec.Interval
		h.rec.Interval = h.clamp(h.rec.Interval - h.cfg.Step)
		if h.rec.Ceiling <= h.rec.Interval {
			h.rec.Ceiling = 0
		}
		changed = true
	}
	h.probe = h.rec.Interval
	return changed
}
