// Pipelined sends: a session hands its consecutive SendReqs to Logic
// (SendAsync) without waiting for each one's commit, so one group commit of
// the store carries up to MaxPipelinedSends messages of each connection
// instead of one. A completer goroutine, started when a send is handed over
// and ending when none is left, waits for their answers in order and queues
// them.
//
// Invariants of this file (they extend session.go's):
//   - Order of responses: the sends in flight are a FIFO (s.sends), answered
//     by the completer in that order; the reader answers anything itself
//     (a non-send request, a refused send, a fatal Error, the end) only
//     after drainSends, when the FIFO is empty. So at any moment only one of
//     them queues responses, and they leave in request order.
//   - Sender FIFO: the reader hands sends to Logic in the order received,
//     each chained to the one before (after = s.lastSend), and Logic's store
//     sequences a chain in that order (store contract 10).
//   - Nothing after a retryable failure is stored: if send k is refused with
//     a retryable code (RATE_LIMITED, UNAVAILABLE, INTERNAL), the session
//     ends with that fatal Error after the answers of the sends before k.
//     Refused before Logic (admission, validation): the reader drains the
//     sends before k, answers k fatally and reads nothing more, so nothing
//     after k is handed over. Failed in the store (a failed commit, a closed
//     store): the sends after k already handed over are in k's chain, and
//     the store stores none of them (ErrPredecessorFailed); the completer
//     queues k's fatal Error, marking the session closing, before k leaves
//     the FIFO, and the reader hands nothing over once the session is
//     closing (it checks under s.mu, where it takes the chain's last send;
//     a send handed over after that check is chained to k or later). The
//     client reconnects and resends from k, in order. Non-retryable
//     refusals (BAD_REQUEST, FORBIDDEN, NOT_FOUND, TOO_LARGE...) are
//     answered in place and the pipeline goes on: the store's refusals
//     (store.Refusal) do not stop a chain, and they are exactly the errors
//     that Logic maps to those codes.
//   - Non-send requests keep their place: the reader drains the sends in
//     flight before handling any request but a SendReq or a PushAck.
//   - Dedup: a resend of a client_msg_id still in flight is chained behind
//     it, so the store finds it and answers Duplicate with its seq.
//   - Bounded: at most MaxPipelinedSends sends of a session are in flight;
//     the reader waits for the oldest before handing over more.
//   - Admission: every send handed over was admitted (BeginSend, or
//     BeginPipelinedSend behind sends of its session in flight) and is ended
//     (EndSend) by the completer when answered, or at once if never handed
//     over. A pipelined send is admitted only while the pipeline is at most
//     half full and not overloaded; otherwise the reader waits for its own
//     sends (back-pressure) and asks BeginSend as the session's first send
//     in flight, which may refuse it (fatal, as before). So pipelined sends
//     never crowd out the first send of another connection while fewer
//     than half of MaxInflight connections send at once.
//   - Durability: an ack is queued only when Wait answered it, after its
//     commit; the end of the session waits for the completer (no goroutine
//     of the session is left after end).
//   - A GoAway waits for the sends in flight to be answered (like the
//     request in progress); the reader ignores frames once a GoAway is
//     pending, so it is not postponed forever.
package gateway

import (
	"runtime/debug"
	"time"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// MaxPipelinedSends bounds the sends of one connection in flight (the SDK
// keeps up to 32 per conversation).
const MaxPipelinedSends = 32

// inflightSend is one send handed to Logic, waiting for its answer.
type inflightSend struct {
	id    uint64
	p     store.Future[*pimv1.SendAck]
	begin time.Time // admission's BeginSend time
}

// onSend handles a SendReq: it is admitted and handed over, or refused
// after the sends before it are answered.
func (s *session) onSend(id uint64, req *pimv1.SendReq) (endHow, bool) {
	if !s.waitSends(MaxPipelinedSends - 1) {
		return 0, false // a send in flight ended the session
	}
	if a := s.g.admit; a != nil {
		if d := a.Send(time.Now(), s.user, s.ip); !d.OK {
			return s.refuseSendAfterDrain(id, refusalError(d), d.Reason)
		}
	}
	var begin time.Time
	d := admission.Decision{OK: true}
	if s.g.admit != nil {
		begin = time.Now()
		if s.sendsInFlight() == 0 || !s.g.admit.BeginPipelinedSend(begin) {
			// The first send in flight, or the pipeline is half full: wait
			// for our own sends (back-pressure) and ask as a first send.
			if !s.drainSends() {
				return 0, false
			}
			begin, d = s.admitPipeline()
		}
	}
	if !d.OK {
		return s.refuseSendAfterDrain(id, refusalError(d), d.Reason)
	}
	s.mu.Lock()
	after, closing := s.lastSend, s.state == stateClosing
	s.mu.Unlock()
	if closing {
		s.endSend(begin)
		return 0, false
	}
	p, err := s.g.cfg.Logic.SendAsync(s.ctx, s.user, s.device, req, after)
	if err == nil && p == nil {
		err = errNilResult
	}
	if err != nil {
		s.endSend(begin)
		if !s.drainSends() {
			return 0, false
		}
		return s.sendFailed(id, err)
	}
	s.mu.Lock()
	s.lastSend = p
	s.sends = append(s.sends, inflightSend{id: id, p: p, begin: begin})
	if !s.completing {
		s.completing = true
		s.sendWG.Add(1)
		go s.complete()
	}
	s.mu.Unlock()
	return 0, false
}

// sendFailed answers a send that failed: fatally if it may be retried (so
// that nothing after it is stored before it), else in place.
func (s *session) sendFailed(id uint64, err error) (endHow, bool) {
	if e := errcode.Proto(err); retryable(e.Code) {
		s.logErr("send", err)
		return s.refuseSend(id, e, "")
	}
	return s.replyErr(id, "send", err)
}

// refuseSendAfterDrain answers the sends in flight, then refuses this one
// fatally (unless one of them already ended the session).
func (s *session) refuseSendAfterDrain(id uint64, e *pimv1.Error, reason string) (endHow, bool) {
	if !s.drainSends() {
		return 0, false
	}
	return s.refuseSend(id, e, reason)
}

// complete answers the sends in flight in order; it ends when none is left.
func (s *session) complete() {
	defer s.sendWG.Done()
	headEnded := false // the admission of s.sends[0] was ended
	defer func() {
		if v := recover(); v != nil {
			s.g.recovered(s, v, debug.Stack())
			s.abandonSends(headEnded)
		}
	}()
	for {
		s.mu.Lock()
		if len(s.sends) == 0 {
			s.completing = false
			s.lastSend = nil // every send of the chain was answered
			s.sendCond.Broadcast()
			s.goAwayIfIdleLocked()
			s.mu.Unlock()
			return
		}
		e := s.sends[0]
		s.mu.Unlock()

		ack, err := e.p.Wait(s.ctx)
		s.endSend(e.begin)
		headEnded = true
		if err == nil && ack == nil {
			err = errNilResult
		}
		var how endHow
		var stop bool
		if err != nil {
			how, stop = s.sendFailed(e.id, err) // a fatal one marks the session closing first
		} else {
			how, stop = s.reply(&pimv1.Frame{RequestId: e.id, Body: &pimv1.Frame_SendAck{SendAck: ack}})
		}
		if stop && how == endAbort {
			s.t.abort() // a slow client: the reader sees it and ends the session
		}

		s.mu.Lock()
		s.sends[0] = inflightSend{}
		s.sends = s.sends[1:]
		headEnded = false
		if len(s.sends) == 0 {
			s.sends = nil // an idle session keeps no array
		}
		s.sendCond.Broadcast()
		s.mu.Unlock()
	}
}

// abandonSends ends the session after a panic in the completer: the sends
// still in flight get no answer (they may be stored; the client's resend is
// deduplicated), their admissions are ended, and the reader is woken.
func (s *session) abandonSends(headEnded bool) {
	s.mu.Lock()
	left := s.sends
	if headEnded && len(left) > 0 {
		left = left[1:]
	}
	s.sends, s.lastSend, s.completing = nil, nil, false
	s.state = stateClosing
	s.broken = true
	s.sendCond.Broadcast()
	s.mu.Unlock()
	for _, e := range left {
		s.endSend(e.begin)
	}
	s.t.abort()
}

// waitSends waits until at most n sends are in flight. It reports false if
// the session is closing (a send ended it, or it is going away).
func (s *session) waitSends(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.sends) > n {
		s.sendCond.Wait()
	}
	return s.state != stateClosing
}

// drainSends waits until every send in flight is answered. It reports
// false if the session is closing.
func (s *session) drainSends() bool { return s.waitSends(0) }

func (s *session) sendsInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sends)
}

// goAwayIfIdleLocked queues a GoAway that waited for the request in
// progress and the sends in flight, once there are none.
func (s *session) goAwayIfIdleLocked() {
	if s.busy || len(s.sends) > 0 {
		return
	}
	if ga := s.goAwayPending; ga != nil {
		s.goAwayPending = nil
		if s.state != stateClosing {
			s.closeLocked(ga, closeGoingAway)
		}
	}
}
