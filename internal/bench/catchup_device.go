package bench

// The device of `pim bench catchup`: one Go SDK client whose event stream is
// checked and timed, event by event, by the goroutine that reads it.
//
// Invariants:
//   - The event goroutine (run) is the only writer of everything under mu;
//     the run's goroutine reads it under mu, and reads chk and errs without
//     it only after run has ended.
//   - Times are taken by the event goroutine as it reads each event, so they
//     are in stream order: a CaughtUpEvent is "after" every message event
//     that precedes it on the stream.
//   - caught is closed exactly once: when, after the return of the network
//     (setTargets), every message acknowledged before the return has been
//     delivered.

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	pim "github.com/pim-project/pim/sdk/go"
)

type catchDev struct {
	cl      *pim.Client
	senders int
	up      chan struct{} // closed at the first CaughtUpEvent
	caught  chan struct{} // closed when the outage's messages are all delivered
	done    chan struct{} // closed when run ends

	fresh atomic.Int64 // distinct benchmark messages delivered

	mu       sync.Mutex
	chk      *Checker
	prefix   []uint64 // per sender: messages 0..prefix-1 all delivered
	want     []uint64 // per sender: deliver 0..want-1 to be caught up (nil: before the return)
	retAt    time.Time
	upOnce   bool
	caughtAt time.Time // the last message of the outage delivered
	reconnAt time.Time // the first Connected after the return
	sdkAt    time.Time // the first CaughtUpEvent after the return
	nextDial time.Time // the last retry the SDK announced before the return
	connects int
	errs     []string
}

func newCatchDev(cl *pim.Client, senders int) *catchDev {
	return &catchDev{cl: cl, senders: senders, up: make(chan struct{}), caught: make(chan struct{}),
		done: make(chan struct{}), chk: NewChecker(0), prefix: make([]uint64, senders)}
}

// run reads the device's events until the client is closed.
func (d *catchDev) run() {
	defer close(d.done)
	for ev := range d.cl.Events() {
		d.handle(time.Now(), ev)
	}
}

func (d *catchDev) fail(format string, args ...any) {
	if len(d.errs) < 5 {
		d.errs = append(d.errs, fmt.Sprintf(format, args...))
	}
}

func (d *catchDev) handle(now time.Time, ev pim.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch e := ev.(type) {
	case pim.MessageEvent:
		m := e.Message
		sender, n, _, ok := ParseBody(m.GetBody())
		ok = ok && m.GetType() == pimv1.MessageType_MESSAGE_TYPE_TEXT && sender >= 0 && sender < d.senders
		if !d.chk.Observe(e.UserSeq, []byte(m.GetConv()), m.GetSeq(), ok, sender, n) {
			return
		}
		d.fresh.Add(1)
		seen := d.chk.Seen(sender)
		for seen.Has(d.prefix[sender]) {
			d.prefix[sender]++
		}
		d.checkCaught(now)
	case pim.ReadEvent:
		d.chk.ObserveOther(e.UserSeq)
	case pim.ConnStateEvent:
		switch {
		case e.State == pim.Connected:
			d.connects++
			if !d.retAt.IsZero() && d.reconnAt.IsZero() {
				d.reconnAt = now
			}
		case e.State == pim.Disconnected && d.retAt.IsZero():
			d.nextDial = e.Retry
		}
	case pim.CaughtUpEvent:
		if !d.upOnce {
			d.upOnce = true
			close(d.up)
		}
		if !d.retAt.IsZero() && d.sdkAt.IsZero() {
			d.sdkAt = now
			if d.caughtAt.IsZero() {
				d.fail("the SDK reported caught up with %d messages of the outage still missing", d.missingLocked())
			}
		}
	case pim.ResyncEvent:
		d.fail("the server's data set changed (epoch %s -> %s)", e.OldEpoch, e.NewEpoch)
	}
}

// setTargets marks the return of the network at now: the device is caught
// up once it has every message 0..want[s]-1 of each sender s. It returns
// how many of them it had already.
func (d *catchDev) setTargets(now time.Time, want []uint64) (had int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.want, d.retAt = want, now
	for s, k := range want {
		seen := d.chk.Seen(s)
		for n := uint64(0); n < k && seen != nil; n++ {
			if seen.Has(n) {
				had++
			}
		}
	}
	d.checkCaught(now)
	return had
}

// checkCaught closes caught once every target is reached (mu held).
func (d *catchDev) checkCaught(now time.Time) {
	if d.want == nil || !d.caughtAt.IsZero() {
		return
	}
	for s, k := range d.want {
		if d.prefix[s] < k {
			return
		}
	}
	d.caughtAt = now
	close(d.caught)
}

// missingLocked is how many target messages are not delivered yet (mu held).
func (d *catchDev) missingLocked() uint64 {
	var m uint64
	for s, k := range d.want {
		if d.prefix[s] < k {
			m += k - d.prefix[s]
		}
	}
	return m
}

// catchTimes are the device's moments relative to the return of the
// network: the outage's messages all delivered, the first Connected, the
// SDK's CaughtUpEvent, and the next dial the SDK had planned when the
// network came back (each ok false if it did not happen).
type catchTimes struct {
	caught, reconn, sdk, nextDial time.Duration
	caughtOK, reconnOK, sdkOK     bool
	nextDialOK                    bool
	connects                      int
}

// times reads the device's moments (see catchTimes).
func (d *catchDev) times() catchTimes {
	d.mu.Lock()
	defer d.mu.Unlock()
	var t catchTimes
	rel := func(at time.Time) (time.Duration, bool) {
		if at.IsZero() || d.retAt.IsZero() {
			return 0, false
		}
		return at.Sub(d.retAt), true
	}
	t.caught, t.caughtOK = rel(d.caughtAt)
	t.reconn, t.reconnOK = rel(d.reconnAt)
	t.sdk, t.sdkOK = rel(d.sdkAt)
	t.nextDial, t.nextDialOK = rel(d.nextDial)
	t.connects = d.connects
	return t
}
