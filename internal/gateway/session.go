// A session is one long connection: the Hello handshake, the request loop and
// the orderly end. The push stream and the writer are in push.go.
//
// Invariants of this file:
//   - The reader goroutine (run) owns the session: it alone reads frames,
//     calls Logic for requests, and ends the session (end), after which no
//     goroutine of the session is left (end waits for the pump and the
//     completer of pipelined sends) and no Notify reaches it.
//   - The first frame must be a valid Hello; until Welcome nothing else is
//     answered. After it, user and device are the token's subject and the
//     Hello's device id, for every call: no request can name another actor.
//   - Requests are processed in the order received, and their answers are
//     queued in that order, so responses leave in request order and a
//     connection's sends reach the store in order (sender FIFO). Requests
//     are processed one at a time, except consecutive SendReqs: they are
//     pipelined (sendpipe.go), up to MaxPipelinedSends handed to the store
//     before the first is committed, answered in order by the session's
//     completer; any other request waits until the sends before it are
//     answered. Many connections call Logic concurrently (one reader
//     goroutine each).
//   - Welcome is the first frame written; after a fatal Error or a GoAway
//     nothing else is answered and the connection is closed once they are
//     written. PushAcks are applied even then, before the close.
//   - s.mu is never held while calling Logic, the Bus or the transport's
//     blocking methods (Notify runs under the bus's lock and takes s.mu).
//   - Admission: a Hello is checked against the login limits (global and
//     per IP before its token is verified, per user after) and refused with
//     a fatal RATE_LIMITED/UNAVAILABLE Error carrying a retry_after; a send
//     over its per-user or per-IP rate, or while the pipeline sheds, reaches
//     no Logic call (nothing is stored) and gets a fatal Error with a
//     retry_after, after the answers of the sends before it (refuseSend: no
//     send pipelined behind it may be stored first; a send that fails in
//     the store with a retryable code ends the session the same way, and
//     the store stores none of the sends chained behind it: sendpipe.go);
//     a group change or read mark refused gets the same Error, not fatal.
//     Every write admitted to the pipeline is ended in it (BeginSend/EndSend
//     pair up).
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

type sessionState uint8

const (
	stateHello   sessionState = iota // waiting for Hello
	stateActive                      // Welcome queued; requests answered, events pushed
	stateClosing                     // fatal Error, GoAway, slow client or end: nothing more is answered
)

// endHow says how the reader loop ended and how to close.
type endHow uint8

const (
	endAbort endHow = iota // close at once (read error, slow client, panic)
	endDrain               // the client finished (EOF): write what is queued, then close
	endFatal               // a fatal Error (or GoAway) is queued: write it, close gracefully
)

type session struct {
	g         *Gateway
	t         transport
	id        string
	remote    string
	ip        string // remote's host, the key of per-IP limits
	transport string // transportTCP or transportWS
	start     time.Time
	// ctx is the gateway's: Logic calls end with the session anyway (the
	// reader makes them synchronously, end waits for the pump's), so only a
	// forced shutdown cancels them. One context for all keeps sessions small.
	ctx context.Context

	// Written by the reader during Hello, before the state becomes active;
	// read-only afterwards (the pump starts only once the state is active).
	user, device string
	unsub        func()

	ackMu  sync.Mutex     // serializes Logic.Ack calls of the reader and the pump
	pumpWG sync.WaitGroup // the pump goroutine, if running
	sendWG sync.WaitGroup // the completer of pipelined sends, if running (sendpipe.go)

	mu              sync.Mutex
	state           sessionState
	busy            bool         // the reader is processing a frame
	goAwayPending   *pimv1.Frame // GoAway to queue when the current request is answered
	closeAfterDrain bool         // the pump finishes the transport once the queue is written
	finishWhy       closeReason
	finished        bool // the pump has called transport.finish
	halfClosed      bool // ... and it succeeded (drain before closing)
	broken          bool // the transport failed or was aborted: write nothing more
	pumping         bool // a pump goroutine is running
	queue           []*pimv1.Frame
	queueBytes      int
	// Push stream (push.go).
	pushed     uint64         // highest user seq pushed on this connection
	seen       uint64         // highest user seq known to exist
	acked      uint64         // highest user seq the client acknowledged (flow control)
	cache      []*pimv1.Event // notified events > pushed, ascending, bounded
	cacheBytes int            // eventBytes of cache
	kick       chan struct{}  // made by a pump that waits for a catch-up slot; see push.go
	pendingAck uint64         // highest PushAck received
	appliedAck uint64         // highest PushAck handed to Logic.Ack
	// Pipelined sends (sendpipe.go).
	sends      []inflightSend               // handed to Logic, not answered yet, in order
	lastSend   store.Future[*pimv1.SendAck] // the chain's last send (nil when all are answered)
	completing bool                         // the completer goroutine runs
	sendCond   sync.Cond                    // on mu: sends shrank
}

var _ interface {
	Notify(string, *pimv1.Event)
} = (*session)(nil)

func newSession(g *Gateway, t transport, remote, transport string) *session {
	var b [8]byte
	_, _ = rand.Read(b[:])
	ip := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		ip = h
	}
	s := &session{g: g, t: t, id: hex.EncodeToString(b[:]), remote: remote, ip: ip, transport: transport,
		start: time.Now(), ctx: g.base}
	s.sendCond.L = &s.mu
	return s
}

// run serves the connection until it ends, then releases everything.
func (s *session) run() {
	s.end(s.serve())
}

func (s *session) serve() (how endHow) {
	defer func() {
		if v := recover(); v != nil {
			s.g.recovered(s, v, debug.Stack())
			how = endAbort
		}
	}()
	welcomed := false
	silence := time.Duration(float64(s.g.cfg.Heartbeat) * silenceFactor)
	for {
		deadline := s.start.Add(s.g.cfg.HelloTimeout)
		if welcomed {
			deadline = time.Now().Add(silence)
		}
		f := new(pimv1.Frame) // not reused: an idle session holds no frame
		if err := s.t.readFrame(f, deadline); err != nil {
			if welcomed {
				s.drainSends() // their answers go first (or the end waits for them)
			}
			return s.readFailed(err, welcomed)
		}
		s.g.m.frameIn(f)

		s.mu.Lock()
		if s.state == stateClosing || s.goAwayPending != nil {
			// GoAway or fatal Error queued (or a GoAway waits for the sends in
			// flight): nothing more is answered, but acks still count
			// (applied in end).
			if pa := f.GetPushAck(); pa != nil && welcomed && pa.UserSeq > s.pendingAck {
				s.pendingAck = pa.UserSeq
			}
			s.mu.Unlock()
			continue
		}
		s.busy = true
		s.mu.Unlock()

		var stop bool
		if !welcomed {
			how, stop = s.onHello(f)
			welcomed = !stop
		} else {
			how, stop = s.onRequest(f)
		}
		if stop {
			return how
		}
		s.endRequest()
	}
}

// readFailed turns a read error into the session's end.
func (s *session) readFailed(err error, welcomed bool) endHow {
	switch {
	case errors.Is(err, wire.ErrFrameTooLarge):
		return s.fatal(0, pimv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE,
			fmt.Sprintf("frame larger than %d bytes", s.g.cfg.MaxFrame))
	case errors.Is(err, wire.ErrMalformed):
		return s.fatal(0, pimv1.ErrorCode_ERROR_CODE_MALFORMED, "frame does not decode")
	case errors.Is(err, errNotBinary):
		return s.fatal(0, pimv1.ErrorCode_ERROR_CODE_PROTOCOL, "frames are binary WebSocket messages")
	case errors.Is(err, errTimeout) && !welcomed:
		return s.fatal(0, pimv1.ErrorCode_ERROR_CODE_PROTOCOL,
			fmt.Sprintf("no Hello within %v", s.g.cfg.HelloTimeout))
	case errors.Is(err, io.EOF):
		return endDrain
	}
	s.g.log.Debug("gateway: connection ends", "session", s.id, "user", s.user, "remote", s.remote, "err", err)
	return endAbort
}

// onHello handles the first frame. It reports stop when the session must end.
func (s *session) onHello(f *pimv1.Frame) (endHow, bool) {
	h := f.GetHello()
	if h == nil {
		return s.fatal(f.RequestId, pimv1.ErrorCode_ERROR_CODE_PROTOCOL, "the first frame must be Hello"), true
	}
	if h.ProtocolVersion != ProtocolVersion {
		return s.fatal(f.RequestId, pimv1.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION,
			fmt.Sprintf("protocol version %d is not supported; this server speaks %d", h.ProtocolVersion, ProtocolVersion)), true
	}
	if !store.ValidID(h.DeviceId) {
		return s.fatal(f.RequestId, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST,
			"invalid device_id: use 1-64 characters of A-Z a-z 0-9 . _ @ -"), true
	}
	a := s.g.admit
	if a != nil {
		if d := a.LoginSource(time.Now(), s.ip); !d.OK {
			return s.refuseHello(f.RequestId, d), true
		}
	}
	user, err := s.g.cfg.Auth.Verify(h.Token)
	if err != nil || !store.ValidID(user) {
		msg := "invalid token"
		if errors.Is(err, auth.ErrExpired) {
			msg = "token expired"
		}
		s.g.log.Debug("gateway: hello refused", "session", s.id, "remote", s.remote, "err", err)
		return s.fatal(f.RequestId, pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, msg), true
	}
	if a != nil {
		if d := a.LoginUser(time.Now(), user); !d.OK {
			return s.refuseHello(f.RequestId, d), true
		}
	}
	// From here on the session acts as (user, device) only.
	s.user, s.device = user, h.DeviceId

	// Subscribe before reading the cursor and head: an event stored after
	// that read is notified, one stored before it is in the backlog.
	s.unsub = s.g.cfg.Bus.Subscribe(user, s)
	cursor, head, err := s.g.cfg.Logic.Session(s.ctx, user, s.device)
	if err != nil {
		s.logErr("session", err)
		e := errcode.Proto(err)
		return s.fatalError(f.RequestId, e), true
	}
	epoch := s.g.cfg.Logic.Epoch()
	pushFrom := cursor
	if h.Epoch == "" || h.Epoch == epoch {
		pushFrom = max(min(h.LastUserSeq, head), cursor)
	}
	w := &pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Welcome{Welcome: &pimv1.Welcome{
		ProtocolVersion: ProtocolVersion,
		ServerTime:      s.g.cfg.Now().UnixMilli(),
		HeartbeatMs:     uint32(s.g.cfg.Heartbeat.Milliseconds()),
		AckedUserSeq:    cursor,
		UserSeq:         head,
		PushFromUserSeq: pushFrom,
		Session:         s.id,
		Epoch:           epoch,
		User:            user,
		MaxFrameBytes:   uint32(s.g.cfg.MaxFrame),
	}}}

	s.mu.Lock()
	if s.state == stateClosing { // cannot happen while busy; kept for safety
		s.mu.Unlock()
		return endDrain, true
	}
	s.state = stateActive
	s.pushed, s.acked = pushFrom, pushFrom
	s.seen = max(s.seen, head)
	s.trimCacheLocked()
	s.queueLocked(w) // the queue is empty: Welcome is the first frame out
	s.wakeLocked()
	s.mu.Unlock()
	s.g.log.Debug("gateway: session started", "session", s.id, "user", user, "device", s.device,
		"remote", s.remote, "cursor", cursor, "head", head, "push_from", pushFrom)
	return 0, false
}

// onRequest handles one frame after Welcome.
func (s *session) onRequest(f *pimv1.Frame) (endHow, bool) {
	id := f.RequestId
	if pa, ok := f.Body.(*pimv1.Frame_PushAck); ok {
		s.onPushAck(pa.PushAck.GetUserSeq())
		return 0, false
	}
	// Acks received before this request are applied before it is answered.
	s.flushAck()
	if sr, ok := f.Body.(*pimv1.Frame_SendReq); ok {
		return s.onSend(id, sr.SendReq) // pipelined (sendpipe.go)
	}
	// Any other request is handled once the sends before it are answered.
	if !s.drainSends() {
		return 0, false // one of them ended the session
	}
	if how, closed, ok := s.onReadState(id, f); ok {
		return how, closed
	}
	l := s.g.cfg.Logic
	switch b := f.Body.(type) {
	case *pimv1.Frame_SyncReq:
		s.onClientAck(b.SyncReq.GetAfterUserSeq())
		resp, err := l.Sync(s.ctx, s.user, s.device, b.SyncReq)
		if err == nil && resp == nil {
			err = errNilResult
		}
		if err != nil {
			return s.replyErr(id, "sync", err)
		}
		fitSync(resp, s.g.cfg.MaxFrame)
		return s.reply(&pimv1.Frame{RequestId: id, Body: &pimv1.Frame_SyncResp{SyncResp: resp}})
	case *pimv1.Frame_HistoryReq:
		resp, err := l.History(s.ctx, s.user, b.HistoryReq)
		if err == nil && resp == nil {
			err = errNilResult
		}
		if err != nil {
			return s.replyErr(id, "history", err)
		}
		fitHistory(resp, s.g.cfg.MaxFrame)
		return s.reply(&pimv1.Frame{RequestId: id, Body: &pimv1.Frame_HistoryResp{HistoryResp: resp}})
	case *pimv1.Frame_GroupReq:
		begin, d := s.admitPipeline() // a group change is a write like a send
		if !d.OK {
			return s.refuseRequest(id, d)
		}
		resp, err := l.Group(s.ctx, s.user, s.device, b.GroupReq)
		s.endSend(begin)
		if err == nil && resp == nil {
			err = errNilResult
		}
		if err != nil {
			return s.replyErr(id, "group", err)
		}
		return s.reply(&pimv1.Frame{RequestId: id, Body: &pimv1.Frame_GroupResp{GroupResp: resp}})
	case *pimv1.Frame_ReadReq:
		begin, d := s.admitPipeline() // a read mark is a write like a group change
		if !d.OK {
			return s.refuseRequest(id, d)
		}
		resp, err := l.Read(s.ctx, s.user, s.device, b.ReadReq)
		s.endSend(begin)
		if err == nil && resp == nil {
			err = errNilResult
		}
		if err != nil {
			return s.replyErr(id, "read", err)
		}
		return s.reply(&pimv1.Frame{RequestId: id, Body: &pimv1.Frame_ReadResp{ReadResp: resp}})
	case *pimv1.Frame_Ping:
		return s.reply(&pimv1.Frame{RequestId: id, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{
			ServerTime: s.g.cfg.Now().UnixMilli(), ClientTime: b.Ping.GetClientTime()}}})
	case *pimv1.Frame_Hello:
		return s.fatal(id, pimv1.ErrorCode_ERROR_CODE_PROTOCOL, "second Hello on a connection"), true
	case nil:
		if len(f.ProtoReflect().GetUnknown()) > 0 {
			// A frame type newer than this server: refuse it, keep the connection
			// (fatal=false), so a newer client can fall back.
			s.g.m.errorOut(pimv1.ErrorCode_ERROR_CODE_PROTOCOL)
			return s.reply(errorFrame(id, &pimv1.Error{Code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL,
				Message: "unknown frame type"}))
		}
		return s.fatal(id, pimv1.ErrorCode_ERROR_CODE_PROTOCOL, "empty frame"), true
	default:
		name := f.ProtoReflect().WhichOneof(bodyOneof).Name()
		return s.fatal(id, pimv1.ErrorCode_ERROR_CODE_PROTOCOL,
			fmt.Sprintf("%s frames are sent by the server only", name)), true
	}
}

var errNilResult = errors.New("gateway: logic returned neither a result nor an error")

// admitPipeline asks the pipeline's shedder about one more write.
func (s *session) admitPipeline() (begin time.Time, d admission.Decision) {
	if s.g.admit == nil {
		return time.Time{}, admission.Decision{OK: true}
	}
	begin = time.Now()
	return begin, s.g.admit.BeginSend(begin)
}

// endSend ends a write admitted by admitPipeline.
func (s *session) endSend(begin time.Time) {
	if s.g.admit != nil {
		s.g.admit.EndSend(begin, time.Now())
	}
}

// refuseRequest answers a request refused by admission control with a
// non-fatal Error and its retry_after.
func (s *session) refuseRequest(id uint64, d admission.Decision) (endHow, bool) {
	s.g.m.refused(d.Reason)
	e := refusalError(d)
	e.Fatal = false
	s.g.m.errorOut(e.Code)
	return s.reply(errorFrame(id, e))
}

// refuseSend answers a send that was not stored but may be retried
// (RATE_LIMITED, UNAVAILABLE, INTERNAL) with a FATAL Error: the connection
// ends, so the sends pipelined behind it are not stored before it. The
// client reconnects after retry_after and resends its window in order; that
// is what keeps a sender's order (invariant 4) across refusals.
func (s *session) refuseSend(id uint64, e *pimv1.Error, reason string) (endHow, bool) {
	if reason != "" {
		s.g.m.refused(reason)
	}
	e.Fatal = true
	return s.fatalError(id, e), true
}

// retryable reports whether a refused request stored nothing and may succeed later.
func retryable(c pimv1.ErrorCode) bool {
	switch c {
	case pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE,
		pimv1.ErrorCode_ERROR_CODE_INTERNAL:
		return true
	}
	return false
}

// refuseHello refuses a Hello by admission control: a fatal Error with the
// retry_after; the client reconnects after it.
func (s *session) refuseHello(id uint64, d admission.Decision) endHow {
	s.g.m.refused(d.Reason)
	s.g.log.Debug("gateway: hello refused by admission control", "session", s.id, "remote", s.remote,
		"reason", d.Reason, "retry_after", d.RetryAfter)
	return s.fatalError(id, refusalError(d))
}

// endRequest marks the reader idle and queues a GoAway that waited for it.
func (s *session) endRequest() {
	s.mu.Lock()
	s.busy = false
	s.goAwayIfIdleLocked()
	s.mu.Unlock()
}

// reply queues a response. It stops the session if the client is too slow.
func (s *session) reply(f *pimv1.Frame) (endHow, bool) {
	s.mu.Lock()
	if s.state == stateClosing {
		s.mu.Unlock()
		return 0, false
	}
	ok := s.queueLocked(f)
	s.wakeLocked()
	s.mu.Unlock()
	if !ok {
		s.g.log.Info("gateway: slow client disconnected", "session", s.id, "user", s.user, "remote", s.remote)
		return endAbort, true
	}
	return 0, false
}

// replyErr answers a failed request with an Error frame.
func (s *session) replyErr(id uint64, op string, err error) (endHow, bool) {
	s.logErr(op, err)
	e := errcode.Proto(err)
	if e.Fatal {
		return s.fatalError(id, e), true
	}
	s.g.m.errorOut(e.Code)
	return s.reply(errorFrame(id, e))
}

func (s *session) logErr(op string, err error) {
	switch errcode.Code(err) {
	case pimv1.ErrorCode_ERROR_CODE_INTERNAL, pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE:
		if s.ctx.Err() == nil {
			s.g.log.Warn("gateway: request failed", "op", op, "session", s.id, "user", s.user, "err", err)
		}
	}
}

// fatal queues a fatal Error and closes the session once it is written.
func (s *session) fatal(id uint64, code pimv1.ErrorCode, msg string) endHow {
	return s.fatalError(id, &pimv1.Error{Code: code, Message: msg})
}

func (s *session) fatalError(id uint64, e *pimv1.Error) endHow {
	e.Fatal = true
	s.g.m.errorOut(e.Code)
	s.g.log.Debug("gateway: fatal error", "session", s.id, "user", s.user, "remote", s.remote,
		"code", e.Code.String(), "msg", e.Message)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateClosing {
		return endDrain
	}
	s.closeLocked(errorFrame(id, e), closeFatal)
	return endFatal
}

func errorFrame(id uint64, e *pimv1.Error) *pimv1.Frame {
	return &pimv1.Frame{RequestId: id, Body: &pimv1.Frame_Error{Error: e}}
}

// closeLocked queues last (a fatal Error or GoAway) as the final frame: the
// pump writes it and whatever precedes it, then finishes the transport.
func (s *session) closeLocked(last *pimv1.Frame, why closeReason) {
	s.state = stateClosing
	s.queue = append(s.queue, last) // exempt from the queue bounds
	n := proto.Size(last)
	s.queueBytes += n
	s.g.buffered.Add(int64(n))
	s.closeAfterDrain = true
	s.finishWhy = why
	s.kickLocked()
	s.wakeLocked()
}

// goAway asks the session to go away (Shutdown): after the request in
// progress, if any, is answered.
func (s *session) goAway(ga *pimv1.GoAway) {
	f := &pimv1.Frame{Body: &pimv1.Frame_GoAway{GoAway: ga}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateClosing || s.goAwayPending != nil {
		return
	}
	if s.busy || len(s.sends) > 0 {
		s.goAwayPending = f // queued once they are answered
		return
	}
	s.closeLocked(f, closeGoingAway)
}

// end releases the session: no Notify, no goroutine and no open connection
// is left when it returns. PushAcks received are applied first.
func (s *session) end(how endHow) {
	if s.unsub != nil {
		s.unsub() // after this no Notify runs or starts
	}
	s.mu.Lock()
	s.state = stateClosing
	s.goAwayPending = nil
	switch how {
	case endAbort:
		s.broken = true
	case endDrain:
		if !s.closeAfterDrain {
			s.closeAfterDrain = true
			s.finishWhy = closeNormal
		}
	}
	s.wakeLocked()
	s.mu.Unlock()
	if how == endAbort {
		s.t.abort()
	}
	s.sendWG.Wait() // the sends in flight are answered (nothing is queued now)
	s.pumpWG.Wait()
	s.flushAck()
	s.mu.Lock()
	drain := how == endFatal && s.halfClosed && !s.broken
	// Frames never written (a broken transport) leave the global budget.
	s.g.buffered.Add(-int64(s.queueBytes))
	s.queue, s.queueBytes = nil, 0
	s.mu.Unlock()
	if drain {
		s.t.drain()
	}
	s.t.close()
	s.g.log.Debug("gateway: session ended", "session", s.id, "user", s.user, "remote", s.remote)
}
