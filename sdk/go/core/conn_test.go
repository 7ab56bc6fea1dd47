package core_test

import (
	"errors"
	"testing"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

func connStates(evs []core.Event) []core.ConnStateEvent {
	var out []core.ConnStateEvent
	for _, e := range evs {
		if s, ok := e.(core.ConnStateEvent); ok {
			out = append(out, s)
		}
	}
	return out
}

func errFrame(id uint64, code pimv1.ErrorCode, retryMs uint32, fatal bool) *pimv1.Frame {
	return &pimv1.Frame{RequestId: id, Body: &pimv1.Frame_Error{Error: &pimv1.Error{
		Code: code, RetryAfterMs: retryMs, Fatal: fatal}}}
}

func TestFatalErrorStopsUntilSetToken(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	f, _ := h.up()
	h.receive(errFrame(f.RequestId, pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, 0, true))
	if h.c.ConnState() != core.Stopped {
		t.Fatalf("state %v", h.c.ConnState())
	}
	ss := connStates(h.takeEvents())
	var se *core.ServerError
	if last := ss[len(ss)-1]; last.State != core.Stopped || !errors.As(last.Err, &se) ||
		se.Code != pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
		t.Fatalf("events %v", ss)
	}
	dials := len(h.dials)
	h.wait(time.Hour)
	if len(h.dials) != dials || !h.c.Deadline().IsZero() {
		t.Fatalf("dialed while stopped (deadline %v)", h.c.Deadline())
	}
	h.c.SetToken(h.now, "tok2")
	h.flush()
	if len(h.dials) != dials+1 {
		t.Fatal("SetToken did not dial")
	}
	if _, hello := h.up(); hello.Token != "tok2" {
		t.Fatalf("token %q", hello.Token)
	}
}

func TestRetryAfterAndServerRotation(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	f, _ := h.up()
	h.receive(errFrame(f.RequestId, pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, 5000, true))
	if len(h.closed) != 1 {
		t.Fatal("refused connection not closed")
	}
	ss := connStates(h.takeEvents())
	if wait := ss[len(ss)-1].Retry.Sub(h.now); wait < 5*time.Second || wait >= hintMax(5*time.Second) {
		t.Fatalf("retry in %v, want [5s, %v)", wait, hintMax(5*time.Second))
	}
	dials := len(h.dials)
	h.wait(4999 * time.Millisecond)
	if len(h.dials) != dials {
		t.Fatal("dialed before retry_after")
	}
	h.wait(hintMax(5*time.Second) - 4999*time.Millisecond)
	if len(h.dials) != dials+1 || h.lastDial().Addr != "s1" {
		t.Fatalf("dials %v, want s1 after 5s", h.dials)
	}
}

// hintMax bounds the wait after a hint: HintDelay adds at most a tenth of
// it (at most 1 s).
func hintMax(hint time.Duration) time.Duration {
	return hint + min(hint/core.HintJitterDiv, core.HintJitterMax)
}

// lastRetry is how long the last Disconnected event says to wait.
func (h *harness) lastRetry() time.Duration {
	h.t.Helper()
	ss := connStates(h.takeEvents())
	if len(ss) == 0 || ss[len(ss)-1].State != core.Disconnected {
		h.t.Fatalf("no Disconnected event: %v", ss)
	}
	return ss[len(ss)-1].Retry.Sub(h.now)
}

// TestHintedRefusalsDoNotRaiseBackoff: a server refusing with retry_after
// (admission control during a restart storm) is waited for as it asked,
// plus a little jitter, however often it refuses; and the refusals leave
// the backoff exponent alone, so the next real failure backs off from
// Base. (The bug: each hinted refusal doubled the full-jitter ceiling and
// the client waited max(jitter, hint): 8-16 s after three refusals
// whatever the server said.)
func TestHintedRefusalsDoNotRaiseBackoff(t *testing.T) {
	cfg := testConfig()
	cfg.Backoff = core.BackoffConfig{Base: time.Second, Cap: 2 * time.Minute, HealthyAfter: 30 * time.Second, ReResolveAfter: 100}
	h := newHarness(t, cfg, core.State{})
	hints := []uint32{5000, 5000, 4000, 7000, 5000, 6000, 5000, 5000, 3000, 5000}
	for i, ms := range hints {
		hint := time.Duration(ms) * time.Millisecond
		f, _ := h.up()
		h.receive(errFrame(f.RequestId, pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, ms, true))
		if wait := h.lastRetry(); wait < hint || wait >= hintMax(hint) {
			t.Fatalf("refusal %d with retry_after %v: retry in %v, want [%v, %v)", i+1, hint, wait, hint, hintMax(hint))
		}
		dials := len(h.dials)
		h.wait(hintMax(hint))
		if len(h.dials) != dials+1 {
			t.Fatalf("refusal %d: no dial within %v", i+1, hintMax(hint))
		}
	}
	// Refused on a live connection (a fatal UNAVAILABLE with a hint): the same.
	h.connect(&pimv1.Welcome{})
	h.receive(errFrame(0, pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, 2000, true))
	if wait := h.lastRetry(); wait < 2*time.Second || wait >= hintMax(2*time.Second) {
		t.Fatalf("refused while connected: retry in %v", wait)
	}
	h.wait(hintMax(2 * time.Second))
	// Now the path fails for real, repeatedly: the backoff starts from Base,
	// as if none of the refusals had happened.
	for i := range 6 {
		h.up()
		h.down()
		ceil := min(cfg.Backoff.Base<<i, cfg.Backoff.Cap)
		if wait := h.lastRetry(); wait < 0 || wait >= ceil {
			t.Fatalf("failure %d after %d hinted refusals: retry in %v, want [0, %v)", i+1, len(hints)+1, wait, ceil)
		}
		h.wait(h.c.Deadline().Sub(h.now))
	}
}

// TestRetryAfterPostponesTheDial: the LBS's retry_after (Core.RetryAfter)
// holds a waiting dial for the hint, leaves the exponent alone, and does
// nothing to a live connection.
func TestRetryAfterPostponesTheDial(t *testing.T) {
	cfg := testConfig()
	cfg.Backoff.ReResolveAfter = 100
	h := newHarness(t, cfg, core.State{})
	h.up()
	h.down() // one failure: the next ceiling is 2 x Base
	h.takeEvents()
	dials := len(h.dials)
	h.c.RetryAfter(h.now, 3*time.Second)
	h.flush()
	if wait := h.lastRetry(); wait < 3*time.Second || wait >= hintMax(3*time.Second) {
		t.Fatalf("retry in %v after RetryAfter(3s)", wait)
	}
	h.wait(2999 * time.Millisecond)
	if len(h.dials) != dials {
		t.Fatal("dialed before the LBS's retry_after")
	}
	h.wait(hintMax(3*time.Second) - 2999*time.Millisecond)
	if len(h.dials) != dials+1 {
		t.Fatal("no dial after the LBS's retry_after")
	}
	h.up()
	h.down()
	if wait := h.lastRetry(); wait >= 2*cfg.Backoff.Base {
		t.Fatalf("second failure: retry in %v, want < %v (RetryAfter must not count as a failure)", wait, 2*cfg.Backoff.Base)
	}
	// A shorter hint never brings a dial forward.
	h.wait(h.c.Deadline().Sub(h.now))
	h.connect(&pimv1.Welcome{})
	h.takeEvents()
	closed := len(h.closed)
	h.c.RetryAfter(h.now, time.Minute)
	h.flush()
	if len(h.closed) != closed || h.c.ConnState() != core.Connected || len(connStates(h.takeEvents())) != 0 {
		t.Fatal("RetryAfter touched a live connection")
	}
}

func TestBackoffGrowsWithJitterAndAsksLBS(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, core.State{})
	var addrs []string
	var at []time.Time
	for i := range 6 {
		d := h.lastDial()
		addrs = append(addrs, d.Addr)
		at = append(at, h.now)
		h.c.ConnDown(h.now, d.Conn, errors.New("refused"))
		h.flush()
		ss := connStates(h.takeEvents())
		retry := ss[len(ss)-1].Retry
		ceil := min(cfg.Backoff.Base<<i, cfg.Backoff.Cap)
		if wait := retry.Sub(h.now); wait < 0 || wait >= ceil {
			t.Fatalf("failure %d: retry in %v, want [0, %v)", i+1, wait, ceil)
		}
		h.wait(retry.Sub(h.now))
	}
	if want := []string{"s0", "s1", "s2", "s0", "s1", "s2"}; !equal(addrs, want) {
		t.Fatalf("dialed %v, want %v", addrs, want)
	}
	if h.reRes != 2 {
		t.Fatalf("ReResolve %d times after 6 failures, want 2", h.reRes)
	}
	h.c.SetServers(h.now, []string{"n0", "n1"})
	d := h.lastDial()
	h.c.ConnDown(h.now, d.Conn, nil)
	h.flush()
	h.wait(h.c.Deadline().Sub(h.now))
	if h.lastDial().Addr != "n0" {
		t.Fatalf("dialed %q after SetServers", h.lastDial().Addr)
	}
	_ = at
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHealthyConnectionResetsBackoff(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, core.State{})
	for range 5 { // five failures: the ceiling is now 3.2s
		h.c.ConnDown(h.now, h.lastDial().Conn, nil)
		h.flush()
		h.wait(h.c.Deadline().Sub(h.now))
	}
	h.connect(&pimv1.Welcome{})
	h.wait(cfg.Backoff.HealthyAfter)
	h.down()
	ss := connStates(h.takeEvents())
	if wait := ss[len(ss)-1].Retry.Sub(h.now); wait >= cfg.Backoff.Base {
		t.Fatalf("after a healthy connection, retry in %v (want < %v)", wait, cfg.Backoff.Base)
	}
}

func TestGoAway(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.connect(&pimv1.Welcome{})
	conn := h.conn
	h.receive(&pimv1.Frame{Body: &pimv1.Frame_GoAway{GoAway: &pimv1.GoAway{RetryAfterMs: 3000, Servers: []string{"other"}}}})
	if len(h.closed) == 0 || h.closed[len(h.closed)-1] != conn {
		t.Fatal("not closed on GoAway")
	}
	ss := connStates(h.takeEvents())
	if last := ss[len(ss)-1]; !errors.Is(last.Err, core.ErrGoAway) || last.Retry.Sub(h.now) < 3*time.Second || last.Retry.Sub(h.now) >= hintMax(3*time.Second) {
		t.Fatalf("events %v", ss)
	}
	h.wait(hintMax(3 * time.Second))
	if h.lastDial().Addr != "other" {
		t.Fatalf("dialed %q, want the GoAway's server", h.lastDial().Addr)
	}
}

func TestDeadConnectionByMissedPong(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.connect(&pimv1.Welcome{})
	h.takeFrames()
	h.wait(10 * time.Second) // foreground: Min
	fs := h.takeFrames()
	if len(fs) != 1 || fs[0].GetPing() == nil {
		t.Fatalf("frames %v, want a Ping", fs)
	}
	h.wait(5 * time.Second)
	ss := connStates(h.takeEvents())
	if last := ss[len(ss)-1]; last.State != core.Disconnected || !errors.Is(last.Err, core.ErrDeadConnection) {
		t.Fatalf("events %v", ss)
	}
}

func TestDeadConnectionByTimeouts(t *testing.T) {
	cfg := testConfig()
	cfg.SendTimeout = 2 * time.Second
	h := newHarness(t, cfg, core.State{})
	h.connect(&pimv1.Welcome{})
	h.send(dm, "a")
	h.send(dm, "b")
	h.wait(2 * time.Second)
	if h.c.ConnState() != core.Connected {
		t.Fatal("dead after 2 timeouts")
	}
	h.send("g:x", "c")
	h.wait(2 * time.Second)
	ss := connStates(h.takeEvents())
	if last := ss[len(ss)-1]; last.State != core.Disconnected || !errors.Is(last.Err, core.ErrDeadConnection) {
		t.Fatalf("events %v", ss)
	}
}

func TestNetworkChangeProbesAndReconnects(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.connect(&pimv1.Welcome{})
	h.takeFrames()
	h.c.NetworkChanged(h.now, "wifi-2")
	h.flush()
	fs := h.takeFrames()
	if len(fs) != 1 || fs[0].GetPing() == nil {
		t.Fatalf("frames %v, want a probe Ping", fs)
	}
	dials := len(h.dials)
	h.wait(2 * time.Second) // ProbeTimeout
	if len(h.dials) != dials+1 {
		t.Fatal("no immediate reconnect after a failed probe")
	}
	// Disconnected: a network change dials at once, whatever the backoff.
	for range 6 {
		h.c.ConnDown(h.now, h.lastDial().Conn, nil)
		h.flush()
	}
	dials = len(h.dials)
	h.c.NetworkChanged(h.now, "cell")
	h.flush()
	if len(h.dials) != dials+1 {
		t.Fatal("no dial on network change")
	}
}

func TestBackgroundHeartbeatLearnsPerNetwork(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.c.NetworkChanged(h.now, "home")
	h.c.SetForeground(h.now, false)
	h.flush()
	h.connect(&pimv1.Welcome{})
	h.takeFrames()
	pong := func() time.Time {
		t.Helper()
		start := h.now
		for range 100 {
			h.wait(time.Second)
			for _, f := range h.takeFrames() {
				if f.GetPing() != nil {
					h.receive(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{ServerTime: h.now.UnixMilli()}}})
					return h.now
				}
			}
		}
		t.Fatalf("no ping since %v", start)
		return time.Time{}
	}
	last := h.now
	var gaps []time.Duration
	for range 6 {
		p := pong()
		gaps = append(gaps, p.Sub(last))
		last = p
	}
	want := []time.Duration{10, 10, 20, 20, 30, 30}
	for i := range want {
		if gaps[i] != want[i]*time.Second {
			t.Fatalf("heartbeat gaps %v, want %v s", gaps, want)
		}
	}
	var rec core.HeartbeatRecord
	for _, r := range h.state.Heartbeats {
		if r.Network == "home" {
			rec = r
		}
	}
	if rec.Interval != 30*time.Second {
		t.Fatalf("persisted %+v", h.state.Heartbeats)
	}
	// Another network starts from scratch; coming back remembers.
	h.c.NetworkChanged(h.now, "cafe")
	h.flush()
	if iv := h.c.HeartbeatInterval(); iv != 10*time.Second {
		t.Fatalf("new network interval %v", iv)
	}
	h.c.NetworkChanged(h.now, "home")
	h.flush()
	if iv := h.c.HeartbeatInterval(); iv != 30*time.Second {
		t.Fatalf("home interval %v", iv)
	}
}

func TestServerHeartbeatCapsTheInterval(t *testing.T) {
	st := core.State{Heartbeats: []core.HeartbeatRecord{{Network: "home", Interval: 40 * time.Second}}}
	h := newHarness(t, testConfig(), st)
	h.c.NetworkChanged(h.now, "home")
	h.c.SetForeground(h.now, false)
	h.flush()
	h.connect(&pimv1.Welcome{HeartbeatMs: 15000})
	h.takeFrames()
	if iv := h.c.HeartbeatInterval(); iv != 15*time.Second {
		t.Fatalf("interval %v, want the server's 15s", iv)
	}
	h.wait(15 * time.Second)
	if fs := h.takeFrames(); len(fs) == 0 || fs[len(fs)-1].GetPing() == nil {
		t.Fatalf("no ping at the server's heartbeat: %v", fs)
	}
}

func TestInputBetweenReadyAndAdvancePanics(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	h.c.Send(h.now, dm, pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte("x"))
	_ = h.c.Ready()
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	h.c.Tick(h.now)
}

func TestStaleConnectionInputIgnored(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	old := h.lastDial().Conn
	h.c.ConnDown(h.now, old, nil)
	h.flush()
	h.wait(h.c.Deadline().Sub(h.now))
	f, _ := h.up()
	h.welcome(f, &pimv1.Welcome{UserSeq: 1})
	h.takeEvents()
	h.c.Receive(h.now, old, push(msgEvent(1, dm, 1)))
	h.c.ConnDown(h.now, old, nil)
	h.flush()
	if evs := h.takeEvents(); len(evs) != 0 || h.c.ConnState() != core.Connected {
		t.Fatalf("stale input had effects: %v", evs)
	}
}

func TestSendValidation(t *testing.T) {
	h := newHarness(t, testConfig(), core.State{})
	for _, tc := range []struct {
		conv string
		typ  pimv1.MessageType
		body []byte
	}{
		{"x", pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte("a")},
		{"d:bob:alice", pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte("a")},
		{dm, pimv1.MessageType_MESSAGE_TYPE_TEXT, nil},
		{dm, pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte{0xff}},
		{dm, pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, []byte("a")},
		{dm, pimv1.MessageType_MESSAGE_TYPE_BINARY, make([]byte, core.MaxBody+1)},
	} {
		if _, err := h.c.Send(h.now, tc.conv, tc.typ, tc.body); err == nil {
			t.Errorf("Send(%q, %v, %d bytes) accepted", tc.conv, tc.typ, len(tc.body))
		}
	}
	h.flush()
	if len(h.state.Outbox) != 0 {
		t.Fatal("invalid sends were queued")
	}
	if _, err := h.c.SendTo(h.now, "bob", pimv1.MessageType_MESSAGE_TYPE_BINARY, []byte{0xff}); err != nil {
		t.Fatal(err)
	}
	h.flush()
	if h.state.Outbox[0].Conv != dm {
		t.Fatalf("SendTo conv %q", h.state.Outbox[0].Conv)
	}
}
