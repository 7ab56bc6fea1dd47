package bench

// The SDK's idle heartbeat schedule, derived from its state machine with
// simulated time, checked against the arithmetic of its defaults.

import (
	"testing"
	"time"

	"github.com/pim-project/pim/sdk/go/core"
)

func TestHeartbeatScheduleDefaults(t *testing.T) {
	f, err := HeartbeatSchedule(ServeHeartbeat)
	if err != nil {
		t.Fatal(err)
	}
	rtt := time.Duration(f.SimulatedRT) * time.Millisecond
	// Foreground: a ping every Min after the last Pong.
	if want := float64(time.Hour / (core.DefaultHeartbeatMin + rtt)); f.PingsHourForeground != want || want != 17 {
		t.Errorf("foreground: %v pings in an hour, want %v (every %v + RTT)", f.PingsHourForeground, want, core.DefaultHeartbeatMin)
	}
	// Background, new network: Min, Min, Min+Step, Min+Step, ... (2
	// successes per step): 3.5+3.5+4.5+4.5+5.5+5.5+6.5+6.5+7.5+7.5 = 55 min
	// for 10 pings (+ RTTs), the 11th after 63.5.
	var at time.Duration
	first := 0
	for p := core.DefaultHeartbeatMin; ; p = min(p+core.DefaultHeartbeatStep, core.DefaultHeartbeatMax) {
		done := false
		for range core.DefaultHeartbeatSuccesses {
			if at += p + rtt; at >= time.Hour {
				done = true
				break
			}
			first++
		}
		if done {
			break
		}
	}
	if f.PingsFirstHourBackground != float64(first) || first != 10 {
		t.Errorf("background, first hour: %v pings, want %d", f.PingsFirstHourBackground, first)
	}
	// Learned: the server's 10 minutes (= the SDK's Max): 6 an hour.
	if f.BackgroundIntervalMs != ServeHeartbeat.Milliseconds() || f.PingsHourBackground < 5.9 || f.PingsHourBackground > 6 {
		t.Errorf("background, learned: every %d ms, %v an hour; want every %v, 6 an hour", f.BackgroundIntervalMs, f.PingsHourBackground, ServeHeartbeat)
	}
	if f.MinMs != core.DefaultHeartbeatMin.Milliseconds() || f.MaxMs != core.DefaultHeartbeatMax.Milliseconds() || f.ServerHBMs != ServeHeartbeat.Milliseconds() {
		t.Errorf("configuration reported: %+v", f)
	}
}

// A server announcing a shorter heartbeat than the SDK's Min (the gateway
// library's 30 s) caps every interval, foreground and background.
func TestHeartbeatScheduleServerCap(t *testing.T) {
	f, err := HeartbeatSchedule(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if f.PingsHourForeground != 120 || f.PingsFirstHourBackground != 120 || f.PingsHourBackground != 120 || f.BackgroundIntervalMs != 30000 {
		t.Errorf("30 s server heartbeat: %+v, want 120 pings an hour everywhere", f)
	}
}

func TestSimulateHeartbeatsShortConfig(t *testing.T) {
	cfg := core.HeartbeatConfig{Min: 10 * time.Second, Max: 40 * time.Second, Step: 10 * time.Second, Successes: 1}
	pings, err := SimulateHeartbeats(HeartbeatSim{Config: cfg, RTT: time.Second, For: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	// Background, one success per step: gaps 10+1, 20+1, 30+1, 40+1, 40+1.
	want := []time.Duration{10 * time.Second, 31 * time.Second, 62 * time.Second, 103 * time.Second}
	if len(pings) != len(want) {
		t.Fatalf("pings at %v, want %v", pings, want)
	}
	for i := range want {
		if pings[i] != want[i] {
			t.Fatalf("pings at %v, want %v", pings, want)
		}
	}
}
