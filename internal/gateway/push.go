// The push stream and the writer of a session.
//
// One pump goroutine per connection, started on demand (wakeLocked) and
// ended as soon as there is nothing to do, is the connection's only writer.
// Each round it applies the newest PushAck, takes every queued response,
// builds Push frames, and writes all of it in one transport write.
//
// Invariants of this file:
//   - Events are pushed in user_seq order with no gap after push_from: a
//     Push only ever carries the events pushed+1, pushed+2, ... (from the
//     notification cache when it holds the next ones, else from
//     Logic.Timeline), and pushed only grows. The one exception is an ack
//     beyond pushed (the client got those events through SyncReq): the
//     stream then continues after that ack, which is no gap for the client.
//   - At most PushWindow events are pushed and not acknowledged; PushAck
//     and SyncReq.after_user_seq acknowledge. Memory per connection is
//     bounded by the window, the cache (cacheMax events), one Timeline page
//     and MaxQueueBytes of queued responses.
//   - Notify never blocks and never does I/O: it records the event (or, if
//     the cache is full, only its seq in seen) and wakes the pump.
//   - At most one pump runs per session (s.pumping, under s.mu); a waker
//     starts one exactly when none runs and hasWorkLocked holds, and the
//     pump exits only after seeing no work under the same lock, so no
//     wake-up is lost.
//   - Logic.Ack calls are serialized (ackMu); a PushAck is applied before
//     any later request of the connection is answered and before it closes.
package gateway

import (
	"runtime/debug"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

const (
	// cacheMax bounds the notified events a session keeps ahead of pushed.
	cacheMax = 128
	// timelinePage is the most events read from the store at once.
	timelinePage = 256
	// batchBytes is about how many bytes of Push frames one write carries.
	batchBytes = 256 << 10
	// frameSlack covers a Frame's and a Push's own tags and lengths.
	frameSlack = 16
)

// Notify implements bus.Subscriber. It must not block.
func (s *session) Notify(_ string, ev *pimv1.Event) {
	seq := ev.GetUserSeq()
	if seq == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stateClosing || seq <= s.pushed {
		return
	}
	if seq > s.seen {
		s.seen = seq
	}
	s.cacheLocked(ev)
	s.wakeLocked()
}

// cacheLocked inserts ev into the sorted cache. When the cache is full the
// highest event gives way (the next ones to push are the most useful);
// anything dropped is read from the store later.
func (s *session) cacheLocked(ev *pimv1.Event) {
	seq := ev.UserSeq
	n := len(s.cache)
	i, found := slices.BinarySearchFunc(s.cache, seq, func(e *pimv1.Event, seq uint64) int {
		switch {
		case e.UserSeq < seq:
			return -1
		case e.UserSeq > seq:
			return 1
		}
		return 0
	})
	if found {
		return
	}
	if n >= cacheMax {
		if i == n {
			return
		}
		s.cache[n-1] = nil
		s.cache = s.cache[:n-1]
	}
	s.cache = slices.Insert(s.cache, i, ev)
}

// trimCacheLocked drops cached events that are pushed already.
func (s *session) trimCacheLocked() {
	i := 0
	for i < len(s.cache) && s.cache[i].UserSeq <= s.pushed {
		i++
	}
	if i == 0 {
		return
	}
	if i == len(s.cache) {
		if cap(s.cache) > 16 {
			s.cache = nil // an idle session keeps no big array
		} else {
			clear(s.cache)
			s.cache = s.cache[:0]
		}
		return
	}
	clear(s.cache[:i])
	s.cache = s.cache[i:]
}

// onPushAck records a PushAck (the pump or the next request applies it).
func (s *session) onPushAck(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.pendingAck {
		s.pendingAck = seq
	}
	s.onClientAckLocked(seq)
	s.wakeLocked()
}

// onClientAck records an acknowledgement for flow control (SyncReq acks
// through Logic.Sync itself).
func (s *session) onClientAck(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onClientAckLocked(seq)
	s.wakeLocked()
}

func (s *session) onClientAckLocked(seq uint64) {
	if seq > s.acked {
		s.acked = seq
	}
	// The client has everything up to seq (it synced past the push stream):
	// continue after it rather than push what it has again.
	if np := min(seq, s.seen); np > s.pushed {
		s.pushed = np
		s.trimCacheLocked()
	}
}

func (s *session) unackedLocked() uint64 {
	if s.acked >= s.pushed {
		return 0
	}
	return s.pushed - s.acked
}

func (s *session) canPushLocked() bool {
	return s.state == stateActive && !s.closeAfterDrain && s.pushed < s.seen &&
		s.unackedLocked() < uint64(s.g.cfg.PushWindow)
}

func (s *session) hasWorkLocked() bool {
	switch {
	case s.broken:
		return false
	case len(s.queue) > 0:
		return true
	case s.closeAfterDrain:
		return !s.finished
	case s.state != stateActive:
		return false
	}
	return s.pendingAck > s.appliedAck || s.canPushLocked()
}

// wakeLocked starts the pump if there is work and none runs.
func (s *session) wakeLocked() {
	if s.pumping || !s.hasWorkLocked() {
		return
	}
	s.pumping = true
	s.pumpWG.Add(1)
	go s.pump()
}

// queueLocked queues f for the writer. It reports false, and marks the
// session closing and broken, if the queue would pass its bound: the client
// does not read fast enough and is disconnected (it resyncs from its cursor).
func (s *session) queueLocked(f *pimv1.Frame) bool {
	n := proto.Size(f)
	if len(s.queue) > 0 && s.queueBytes+n > s.g.cfg.MaxQueueBytes {
		s.state = stateClosing
		s.broken = true
		return false
	}
	s.queue = append(s.queue, f)
	s.queueBytes += n
	return true
}

// flushAck hands the newest PushAck to Logic.Ack, once.
func (s *session) flushAck() {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	s.mu.Lock()
	seq := s.pendingAck
	if seq <= s.appliedAck {
		s.mu.Unlock()
		return
	}
	s.appliedAck = seq // acks need not be durable: a failure is logged, not retried
	s.mu.Unlock()
	if _, err := s.g.cfg.Logic.Ack(s.ctx, s.user, s.device, seq); err != nil && s.ctx.Err() == nil {
		s.g.log.Warn("gateway: ack failed", "session", s.id, "user", s.user, "device", s.device, "seq", seq, "err", err)
	}
}

// pump is the connection's writer and pusher; see the file comment.
func (s *session) pump() {
	defer s.pumpWG.Done()
	defer func() {
		if v := recover(); v != nil {
			s.g.recovered(s, v, debug.Stack())
			s.fail()
		}
	}()
	var (
		out  []*pimv1.Frame
		page []*pimv1.Event // the next events to push, contiguous from pushed+1
	)
	for {
		s.flushAck()
		s.mu.Lock()
		out, s.queue = s.queue, out[:0]
		s.queueBytes = 0
		avail, needRead := 0, false
		var after uint64
		if s.canPushLocked() {
			avail = s.g.cfg.PushWindow - int(s.unackedLocked())
			page = s.fillPageLocked(page, avail)
			needRead = len(page) == 0
			after = s.pushed
		} else {
			page = nil
		}
		if len(out) == 0 && !needRead && len(page) == 0 {
			if s.pendingAck > s.appliedAck && s.state == stateActive && !s.broken {
				s.mu.Unlock()
				continue // an ack came in after flushAck
			}
			finish := s.closeAfterDrain && !s.finished && !s.broken
			s.finished = s.finished || finish
			s.pumping = false
			s.queue = nil // an idle session keeps no queue array
			why := s.finishWhy
			s.mu.Unlock()
			if finish {
				if s.t.finish(why) {
					s.mu.Lock()
					s.halfClosed = true
					s.mu.Unlock()
				} else {
					s.t.abort()
				}
			}
			return
		}
		s.mu.Unlock()

		if needRead {
			if len(out) == 0 {
				page = s.readTimeline(after, min(avail, timelinePage))
				continue
			}
			// Answer what is queued first; read on the next round.
		} else if len(page) > 0 {
			out, page = s.appendPushes(out, page, avail)
		}
		if len(out) == 0 {
			continue
		}
		err := s.t.writeFrames(out, time.Now().Add(s.g.cfg.WriteTimeout))
		clear(out)
		out = out[:0]
		if err != nil {
			s.g.log.Debug("gateway: write failed", "session", s.id, "user", s.user, "remote", s.remote, "err", err)
			s.fail()
			return
		}
	}
}

// fail marks the transport broken and aborts it; the reader then ends the session.
func (s *session) fail() {
	s.mu.Lock()
	s.broken = true
	s.state = stateClosing
	s.pumping = false
	s.mu.Unlock()
	s.t.abort()
}

// fillPageLocked returns the next events to push (contiguous from
// pushed+1): what is left of page, else the cache's next run.
func (s *session) fillPageLocked(page []*pimv1.Event, avail int) []*pimv1.Event {
	i := 0
	for i < len(page) && page[i].UserSeq <= s.pushed {
		i++
	}
	page = page[i:]
	if len(page) > 0 && page[0].UserSeq == s.pushed+1 {
		return page
	}
	page = nil // never append into a slice Logic returned
	s.trimCacheLocked()
	next := s.pushed + 1
	for _, ev := range s.cache {
		if ev.UserSeq != next || len(page) >= min(avail, timelinePage) {
			break
		}
		page = append(page, ev)
		next++
	}
	return page
}

// readTimeline reads the next events from the store (the cache does not
// have them: a gap, a dropped notification, or the backlog).
func (s *session) readTimeline(after uint64, limit int) []*pimv1.Event {
	evs, head, err := s.g.cfg.Logic.Timeline(s.ctx, s.user, after, limit)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.ctx.Err() == nil {
			s.g.log.Warn("gateway: timeline read failed", "session", s.id, "user", s.user, "after", after, "err", err)
		}
		if s.state != stateClosing {
			e := errcode.Proto(err)
			e.Fatal = true
			e.Message = "push stream interrupted: " + e.Message
			s.g.m.errorOut(e.Code)
			s.closeLocked(errorFrame(0, e), closeFatal)
		}
		return nil
	}
	if head > s.seen {
		s.seen = head
	}
	if len(evs) == 0 {
		// Nothing after pushed although seen says otherwise: what was
		// notified is not readable (yet). Stop here rather than spin; the
		// next notification raises seen again.
		if head > s.pushed {
			s.g.log.Warn("gateway: timeline empty below its head", "session", s.id, "user", s.user,
				"after", after, "head", head)
		}
		s.seen = s.pushed
		return nil
	}
	// An ack may have moved pushed on while we read.
	i := 0
	for i < len(evs) && evs[i].GetUserSeq() <= s.pushed {
		i++
	}
	evs = evs[i:]
	if len(evs) == 0 {
		return nil // progress was made; the next round reads on from pushed
	}
	for k, ev := range evs {
		if ev.GetUserSeq() != s.pushed+1+uint64(k) {
			s.g.log.Error("gateway: timeline is not gap-free", "session", s.id, "user", s.user,
				"after", s.pushed, "got", ev.GetUserSeq(), "want", s.pushed+1+uint64(k))
			if s.state != stateClosing {
				e := &pimv1.Error{Code: pimv1.ErrorCode_ERROR_CODE_INTERNAL, Message: "push stream interrupted", Fatal: true}
				s.g.m.errorOut(e.Code)
				s.closeLocked(errorFrame(0, e), closeFatal)
			}
			return nil
		}
	}
	return evs
}

// appendPushes moves up to avail events from page into Push frames appended
// to out (each frame under MaxFrame, about batchBytes in all) and records
// them as pushed.
func (s *session) appendPushes(out []*pimv1.Frame, page []*pimv1.Event, avail int) ([]*pimv1.Frame, []*pimv1.Event) {
	limit := s.g.cfg.MaxFrame - frameSlack
	total, n := 0, 0
	for len(page) > 0 && n < avail && total < batchBytes {
		size, k := 0, 0
		for k < len(page) && n+k < avail {
			sz := protowire.SizeBytes(proto.Size(page[k])) + 1
			if k > 0 && size+sz > limit {
				break
			}
			size += sz
			k++
		}
		out = append(out, &pimv1.Frame{Body: &pimv1.Frame_Push{Push: &pimv1.Push{Events: page[:k:k]}}})
		page = page[k:]
		total += size
		n += k
	}
	if n == 0 {
		return out, page
	}
	last := out[len(out)-1].GetPush().Events
	seq := last[len(last)-1].UserSeq
	s.mu.Lock()
	if seq > s.pushed {
		s.pushed = seq
	}
	s.trimCacheLocked()
	s.mu.Unlock()
	s.g.m.pushed.Add(float64(n))
	return out, page
}

// fitSync keeps a SyncResp under maxFrame by returning fewer events (at least
// one); has_more tells the client to ask for the rest.
func fitSync(r *pimv1.SyncResp, maxFrame int) {
	if proto.Size(r)+frameSlack <= maxFrame {
		return
	}
	limit, size := maxFrame-2*frameSlack, 0
	for i, ev := range r.Events {
		size += protowire.SizeBytes(proto.Size(ev)) + 1
		if i > 0 && size > limit {
			r.Events = r.Events[:i]
			r.HasMore = true
			return
		}
	}
}

// fitHistory keeps a HistoryResp under maxFrame by returning fewer, newest,
// messages (at least one); has_more tells the client older ones exist.
func fitHistory(r *pimv1.HistoryResp, maxFrame int) {
	if proto.Size(r)+frameSlack <= maxFrame {
		return
	}
	limit, size := maxFrame-2*frameSlack, 0
	for i := len(r.Messages) - 1; i >= 0; i-- {
		size += protowire.SizeBytes(proto.Size(r.Messages[i])) + 1
		if i < len(r.Messages)-1 && size > limit {
			r.Messages = r.Messages[i+1:]
			r.HasMore = true
			return
		}
	}
}
