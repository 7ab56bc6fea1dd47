package core

import (
	"testing"
	"time"
)

func TestHeartbeatLearning(t *testing.T) {
	const m = time.Minute
	cfg := HeartbeatConfig{Min: 3*m + 30*time.Second, Max: 10 * m, Step: m, Successes: 2}
	type step struct {
		ok       bool          // heartbeat answered?
		idle     time.Duration // 0: at the current interval
		wantIv   time.Duration // interval after the step
		wantGood time.Duration // learned (persisted) interval after the step
		wantCeil time.Duration
	}
	s := func(ok bool, iv, good, ceil time.Duration) step {
		return step{ok: ok, wantIv: iv, wantGood: good, wantCeil: ceil}
	}
	for _, tc := range []struct {
		name  string
		rec   HeartbeatRecord
		fg    bool
		steps []step
	}{
		{"grows step by step to max", HeartbeatRecord{}, false, []step{
			s(true, 210*time.Second, 210*time.Second, 0),
			s(true, 270*time.Second, 210*time.Second, 0),
			s(true, 270*time.Second, 270*time.Second, 0),
			s(true, 330*time.Second, 270*time.Second, 0),
			s(true, 330*time.Second, 330*time.Second, 0),
			s(true, 390*time.Second, 330*time.Second, 0),
			s(true, 390*time.Second, 390*time.Second, 0),
			s(true, 450*time.Second, 390*time.Second, 0),
			s(true, 450*time.Second, 450*time.Second, 0),
			s(true, 510*time.Second, 450*time.Second, 0),
			s(true, 510*time.Second, 510*time.Second, 0),
			s(true, 570*time.Second, 510*time.Second, 0),
			s(true, 570*time.Second, 570*time.Second, 0),
			s(true, 600*time.Second, 570*time.Second, 0),
			s(true, 600*time.Second, 600*time.Second, 0),
			s(true, 600*time.Second, 600*time.Second, 0),
		}},
		{"a failed probe falls back and stays below", HeartbeatRecord{Interval: 5 * m}, false, []step{
			s(true, 5*m, 5*m, 0),
			s(true, 6*m, 5*m, 0),
			s(false, 5*m, 5*m, 6*m), // the 6 min probe failed
			s(true, 5*m, 5*m, 6*m),
			s(true, 5*m, 5*m, 6*m), // no growth into the ceiling
			s(true, 5*m, 5*m, 6*m),
		}},
		{"a failure at the good value steps down", HeartbeatRecord{Interval: 5 * m}, false, []step{
			s(false, 4*m, 4*m, 5*m),
			s(false, 210*time.Second, 210*time.Second, 4*m),
			s(false, 210*time.Second, 210*time.Second, 0), // at Min: nothing lower
		}},
		{"foreground uses the minimum and learns nothing", HeartbeatRecord{Interval: 8 * m}, true, []step{
			s(true, 210*time.Second, 8*m, 0),
			s(false, 210*time.Second, 8*m, 0),
		}},
		{"a short idle proves nothing", HeartbeatRecord{Interval: 5 * m}, false, []step{
			{ok: true, idle: time.Minute, wantIv: 5 * m, wantGood: 5 * m},
			{ok: true, idle: time.Minute, wantIv: 5 * m, wantGood: 5 * m},
		}},
		{"records out of bounds are clamped", HeartbeatRecord{Interval: time.Hour, Ceiling: 2 * m}, false, []step{
			s(true, 10*m, 10*m, 0),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHeartbeat(cfg, tc.rec, tc.fg)
			for i, st := range tc.steps {
				idle := st.idle
				if idle == 0 {
					idle = h.interval()
				}
				if st.ok {
					h.success(idle)
				} else {
					h.failure(idle)
				}
				if h.interval() != st.wantIv || h.rec.Interval != st.wantGood || h.rec.Ceiling != st.wantCeil {
					t.Fatalf("step %d (ok=%v after %v): interval %v, good %v, ceiling %v; want %v, %v, %v",
						i, st.ok, idle, h.interval(), h.rec.Interval, h.rec.Ceiling, st.wantIv, st.wantGood, st.wantCeil)
				}
			}
		})
	}
}
