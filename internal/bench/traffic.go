package bench

// The traffic engine of e2e and group: senders sending benchmark messages
// (closed loop with a window, or paced open loop), receivers checking every
// event against the invariants, and the phases (warm-up, measured, drain).
//
// Goroutines: one per sender connection (it reads acks and echoes and, in
// closed loop, issues the next sends), one per receiver connection, and in
// paced mode one pacer. Latency histograms and checkers belong to their
// goroutine and are read only after it ended (Close waits for them).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// reqBase is the request id of message 0 (1 was the Hello).
const reqBase = 2

// Phase is the measured window, in Unix nanoseconds (0: not started / open).
type Phase struct{ start, end atomic.Int64 }

// In reports whether t is inside the measured window.
func (p *Phase) In(t int64) bool {
	s := p.start.Load()
	if s == 0 || t < s {
		return false
	}
	e := p.end.Load()
	return e == 0 || t < e
}

// Begin opens the window now.
func (p *Phase) Begin() { p.start.Store(time.Now().UnixNano()) }

// End closes the window now.
func (p *Phase) End() { p.end.Store(time.Now().UnixNano()) }

// TrafficConfig shapes the load.
type TrafficConfig struct {
	Window int     // closed loop: sends in flight per sender
	Rate   float64 // > 0: open loop, this many messages per second in all
	Size   int     // message body bytes
	// MaxOutstanding bounds a paced sender's unanswered sends; a send due
	// past it is skipped (and counted) rather than queued without bound.
	MaxOutstanding int
	// Limit, if > 0, is the number of messages each sender sends in all.
	Limit uint64
	// Ack is how every device batches its PushAcks (zero: DefaultAckPolicy).
	Ack AckPolicy
}

// Sender is one sending device.
type Sender struct {
	idx    int
	c      *Conn
	fields SendFields
	tr     *Traffic

	mu          sync.Mutex
	times       []int64 // send time of message n
	next        uint64
	outstanding int
	stopped     bool
	doneOnce    sync.Once
	done        chan struct{}
	body        []byte
	ack         ackState

	// Owned by the sender's goroutine; read after it ended.
	acked    Bitset
	ackHist  Histogram
	err      error
	firstErr string

	sent, ackN, sendErrs, phaseAcks atomic.Int64
}

// Receiver is one receiving device.
type Receiver struct {
	idx int
	c   *Conn
	tr  *Traffic

	// Owned by the receiver's goroutine; read after it ended.
	chk  *Checker
	hist Histogram
	err  error
	ack  ackState

	phaseDeliveries atomic.Int64
}

// Traffic is a set of senders and receivers and who receives whom.
type Traffic struct {
	Senders   []*Sender
	Receivers []*Receiver
	cfg       TrafficConfig
	recvOf    [][]int // sender -> its receivers
	sendersOf [][]int // receiver -> its senders

	Phase     Phase
	delivered atomic.Int64 // fresh benchmark messages at all receivers
	skipped   atomic.Int64
	closing   atomic.Bool
	wg        sync.WaitGroup
	pacerStop chan struct{}
	pacerDone chan struct{}
	ackStop   chan struct{}
	ackDone   chan struct{}
}

// NewTraffic builds the engine over connected senders and receivers.
// fields(i) is the SendReq template of sender i (its target); recvOf(i)
// lists the receivers of sender i's messages.
func NewTraffic(cfg TrafficConfig, senders, receivers []*Conn, fields func(i int) SendFields, recvOf func(i int) []int) *Traffic {
	if cfg.Window <= 0 {
		cfg.Window = 1
	}
	if cfg.MaxOutstanding <= 0 {
		cfg.MaxOutstanding = 1000
	}
	if cfg.Ack.Every <= 0 {
		cfg.Ack = DefaultAckPolicy
	}
	tr := &Traffic{cfg: cfg, recvOf: make([][]int, len(senders)), sendersOf: make([][]int, len(receivers))}
	for i, c := range senders {
		tr.Senders = append(tr.Senders, &Sender{idx: i, c: c, fields: fields(i), tr: tr, done: make(chan struct{})})
		tr.recvOf[i] = recvOf(i)
		for _, r := range tr.recvOf[i] {
			tr.sendersOf[r] = append(tr.sendersOf[r], i)
		}
	}
	for i, c := range receivers {
		tr.Receivers = append(tr.Receivers, &Receiver{idx: i, c: c, tr: tr, chk: NewChecker(c.Welcome().GetPushFromUserSeq())})
	}
	return tr
}

// Start starts every goroutine: the load begins.
func (tr *Traffic) Start() {
	for _, r := range tr.Receivers {
		tr.wg.Add(1)
		go r.run()
	}
	for _, s := range tr.Senders {
		tr.wg.Add(1)
		go s.run()
	}
	if tr.cfg.Rate > 0 {
		tr.pacerStop, tr.pacerDone = make(chan struct{}), make(chan struct{})
		go tr.pace()
	}
	tr.ackStop, tr.ackDone = make(chan struct{}), make(chan struct{})
	go tr.ackTicker()
}

// ackTicker sends the PushAcks that are due by the policy's delay.
func (tr *Traffic) ackTicker() {
	defer close(tr.ackDone)
	t := time.NewTicker(max(tr.cfg.Ack.Delay/5, 5*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-tr.ackStop:
			return
		case <-t.C:
		}
		now := time.Now().UnixNano()
		for _, s := range tr.Senders {
			if seq := s.ack.due(now, tr.cfg.Ack); seq > 0 {
				_ = s.c.Send(func(b []byte) []byte { return AppendPushAckFrame(b, seq) })
			}
		}
		for _, r := range tr.Receivers {
			if seq := r.ack.due(now, tr.cfg.Ack); seq > 0 {
				_ = r.c.Send(func(b []byte) []byte { return AppendPushAckFrame(b, seq) })
			}
		}
	}
}

// StopSending stops issuing new messages; what is in flight is still answered.
func (tr *Traffic) StopSending() {
	if tr.pacerStop != nil {
		close(tr.pacerStop)
		<-tr.pacerDone
		tr.pacerStop = nil
	}
	for _, s := range tr.Senders {
		s.stop()
	}
}

// WaitAcked waits until every sender has an answer to everything it sent
// (or failed), at most timeout. It reports whether all did.
func (tr *Traffic) WaitAcked(ctx context.Context, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, s := range tr.Senders {
		select {
		case <-s.done:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// Expected is how many deliveries the acknowledged messages owe the receivers.
func (tr *Traffic) Expected() int64 {
	var n int64
	for i, s := range tr.Senders {
		n += s.ackN.Load() * int64(len(tr.recvOf[i]))
	}
	return n
}

// Delivered is the number of distinct benchmark messages the receivers got.
func (tr *Traffic) Delivered() int64 { return tr.delivered.Load() }

// WaitDelivered waits until the receivers got every acknowledged message,
// at most timeout, polling every 20 ms. It reports whether they did.
func (tr *Traffic) WaitDelivered(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if tr.delivered.Load() >= tr.Expected() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

// Close closes every connection and waits for the goroutines.
func (tr *Traffic) Close() {
	if tr.pacerStop != nil {
		close(tr.pacerStop)
		<-tr.pacerDone
		tr.pacerStop = nil
	}
	if tr.ackStop != nil {
		close(tr.ackStop)
		<-tr.ackDone
		tr.ackStop = nil
	}
	tr.closing.Store(true)
	for _, s := range tr.Senders {
		s.c.Close()
	}
	for _, r := range tr.Receivers {
		r.c.Close()
	}
	tr.wg.Wait()
}

// TrafficResult is the outcome, after Close.
type TrafficResult struct {
	Sent, Acked, SendErrors, Delivered int64
	PhaseAcks, PhaseDeliveries         int64
	Skipped                            int64
	Ack, Deliver                       Latency
	Lost, Duplicated, OutOfOrder       int64
	Errors                             []string
}

// Result sums up the run. Call it after Close.
func (tr *Traffic) Result() TrafficResult {
	var res TrafficResult
	var ack, del Histogram
	for _, s := range tr.Senders {
		res.Sent += s.sent.Load()
		res.Acked += s.ackN.Load()
		res.SendErrors += s.sendErrs.Load()
		res.PhaseAcks += s.phaseAcks.Load()
		ack.Merge(&s.ackHist)
		if s.err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("sender %d: %v", s.idx, s.err))
		}
		if s.firstErr != "" {
			res.Errors = append(res.Errors, fmt.Sprintf("sender %d: send refused: %s", s.idx, s.firstErr))
		}
	}
	for _, r := range tr.Receivers {
		res.Delivered += r.chk.Delivered
		res.Duplicated += r.chk.Duplicated
		res.OutOfOrder += r.chk.OutOfOrder
		res.PhaseDeliveries += r.phaseDeliveries.Load()
		del.Merge(&r.hist)
		for _, s := range tr.sendersOf[r.idx] {
			res.Lost += int64(r.chk.Lost(s, &tr.Senders[s].acked))
		}
		if r.err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("receiver %d: %v", r.idx, r.err))
		}
	}
	res.Skipped = tr.skipped.Load()
	res.Ack, res.Deliver = ack.Summary(), del.Summary()
	if len(res.Errors) > 5 {
		res.Errors = append(res.Errors[:5], fmt.Sprintf("... and %d more", len(res.Errors)-5))
	}
	return res
}

// ---- senders -----------------------------------------------------------------

func (s *Sender) run() {
	defer s.tr.wg.Done()
	defer s.finish()
	closed := s.tr.cfg.Rate <= 0
	var pendingAck uint64
	for {
		if closed {
			s.fill()
		}
		if pendingAck > 0 {
			if seq := s.ack.seen(pendingAck, time.Now().UnixNano(), s.tr.cfg.Ack); seq > 0 {
				s.c.Queue(func(b []byte) []byte { return AppendPushAckFrame(b, seq) })
			}
			pendingAck = 0
		}
		if err := s.c.Flush(); err != nil {
			s.fail(err)
			return
		}
		for {
			reqID, kind, body, err := s.c.Next()
			if err != nil {
				s.fail(err)
				return
			}
			switch kind {
			case fSendAck:
				s.onAnswer(reqID, true, nil)
			case fError:
				s.onAnswer(reqID, false, body)
			case fPush: // the sender's own messages, echoed to its device
				if err := ScanPush(body, func(ev *PushEvent) { pendingAck = ev.UserSeq }); err != nil {
					s.fail(frameErr("push", err))
					return
				}
			case fGoAway:
				s.fail(errors.New("the server sent GoAway"))
				return
			}
			if s.c.Buffered() == 0 {
				break
			}
		}
	}
}

// fill issues sends until the window is full (closed loop).
func (s *Sender) fill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now().UnixNano()
	for !s.stopped && s.outstanding < s.tr.cfg.Window && (s.tr.cfg.Limit == 0 || s.next < s.tr.cfg.Limit) {
		s.issueLocked(now)
	}
	s.checkDoneLocked()
}

// issuePaced issues one send scheduled at at (open loop); false if it was
// skipped because too many are unanswered or the sender stopped.
func (s *Sender) issuePaced(at int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.outstanding >= s.tr.cfg.MaxOutstanding || (s.tr.cfg.Limit > 0 && s.next >= s.tr.cfg.Limit) {
		return false
	}
	s.issueLocked(at)
	return true
}

// issueLocked queues message s.next, stamped with at.
func (s *Sender) issueLocked(at int64) {
	n := s.next
	s.next++
	s.outstanding++
	s.times = append(s.times, at)
	s.body = AppendBody(s.body[:0], s.idx, n, at, s.tr.cfg.Size)
	f := s.fields
	f.ClientMsgID = string(ClientMsgID(nil, n))
	f.Body = s.body
	f.ClientTime = at / int64(time.Millisecond)
	s.c.Queue(func(b []byte) []byte { return AppendSendFrame(b, n+reqBase, &f) })
	s.sent.Add(1)
}

func (s *Sender) onAnswer(reqID uint64, ok bool, errBody []byte) {
	now := time.Now().UnixNano()
	n := reqID - reqBase
	s.mu.Lock()
	if reqID < reqBase || n >= s.next {
		s.mu.Unlock()
		s.fail(fmt.Errorf("answer to request %d, which was never sent", reqID))
		return
	}
	at := s.times[n]
	s.outstanding--
	s.checkDoneLocked()
	s.mu.Unlock()
	if !ok {
		s.sendErrs.Add(1)
		if s.firstErr == "" {
			s.firstErr = "undecodable error"
			if f, err := DecodeBody(fError, errBody); err == nil {
				s.firstErr = fmt.Sprintf("%s (%s)", f.GetError().GetMessage(), f.GetError().GetCode())
			}
		}
		return
	}
	if s.acked.Set(n) {
		s.fail(fmt.Errorf("message %d acknowledged twice", n))
		return
	}
	s.ackN.Add(1)
	if s.tr.Phase.In(at) {
		s.ackHist.RecordMicros(uint64(max(now-at, 0) / 1000))
	}
	if s.tr.Phase.In(now) {
		s.phaseAcks.Add(1)
	}
}

func (s *Sender) stop() {
	s.mu.Lock()
	s.stopped = true
	s.checkDoneLocked()
	s.mu.Unlock()
}

func (s *Sender) checkDoneLocked() {
	limited := s.tr.cfg.Limit > 0 && s.next >= s.tr.cfg.Limit
	if (s.stopped || limited) && s.outstanding == 0 {
		s.doneOnce.Do(func() { close(s.done) })
	}
}

func (s *Sender) fail(err error) {
	if s.err == nil && !s.tr.closing.Load() {
		s.err = err
	}
}

// finish marks the sender done when its connection ended.
func (s *Sender) finish() {
	s.doneOnce.Do(func() { close(s.done) })
}

// pace issues Rate messages per second in all, round robin over the senders,
// each stamped with its scheduled time (open loop: a late send is measured
// from when it should have left).
func (tr *Traffic) pace() {
	defer close(tr.pacerDone)
	start := time.Now()
	interval := time.Duration(float64(time.Second) / tr.cfg.Rate)
	var issued int64
	rr := 0
	touched := make([]bool, len(tr.Senders))
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-tr.pacerStop:
			return
		case <-t.C:
		}
		due := int64(time.Since(start).Seconds()*tr.cfg.Rate) - issued
		for ; due > 0; due-- {
			at := start.Add(time.Duration(issued) * interval).UnixNano()
			s := tr.Senders[rr]
			rr = (rr + 1) % len(tr.Senders)
			issued++
			if s.issuePaced(at) {
				touched[s.idx] = true
			} else {
				tr.skipped.Add(1)
			}
		}
		for i, ok := range touched {
			if ok {
				touched[i] = false
				if err := tr.Senders[i].c.Flush(); err != nil {
					// The sender's goroutine sees the broken connection too.
					continue
				}
			}
		}
	}
}

// ---- receivers ---------------------------------------------------------------

func (r *Receiver) run() {
	defer r.tr.wg.Done()
	var last uint64
	nsend := len(r.tr.Senders)
	for {
		_, kind, body, err := r.c.Next()
		if err != nil {
			if !r.tr.closing.Load() {
				r.err = err
			}
			return
		}
		switch kind {
		case fPush:
			now := time.Now().UnixNano()
			inPhase := r.tr.Phase.In(now)
			var fresh, phase int64
			err := ScanPush(body, func(ev *PushEvent) {
				last = ev.UserSeq
				if !ev.Message {
					r.chk.ObserveOther(ev.UserSeq)
					return
				}
				sender, n, sent, ok := 0, uint64(0), int64(0), false
				if ev.Type == int32(pimv1.MessageType_MESSAGE_TYPE_TEXT) {
					sender, n, sent, ok = ParseBody(ev.Body)
					ok = ok && sender < nsend
				}
				if r.chk.Observe(ev.UserSeq, ev.Conv, ev.Seq, ok, sender, n) {
					fresh++
					if r.tr.Phase.In(sent) {
						r.hist.RecordMicros(uint64(max(now-sent, 0) / 1000))
					}
					if inPhase {
						phase++
					}
				}
			})
			if err != nil {
				r.err = frameErr("push", err)
				return
			}
			r.tr.delivered.Add(fresh)
			r.phaseDeliveries.Add(phase)
		case fGoAway:
			if !r.tr.closing.Load() {
				r.err = errors.New("the server sent GoAway")
			}
			return
		case fError:
			if f, err := DecodeBody(kind, body); err == nil && f.GetError().GetFatal() {
				r.err = fmt.Errorf("fatal error from the server: %s", f.GetError().GetMessage())
				return
			}
		}
		if kind == fPush {
			if seq := r.ack.seen(last, time.Now().UnixNano(), r.tr.cfg.Ack); seq > 0 {
				if err := r.c.Send(func(b []byte) []byte { return AppendPushAckFrame(b, seq) }); err != nil {
					if !r.tr.closing.Load() {
						r.err = err
					}
					return
				}
			}
		}
	}
}
