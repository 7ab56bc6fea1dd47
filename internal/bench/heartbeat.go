package bench

// The SDK's heartbeat schedule on an idle connection, derived by driving the
// SDK's own state machine (sdk/go/core) with simulated time: one core, a
// scripted server that welcomes it and answers every Ping with a Pong after
// a fixed round trip, and nothing else. No real time passes and no socket is
// used, so the schedule is exact and the same on every run; `pim bench wire`
// multiplies it by the bytes of one ping/pong exchange measured on the wire.
//
// Invariants:
//   - The only inputs the core gets are ConnUp, the Welcome, the Pongs, the
//     foreground flag and Ticks at its own Deadline; every heartbeat
//     succeeds, so the schedule is the one of a healthy idle connection.
//   - Any frame other than Hello, Ping and PushAck, any dial after the first
//     and any loss of the connection is an error: the simulation never
//     reports a schedule the SDK would not follow.

import (
	"fmt"
	"math/rand/v2"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

// ServeHeartbeat is `pim serve --heartbeat`'s default (cmd/pim/serve.go):
// the longest ping interval the server announces in Welcome.
const ServeHeartbeat = 10 * time.Minute

// HeartbeatSim configures SimulateHeartbeats.
type HeartbeatSim struct {
	Config     core.HeartbeatConfig // zero fields: the SDK's defaults
	ServerHB   time.Duration        // Welcome.heartbeat_ms (0: none announced)
	Foreground bool
	RTT        time.Duration // the round trip of each ping (0: 100 ms)
	For        time.Duration // simulated time after the Welcome
}

// SimulateHeartbeats runs an idle connection for s.For and returns when each
// ping was sent, as offsets from the Welcome.
func SimulateHeartbeats(s HeartbeatSim) ([]time.Duration, error) {
	if s.RTT <= 0 {
		s.RTT = 100 * time.Millisecond
	}
	c, err := core.New(core.Config{User: "u", DeviceID: "d", Token: "t", Servers: []string{"s"},
		Rand: rand.New(rand.NewPCG(1, 1)), Heartbeat: s.Config}, core.State{})
	if err != nil {
		return nil, fmt.Errorf("heartbeat simulation: %w", err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	type reply struct {
		at time.Time
		f  *pimv1.Frame
	}
	var (
		conn     core.ConnID
		replies  []reply // due in order: a constant RTT keeps them sorted
		welcomed time.Time
		pings    []time.Duration
		simErr   error
	)
	fail := func(format string, args ...any) {
		if simErr == nil {
			simErr = fmt.Errorf("heartbeat simulation: "+format, args...)
		}
	}
	flush := func() {
		for c.HasReady() {
			rd := c.Ready()
			if rd.Dial != nil {
				if conn != 0 {
					fail("a second dial at %v: the connection was lost", now.Sub(welcomed))
				}
				conn = rd.Dial.Conn
			}
			if len(rd.Close) > 0 {
				fail("the core closed its connection at %v", now.Sub(welcomed))
			}
			for _, f := range rd.Frames {
				switch b := f.Body.(type) {
				case *pimv1.Frame_Hello:
					replies = append(replies, reply{now.Add(s.RTT), &pimv1.Frame{RequestId: f.RequestId,
						Body: &pimv1.Frame_Welcome{Welcome: &pimv1.Welcome{ProtocolVersion: core.ProtocolVersion,
							HeartbeatMs: uint32(s.ServerHB.Milliseconds()), Epoch: "e", User: "u"}}}})
				case *pimv1.Frame_Ping:
					if !welcomed.IsZero() {
						pings = append(pings, now.Sub(welcomed))
					}
					replies = append(replies, reply{now.Add(s.RTT), &pimv1.Frame{RequestId: f.RequestId,
						Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{ClientTime: b.Ping.GetClientTime()}}}})
				case *pimv1.Frame_PushAck:
				default:
					fail("unexpected frame %T", f.Body)
				}
			}
			c.Advance()
		}
	}
	c.SetForeground(now, s.Foreground)
	flush()
	c.ConnUp(now, conn)
	flush()
	for simErr == nil {
		next := c.Deadline()
		if len(replies) > 0 && (next.IsZero() || replies[0].at.Before(next)) {
			next = replies[0].at
		}
		if next.IsZero() || (!welcomed.IsZero() && next.Sub(welcomed) >= s.For) {
			break
		}
		now = next
		if len(replies) > 0 && !replies[0].at.After(now) {
			r := replies[0]
			replies = replies[1:]
			if _, ok := r.f.Body.(*pimv1.Frame_Welcome); ok {
				r.f.GetWelcome().ServerTime = now.UnixMilli()
				welcomed = now
			} else {
				r.f.GetPong().ServerTime = now.UnixMilli()
			}
			c.Receive(now, conn, r.f)
		} else {
			c.Tick(now)
		}
		flush()
		if c.ConnState() != core.Connected && !welcomed.IsZero() {
			fail("the connection was lost at %v", now.Sub(welcomed))
		}
	}
	return pings, simErr
}

// HeartbeatFigures is the idle schedule of the SDK's heartbeat.
type HeartbeatFigures struct {
	// The configuration simulated: the SDK's defaults (sdk/go/core) and the
	// server's announced heartbeat.
	MinMs       int64 `json:"sdk_heartbeat_min_ms"`
	MaxMs       int64 `json:"sdk_heartbeat_max_ms"`
	StepMs      int64 `json:"sdk_heartbeat_step_ms"`
	Successes   int   `json:"sdk_heartbeat_successes"`
	ServerHBMs  int64 `json:"server_heartbeat_ms"`
	SimulatedRT int64 `json:"simulated_rtt_ms"`
	// Pings in the first idle hour after connecting, in the foreground and
	// in the background (learning from Min on a network never seen), and per
	// hour in the background once learned (hours 2-25: the steady state).
	PingsHourForeground      float64 `json:"pings_per_hour_foreground"`
	PingsFirstHourBackground float64 `json:"pings_first_hour_background"`
	PingsHourBackground      float64 `json:"pings_per_hour_background"`
	// The background interval reached (the last gap between pings).
	BackgroundIntervalMs int64 `json:"background_interval_ms"`
}

// HeartbeatSchedule simulates the SDK's default heartbeat against a server
// announcing serverHB: one hour in the foreground, 25 in the background.
func HeartbeatSchedule(serverHB time.Duration) (HeartbeatFigures, error) {
	cfg := core.HeartbeatConfig{Min: core.DefaultHeartbeatMin, Max: core.DefaultHeartbeatMax,
		Step: core.DefaultHeartbeatStep, Successes: core.DefaultHeartbeatSuccesses}
	const rtt = 100 * time.Millisecond
	f := HeartbeatFigures{MinMs: cfg.Min.Milliseconds(), MaxMs: cfg.Max.Milliseconds(), StepMs: cfg.Step.Milliseconds(),
		Successes: cfg.Successes, ServerHBMs: serverHB.Milliseconds(), SimulatedRT: rtt.Milliseconds()}
	fg, err := SimulateHeartbeats(HeartbeatSim{Config: cfg, ServerHB: serverHB, Foreground: true, RTT: rtt, For: time.Hour})
	if err != nil {
		return f, err
	}
	bg, err := SimulateHeartbeats(HeartbeatSim{Config: cfg, ServerHB: serverHB, RTT: rtt, For: 25 * time.Hour})
	if err != nil {
		return f, err
	}
	f.PingsHourForeground = float64(len(fg))
	var first, later int
	for _, p := range bg {
		if p < time.Hour {
			first++
		} else {
			later++
		}
	}
	f.PingsFirstHourBackground = float64(first)
	f.PingsHourBackground = roundTo(float64(later)/24, 2)
	if n := len(bg); n >= 2 {
		f.BackgroundIntervalMs = (bg[n-1] - bg[n-2]).Milliseconds()
	}
	return f, nil
}
