package main

// `pim send --data DIR`: the message goes through the Go SDK's durable
// outbox in DIR. Invariants:
//   - The message is in the outbox on disk before anything is sent; a run
//     that ends in any way (--timeout, Ctrl-C, a kill) leaves it there, and
//     any later run of send, chat or tail with DIR sends it, with the same
//     client_msg_id, so the server stores it once.
//   - Messages an earlier run left are waited for with this run's, in
//     outbox order (the SDK sends each conversation's in order), and
//     reported on stderr. Stdout has only the acks of the messages this run
//     was asked to send (TEXT's; without TEXT, the outbox's), in the
//     one-shot send's formats.
//   - A message the server refused is dropped from the outbox (nothing was
//     stored: as after a one-shot send); one whose retry budget ran out in
//     an earlier run gets a new budget (same id). Exit status 0 only if
//     every message this run was asked to send was acknowledged.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	pim "github.com/pim-project/pim/sdk/go"
)

// maxClientMsgID is the longest client_msg_id the server takes (bytes).
const maxClientMsgID = 64

// sdkSend is one run of `pim send --data`.
type sdkSend struct {
	f       *sendFlags
	cl      *pim.Client
	stdout  io.Writer
	stderr  io.Writer
	connErr error // why the last connection attempt failed, if it did
}

// runSendSDK queues TEXT (if given) in the outbox in --data, and waits up
// to --timeout until it and what earlier runs left there are sent.
func runSendSDK(ctx context.Context, f *sendFlags, args []string, stdout, stderr io.Writer) (err error) {
	text := strings.Join(args, " ")
	if err := f.checkSDK(len(args) > 0, text); err != nil {
		return err
	}
	cl, opts, err := openSDK(ctx, &f.conn, f.data, stderr)
	if err != nil {
		return err
	}
	defer closeSDK(cl, f.data, &err)
	s := &sdkSend{f: f, cl: cl, stdout: stdout, stderr: stderr}
	earlier, mine, left, err := s.take(ctx, opts.User, args, text)
	if err != nil {
		return err
	}
	all := append(append([]*pim.Outgoing(nil), earlier...), mine...)
	why := s.wait(ctx, all)
	outs := outcomes(all) // read once: the SDK goes on meanwhile
	for _, r := range outs[:len(earlier)] {
		s.reportEarlier(r)
	}
	return s.withLeft(s.result(outs[len(earlier):], outs, why), left, len(args) == 0)
}

// take returns the messages to wait for: those earlier runs left in the
// outbox and, queued after them, this run's (TEXT's; without TEXT, the
// earlier ones are this run's). left counts the refused ones left for pim
// chat (not waited for).
func (s *sdkSend) take(ctx context.Context, user string, args []string, text string) (earlier, mine []*pim.Outgoing, left int, err error) {
	earlier, left, err = s.earlier(ctx)
	if err != nil || len(args) == 0 {
		return nil, earlier, left, err
	}
	o, err := s.queue(ctx, pimConv(user, s.f), text)
	if err != nil {
		return nil, nil, 0, err
	}
	return without(earlier, o), []*pim.Outgoing{o}, left, nil
}

// withLeft adds to the run's outcome err that left refused messages wait
// in the outbox: on stderr, or as the error of a run without TEXT (whose
// job was to empty the outbox).
func (s *sdkSend) withLeft(err error, left int, noText bool) error {
	if left == 0 {
		return err
	}
	d := s.f.data
	note := fmt.Sprintf("%d refused message(s) wait in the outbox in %s (pim chat --data %s, then /retry or /discard)", left, d, d)
	if noText && err == nil {
		return errors.New(note)
	}
	fmt.Fprintf(s.stderr, "pim: %s\n", note)
	return err
}

// checkSDK validates the flags of send --data (hasText: TEXT was given).
func (f *sendFlags) checkSDK(hasText bool, text string) error {
	if !hasText {
		if f.to != "" || f.group != "" || f.clientMsgID != "" {
			return usagef("--to, --group and --client-msg-id need TEXT (without TEXT, send --data only sends what waits in the outbox)")
		}
		return nil
	}
	switch {
	case (f.to == "") == (f.group == ""):
		return usagef("give exactly one of --to USER and --group G")
	case text == "":
		return usagef("nothing to send: TEXT is empty")
	case f.to != "" && !store.ValidID(f.to):
		return usagef("invalid --to %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", f.to)
	case f.group != "" && !store.ValidID(strings.TrimPrefix(f.group, "g:")):
		return usagef("invalid --group %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", f.group)
	case len(f.clientMsgID) > maxClientMsgID || !utf8.ValidString(f.clientMsgID):
		return usagef("--client-msg-id must be 1-%d bytes of UTF-8", maxClientMsgID)
	}
	return nil
}

// pimConv is the conversation of --to or --group.
func pimConv(user string, f *sendFlags) string {
	if f.to != "" {
		return pim.DirectConv(user, f.to)
	}
	return api.GroupID(f.group)
}

// earlier returns the messages earlier runs left in the outbox, in order,
// with a new retry budget for those whose budget ran out; left counts the
// ones the server refused before this run (left for pim chat to retry or
// discard).
func (s *sdkSend) earlier(ctx context.Context) (out []*pim.Outgoing, left int, err error) {
	pending, err := s.cl.Pending(ctx)
	if err != nil {
		return nil, 0, sdkFailed("read "+s.f.data, err)
	}
	for _, o := range pending {
		if o.State() == pim.Failed {
			var se *pim.ServerError
			if errors.As(o.Err(), &se) {
				left++
				continue
			}
			if err := s.cl.RetryFailed(ctx, o.ClientMsgID()); err != nil {
				return nil, 0, sdkFailed("retry "+o.ClientMsgID(), err)
			}
		}
		out = append(out, o)
	}
	return out, left, nil
}

// queue puts TEXT in the outbox (on disk when it returns).
func (s *sdkSend) queue(ctx context.Context, conv, text string) (*pim.Outgoing, error) {
	var (
		o   *pim.Outgoing
		err error
	)
	if s.f.clientMsgID != "" {
		o, err = s.cl.SendWithID(ctx, conv, s.f.clientMsgID, text)
	} else {
		o, err = s.cl.Send(ctx, conv, text)
	}
	if err != nil {
		return nil, sdkFailed("queue the message in "+s.f.data, err)
	}
	if o.State() == pim.Failed { // the same --client-msg-id, refused in an earlier run: asked for again
		if err := s.cl.RetryFailed(ctx, o.ClientMsgID()); err != nil {
			return nil, sdkFailed("retry "+o.ClientMsgID(), err)
		}
	}
	return o, nil
}

// without returns hs without o.
func without(hs []*pim.Outgoing, o *pim.Outgoing) []*pim.Outgoing {
	out := hs[:0:0]
	for _, h := range hs {
		if h != o {
			out = append(out, h)
		}
	}
	return out
}

// wait waits until every message is Sent or Failed. It returns why it
// stopped before that ("" if it did not): --timeout, an interruption, the
// token refused, or the client stopped.
func (s *sdkSend) wait(ctx context.Context, hs []*pim.Outgoing) (why string) {
	deadline := time.NewTimer(s.f.conn.timeout)
	defer deadline.Stop()
	for !final(hs) {
		select {
		case ev, ok := <-s.cl.Events():
			if !ok {
				return "the local store failed: " + errText(s.cl.Err())
			}
			if e, ok := ev.(pim.ConnStateEvent); ok && e.Err != nil {
				s.connErr = e.Err
				if e.State == pim.Stopped {
					return "connect to " + e.Addr + ": " + errText(e.Err)
				}
			}
		case <-deadline.C:
			why = fmt.Sprintf("not sent within --timeout %v", s.f.conn.timeout)
			if s.connErr != nil && s.cl.ConnState() != pim.Connected {
				why += " (not connected: " + errText(s.connErr) + ")"
			}
			return why
		case <-ctx.Done():
			return "interrupted"
		}
	}
	return ""
}

// final reports whether every message is Sent or Failed.
func final(hs []*pim.Outgoing) bool {
	for _, o := range hs {
		if st := o.State(); st != pim.Sent && st != pim.Failed {
			return false
		}
	}
	return true
}

// outcome is a message's state after the wait, read once.
type outcome struct {
	o     *pim.Outgoing
	state pim.SendState
	ack   *pimv1.SendAck // Sent
	err   error          // Failed
}

func outcomes(hs []*pim.Outgoing) []outcome {
	out := make([]outcome, len(hs))
	for i, o := range hs {
		r := outcome{o: o, state: o.State()}
		switch r.state {
		case pim.Sent:
			r.ack = o.Ack()
		case pim.Failed:
			if r.err = o.Err(); r.err == nil { // stored after all: Sent since
				r.state, r.ack = pim.Sent, o.Ack()
			}
		}
		out[i] = r
	}
	return out
}

// refusal is the server's refusal of a Failed message (nil if its retry
// budget ran out instead, or it is not Failed).
func (r outcome) refusal() *pim.ServerError {
	var se *pim.ServerError
	if r.state == pim.Failed && errors.As(r.err, &se) {
		return se
	}
	return nil
}

// waiting reports whether the message is still in the outbox to be sent:
// not Sent, not refused.
func (r outcome) waiting() bool { return r.state != pim.Sent && r.refusal() == nil }

func countWaiting(rs []outcome) int {
	n := 0
	for _, r := range rs {
		if r.waiting() {
			n++
		}
	}
	return n
}

// drop removes a refused message from the outbox: nothing was stored, and
// sending it again unchanged would be refused again.
func (s *sdkSend) drop(r outcome) {
	if err := s.cl.Discard(context.Background(), r.o.ClientMsgID()); err != nil {
		fmt.Fprintf(s.stderr, "pim: drop refused message %s from the outbox: %s\n", r.o.ClientMsgID(), errText(err))
	}
}

// reportEarlier tells on stderr what became of a message an earlier run left.
func (s *sdkSend) reportEarlier(r outcome) {
	switch {
	case r.state == pim.Sent:
		fmt.Fprint(s.stderr, "pim: sent from the outbox (left by an earlier run): ")
		formatAck(s.stderr, r.ack, false)
	case r.refusal() != nil:
		s.drop(r)
		fmt.Fprintf(s.stderr, "pim: refused, dropped from the outbox (left by an earlier run): %s client_msg_id=%s: %s\n",
			r.o.Conv(), r.o.ClientMsgID(), errText(r.err))
	}
}

// result prints the acks of this run's messages and returns the error
// that ends the run if any of them was not sent; all is every message
// waited for (this run's and earlier runs').
func (s *sdkSend) result(mine, all []outcome, why string) error {
	if why == "" { // all final: the unsent ones spent their retry budget
		why = "the retry budget ran out"
	}
	var refused []outcome
	for _, r := range mine {
		switch {
		case r.state == pim.Sent:
			if err := formatAck(s.stdout, r.ack, s.f.asJSON); err != nil {
				return fmt.Errorf("write output: %w", err)
			}
		case r.refusal() != nil:
			s.drop(r)
			refused = append(refused, r)
		}
	}
	if countWaiting(mine) > 0 {
		return fmt.Errorf("send: %s: %s", why, s.outboxNote(countWaiting(all)))
	}
	if len(refused) == 1 && len(mine) == 1 {
		return failed("send", serverErrcode(refused[0].refusal())) // as the one-shot send says it
	}
	for _, r := range refused {
		fmt.Fprintf(s.stderr, "pim: refused, dropped from the outbox: %s client_msg_id=%s: %s\n", r.o.Conv(), r.o.ClientMsgID(), errText(r.err))
	}
	if len(refused) > 0 {
		return fmt.Errorf("send: %d message(s) refused by the server (not stored)", len(refused))
	}
	if n := countWaiting(all); n > 0 { // this run's are sent; earlier ones still wait
		fmt.Fprintf(s.stderr, "pim: %s: %s\n", why, s.outboxNote(n))
	}
	return nil
}

// outboxNote says that n messages wait in the outbox and how they go out.
func (s *sdkSend) outboxNote(n int) string {
	d, dev := s.f.data, s.f.conn.device
	return fmt.Sprintf("%s in the outbox in %s; the next pim send, chat or tail with --data %s --device %s "+
		"sends them (pim send --data %s --device %s with no TEXT sends only them), and resending is safe: "+
		"each keeps its client_msg_id, so the server stores it once", unsentSummary(n, 0), d, d, dev, d, dev)
}

// serverErrcode is the SDK's server error as the lean client's, which
// failed() shows as "message (code NAME)".
func serverErrcode(se *pim.ServerError) *errcode.Error {
	return &errcode.Error{Code: se.Code, Msg: se.Message}
}
