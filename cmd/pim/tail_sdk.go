package main

// `pim tail --data DIR`: the device's timeline through the Go SDK, with
// the position of the last printed event kept in DIR. Invariants:
//   - What is printed comes from the SDK's local timeline (Client.Timeline),
//     in user-seq order, gap-free, from the event after the position; the
//     SDK's events only say when to look. So every event is printed once
//     across runs, in order, and one the SDK stored but a run did not
//     print (killed, ended, offline) is printed by the next run.
//   - The position (a user seq and a mark of the event there) is saved in
//     DIR/pim-tail.pos after the output is flushed, by an atomic rename: a
//     run killed between the two prints that batch again, never loses it.
//   - If the event at the position is not the one printed there (the
//     server's data set changed and the SDK started its timeline over), the
//     position goes back to the start, with a note on stderr.
//   - Output is the one-shot tail's: formatEvent, the same text and --json.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	pim "github.com/pim-project/pim/sdk/go"
)

// tailPosFile is the file in --data that holds tail's position.
const tailPosFile = "pim-tail.pos"

// tailPosMagic starts the position file.
const tailPosMagic = "pim-tail-position/1"

// tailPos is the last printed event: its user seq and its mark (eventMark).
type tailPos struct {
	Seq  uint64
	Mark string
}

// sdkTailer is one run of `pim tail --data`.
type sdkTailer struct {
	cl      *pim.Client
	dir     string
	addr    string
	out     *bufio.Writer
	stderr  io.Writer
	asJSON  bool
	loc     *time.Location
	idle    time.Duration
	timeout time.Duration // to connect

	pos       tailPos
	connected bool // once connected in this run
	idleT     *time.Timer
}

// runTailSDK runs `pim tail --data`.
func runTailSDK(ctx context.Context, conn *connFlags, dir string, asJSON bool, idle time.Duration, stdout, stderr io.Writer) (err error) {
	cl, opts, err := openSDK(ctx, conn, dir, stderr)
	if err != nil {
		return err
	}
	defer closeSDK(cl, dir, &err)
	pos, err := loadTailPos(filepath.Join(dir, tailPosFile))
	if err != nil {
		return err
	}
	t := &sdkTailer{cl: cl, dir: dir, addr: opts.Servers[0], out: bufio.NewWriter(stdout), stderr: stderr,
		asJSON: asJSON, loc: time.Local, idle: idle, timeout: conn.timeout, pos: pos}
	defer t.noteOutbox()
	return t.run(ctx)
}

// run prints what the local timeline holds, then follows until the context
// ends, --exit-when-idle passes with nothing new, or a permanent error.
func (t *sdkTailer) run(ctx context.Context) error {
	if _, err := t.drain(); err != nil {
		return err
	}
	connectBy := time.NewTimer(t.timeout)
	defer connectBy.Stop()
	defer func() {
		if t.idleT != nil {
			t.idleT.Stop()
		}
	}()
	var lastErr error // why the last connection attempt failed
	for {
		select {
		case ev, ok := <-t.cl.Events():
			if !ok {
				return sdkFailed("read "+t.dir, t.cl.Err())
			}
			if e, ok := ev.(pim.ConnStateEvent); ok && e.Err != nil {
				lastErr = e.Err
			}
			if err := t.handle(ev); err != nil {
				return err
			}
		case <-t.connectC(connectBy):
			msg := fmt.Sprintf("connect to %s: not connected within --timeout %v", t.addr, t.timeout)
			if lastErr != nil {
				msg += ": " + errText(lastErr)
			}
			return errors.New(msg)
		case <-t.idleC():
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// connectC is the connect deadline until the first connection.
func (t *sdkTailer) connectC(tm *time.Timer) <-chan time.Time {
	if t.connected {
		return nil
	}
	return tm.C
}

// idleC fires after --exit-when-idle with nothing new, once caught up.
func (t *sdkTailer) idleC() <-chan time.Time {
	if t.idleT == nil {
		return nil
	}
	return t.idleT.C
}

// resetIdle (re)starts the idle time, if --exit-when-idle is set.
func (t *sdkTailer) resetIdle() {
	switch {
	case t.idle <= 0:
	case t.idleT == nil:
		t.idleT = time.NewTimer(t.idle)
	default:
		t.idleT.Reset(t.idle)
	}
}

// handle acts on one SDK event.
func (t *sdkTailer) handle(ev pim.Event) error {
	switch e := ev.(type) {
	case pim.ConnStateEvent:
		return t.connState(e)
	case pim.CaughtUpEvent:
		if _, err := t.drain(); err != nil {
			return err
		}
		t.resetIdle() // the idle time counts from the end of the backlog
	case pim.MessageEvent, pim.ReadEvent, pim.HiddenEvent, pim.ReceiptEvent, pim.UnknownEvent, pim.ResyncEvent:
		if us, ok := userSeq(ev); ok && us <= t.pos.Seq {
			return nil // printed (a batch reads ahead of the events)
		}
		printed, err := t.drain()
		if err != nil {
			return err
		}
		if printed && t.idleT != nil {
			t.resetIdle()
		}
	case pim.SendStateEvent:
		t.sendState(e)
	}
	return nil
}

// userSeq is the user seq of a timeline event.
func userSeq(ev pim.Event) (uint64, bool) {
	switch e := ev.(type) {
	case pim.MessageEvent:
		return e.UserSeq, true
	case pim.ReadEvent:
		return e.UserSeq, true
	case pim.HiddenEvent:
		return e.UserSeq, true
	case pim.ReceiptEvent:
		return e.UserSeq, true
	case pim.UnknownEvent:
		return e.UserSeq, true
	}
	return 0, false
}

// connState reports the connection on stderr; a refused token ends tail.
func (t *sdkTailer) connState(e pim.ConnStateEvent) error {
	switch e.State {
	case pim.Connected:
		t.connected = true
	case pim.Stopped:
		var se *pim.ServerError
		if errors.As(e.Err, &se) {
			return failed("connect to "+t.addr, serverErrcode(se))
		}
		return fmt.Errorf("connect to %s: %s", t.addr, errText(e.Err))
	case pim.Disconnected:
		if e.Err == nil {
			return nil
		}
		in := ""
		if !e.Retry.IsZero() {
			in = fmt.Sprintf(" in %v", max(0, time.Until(e.Retry)).Round(time.Millisecond))
		}
		switch {
		case errors.Is(e.Err, pim.ErrGoAway):
			fmt.Fprintf(t.stderr, "pim: server going away; reconnecting%s\n", in)
		case t.connected:
			fmt.Fprintf(t.stderr, "pim: connection lost (%s); reconnecting%s\n", errText(e.Err), in)
		default:
			fmt.Fprintf(t.stderr, "pim: connect to %s: %s; retrying%s\n", t.addr, errText(e.Err), in)
		}
	}
	return nil
}

// sendState reports on stderr what became of a message the outbox in
// --data held (tail sends it as any SDK client does).
func (t *sdkTailer) sendState(e pim.SendStateEvent) {
	switch e.State {
	case pim.Sent:
		fmt.Fprint(t.stderr, "pim: sent from the outbox: ")
		formatAck(t.stderr, e.Ack, false)
	case pim.Failed:
		fmt.Fprintf(t.stderr, "pim: not sent from the outbox: %s client_msg_id=%s: %s\n", e.Conv, e.ClientMsgID, errText(e.Err))
	}
}

// noteOutbox says on stderr how many messages still wait in the outbox.
func (t *sdkTailer) noteOutbox() {
	pending, err := t.cl.Pending(context.Background())
	if err != nil || len(pending) == 0 {
		return
	}
	fmt.Fprintf(t.stderr, "pim: %s in the outbox in %s (the next pim send --data %s sends them)\n",
		unsentSummary(len(pending), 0), t.dir, t.dir)
}

// drain prints what the local timeline holds after the position, one
// batch at a time: print, flush, then save the position.
func (t *sdkTailer) drain() (printed bool, err error) {
	for {
		// From the event at the position, to check it is the one printed.
		entries, err := t.cl.Timeline(t.pos.Seq-min(t.pos.Seq, 1), maxBatch)
		if err != nil {
			return printed, sdkFailed("read "+t.dir, err)
		}
		if t.pos.Seq > 0 {
			if len(entries) == 0 || entries[0].UserSeq != t.pos.Seq || eventMark(entryEvent(entries[0])) != t.pos.Mark {
				if err := t.restart(); err != nil {
					return printed, err
				}
				continue
			}
			entries = entries[1:]
		}
		if len(entries) == 0 {
			return printed, nil
		}
		if err := t.print(entries); err != nil {
			return printed, err
		}
		printed = true
	}
}

// print writes entries, flushes, and saves the position after them.
func (t *sdkTailer) print(entries []pim.TimelineEntry) error {
	var last *pimv1.Event
	for _, e := range entries {
		last = entryEvent(e)
		if err := formatEvent(t.out, last, t.asJSON, t.loc); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
	if err := t.out.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	t.pos = tailPos{Seq: last.UserSeq, Mark: eventMark(last)}
	return t.save()
}

// restart goes back to the start of the timeline: the event at the
// position is not the one printed.
func (t *sdkTailer) restart() error {
	fmt.Fprintf(t.stderr, "pim: the timeline in %s is not the one printed up to user seq %d (the server's data set changed): printing it from the start\n",
		t.dir, t.pos.Seq)
	t.pos = tailPos{}
	return t.save()
}

func (t *sdkTailer) save() error {
	if err := saveTailPos(filepath.Join(t.dir, tailPosFile), t.pos); err != nil {
		return fmt.Errorf("save the tail position: %w", err)
	}
	return nil
}

// entryEvent is a stored timeline entry as the event the server sent.
func entryEvent(e pim.TimelineEntry) *pimv1.Event {
	if e.Message != nil {
		return &pimv1.Event{UserSeq: e.UserSeq, Kind: &pimv1.Event_Message{Message: e.Message}}
	}
	if e.Event != nil {
		return e.Event
	}
	return &pimv1.Event{UserSeq: e.UserSeq}
}

// eventMark identifies an event within the user's timeline (a message by
// its msg_id, another event by what it says), so that a position can be
// checked against a timeline the SDK started over.
func eventMark(ev *pimv1.Event) string {
	var id string
	switch k := ev.Kind.(type) {
	case *pimv1.Event_Message:
		id = "message " + k.Message.GetMsgId()
	case *pimv1.Event_Read:
		r := k.Read
		id = fmt.Sprintf("read %s %d %s %s", r.GetConv(), r.GetSeq(), r.GetUser(), r.GetDevice())
	case *pimv1.Event_Hidden:
		h := k.Hidden
		id = fmt.Sprintf("hidden %s %d %s", h.GetConv(), h.GetSeq(), h.GetDevice())
	case *pimv1.Event_Receipt:
		r := k.Receipt
		id = fmt.Sprintf("receipt %s %v %d %s %d", r.GetConv(), r.GetKind(), r.GetSeq(), r.GetUser(), len(r.GetMessages()))
	default:
		id = "unknown"
	}
	sum := sha256.Sum256([]byte(strconv.FormatUint(ev.GetUserSeq(), 10) + " " + id))
	return hex.EncodeToString(sum[:8])
}

// loadTailPos reads the position file; a missing one is the start.
func loadTailPos(path string) (tailPos, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return tailPos{}, nil
	}
	if err != nil {
		return tailPos{}, fmt.Errorf("read the tail position: %w", err)
	}
	f := strings.Fields(string(b))
	var p tailPos
	if len(f) == 3 && f[0] == tailPosMagic {
		p.Mark = f[2]
		if p.Seq, err = strconv.ParseUint(f[1], 10, 64); err == nil {
			return p, nil
		}
	}
	return tailPos{}, fmt.Errorf("%s is not a tail position: remove it to print the whole timeline again", path)
}

// saveTailPos writes the position file atomically (a temporary file,
// synced, then renamed over it).
func saveTailPos(path string, p tailPos) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pim-tail-*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	mark := p.Mark
	if mark == "" {
		mark = "-"
	}
	if _, err := fmt.Fprintf(tmp, "%s %d %s\n", tailPosMagic, p.Seq, mark); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
