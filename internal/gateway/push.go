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
//     bounded by the cache (cacheMax events and cacheMaxBytes), one page
//     (timelinePage events, trimmed to pageMaxBytes after the read) and
//     MaxQueueBytes of queued responses; queued responses of all
//     connections together by MaxBufferedBytes (g.buffered counts them from
//     queueLocked until written or dropped).
//   - Timeline reads of push streams hold a slot of g.catchup (bounded
//     concurrency); identical reads in progress are shared (coalesce.go)
//     and a shared read that found nothing is done again alone, so a stale
//     shared answer never stalls the stream. A pump never waits for a slot
//     while frames are queued for it (s.kick interrupts the wait): answers
//     do not wait for catch-up.
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
	"errors"
	"runtime/debug"
	"slices"
	"strconv"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

const (
	// cacheMax and cacheMaxBytes bound the notified events a session keeps
	// ahead of pushed.
	cacheMax      = 128
	cacheMaxBytes = 256 << 10
	// pageMaxBytes bounds the part of a timeline page kept after the read
	// (the rest is read again later).
	pageMaxBytes = 512 << 10
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

// eventBytes estimates the memory of an event (its body dominates).
func eventBytes(ev *pimv1.Event) int {
	return len(ev.GetMessage().GetBody()) + 96
}

// cacheLocked inserts ev into the sorted cache. When the cache is full (by
// count or bytes) the highest events give way (the next ones to push are the
// most useful); anything dropped is read from the store later.
func (s *session) cacheLocked(ev *pimv1.Event) {
	seq := ev.UserSeq
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
	sz := eventBytes(ev)
	for n := len(s.cache); n > 0 && (n >= cacheMax || s.cacheBytes+sz > cacheMaxBytes); n = len(s.cache) {
		if i >= n {
			return // ev is the highest: it gives way itself
		}
		s.cacheBytes -= eventBytes(s.cache[n-1])
		s.cache[n-1] = nil
		s.cache = s.cache[:n-1]
	}
	s.cache = slices.Insert(s.cache, i, ev)
	s.cacheBytes += sz
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
	for _, ev := range s.cache[:i] {
		s.cacheBytes -= eventBytes(ev)
	}
	if i == len(s.cache) {
		s.cacheBytes = 0
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
	if len(s.queue) > 0 && (s.queueBytes+n > s.g.cfg.MaxQueueBytes ||
		s.g.buffered.Load()+int64(n) > s.g.cfg.MaxBufferedBytes) {
		s.state = stateClosing
		s.broken = true
		return false
	}
	s.queue = append(s.queue, f)
	s.queueBytes += n
	s.g.buffered.Add(int64(n))
	s.kickLocked()
	return true
}

// kickLocked tells a pump waiting for a catch-up slot that frames wait.
func (s *session) kickLocked() {
	if s.kick != nil {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// errDeferred: a timeline read gave way to queued frames.
var errDeferred = errors.New("gateway: timeline read deferred")

// flushAck hands the newest PushAck to Logic.Ack, once; it reports false
// when that failed (the ack stays pending for the next flush).
func (s *session) flushAck() bool {
	s.ackMu.Lock()
	defer s.ackMu.Unlock()
	s.mu.Lock()
	seq := s.pendingAck
	if seq <= s.appliedAck {
		s.mu.Unlock()
		return true
	}
	s.mu.Unlock()
	if _, err := s.g.cfg.Logic.Ack(s.ctx, s.user, s.device, seq); err != nil {
		// Not applied: the next flush tries again (a repeated PushAck with the
		// same value must still reach the store).
		if s.ctx.Err() == nil {
			s.g.log.Warn("gateway: ack failed", "session", s.id, "user", s.user, "device", s.device, "seq", seq, "err", err)
		}
		return false
	}
	s.mu.Lock()
	s.appliedAck = max(s.appliedAck, seq)
	s.mu.Unlock()
	return true
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
		ackOK := s.flushAck()
		s.mu.Lock()
		out, s.queue = s.queue, out[:0]
		outBytes := s.queueBytes
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
			// An ack that came in after flushAck: apply it now. One that just
			// failed waits for the next PushAck or request (no busy retry).
			if ackOK && s.pendingAck > s.appliedAck && s.state == stateActive && !s.broken {
				s.mu.Unlock()
				continue // an ack came in after flushAck
			}
			// (out is empty: outBytes is 0.)
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
		s.g.buffered.Add(-int64(outBytes)) // written or lost: no longer queued
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

// pageResult is the result of Logic.Timeline.
type pageResult struct {
	evs  []*pimv1.Event
	head uint64
}

// readTimeline reads the next events from the store (the cache does not
// have them: a gap, a dropped notification, or the backlog).
func (s *session) readTimeline(after uint64, limit int) []*pimv1.Event {
	evs, head, err := s.timelineRead(after, limit)
	if errors.Is(err, errDeferred) {
		return nil // responses first; the next round reads
	}
	if err == nil && len(evs) > 0 {
		evs = trimPage(evs)
	}
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

// timelineRead is Logic.Timeline for the push stream: with a catch-up slot,
// shared with identical reads in progress; a shared read that found nothing
// is done again alone (it may have begun before the events this session was
// told of were stored).
func (s *session) timelineRead(after uint64, limit int) ([]*pimv1.Event, uint64, error) {
	// Wait for a slot, but not while responses wait: a frame queued (or the
	// session closing) meanwhile defers the read, the pump writes first.
	s.mu.Lock()
	if s.kick == nil {
		s.kick = make(chan struct{}, 1) // only sessions that ever wait for a slot
	}
	kick := s.kick
	select {
	case <-kick: // a stale signal: the pump has taken that frame already
	default:
	}
	pending := len(s.queue) > 0 || s.closeAfterDrain
	s.mu.Unlock()
	if pending {
		return nil, 0, errDeferred
	}
	select {
	case s.g.catchup <- struct{}{}:
	case <-kick:
		return nil, 0, errDeferred
	case <-s.ctx.Done():
		return nil, 0, s.ctx.Err()
	}
	defer func() { <-s.g.catchup }()
	read := func() (pageResult, error) {
		evs, head, err := s.g.cfg.Logic.Timeline(s.ctx, s.user, after, limit)
		return pageResult{evs, head}, err
	}
	key := s.user + "\x00" + strconv.FormatUint(after, 10) + "\x00" + strconv.Itoa(limit)
	p, err, shared := s.g.tlFlt.do(key, read)
	if shared {
		s.g.m.coalesced(opTimeline)
		if err == nil && len(p.evs) == 0 {
			p, err = read()
		}
	}
	return p.evs, p.head, err
}

// trimPage keeps the events of a page up to about pageMaxBytes (at least
// one). It returns a subslice: the page is never modified.
func trimPage(evs []*pimv1.Event) []*pimv1.Event {
	total := 0
	for i, ev := range evs {
		total += eventBytes(ev)
		if i > 0 && total > pageMaxBytes {
			return evs[:i:i]
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
