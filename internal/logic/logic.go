// Package logic is PIM's IM business layer (the article's "IM business"
// service): the send pipeline, timeline sync, history and groups. It holds no
// connection state and does no I/O of its own beyond the Store and the Bus, so
// any number of gateways (or an HTTP handler) can call it concurrently.
//
// The send pipeline keeps these invariants (DESIGN.md section 4):
//   - Authenticated user and device come from the caller (the session), never
//     from the request, so a sender cannot be forged.
//   - A request is validated and authorized before anything is written.
//   - Sequencing, dedup and every recipient's timeline entry are written by the
//     Store in one atomic durable write; the ack is returned only after it.
//   - Events are published to the Bus only after that write, so a push never
//     shows something that a crash could take back.
package logic

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pim-project/pim/internal/bus"
	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Defaults for Config's zero values.
const (
	DefaultMaxBody      = 64 << 10
	DefaultMaxGroupSize = 1000
	DefaultSyncPage     = 256
	MaxSyncPage         = 1000
	DefaultHistoryPage  = 50
	MaxHistoryPage      = 500
	MaxClientMsgID      = 64
)

// Config configures a Service.
type Config struct {
	Store store.Store
	// Bus receives the events of each write after it returns. Leave it nil
	// when the store announces them itself in commit order (the Pebble
	// store's OnCommit, which the server uses): publishing from each
	// caller's goroutine can reorder a user's events, which makes sessions
	// fall back to reading the store.
	Bus          bus.Bus
	MaxBody      int // largest message body in bytes
	MaxGroupSize int // largest group (members), write diffusion limit
	Now          func() time.Time
	Logger       *slog.Logger
	// Registerer receives the service's metrics (nil: not registered).
	Registerer prometheus.Registerer
	// NoDeliveredReceipts turns acks into nothing more than cursor moves
	// (benchmarks of what read state costs only).
	NoDeliveredReceipts bool
}

// Service is the IM business logic. It is safe for concurrent use.
type Service struct {
	st      store.Store
	bus     bus.Bus
	maxBody int
	maxGrp  int
	now     func() time.Time
	log     *slog.Logger
	ids     *idGen
	m       metrics
	noDlv   bool

	// Group read receipts (receipts.go): rc is non-nil while RunReceipts
	// runs; rwake wakes it.
	rmu   sync.Mutex
	rc    *coalescer
	rwake chan struct{}

	// Delivered receipts (delivered.go): dpending is non-nil while
	// RunDelivered runs; dwake wakes it.
	dmu      sync.Mutex
	dpending map[string]uint64
	dwake    chan struct{}
}

// New returns a Service over cfg.Store and cfg.Bus.
func New(cfg Config) *Service {
	s := &Service{
		st: cfg.Store, bus: cfg.Bus, maxBody: cfg.MaxBody, maxGrp: cfg.MaxGroupSize,
		now: cfg.Now, log: cfg.Logger, ids: newIDGen(), rwake: make(chan struct{}, 1), dwake: make(chan struct{}, 1),
		noDlv: cfg.NoDeliveredReceipts,
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	if s.maxGrp <= 0 {
		s.maxGrp = DefaultMaxGroupSize
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.m = newMetrics(cfg.Registerer)
	return s
}

// Epoch is the data set's epoch.
func (s *Service) Epoch() string { return s.st.Epoch() }

// MaxGroupSize is the configured write-diffusion limit.
func (s *Service) MaxGroupSize() int { return s.maxGrp }

// Send validates, authorizes, sequences and durably stores one message from
// (user, device), publishes it to every recipient, and returns its ack. A
// resend with the same client_msg_id returns the original ack.
func (s *Service) Send(ctx context.Context, user, device string, req *pimv1.SendReq) (*pimv1.SendAck, error) {
	p, err := s.SendAsync(ctx, user, device, req, nil)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// SendAsync is Send for a pipeline: it validates and authorizes the send
// (those errors are returned at once, nothing handed to the store) and
// hands it to the store without waiting for its commit (store.SendAsync).
// after is nil or the pending send that the caller handed over before this
// one (from this Service): the store keeps their order, and stores this one
// only if after was stored or refused (store contract 10). The returned
// pending's Wait gives the ack (or the error) as Send would, after the
// commit; the events are published once, when it is answered.
func (s *Service) SendAsync(ctx context.Context, user, device string, req *pimv1.SendReq, after store.Future[*pimv1.SendAck]) (store.Future[*pimv1.SendAck], error) {
	start := s.now()
	conv, err := s.sendTarget(user, req)
	if err != nil {
		return nil, err
	}
	if err := s.validateSend(req); err != nil {
		return nil, err
	}
	var prev store.Pending
	if a, ok := after.(*pendingSend); ok {
		prev = a.p
	}
	p := s.st.SendAsync(ctx, store.SendRequest{
		Conv: conv, Sender: user, Device: device, ClientMsgID: req.ClientMsgId,
		MsgID: s.ids.next(start), Type: req.Type, Body: req.Body,
		ClientTime: req.ClientTime, ServerTime: start.UnixMilli(), ClientSeq: req.ClientSeq,
	}, prev)
	return &pendingSend{s: s, p: p, cmid: req.ClientMsgId, start: start}, nil
}

// pendingSend is a send handed to the store, waiting for its commit.
type pendingSend struct {
	s     *Service
	p     store.Pending
	cmid  string
	start time.Time

	mu       sync.Mutex
	answered bool // the store answered; ack, err are final and published
	ack      *pimv1.SendAck
	err      error
}

// Wait returns the send's ack once its commit is durable, or its error.
func (p *pendingSend) Wait(ctx context.Context) (*pimv1.SendAck, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.answered {
		return p.ack, p.err
	}
	res, err := p.p.Wait(ctx)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// Our wait ended, not (necessarily) the send: ask again later.
		return nil, storeErr(err, "send")
	}
	p.answered = true
	if err != nil {
		p.err = storeErr(err, "send")
		return nil, p.err
	}
	s := p.s
	s.publish(res)
	m := res.Message
	s.m.sent.Inc()
	if res.Duplicate {
		s.m.dups.Inc()
	}
	s.m.sendSeconds.Observe(s.now().Sub(p.start).Seconds())
	p.ack = &pimv1.SendAck{
		ClientMsgId: p.cmid, Conv: m.Conv, Seq: m.Seq, MsgId: m.MsgId,
		ServerTime: m.ServerTime, Duplicate: res.Duplicate,
	}
	return p.ack, nil
}

// sendTarget returns the conversation a SendReq goes to, checking that user may
// address it (direct conversations are checked here; groups by the store,
// atomically with sequencing).
func (s *Service) sendTarget(user string, req *pimv1.SendReq) (string, error) {
	switch {
	case req.Conv != "" && req.ToUser != "":
		return "", errcode.New(badRequest, "set one of conv and to_user, not both")
	case req.ToUser != "":
		if !store.ValidID(req.ToUser) {
			return "", errcode.New(badRequest, "invalid to_user %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", req.ToUser)
		}
		return store.DirectConv(user, req.ToUser), nil
	case req.Conv != "":
		if err := store.ValidateConv(req.Conv); err != nil {
			return "", errcode.New(badRequest, "%v", err)
		}
		if a, b, ok := store.ParseDirect(req.Conv); ok && a != user && b != user {
			return "", errcode.New(forbidden, "not a member of %s", req.Conv)
		}
		return req.Conv, nil
	}
	return "", errcode.New(badRequest, "missing conv or to_user")
}

func (s *Service) validateSend(req *pimv1.SendReq) error {
	if n := len(req.ClientMsgId); n == 0 || n > MaxClientMsgID {
		return errcode.New(badRequest, "client_msg_id must be 1-%d bytes, got %d", MaxClientMsgID, n)
	}
	if !utf8.ValidString(req.ClientMsgId) {
		return errcode.New(badRequest, "client_msg_id must be UTF-8")
	}
	if len(req.Body) == 0 {
		return errcode.New(badRequest, "empty message body")
	}
	if len(req.Body) > s.maxBody {
		return errcode.New(pimv1.ErrorCode_ERROR_CODE_TOO_LARGE, "body is %d bytes, limit %d", len(req.Body), s.maxBody)
	}
	switch req.Type {
	case pimv1.MessageType_MESSAGE_TYPE_TEXT:
		if !utf8.Valid(req.Body) {
			return errcode.New(badRequest, "text body is not valid UTF-8 (send binary instead)")
		}
	case pimv1.MessageType_MESSAGE_TYPE_BINARY:
	default:
		return errcode.New(badRequest, "message type %v cannot be sent by clients", req.Type)
	}
	return nil
}

func (s *Service) publish(res store.Result) {
	if s.bus == nil {
		return
	}
	for _, d := range res.Deliveries {
		s.bus.Publish(d.User, d.Event)
	}
}

// Session returns what a new connection of (user, device) needs to know: the
// device's acknowledged cursor and the user's head.
func (s *Service) Session(ctx context.Context, user, device string) (cursor, head uint64, err error) {
	if cursor, err = s.st.Cursor(ctx, user, device); err != nil {
		return 0, 0, storeErr(err, "read cursor")
	}
	if head, err = s.st.Head(ctx, user); err != nil {
		return 0, 0, storeErr(err, "read head")
	}
	return cursor, head, nil
}

// Ack advances (user, device)'s cursor to userSeq and returns the new cursor.
func (s *Service) Ack(ctx context.Context, user, device string, userSeq uint64) (uint64, error) {
	c, err := s.st.Ack(ctx, user, device, userSeq)
	if err != nil {
		return 0, storeErr(err, "ack")
	}
	if c > 0 && !s.noDlv && !s.noteAcked(user, c) {
		s.delivered(ctx, user, c)
	}
	return c, nil
}

// Timeline reads up to limit events of user after the given user seq.
func (s *Service) Timeline(ctx context.Context, user string, after uint64, limit int) ([]*pimv1.Event, uint64, error) {
	evs, head, err := s.st.Timeline(ctx, user, after, limit)
	if err != nil {
		return nil, 0, storeErr(err, "read timeline")
	}
	return evs, head, nil
}

// Sync answers a SyncReq: it acknowledges after_user_seq for the device (so
// asking for the next page acknowledges the previous one) and returns the
// next page.
func (s *Service) Sync(ctx context.Context, user, device string, req *pimv1.SyncReq) (*pimv1.SyncResp, error) {
	if req.AfterUserSeq > 0 {
		if _, err := s.Ack(ctx, user, device, req.AfterUserSeq); err != nil {
			return nil, err
		}
	}
	limit := clamp(int(req.Limit), DefaultSyncPage, MaxSyncPage)
	evs, head, err := s.Timeline(ctx, user, req.AfterUserSeq, limit)
	if err != nil {
		return nil, err
	}
	more := len(evs) > 0 && evs[len(evs)-1].UserSeq < head
	return &pimv1.SyncResp{Events: evs, HasMore: more, UserSeq: head}, nil
}

// History returns a page of conv older than before_seq, for members only,
// never before the point at which the caller joined.
func (s *Service) History(ctx context.Context, user string, req *pimv1.HistoryReq) (*pimv1.HistoryResp, error) {
	if err := store.ValidateConv(req.Conv); err != nil {
		return nil, errcode.New(badRequest, "%v", err)
	}
	mem, err := s.member(ctx, req.Conv, user)
	if err != nil {
		return nil, err
	}
	limit := clamp(int(req.Limit), DefaultHistoryPage, MaxHistoryPage)
	msgs, more, err := s.st.History(ctx, req.Conv, max(mem.JoinSeq, 1), req.BeforeSeq, limit)
	if err == nil {
		msgs, err = s.withoutHidden(ctx, user, req.Conv, msgs)
	}
	if err != nil {
		return nil, storeErr(err, "read history")
	}
	return &pimv1.HistoryResp{Messages: msgs, HasMore: more}, nil
}

// member returns user's membership of conv, or FORBIDDEN / NOT_FOUND.
func (s *Service) member(ctx context.Context, conv, user string) (store.Member, error) {
	mem, ok, err := s.st.Membership(ctx, conv, user)
	if err != nil {
		return store.Member{}, storeErr(err, "read membership")
	}
	if !ok {
		return store.Member{}, errcode.New(forbidden, "not a member of %s", conv)
	}
	return mem, nil
}

const (
	badRequest = pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST
	forbidden  = pimv1.ErrorCode_ERROR_CODE_FORBIDDEN
)

// storeErr maps store errors to protocol codes.
func storeErr(err error, op string) error {
	switch {
	case errors.Is(err, store.ErrNotMember):
		return errcode.Wrap(forbidden, err, "not a member of the conversation")
	case errors.Is(err, store.ErrNotFound):
		return errcode.Wrap(pimv1.ErrorCode_ERROR_CODE_NOT_FOUND, err, "no such conversation or message")
	case errors.Is(err, store.ErrExists):
		return errcode.Wrap(badRequest, err, "group already exists")
	case errors.Is(err, store.ErrGroupTooLarge):
		return errcode.Wrap(pimv1.ErrorCode_ERROR_CODE_GROUP_TOO_LARGE, err, "group would exceed the maximum size")
	case errors.Is(err, store.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		e := errcode.Wrap(pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, err, "server unavailable, retry")
		e.RetryAfter = 1000
		return e
	}
	var ce *errcode.Error
	if errors.As(err, &ce) {
		return err
	}
	e := errcode.Wrap(pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, fmt.Errorf("%s: %w", op, err), "storage failure, nothing was stored; retry")
	e.RetryAfter = 1000
	return e
}

func clamp(v, def, hi int) int {
	if v <= 0 {
		return def
	}
	return min(v, hi)
}

// Read marks req.Conv read up to req.Seq for user (the position only moves
// forward; a late or repeated read changes nothing) and tells the user's
// other devices, and the peer of a 1:1 conversation, through their timelines.
func (s *Service) Read(ctx context.Context, user, device string, req *pimv1.ReadReq) (*pimv1.ReadResp, error) {
	if err := store.ValidateConv(req.Conv); err != nil {
		return nil, errcode.New(badRequest, "%v", err)
	}
	var old uint64
	if store.IsGroup(req.Conv) {
		var err error
		if old, err = s.st.ReadPosition(ctx, user, req.Conv); err != nil {
			return nil, storeErr(err, "read position")
		}
	}
	pos, res, err := s.st.MarkRead(ctx, user, device, req.Conv, req.Seq)
	if err != nil {
		return nil, storeErr(err, "mark read")
	}
	s.publish(res)
	if store.IsGroup(req.Conv) && len(res.Deliveries) > 0 {
		s.noteReads(req.Conv, old, pos)
	}
	return &pimv1.ReadResp{Conv: req.Conv, ReadSeq: pos}, nil
}
