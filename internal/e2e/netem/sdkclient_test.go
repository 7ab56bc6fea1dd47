package netem_test

// The SDK device of TestLossAndDelay (PIM_NETEM_CLIENT=sdk): a pim.Client
// from sdk/go with its own data dir, as an app would run it. Everything the
// lean device of client_test.go does by hand (reconnecting with jittered
// backoff, resending with the same id, dropping redeliveries, detecting a
// dead connection, resuming from the cursor) is the SDK's job here; the
// device only hands it messages and watches what comes out.
//
// Invariants the device checks itself (the parent checks the rest from the
// report): each message of the conversation arrives once (by its body, which
// is its label "user.device.NNN"), and every own message ends Sent.
//
// Its retry budget is raised (MaxAttempts, MaxSendAge) so that a message is
// never Failed during the scenario: with the defaults (5 attempts or 3
// minutes) an app would show "failed, tap to retry" after a long outage,
// which is right for an app and not what this test measures. The SDK seeds
// its backoff jitter from crypto/rand at every start (a replayed seed would
// repeat client_msg_ids), so unlike the lean device its jitter cannot be
// replayed.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	pim "github.com/pim-project/pim/sdk/go"
)

type sdkDevice struct {
	cfg helperConfig
	dir string

	outMu sync.Mutex
}

func (d *sdkDevice) emit(e event) {
	b, _ := json.Marshal(e)
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(os.Stdout, "%s%s\n", eventPrefix, b)
}

func (d *sdkDevice) label(i int) string {
	return fmt.Sprintf("%s.%s.%03d", d.cfg.user, d.cfg.device, i)
}

func (d *sdkDevice) run() error {
	ctx, cancel := context.WithDeadline(context.Background(), d.cfg.deadline)
	defer cancel()
	cl, err := pim.Connect(ctx, pim.Options{
		Servers: []string{"tcp://" + d.cfg.addr}, Token: d.cfg.token, User: d.cfg.user,
		DeviceID: d.cfg.device, DataDir: d.dir, NoConvList: true,
		Tuning: pim.Tuning{MaxAttempts: 1 << 20, MaxSendAge: time.Hour},
	})
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer cl.Close()

	w := &sdkWatch{d: d, ready: make(chan struct{}), complete: make(chan struct{}), fatal: make(chan error, 1),
		seen: map[string]uint64{}}
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); w.watch(ctx, cl) }()
	defer func() { cancel(); <-watchDone }()

	select {
	case <-w.ready:
	case err := <-w.fatal:
		return err
	case <-ctx.Done():
		d.emit(event{K: "timeout", Msg: "never connected"})
		return nil
	}
	d.emit(event{K: "ready"})
	if !waitGoLine(ctx) {
		d.emit(event{K: "timeout", Msg: "no go from the parent"})
		return nil
	}
	sent := make(chan error, 1)
	go func() { sent <- d.send(ctx, cl) }()
	select {
	case err := <-sent:
		if err != nil && ctx.Err() != nil {
			d.emit(event{K: "timeout", Msg: err.Error()})
			return nil
		}
		if err != nil {
			return err
		}
	case err := <-w.fatal:
		return err
	}
	select {
	case <-w.complete:
	case err := <-w.fatal:
		return err
	case <-ctx.Done():
		d.emit(event{K: "timeout", Msg: "not every message arrived"})
		return nil
	}
	w.mu.Lock()
	done := event{K: "done", Conns: w.conns, DialFails: w.dialFails}
	w.mu.Unlock()
	d.emit(done)
	return nil
}

// send hands message i to the SDK at start + i*every and reports each once
// it is Sent (acknowledged by the server).
func (d *sdkDevice) send(ctx context.Context, cl *pim.Client) error {
	start := time.Now()
	errs := make(chan error, d.cfg.n)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := range d.cfg.n {
		t0 := start.Add(time.Duration(i) * d.cfg.every)
		timer.Reset(max(time.Until(t0), 0))
		select {
		case <-timer.C:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d messages handed over: %w", i, d.cfg.n, ctx.Err())
		}
		out, err := cl.Send(ctx, d.cfg.conv, d.label(i))
		if err != nil {
			return fmt.Errorf("send %s: %w", d.label(i), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := out.Wait(ctx); err != nil {
				errs <- fmt.Errorf("%s (%s): %w", d.label(i), out.ClientMsgID(), err)
				return
			}
			d.emit(event{K: "sent", ID: d.label(i), Seq: out.Ack().GetSeq(), T0: t0.UnixNano(),
				T: time.Now().UnixNano(), Attempts: out.Attempts()})
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// sdkWatch reads the client's events: connection changes, and the
// conversation's messages.
type sdkWatch struct {
	d        *sdkDevice
	ready    chan struct{} // closed at the first Connected
	complete chan struct{} // closed once the conversation has cfg.expect messages
	fatal    chan error

	mu               sync.Mutex
	conns, dialFails int
	seen             map[string]uint64 // label -> conv seq
}

func (w *sdkWatch) watch(ctx context.Context, cl *pim.Client) {
	d := w.d
	state := pim.Disconnected
	for {
		var ev pim.Event
		select {
		case ev = <-cl.Events():
		case <-cl.Done():
			w.fail(fmt.Errorf("client stopped: %v", cl.Err()))
			return
		case <-ctx.Done():
			return
		}
		switch e := ev.(type) {
		case pim.ConnStateEvent:
			w.conn(e, state)
			state = e.State
		case pim.MessageEvent:
			m := e.Message
			if m.GetConv() != d.cfg.conv {
				continue
			}
			label := string(m.Body)
			w.mu.Lock()
			prev, dup := w.seen[label]
			w.seen[label] = m.Seq
			n := len(w.seen)
			w.mu.Unlock()
			if dup {
				d.emit(event{K: "violation", Msg: fmt.Sprintf("%s delivered twice: seq %d and %d", label, prev, m.Seq)})
				continue
			}
			d.emit(event{K: "recv", ID: label, Sender: m.Sender + "/" + m.SenderDevice, CSeq: m.ClientSeq, Seq: m.Seq,
				T: time.Now().UnixNano()})
			if n == d.cfg.expect {
				close(w.complete)
			}
		}
	}
}

// conn reports a connection change: a connection that ended, or a dial
// that failed (Disconnected straight from Connecting).
func (w *sdkWatch) conn(e pim.ConnStateEvent, prev pim.ConnState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch e.State {
	case pim.Connected:
		w.conns++
		if w.conns == 1 {
			close(w.ready)
		}
	case pim.Disconnected:
		if prev == pim.Connected {
			w.d.emit(event{K: "conn", Msg: fmt.Sprintf("ended: %v", e.Err)})
		} else if e.Err != nil {
			w.dialFails++
			w.d.emit(event{K: "conn", Msg: fmt.Sprintf("dial: %v", e.Err)})
		}
	case pim.Stopped:
		w.fail(fmt.Errorf("the client stopped: %v", e.Err))
	}
}

func (w *sdkWatch) fail(err error) {
	select {
	case w.fatal <- err:
	default:
	}
}

// waitGoLine waits for the parent's barrier: a line on standard input once
// every device is ready.
func waitGoLine(ctx context.Context) bool {
	goLine := make(chan struct{})
	go func() {
		var b [1]byte
		for {
			if n, err := os.Stdin.Read(b[:]); err != nil || (n == 1 && b[0] == '\n') {
				break
			}
		}
		close(goLine)
	}()
	select {
	case <-goLine:
		return true
	case <-ctx.Done():
		return false
	}
}
