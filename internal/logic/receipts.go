// Coalesced group read receipts: a sender's devices learn that their
// messages were read at most once per conversation per ReceiptInterval,
// however many members read.
//
// Invariants:
//   - coalescer is a state machine with no I/O and no clock: the caller
//     passes the time; it only decides when each conversation is due.
//   - A conversation is notified no sooner than ReceiptInterval after its
//     previous notification; the first read after a quiet interval is
//     notified at once. Spans noted meanwhile are merged, so no read is
//     lost, only folded into the next notification.
//   - RunReceipts owns the only goroutine that notifies; reads are noted
//     only while it runs.
package logic

import (
	"context"
	"time"
)

// ReceiptInterval is the shortest time between two read-receipt
// notifications of one conversation.
const ReceiptInterval = time.Second

// readSpan is the range (from, to] of seqs whose read counts changed.
type readSpan struct{ from, to uint64 }

type coalescer struct {
	interval time.Duration
	pending  map[string]readSpan
	last     map[string]time.Time // last notification, while within interval
}

func newCoalescer(interval time.Duration) *coalescer {
	return &coalescer{interval: interval, pending: make(map[string]readSpan), last: make(map[string]time.Time)}
}

// note records that reads moved in conv over (from, to].
func (c *coalescer) note(conv string, from, to uint64) {
	if sp, ok := c.pending[conv]; ok {
		from, to = min(sp.from, from), max(sp.to, to)
	}
	c.pending[conv] = readSpan{from, to}
}

// due returns the spans to notify at now (marking them notified) and when
// the next pending one falls due (zero: none pending).
func (c *coalescer) due(now time.Time) (map[string]readSpan, time.Time) {
	var out map[string]readSpan
	var next time.Time
	for conv, sp := range c.pending {
		if last, ok := c.last[conv]; ok && now.Before(last.Add(c.interval)) {
			if at := last.Add(c.interval); next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		if out == nil {
			out = make(map[string]readSpan)
		}
		out[conv] = sp
		delete(c.pending, conv)
		c.last[conv] = now
	}
	for conv, t := range c.last {
		if _, ok := c.pending[conv]; !ok && !now.Before(t.Add(c.interval)) {
			delete(c.last, conv)
		}
	}
	return out, next
}

// noteReads records a group read for RunReceipts, if it runs.
func (s *Service) noteReads(conv string, from, to uint64) {
	s.rmu.Lock()
	if s.rc == nil {
		s.rmu.Unlock()
		return
	}
	s.rc.note(conv, from, to)
	s.rmu.Unlock()
	select {
	case s.rwake <- struct{}{}:
	default:
	}
}

// RunReceipts notifies senders of group read receipts, coalesced, until ctx
// is done. The server runs it once.
func (s *Service) RunReceipts(ctx context.Context) {
	s.rmu.Lock()
	s.rc = newCoalescer(ReceiptInterval)
	s.rmu.Unlock()
	defer func() {
		s.rmu.Lock()
		s.rc = nil
		s.rmu.Unlock()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.rmu.Lock()
		flush, next := s.rc.due(s.now())
		s.rmu.Unlock()
		for conv, sp := range flush {
			s.notifyReads(ctx, conv, sp)
		}
		if !next.IsZero() {
			timer.Reset(next.Sub(s.now()))
		}
		select {
		case <-ctx.Done():
			return
		case <-s.rwake:
		case <-timer.C:
		}
	}
}

func (s *Service) notifyReads(ctx context.Context, conv string, sp readSpan) {
	res, err := s.st.NotifyReads(ctx, conv, sp.from, sp.to)
	if err != nil {
		s.log.Warn("group read receipts", "conv", conv, "err", err)
		return
	}
	s.m.receiptFlush.Inc()
	s.m.receiptEvents.Add(float64(len(res.Deliveries)))
	s.publish(res)
}
