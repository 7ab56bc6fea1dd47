package core_test

import (
	"math/rand/v2"
	"testing"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// harness drives one core by hand: the test plays the server.
type harness struct {
	t      *testing.T
	cfg    core.Config
	c      *core.Core
	now    time.Time
	state  core.State // what the core persisted
	conn   core.ConnID
	frames []*pimv1.Frame // written on conn, not yet taken
	events []core.Event
	dials  []core.Dial
	closed []core.ConnID
	reRes  int
}

func testConfig() core.Config {
	return core.Config{
		User: "alice", DeviceID: "phone", Token: "tok", Servers: []string{"s0", "s1", "s2"},
		Rand: rand.New(rand.NewPCG(1, 2)),
		Backoff: core.BackoffConfig{
			Base: 100 * time.Millisecond, Cap: 10 * time.Second, HealthyAfter: 30 * time.Second, ReResolveAfter: 3,
		},
		Heartbeat: core.HeartbeatConfig{
			Min: 10 * time.Second, Max: 40 * time.Second, Step: 10 * time.Second, Successes: 2,
			PongTimeout: 5 * time.Second, ProbeTimeout: 2 * time.Second,
		},
	}
}

func newHarness(t *testing.T, cfg core.Config, st core.State) *harness {
	t.Helper()
	c, err := core.New(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, cfg: cfg, c: c, now: t0, state: st}
	c.Tick(h.now)
	h.flush()
	return h
}

// flush carries out every Ready.
func (h *harness) flush() {
	for h.c.HasReady() {
		rd := h.c.Ready()
		h.state.Apply(rd.Persist)
		h.closed = append(h.closed, rd.Close...)
		for _, id := range rd.Close {
			if id == h.conn {
				h.conn = 0
				h.frames = nil
			}
		}
		if len(rd.Frames) > 0 {
			if rd.Conn != h.conn {
				h.t.Fatalf("frames for conn %d, current %d", rd.Conn, h.conn)
			}
			h.frames = append(h.frames, rd.Frames...)
		}
		if rd.Dial != nil {
			h.dials = append(h.dials, *rd.Dial)
		}
		if rd.ReResolve {
			h.reRes++
		}
		h.events = append(h.events, rd.Events...)
		h.c.Advance()
	}
}

// wait lets d pass, ticking at every deadline on the way.
func (h *harness) wait(d time.Duration) {
	end := h.now.Add(d)
	for {
		dl := h.c.Deadline()
		if dl.IsZero() || dl.After(end) {
			break
		}
		if dl.After(h.now) {
			h.now = dl
		}
		h.c.Tick(h.now)
		h.flush()
	}
	h.now = end
	h.c.Tick(h.now)
	h.flush()
}

// takeFrames returns and forgets the frames written so far.
func (h *harness) takeFrames() []*pimv1.Frame {
	f := h.frames
	h.frames = nil
	return f
}

func (h *harness) takeEvents() []core.Event {
	e := h.events
	h.events = nil
	return e
}

// lastDial returns the newest dial asked for.
func (h *harness) lastDial() core.Dial {
	h.t.Helper()
	if len(h.dials) == 0 {
		h.t.Fatal("no dial")
	}
	return h.dials[len(h.dials)-1]
}

// up accepts the pending dial and returns the Hello.
func (h *harness) up() (*pimv1.Frame, *pimv1.Hello) {
	h.t.Helper()
	d := h.lastDial()
	h.conn = d.Conn
	h.frames = nil
	h.c.ConnUp(h.now, d.Conn)
	h.flush()
	fs := h.takeFrames()
	if len(fs) != 1 || fs[0].GetHello() == nil {
		h.t.Fatalf("after ConnUp: %v, want one Hello", fs)
	}
	return fs[0], fs[0].GetHello()
}

// welcome answers the Hello.
func (h *harness) welcome(hello *pimv1.Frame, w *pimv1.Welcome) {
	h.t.Helper()
	if w.Epoch == "" {
		w.Epoch = "e1"
	}
	if w.User == "" {
		w.User = h.cfg.User
	}
	h.receive(&pimv1.Frame{RequestId: hello.RequestId, Body: &pimv1.Frame_Welcome{Welcome: w}})
}

// connect dials, says Hello and gets welcomed.
func (h *harness) connect(w *pimv1.Welcome) {
	h.t.Helper()
	if h.c.ConnState() == core.Disconnected {
		h.wait(h.c.Deadline().Sub(h.now))
	}
	f, _ := h.up()
	h.welcome(f, w)
}

func (h *harness) receive(f *pimv1.Frame) {
	h.c.Receive(h.now, h.conn, f)
	h.flush()
}

func (h *harness) down() {
	id := h.conn
	h.conn = 0
	h.frames = nil
	h.c.ConnDown(h.now, id, nil)
	h.flush()
}

func (h *harness) send(conv, body string) string {
	h.t.Helper()
	id, err := h.c.Send(h.now, conv, pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte(body))
	if err != nil {
		h.t.Fatal(err)
	}
	h.flush()
	return id
}

func sendReqs(fs []*pimv1.Frame) []*pimv1.Frame {
	var out []*pimv1.Frame
	for _, f := range fs {
		if f.GetSendReq() != nil {
			out = append(out, f)
		}
	}
	return out
}

func ackFor(f *pimv1.Frame, seq uint64) *pimv1.Frame {
	r := f.GetSendReq()
	return &pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_SendAck{SendAck: &pimv1.SendAck{
		ClientMsgId: r.ClientMsgId, Conv: r.Conv, Seq: seq, MsgId: "m", ServerTime: t0.UnixMilli()}}}
}

func sendStates(evs []core.Event, id string) []core.SendState {
	var out []core.SendState
	for _, e := range evs {
		if s, ok := e.(core.SendStateEvent); ok && s.ClientMsgID == id {
			out = append(out, s.State)
		}
	}
	return out
}

func msgEvent(us uint64, conv string, seq uint64) *pimv1.Event {
	return &pimv1.Event{UserSeq: us, Kind: &pimv1.Event_Message{Message: &pimv1.Message{
		Conv: conv, Seq: seq, MsgId: "m", Sender: "bob", SenderDevice: "d", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT,
		Body: []byte("x")}}}
}

func push(evs ...*pimv1.Event) *pimv1.Frame {
	return &pimv1.Frame{Body: &pimv1.Frame_Push{Push: &pimv1.Push{Events: evs}}}
}

func delivered(evs []core.Event) []uint64 {
	var out []uint64
	for _, e := range evs {
		if m, ok := e.(core.MessageEvent); ok {
			out = append(out, m.UserSeq)
		}
	}
	return out
}

const dm = "d:alice:bob"
