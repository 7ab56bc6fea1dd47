// Test helpers: servers (in-process and child processes), clients with
// fast tunings, and a recorder that checks what each device was shown.
//
// Invariants of this file:
//   - Tests synchronise on events and handles (channels), never on sleeps;
//     every wait is bounded by waitFor and fails the test with what was
//     seen so far.
//   - A recorder accumulates one device's events across Client instances
//     (restarts) and checks, as they arrive, that timeline events (messages,
//     reads, hidden messages, receipts) come exactly once and in order
//     (consecutive user seqs, per-sender order of messages).

package pim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/faultproxy"
	"github.com/pim-project/pim/internal/pimproc"
	"github.com/pim-project/pim/internal/server"
)

// waitFor bounds every wait; a healthy run needs a small fraction of it.
const waitFor = 60 * time.Second

// testTuning makes reconnects and dead-connection detection fast, and the
// retry budget large (faults must not fail messages).
func testTuning() Tuning {
	return Tuning{
		SendTimeout:       time.Second,
		MaxAttempts:       10000,
		MaxSendAge:        5 * time.Minute,
		RequestTimeout:    2 * time.Second,
		ConnectTimeout:    time.Second,
		DeadAfterTimeouts: 2,
		AckDelay:          20 * time.Millisecond,
		CommandQuarantine: 200 * time.Millisecond,
		WriteTimeout:      2 * time.Second,
		Backoff: BackoffConfig{
			Base: 20 * time.Millisecond, Cap: 300 * time.Millisecond, HealthyAfter: 2 * time.Second, ReResolveAfter: 4,
		},
		Heartbeat: HeartbeatConfig{
			Min: 500 * time.Millisecond, Max: time.Second, Step: 100 * time.Millisecond,
			PongTimeout: 700 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond,
		},
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// startServer starts an in-process server on a temp dir (heartbeat 1 s).
// proxyTo returns a fault-injecting proxy in front of srv's TCP listener,
// closed at the end of the test.
func proxyTo(t *testing.T, srv *server.Server) *faultproxy.Proxy {
	t.Helper()
	px, err := faultproxy.New(srv.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { px.Close() })
	return px
}

func startServer(t *testing.T) *server.Server {
	t.Helper()
	srv, err := server.Start(server.Config{DataDir: t.TempDir(), TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Heartbeat: time.Second})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
	})
	return srv
}

func token(t *testing.T, srv *server.Server, user string) string {
	t.Helper()
	tok, err := srv.Keys().Issue(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// device is one (user, device) with its data dir and recorder, across
// Client instances.
type device struct {
	t        *testing.T
	user, id string
	token    string
	servers  []string
	dir      string
	rec      *recorder
	cl       *Client
	tune     Tuning
}

func newDevice(t *testing.T, user, id, tok string, servers ...string) *device {
	return &device{t: t, user: user, id: id, token: tok, servers: servers, dir: t.TempDir(),
		rec: newRecorder(user + "/" + id), tune: testTuning()}
}

// open connects a new Client instance on the device's data dir.
func (d *device) open() *Client {
	d.t.Helper()
	cl, err := Connect(ctxT(d.t), Options{Servers: d.servers, Token: d.token, User: d.user, DeviceID: d.id,
		DataDir: d.dir, Tuning: d.tune})
	if err != nil {
		d.t.Fatalf("connect %s/%s: %v", d.user, d.id, err)
	}
	d.cl = cl
	d.rec.attach(cl)
	d.t.Cleanup(func() { cl.Close() })
	return cl
}

// close closes the current instance.
func (d *device) close() {
	d.t.Helper()
	if err := d.cl.Close(); err != nil {
		d.t.Fatalf("close %s/%s: %v", d.user, d.id, err)
	}
	d.rec.detach()
}

// recorder accumulates a device's events and checks them as they come.
type recorder struct {
	name string
	done chan struct{} // closed when the attached stream ends

	mu       sync.Mutex
	last     uint64 // highest user seq shown (every timeline event)
	msgs     []MessageEvent
	reads    []ReadEvent
	hidden   []HiddenEvent
	receipts []ReceiptEvent
	convEvs  int              // ConversationEvents
	keys     map[string]bool  // conv/seq seen
	bySender map[string][]int // sender prefix -> indices in body order
	caught   []uint64         // CaughtUpEvent user seqs
	dead     int              // connections declared dead
	connects int              // connections welcomed
	lastErr  error            // why the last connection ended
	errs     []string
	changed  chan struct{}
}

func newRecorder(name string) *recorder {
	return &recorder{name: name, keys: make(map[string]bool), bySender: make(map[string][]int),
		changed: make(chan struct{})}
}

func (r *recorder) attach(cl *Client) {
	r.done = make(chan struct{})
	done := r.done
	go func() {
		defer close(done)
		for ev := range cl.Events() {
			r.add(ev)
		}
	}()
}

func (r *recorder) detach() {
	if r.done != nil {
		<-r.done
	}
}

func (r *recorder) add(ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := func(us uint64) {
		if us != r.last+1 {
			r.errs = append(r.errs, fmt.Sprintf("user seq %d, want %d", us, r.last+1))
		}
		r.last = us
	}
	switch e := ev.(type) {
	case ReadEvent:
		next(e.UserSeq)
		r.reads = append(r.reads, e)
	case HiddenEvent:
		next(e.UserSeq)
		r.hidden = append(r.hidden, e)
	case ReceiptEvent:
		next(e.UserSeq)
		r.receipts = append(r.receipts, e)
	case UnknownEvent:
		next(e.UserSeq)
		r.errs = append(r.errs, fmt.Sprintf("unknown event at user seq %d", e.UserSeq))
	case ConversationEvent:
		r.convEvs++
	case MessageEvent:
		next(e.UserSeq)
		k := fmt.Sprintf("%s/%d", e.Message.GetConv(), e.Message.GetSeq())
		if r.keys[k] {
			r.errs = append(r.errs, "duplicate "+k)
		}
		r.keys[k] = true
		// Bodies are "<sender>-<index>": each sender's indices must grow.
		if body := string(e.Message.GetBody()); strings.Contains(body, "-") {
			i := strings.LastIndex(body, "-")
			n, err := strconv.Atoi(body[i+1:])
			if err == nil {
				s := body[:i]
				if xs := r.bySender[s]; len(xs) > 0 && xs[len(xs)-1] >= n {
					r.errs = append(r.errs, fmt.Sprintf("%s: %d after %d", s, n, xs[len(xs)-1]))
				}
				r.bySender[s] = append(r.bySender[s], n)
			}
		}
		r.msgs = append(r.msgs, e)
	case CaughtUpEvent:
		r.caught = append(r.caught, e.UserSeq)
	case ConnStateEvent:
		if e.Err != nil {
			r.lastErr = e.Err
		}
		switch {
		case e.State == Connected:
			r.connects++
		case errors.Is(e.Err, ErrDeadConnection) || errors.Is(e.Err, ErrConnectTimeout):
			r.dead++
		}
	default:
		return
	}
	close(r.changed)
	r.changed = make(chan struct{})
}

// wait waits until cond holds (under the recorder's lock).
func (r *recorder) wait(t *testing.T, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		r.mu.Lock()
		ok := cond(r)
		ch := r.changed
		n := len(r.msgs)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%s: timed out waiting for %s (%d messages so far)", r.name, what, n)
		}
	}
}

// waitMessages waits until n messages were shown.
func (r *recorder) waitMessages(t *testing.T, n int) {
	t.Helper()
	r.wait(t, fmt.Sprintf("%d messages", n), func(r *recorder) bool { return len(r.msgs) >= n })
}

// check fails the test if anything was shown twice, out of order, or if
// the senders' messages are not exactly 0..n-1 each.
func (r *recorder) check(t *testing.T, senders map[string]int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Errorf("%s: %s", r.name, e)
	}
	total := 0
	for s, n := range senders {
		xs := r.bySender[s]
		if len(xs) != n {
			t.Errorf("%s: %d messages from %s, want %d", r.name, len(xs), s, n)
			continue
		}
		for i, x := range xs {
			if x != i {
				t.Errorf("%s: message %d from %s is %d", r.name, i, s, x)
				break
			}
		}
		total += n
	}
	if len(r.msgs) != total {
		t.Errorf("%s: %d messages shown, want %d", r.name, len(r.msgs), total)
	}
}

// checkOrder fails the test if any timeline event was shown twice, out of
// order, or after a gap.
func (r *recorder) checkOrder(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Errorf("%s: %s", r.name, e)
	}
}

// sendAll sends n messages "<prefix>-<i>" to conv from cl, in order.
func sendAll(t *testing.T, cl *Client, conv, prefix string, from, n int) []*Outgoing {
	t.Helper()
	var out []*Outgoing
	for i := from; i < from+n; i++ {
		o, err := cl.Send(ctxT(t), conv, fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			t.Errorf("send %s-%d: %v", prefix, i, err)
			return out
		}
		out = append(out, o)
	}
	return out
}

// waitSent waits until every handle is Sent (it may run on any
// goroutine: it reports with Errorf).
func waitSent(t *testing.T, os []*Outgoing) {
	t.Helper()
	ctx := ctxT(t)
	for _, o := range os {
		if err := o.Wait(ctx); err != nil {
			t.Errorf("message %s: %v (state %v)", o.ClientMsgID(), err, o.State())
			return
		}
	}
}

// --- child processes ---

// pimBinary builds cmd/pim once per test run.
func pimBinary(t *testing.T) string {
	t.Helper()
	bin, err := pimproc.Build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startChild starts `pim serve` on dir, killed at the end of the test.
func startChild(t *testing.T, bin, dir string) *pimproc.Server {
	t.Helper()
	c, err := pimproc.Start(bin, "serve", "--data", dir, "--tcp", "127.0.0.1:0", "--http", "",
		"--log-level", "warn", "--heartbeat", "1s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	return c
}
