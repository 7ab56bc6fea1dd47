package main

// tail follows a device's Push stream. Invariants:
//   - Output is gap-free and duplicate-free within one run: an event is
//     printed only if its user seq is above the last one printed (reset
//     only when the server's data epoch changes).
//   - Every printed event is flushed to stdout before it is acknowledged,
//     and acknowledged (PushAck) before the next blocking wait, so at any
//     exit everything printed was acked (if the connection allowed it; a
//     reconnect re-sends the ack).
//   - Reconnects resume from the last printed user seq and the epoch.
//
// This is the one-shot tail on the lean client; with --data, tail_sdk.go
// follows through the Go SDK instead.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

const (
	defaultHeartbeat = 30 * time.Second
	minBackoff       = 500 * time.Millisecond
	maxBackoff       = 10 * time.Second
	// maxBatch is the most events printed before one flush and ack.
	maxBatch = 256
)

func newTailCmd() *cobra.Command {
	var (
		conn   connFlags
		asJSON bool
		idle   time.Duration
		data   string
	)
	cmd := &cobra.Command{
		Use:   "tail [flags]",
		Short: "Print this device's messages and read-state events as they arrive",
		Long: "tail connects as --device and prints every event the device has not acknowledged,\n" +
			"then new ones as they arrive, one per line, acknowledging what it printed. It\n" +
			"reconnects (and resumes) when the server goes away.\n\n" +
			"Events are messages, read marks (yours from any device, and a 1:1 peer's: \"read\"),\n" +
			"messages you deleted for yourself (\"hidden\") and receipts of your messages\n" +
			"(\"receipt\": \"delivered\" to a 1:1 peer's device, group \"read\" counts). With --json\n" +
			"each is one object whose \"type\" is the message type (\"text\", ...) or the event's.\n\n" +
			"Without --data tail is one-shot: nothing is kept locally, the position is the\n" +
			"server's (what --device acknowledged). With --data DIR tail runs the Go SDK on its\n" +
			"local store in DIR (one DIR per user and --device) and keeps its own position\n" +
			"there: each run prints what arrived since the last run's output, exactly once and\n" +
			"in order, also after a run was killed or the network failed (the SDK syncs and\n" +
			"drops duplicates; only a run killed between printing and saving its position\n" +
			"prints those lines again). Use it on unreliable networks and in scripts that must\n" +
			"neither miss nor repeat an event; the first run with a new DIR prints the whole\n" +
			"timeline. It also sends what waits in DIR's outbox (pim send --data, pim chat);\n" +
			"--exit-when-idle counts from the end of the backlog.",
		Example: "  pim tail --token $T --device laptop\n  pim tail --token $T --json --exit-when-idle 2s\n" +
			"  pim tail --token $T --device ci --data ./pim-ci --json --exit-when-idle 2s   # what is new since the last run",
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if idle < 0 {
				return usagef("--exit-when-idle must not be negative")
			}
			if data != "" {
				return runTailSDK(cmd.Context(), &conn, data, asJSON, idle, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			opts, err := conn.options(cmd.ErrOrStderr(), os.Getenv)
			if err != nil {
				return err
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			defer out.Flush()
			t := &tailer{
				conn: &conn, opts: opts, out: out, stderr: cmd.ErrOrStderr(),
				asJSON: asJSON, idle: newIdleTimer(idle), loc: time.Local,
			}
			return t.run(cmd.Context())
		}),
	}
	conn.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per event")
	cmd.Flags().DurationVar(&idle, "exit-when-idle", 0, "exit (status 0) after this long with nothing new (0: follow forever)")
	cmd.Flags().StringVar(&data, "data", "", "follow through the SDK's local store in this directory (one per user and device), keeping the position there: each run prints what is new since the last")
	return cmd
}

type tailer struct {
	conn   *connFlags
	opts   client.Options
	out    *bufio.Writer
	stderr io.Writer
	asJSON bool
	idle   *idleTimer
	loc    *time.Location

	last  uint64 // highest user seq printed
	epoch string // the server's data epoch, once known
}

// run connects and follows until the context ends, the stream stays idle
// for --exit-when-idle, or a permanent error happens.
func (t *tailer) run(ctx context.Context) error {
	defer t.idle.stop()
	backoff := minBackoff
	connected := false
	for {
		opts := t.opts
		opts.LastUserSeq, opts.Epoch = t.last, t.epoch
		c, err := t.conn.dial(ctx, opts)
		var delay time.Duration
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil && (!connected || permanent(err)):
			return err
		case err != nil:
			delay = retryDelay(err, backoff)
			backoff = min(2*backoff, maxBackoff)
			fmt.Fprintf(t.stderr, "pim: %v; retrying in %v\n", err, delay.Round(time.Millisecond))
		default:
			connected, backoff = true, minBackoff
			var done bool
			done, delay, err = t.follow(ctx, c)
			c.Close()
			if done || err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.idle.C():
			return nil
		case <-time.After(delay):
		}
	}
}

// follow prints the stream of one connection. It returns done when tail
// should exit, or else the delay before reconnecting.
func (t *tailer) follow(ctx context.Context, c *client.Conn) (done bool, delay time.Duration, err error) {
	w := c.Welcome()
	if t.epoch != "" && w.Epoch != t.epoch {
		fmt.Fprintf(t.stderr, "pim: the server's data epoch changed (%s -> %s): following from user seq %d\n", t.epoch, w.Epoch, w.PushFromUserSeq)
		t.last = w.PushFromUserSeq
	}
	t.epoch = w.Epoch
	if t.last > w.AckedUserSeq && t.last <= w.UserSeq {
		// Printed on an earlier connection whose ack may not have arrived.
		c.PushAck(t.last)
	}

	hbCtx, stopHB := context.WithCancel(ctx)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		heartbeat(hbCtx, c, time.Duration(w.HeartbeatMs)*time.Millisecond)
	}()
	defer func() {
		stopHB()
		<-hbDone
	}()

	var (
		goAway      bool
		reconnectAt time.Time        // after a GoAway: when to reconnect
		deadline    <-chan time.Time // fires at reconnectAt
	)
	for {
		select {
		case ev, ok := <-c.Pushes():
			if !ok {
				if !goAway {
					// The GoAway, if any, was queued before the stream ended;
					// select may still have picked the end first.
					select {
					case g := <-c.GoAway():
						goAway, reconnectAt = true, t.goingAway(g)
					default:
					}
				}
				if goAway {
					// The server closed after its GoAway: wait out the rest.
					return false, max(0, time.Until(reconnectAt)), nil
				}
				return t.lost(c)
			}
			if err := t.printBatch(c, ev); err != nil {
				return true, 0, err
			}
		case g := <-c.GoAway():
			goAway, reconnectAt = true, t.goingAway(g)
			deadline = time.After(time.Until(reconnectAt))
		case <-deadline:
			// Still open at the time the server asked us to come back.
			return false, 0, nil
		case <-t.idle.C():
			return true, 0, nil
		case <-ctx.Done():
			return true, 0, nil
		}
	}
}

// lost decides what to do when the connection ended without a GoAway:
// reconnect after a backoff, unless the server's error was permanent.
func (t *tailer) lost(c *client.Conn) (bool, time.Duration, error) {
	err := c.Err()
	if permanent(err) {
		return true, 0, failed("tail", err)
	}
	delay := retryDelay(err, minBackoff)
	fmt.Fprintf(t.stderr, "pim: connection lost (%v); reconnecting in %v\n", err, delay.Round(time.Millisecond))
	return false, delay, nil
}

// printBatch prints ev and whatever else is already queued (up to maxBatch),
// flushes, then acknowledges the last printed event.
func (t *tailer) printBatch(c *client.Conn, ev *pimv1.Event) error {
	printed := false
	for n := 0; ; n++ {
		if ev.UserSeq > t.last {
			if err := formatEvent(t.out, ev, t.asJSON, t.loc); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
			t.last, printed = ev.UserSeq, true
		}
		if n+1 >= maxBatch {
			break
		}
		var ok bool
		select {
		case ev, ok = <-c.Pushes():
		default:
		}
		if !ok {
			break // nothing queued (or the stream ended: the caller sees it next)
		}
	}
	if !printed {
		return nil
	}
	if err := t.out.Flush(); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	t.idle.reset()
	// A failed ack means the connection is going; the next connection re-acks.
	_ = c.PushAck(t.last)
	return nil
}

// heartbeat pings every interval; a ping that gets no answer within the
// interval closes the connection (which makes tail reconnect).
func heartbeat(ctx context.Context, c *client.Conn, interval time.Duration) {
	if interval <= 0 {
		interval = defaultHeartbeat
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		pctx, cancel := context.WithTimeout(ctx, interval)
		_, err := c.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			c.Close()
			return
		}
	}
}

// permanent reports whether err means retrying cannot help (bad token,
// unsupported version, refused request).
func permanent(err error) bool {
	var ce *errcode.Error
	if !errors.As(err, &ce) {
		return false
	}
	switch ce.Code {
	case pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, pimv1.ErrorCode_ERROR_CODE_INTERNAL:
		return false
	}
	return true
}

// retryDelay is the server's retry_after if err carries one, else backoff
// with jitter (between half and all of it).
func retryDelay(err error, backoff time.Duration) time.Duration {
	var ce *errcode.Error
	if errors.As(err, &ce) && ce.RetryAfter > 0 {
		return time.Duration(ce.RetryAfter) * time.Millisecond
	}
	return backoff/2 + rand.N(backoff/2+1)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// idleTimer fires after a stretch with nothing new; a zero duration never fires.
type idleTimer struct {
	d time.Duration
	t *time.Timer
}

func newIdleTimer(d time.Duration) *idleTimer {
	i := &idleTimer{d: d}
	if d > 0 {
		i.t = time.NewTimer(d)
	}
	return i
}

func (i *idleTimer) C() <-chan time.Time {
	if i.t == nil {
		return nil
	}
	return i.t.C
}

func (i *idleTimer) reset() {
	if i.t != nil {
		i.t.Reset(i.d)
	}
}

func (i *idleTimer) stop() {
	if i.t != nil {
		i.t.Stop()
	}
}

// goingAway reports the server's GoAway and returns when to reconnect.
func (t *tailer) goingAway(g *pimv1.GoAway) time.Time {
	after := time.Duration(g.RetryAfterMs) * time.Millisecond
	fmt.Fprintf(t.stderr, "pim: server going away (%s); reconnecting in %v\n", orDefault(g.Reason, "no reason given"), after)
	return time.Now().Add(after)
}
