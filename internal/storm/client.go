// One storm client: a device that stays connected, sends and receives, and
// reconnects the way the SDK does when it loses its connection.
//
// Reconnect policy: backoff.go. With BackoffSDK (the default) it is
// sdk/go/core's, computed by its own FullJitter and HintDelay: a failure
// waits full jitter in [0, min(cap, base*2^failures)) and raises failures;
// a refusal with a retry_after (at accept, at Hello, or a refused send that
// ends the connection) and a GoAway wait HintDelay(retry_after), the hint
// plus a little jitter, without raising failures; failures resets once a
// connection stayed up healthyAfter. BackoffDouble is the SDK before hinted
// refusals stopped raising the exponent, to compare.
//
// Invariants of this file:
//   - A client has at most one message in flight (sent, not acknowledged):
//     the next one is issued only after its ack, so a refused or lost send
//     that is sent again (same client_msg_id: the server deduplicates) can
//     never overtake a later one. Sender order is thus the client's to keep,
//     and the checker verifies the server kept it.
//   - The run goroutine owns the connection's reads, the checker and the
//     timings; cl.mu guards what the pacer and timers share with it (the
//     connection, the in-flight message, the acked set).
//   - Hello.last_user_seq is the last event received, so the push stream of
//     a new connection continues right after it: one checker spans every
//     connection of the client.
package storm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/pim-project/pim/internal/bench"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// reqBase is the request id of message 0 (1 is the Hello).
const reqBase = 2

type client struct {
	f     *fleet
	idx   int // global index: the sender id in message bodies
	peer  *client
	user  string
	token string
	ip    netip.Addr
	bo    backoff // owned by the run goroutine

	mu        sync.Mutex
	c         *conn
	next      uint64 // next message number
	inflight  bool
	pendingN  uint64
	pendingAt int64
	pendingOn int64 // Unix ns the connection the message was first sent on began
	connAt    int64 // Unix ns the current connection began
	acked     bench.Bitset
	sendErr   string

	endConnected bool // connected when the fleet closed (set by close)

	// Owned by the run goroutine; read by the fleet after it ended.
	chk       *bench.Checker // slot 0: own messages (echo), slot 1: the peer's
	lastSeq   uint64
	stormLost bool
	lostAt    time.Time
	reconnAt  time.Time
	caughtAt  time.Time
	head      uint64
	reconn    bool
	caughtUp  bool
	body      []byte
	helloOnce bool
}

// run keeps the client connected until ctx ends.
func (cl *client) run(ctx context.Context) {
	f := cl.f
	var dialAt time.Time
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for ctx.Err() == nil {
		if d := time.Until(dialAt); d > 0 {
			t.Reset(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
		initial := f.stormAt.Load() == 0 && !cl.helloOnce
		if initial { // the first connections are paced by --concurrency
			select {
			case f.dialSem <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
		f.attempts.Add(1)
		c, w, err := dial(ctx, dialOpts{addr: f.cfg.Addr, tls: f.tls, localIP: cl.ip, token: cl.token,
			device: "d", lastUserSeq: cl.lastSeq, timeout: f.cfg.DialTimeout})
		if initial {
			<-f.dialSem
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			dialAt = time.Now().Add(cl.bo.next(lossFailure, cl.dialFailed(err)))
			continue
		}
		cl.helloOnce = true
		ga, ref, up := cl.serve(ctx, c, w)
		if ctx.Err() != nil {
			return
		}
		cl.bo.up(up)
		switch {
		case ga != nil:
			dialAt = time.Now().Add(cl.bo.next(lossGoAway, time.Duration(ga.GetRetryAfterMs())*time.Millisecond))
		case ref != nil:
			dialAt = time.Now().Add(cl.bo.next(lossFailure, ref.retryAfter))
		default:
			dialAt = time.Now().Add(cl.bo.next(lossFailure, 0))
		}
	}
}

// dialFailed counts a failed dial and returns the server's retry_after if
// it refused with one.
func (cl *client) dialFailed(err error) time.Duration {
	var r *refusal
	if errors.As(err, &r) {
		cl.f.refused(r.code)
		return r.retryAfter
	}
	cl.f.dialErrors.Add(1) // refused, reset or timed out: expected while the server is down
	return 0
}

// serve runs one connection until it ends; it returns the GoAway or the
// send refusal that ended it (if any) and how long it was up.
func (cl *client) serve(ctx context.Context, c *conn, w *pimv1.Welcome) (*pimv1.GoAway, *refusal, time.Duration) {
	f := cl.f
	start := time.Now()
	f.welcome(start)
	f.connected.Add(1)
	defer f.connected.Add(-1)
	stop := context.AfterFunc(ctx, c.close)
	defer stop()
	if cl.stormLost && !cl.reconn {
		cl.reconn, cl.reconnAt, cl.head = true, start, w.GetUserSeq()
		f.reconnected.Add(1)
		cl.checkCaughtUp(start)
	}
	cl.mu.Lock()
	cl.c, cl.connAt = c, start.UnixNano()
	resend := cl.inflight
	n, at := cl.pendingN, cl.pendingAt
	cl.mu.Unlock()
	if resend {
		cl.writeSend(c, n, at)
	}
	ga, err := cl.read(c)
	var ref *refusal
	errors.As(err, &ref)
	cl.mu.Lock()
	cl.c = nil
	cl.mu.Unlock()
	c.close()
	now := time.Now()
	if at := f.stormAt.Load(); at != 0 && !cl.stormLost && now.UnixNano() >= at {
		cl.stormLost, cl.lostAt = true, now
		f.stormLost.Add(1)
	}
	if err != nil && ga == nil && ref == nil && f.stormAt.Load() == 0 && !f.closing.Load() {
		f.firstErr(fmt.Errorf("connection lost before the storm: %w", err))
	}
	return ga, ref, now.Sub(start)
}

// read reads frames until the connection ends or a GoAway arrives.
func (cl *client) read(c *conn) (*pimv1.GoAway, error) {
	f := cl.f
	for {
		reqID, kind, body, err := c.next()
		if err != nil {
			return nil, err
		}
		switch kind {
		case fSendAck:
			cl.onAck(reqID)
		case fError:
			fr, err := bench.DecodeBody(kind, body)
			if err != nil {
				return nil, err
			}
			e := fr.GetError()
			if e.GetFatal() && reqID >= reqBase && retryable(e.GetCode()) {
				// A send refused (rate, shedding): the server ends the
				// connection so nothing pipelined behind it is stored first;
				// come back after retry_after and send it again.
				f.sendRefused.Add(1)
				return nil, &refusal{code: e.GetCode(), msg: e.GetMessage(),
					retryAfter: time.Duration(e.GetRetryAfterMs()) * time.Millisecond}
			}
			if e.GetFatal() {
				f.firstErr(fmt.Errorf("fatal error from the server: %s (%s)", e.GetMessage(), e.GetCode()))
				return nil, errors.New(e.GetMessage())
			}
			cl.onSendError(reqID, e)
		case fPush:
			last := cl.lastSeq
			if err := bench.ScanPush(body, cl.observe); err != nil {
				return nil, fmt.Errorf("push frame: %w", err)
			}
			if cl.lastSeq > last {
				seq := cl.lastSeq
				if err := c.write(func(b []byte) []byte { return bench.AppendPushAckFrame(b, seq) }); err != nil {
					return nil, err
				}
				if cl.reconn && !cl.caughtUp {
					cl.checkCaughtUp(time.Now())
				}
			}
		case fGoAway:
			fr, err := bench.DecodeBody(kind, body)
			if err != nil {
				return nil, err
			}
			return fr.GetGoAway(), nil
		}
	}
}

func (cl *client) checkCaughtUp(now time.Time) {
	if cl.lastSeq >= cl.head {
		cl.caughtUp, cl.caughtAt = true, now
		cl.f.caughtUp.Add(1)
	}
}

// observe checks one pushed event.
func (cl *client) observe(ev *bench.PushEvent) {
	cl.lastSeq = max(cl.lastSeq, ev.UserSeq)
	if !ev.Message { // a receipt or read-sync: only its place in the stream
		cl.chk.ObserveOther(ev.UserSeq)
		return
	}
	slot, n, ok := 0, uint64(0), false
	if ev.Type == int32(pimv1.MessageType_MESSAGE_TYPE_TEXT) {
		var sender int
		sender, n, _, ok = bench.ParseBody(ev.Body)
		switch {
		case ok && sender == cl.idx:
			slot = 0
		case ok && sender == cl.peer.idx:
			slot = 1
		default:
			ok = false
		}
	}
	if cl.chk.Observe(ev.UserSeq, ev.Conv, ev.Seq, ok, slot, n) {
		cl.f.delivered.Add(1)
	}
}

// trySend issues the client's next message if it is connected and has none
// in flight (the pacer calls it).
func (cl *client) trySend(now int64) bool {
	cl.mu.Lock()
	c := cl.c
	if c == nil || cl.inflight {
		cl.mu.Unlock()
		return false
	}
	n := cl.next
	cl.next++
	cl.inflight, cl.pendingN, cl.pendingAt, cl.pendingOn = true, n, now, cl.connAt
	cl.mu.Unlock()
	cl.f.sent.Add(1)
	cl.writeSend(c, n, now)
	return true
}

// writeSend writes message n (first sent at at); a failed write is left to
// the reader, which sees the connection end (the message is sent again on
// the next connection).
func (cl *client) writeSend(c *conn, n uint64, at int64) {
	sf := bench.SendFields{ToUser: cl.peer.user, Type: int32(pimv1.MessageType_MESSAGE_TYPE_TEXT),
		ClientTime: at / int64(time.Millisecond)}
	_ = c.write(func(b []byte) []byte {
		var id [24]byte
		sf.ClientMsgID = string(bench.ClientMsgID(id[:0], n))
		cl.mu.Lock()
		cl.body = bench.AppendBody(cl.body[:0], cl.idx, n, at, cl.f.cfg.Size)
		sf.Body = cl.body
		b = bench.AppendSendFrame(b, n+reqBase, &sf)
		cl.mu.Unlock()
		return b
	})
}

func (cl *client) onAck(reqID uint64) {
	if reqID < reqBase {
		return
	}
	n := reqID - reqBase
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if !cl.inflight || n != cl.pendingN {
		return // an ack of a resend already answered
	}
	cl.acked.Set(n)
	cl.inflight = false
	cl.f.acked.Add(1)
	cl.f.ackLatency(cl.pendingAt, cl.pendingOn, time.Now().UnixNano())
}

// onSendError schedules a send refused without ending the connection (a
// server that answers refusals non-fatally) again after its retry_after.
func (cl *client) onSendError(reqID uint64, e *pimv1.Error) {
	if reqID < reqBase {
		return
	}
	n := reqID - reqBase
	cl.f.sendRefused.Add(1)
	if !retryable(e.GetCode()) {
		cl.mu.Lock()
		if cl.sendErr == "" {
			cl.sendErr = fmt.Sprintf("send refused: %s (%s)", e.GetMessage(), e.GetCode())
		}
		cl.mu.Unlock()
	}
	retry := max(time.Duration(e.GetRetryAfterMs())*time.Millisecond, 100*time.Millisecond)
	cl.f.afterFunc(retry, func() {
		cl.mu.Lock()
		c := cl.c
		ok := c != nil && cl.inflight && cl.pendingN == n
		at := cl.pendingAt
		cl.mu.Unlock()
		if ok {
			cl.writeSend(c, n, at)
		}
	})
}

// retryable reports whether a refused send stored nothing and may succeed
// later.
func retryable(c pimv1.ErrorCode) bool {
	switch c {
	case pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, pimv1.ErrorCode_ERROR_CODE_INTERNAL:
		return true
	}
	return false
}
