// The Client: Connect, the app's calls, and Close.
//
// Invariants of this file:
//   - The core is touched only by the loop goroutine (loop.go). App calls
//     become inputs the loop applies; a call that changes durable state
//     (Send, offline commands: group operations, MarkRead, Hide,
//     SetReadReceipts; RetryFailed, Discard) returns only after the loop
//     committed the Ready that follows it, so a nil error means the change
//     is on disk and survives an app crash.
//   - Every goroutine the Client starts is owned: the loop (loopDone), and
//     in wg the event pump, the dialer/reader and the writer of each
//     connection, and LBS look-ups. Close cancels the Client's context and
//     returns after all of them have ended and the store is closed.
//   - Queries that need no core state (Messages, Timeline, Conversations,
//     ServerNow, ConnState) never wait for the loop: they read the store or
//     the snapshot the loop publishes after each batch. Online requests
//     (History, Members, Receipts, ReadReceipts) go through the loop and
//     wait for a connection within their context.

package pim

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("pim: client closed")

// Client is a connected SDK instance for one (user, device). Its methods
// are safe for concurrent use.
type Client struct {
	opts  Options
	st    *store
	hc    *http.Client // LBS
	ownHC bool

	ctx      context.Context // cancelled by Close or a fatal error
	cancel   context.CancelFunc
	inputs   chan input
	loopDone chan struct{}
	wg       sync.WaitGroup

	evq    *eventQueue
	events chan Event
	snap   atomic.Pointer[snapshot]

	errMu sync.Mutex
	err   error

	closeOnce sync.Once
	closeErr  error

	lp *loop
}

// snapshot is what the loop publishes for lock-free queries.
type snapshot struct {
	conn      ConnState
	offset    time.Duration
	bound     time.Duration
	clockOK   bool
	delivered uint64
	list      core.ListStatus
}

// Connect opens the local store in opts.DataDir, resumes the outbox,
// commands and cursor stored there, and starts connecting in the
// background: it returns at once (an app works offline), and the
// connection's progress arrives as ConnStateEvents. ctx bounds only the
// first LBS look-up, when there is no cached answer; if that look-up fails
// and there is nothing to fall back on (Options.Servers), Connect fails,
// with an *LBSError when the LBS answered (its RetryAfter says when to try
// again).
func Connect(ctx context.Context, opts Options) (*Client, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	st, err := openStore(opts.DataDir, opts.User, opts.DeviceID)
	if err != nil {
		return nil, err
	}
	cl, err := start(ctx, opts, st)
	if err != nil {
		st.close()
		return nil, err
	}
	return cl, nil
}

func start(ctx context.Context, opts Options, st *store) (*Client, error) {
	state, err := st.load()
	if err != nil {
		return nil, err
	}
	cl := &Client{opts: opts, st: st, inputs: make(chan input, maxBatch), loopDone: make(chan struct{}),
		evq: newEventQueue(), events: make(chan Event)}
	if err := cl.setupHTTP(); err != nil {
		return nil, err
	}
	l := &loop{cl: cl, conns: make(map[core.ConnID]*conn), outgoing: make(map[string]*Outgoing),
		commands: make(map[uint64]*Command), calls: make(map[uint64]*call), token: opts.Token}
	servers := opts.Servers
	var lbsHold time.Duration // the first answer's retry_after
	if opts.LBSURL != "" {
		cache, ok, err := st.loadLBS()
		if err != nil {
			return nil, err
		}
		switch {
		case ok && len(cache.Servers) > 0:
			servers = cache.Servers
			l.lbsFetched, l.lbsTTL = cache.Fetched, time.Duration(cache.TTL)*time.Millisecond
		default:
			a, err := ResolveLBS(ctx, cl.hc, opts.LBSURL, opts.Token)
			if err != nil && len(servers) == 0 {
				return nil, err
			}
			if err != nil {
				l.lbsFailed(time.Now(), err)
			} else if s := cl.lbsServers(a); len(s) > 0 {
				servers = s
				l.lbsFetched, l.lbsTTL = time.Now(), a.TTL
				lbsHold = a.RetryAfter
				if err := st.saveLBS(lbsCache{Servers: s, Fetched: l.lbsFetched, TTL: a.TTL.Milliseconds()}); err != nil {
					return nil, err
				}
			}
		}
	}
	cfg := opts.coreConfig(servers)
	// A fresh seed at every start: a replayed sequence would repeat
	// client_msg_ids the server already deduplicates against.
	var seed [16]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("pim: seed: %w", err)
	}
	cfg.Rand = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	c, err := core.New(cfg, state)
	if err != nil {
		return nil, fmt.Errorf("pim: %w", err)
	}
	l.c = c
	if lbsHold > 0 {
		c.RetryAfter(time.Now(), lbsHold) // the first dial waits as the LBS asked
	}
	for _, e := range c.Outbox() { // in the states the core resumed them in
		o := newOutgoing(e.ClientMsgID, e.Conv, e.State, cl.loopDone)
		if e.State == Failed {
			o.err = ErrRetryBudget
			if e.Rejected() {
				o.err = &ServerError{Code: e.FailCode, Message: e.FailMsg}
			}
		}
		o.attempts = e.Attempts
		l.outgoing[e.ClientMsgID] = o
	}
	cl.lp = l
	cl.ctx, cl.cancel = context.WithCancel(context.Background())
	cl.publish(l)
	cl.wg.Add(1)
	go func() {
		defer cl.wg.Done()
		cl.evq.pump(cl.events, cl.ctx.Done())
	}()
	go l.run()
	return cl, nil
}

func (cl *Client) setupHTTP() error {
	if cl.opts.HTTPClient != nil {
		cl.hc = cl.opts.HTTPClient
		return nil
	}
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment}
	if u, err := url.Parse(cl.opts.LBSURL); err == nil && u.Scheme == "https" && cl.opts.TLS.enabled() {
		cfg, err := cl.opts.TLS.forHost(u.Hostname())
		if err != nil {
			return err
		}
		tr.TLSClientConfig = cfg
	}
	cl.hc, cl.ownHC = &http.Client{Transport: tr, Timeout: 15 * time.Second}, true
	return nil
}

// lbsServers turns an LBS answer into canonical server addresses.
func (cl *Client) lbsServers(a *LBSAnswer) []string {
	var out []string
	for _, s := range a.Servers(cl.opts.WebSocket) {
		if ep, err := cl.opts.endpoint(s); err == nil {
			out = append(out, ep.String())
		}
	}
	return out
}

func (cl *Client) publish(l *loop) {
	off, bound, ok := l.c.Offset()
	cl.snap.Store(&snapshot{conn: l.c.ConnState(), offset: off, bound: bound, clockOK: ok, delivered: l.c.Delivered(),
		list: l.c.ListStatus()})
}

// setErr records the terminal error (the first one wins).
func (cl *Client) setErr(err error) {
	cl.errMu.Lock()
	defer cl.errMu.Unlock()
	if cl.err == nil {
		cl.err = err
	}
}

// Err is why the Client stopped: nil while it runs, ErrClosed after Close,
// or the local store's failure that stopped it.
func (cl *Client) Err() error {
	cl.errMu.Lock()
	defer cl.errMu.Unlock()
	return cl.err
}

func (cl *Client) errOrClosed() error {
	if err := cl.Err(); err != nil {
		return err
	}
	return ErrClosed
}

// Done returns a channel closed when the Client has stopped (Close, or a
// local store failure: see Err).
func (cl *Client) Done() <-chan struct{} { return cl.loopDone }

// Close stops the Client: connections are closed, every goroutine ends,
// the store is closed. What was queued stays in the store for the next
// Connect. Safe to call more than once.
func (cl *Client) Close() error {
	cl.closeOnce.Do(func() {
		cl.setErr(ErrClosed)
		cl.cancel()
		<-cl.loopDone
		cl.wg.Wait()
		if cl.ownHC {
			cl.hc.CloseIdleConnections()
		}
		cl.closeErr = cl.st.close()
	})
	return cl.closeErr
}

// do runs apply in the loop and waits until the Ready that follows it is
// committed. It fails without effect if ctx ends before the loop took the
// call; once taken, the call is carried out and its outcome returned.
func (cl *Client) do(ctx context.Context, apply func(l *loop, now time.Time) error) error {
	reply := make(chan error, 1)
	var applyErr error
	in := input{
		apply: func(l *loop, now time.Time) { applyErr = apply(l, now) },
		done: func(err error) {
			if err == nil {
				err = applyErr
			}
			reply <- err
		},
	}
	select {
	case cl.inputs <- in:
	case <-ctx.Done():
		return ctx.Err()
	case <-cl.loopDone:
		return cl.errOrClosed()
	}
	select {
	case err := <-reply:
		return err
	case <-cl.loopDone:
		select {
		case err := <-reply:
			return err
		default:
			return cl.errOrClosed()
		}
	}
}

// User is the Client's user.
func (cl *Client) User() string { return cl.opts.User }

// DeviceID is the Client's device.
func (cl *Client) DeviceID() string { return cl.opts.DeviceID }

// Events returns the single stream of events: the timeline (messages,
// reads, hidden messages, receipts: each exactly once, in user-seq order,
// gap-free), send states, connection states, caught-up marks, group
// changes, command results and conversation-list changes, in the order
// they happened. Read it continuously; it is closed after Close.
//
// A timeline event is in the local store before it is sent here, so an
// app that crashes after the store committed but before it handled the
// event finds it with Timeline (keep the last UserSeq you handled).
func (cl *Client) Events() <-chan Event { return cl.events }

// Send queues a text message to conv. It returns once the message is
// durably in the outbox; delivery proceeds in the background (the handle
// and SendStateEvents follow it).
func (cl *Client) Send(ctx context.Context, conv, text string) (*Outgoing, error) {
	return cl.send(ctx, conv, "", "", pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte(text))
}

// SendBinary queues a binary message (opaque bytes) to conv.
func (cl *Client) SendBinary(ctx context.Context, conv string, body []byte) (*Outgoing, error) {
	return cl.send(ctx, conv, "", "", pimv1.MessageType_MESSAGE_TYPE_BINARY, body)
}

// SendTo queues a text message to the 1:1 conversation with user.
func (cl *Client) SendTo(ctx context.Context, user, text string) (*Outgoing, error) {
	return cl.send(ctx, "", user, "", pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte(text))
}

// SendWithID queues a text message to conv (for a 1:1 conversation,
// DirectConv(cl.User(), peer)) under a client_msg_id the caller chose (1-64
// bytes of UTF-8) instead of a random one: a script that keeps the id can
// run again without storing the message twice. The server stores one
// message per (user, device, client_msg_id) and answers a repeat with the
// first one's ack (SendAck.Duplicate). If the id is already in the outbox,
// nothing new is queued and that message's handle is returned, provided it
// is the same message (conv and text); otherwise it is an error.
//
// Reusing an id for a different message means that message is never
// stored: ids from Send are random and never repeat, the caller's are the
// caller's to keep unique.
func (cl *Client) SendWithID(ctx context.Context, conv, clientMsgID, text string) (*Outgoing, error) {
	if clientMsgID == "" {
		return nil, errors.New("pim: send: empty client_msg_id (use Send for a random one)")
	}
	return cl.send(ctx, conv, "", clientMsgID, pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte(text))
}

// send queues a message to conv or, with to, to the 1:1 conversation with
// to; id is the caller's client_msg_id, or "" for a random one.
func (cl *Client) send(ctx context.Context, conv, to, id string, typ pimv1.MessageType, body []byte) (*Outgoing, error) {
	var o *Outgoing
	err := cl.do(ctx, func(l *loop, now time.Time) error {
		var err error
		switch {
		case id != "":
			id, err = l.c.SendWithID(now, conv, id, typ, body)
		case to != "":
			conv = core.DirectConv(cl.opts.User, to)
			id, err = l.c.SendTo(now, to, typ, body)
		default:
			id, err = l.c.Send(now, conv, typ, body)
		}
		if err != nil {
			return fmt.Errorf("pim: send: %w", err)
		}
		if o = l.outgoing[id]; o == nil { // SendWithID of a message in the outbox: its handle
			o = newOutgoing(id, conv, Queued, cl.loopDone)
			l.outgoing[id] = o
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Pending returns handles for the messages in the outbox (not yet Sent),
// in the order they were sent: after a restart, these are the messages
// the previous run left.
func (cl *Client) Pending(ctx context.Context) ([]*Outgoing, error) {
	var out []*Outgoing
	err := cl.do(ctx, func(l *loop, now time.Time) error {
		for _, e := range l.c.Outbox() {
			if o := l.outgoing[e.ClientMsgID]; o != nil {
				out = append(out, o)
			}
		}
		return nil
	})
	return out, err
}

// RetryFailed gives a Failed message a fresh retry budget; it is sent
// again with the same client_msg_id, so the server still deduplicates it.
func (cl *Client) RetryFailed(ctx context.Context, clientMsgID string) error {
	return cl.do(ctx, func(l *loop, now time.Time) error {
		if err := l.c.RetryFailed(now, clientMsgID); err != nil {
			return fmt.Errorf("pim: retry: %w", err)
		}
		return nil
	})
}

// Discard drops a Failed message from the outbox (the later messages of
// its conversation, which waited behind it, then go ahead).
func (cl *Client) Discard(ctx context.Context, clientMsgID string) error {
	return cl.do(ctx, func(l *loop, now time.Time) error {
		if err := l.c.Discard(now, clientMsgID); err != nil {
			return fmt.Errorf("pim: discard: %w", err)
		}
		if o := l.outgoing[clientMsgID]; o != nil {
			delete(l.outgoing, clientMsgID)
		}
		return nil
	})
}

// groupID accepts "g:<id>" or "<id>".
func groupID(g string) string {
	if strings.HasPrefix(g, "g:") {
		return g
	}
	return "g:" + g
}

// CreateGroup creates a group with members (the caller is its owner),
// offline-capable: the command is stored and sent when connected. group
// names it ("" picks a random id); Command.Group is the id at once, so
// messages can be queued to it before the server answers (they wait for
// the command).
func (cl *Client) CreateGroup(ctx context.Context, group string, members ...string) (*Command, error) {
	return cl.groupCommand(ctx, pimv1.GroupOp_GROUP_OP_CREATE, group, members)
}

// AddMembers adds users to a group (offline-capable).
func (cl *Client) AddMembers(ctx context.Context, group string, users ...string) (*Command, error) {
	return cl.groupCommand(ctx, pimv1.GroupOp_GROUP_OP_ADD, group, users)
}

// RemoveMembers removes users from a group (the owner removes anyone, a
// member only themselves; offline-capable).
func (cl *Client) RemoveMembers(ctx context.Context, group string, users ...string) (*Command, error) {
	return cl.groupCommand(ctx, pimv1.GroupOp_GROUP_OP_REMOVE, group, users)
}

// Leave leaves a group (offline-capable).
func (cl *Client) Leave(ctx context.Context, group string) (*Command, error) {
	return cl.groupCommand(ctx, pimv1.GroupOp_GROUP_OP_REMOVE, group, []string{cl.opts.User})
}

// MarkRead marks conv read up to seq (offline-capable: stored and replayed
// in order after reconnecting). The server only ever moves a read position
// forward, so a replay is harmless; the user's other devices receive a
// ReadEvent, as does the peer of a 1:1 conversation (a read receipt).
func (cl *Client) MarkRead(ctx context.Context, conv string, seq uint64) (*Command, error) {
	if !core.ValidConv(conv) || seq == 0 {
		return nil, fmt.Errorf("pim: mark read: want a conversation id and a positive seq, got %q, %d", conv, seq)
	}
	return cl.command(ctx, conv, &pimv1.Frame{Body: &pimv1.Frame_ReadReq{ReadReq: &pimv1.ReadReq{Conv: conv, Seq: seq}}})
}

// Hide deletes conv/seq for this user only ("delete for me"),
// offline-capable: stored, replayed in order after reconnecting, applied
// once (the server ignores a repeat). Every device of the user then gets a
// HiddenEvent, removes the message from Messages and, if it was unread,
// from the unread count; History no longer returns it.
func (cl *Client) Hide(ctx context.Context, conv string, seq uint64) (*Command, error) {
	if !core.ValidConv(conv) || seq == 0 {
		return nil, fmt.Errorf("pim: hide: want a conversation id and a positive seq, got %q, %d", conv, seq)
	}
	return cl.command(ctx, conv, &pimv1.Frame{Body: &pimv1.Frame_HideReq{HideReq: &pimv1.HideReq{Conv: conv, Seq: seq}}})
}

// SetReadReceipts turns the user's read receipts on or off, for all their
// devices (offline-capable like Hide). Off means neither sending nor
// seeing them: 1:1 peers are not told of this user's reads, and this user
// gets no peer read positions and no group read counts.
func (cl *Client) SetReadReceipts(ctx context.Context, on bool) (*Command, error) {
	return cl.command(ctx, "", &pimv1.Frame{Body: &pimv1.Frame_SettingsReq{SettingsReq: &pimv1.SettingsReq{ReadReceipts: &on}}})
}

// ReadReceipts asks the server whether the user's read receipts are on
// (online: it waits for the connection within ctx).
func (cl *Client) ReadReceipts(ctx context.Context) (bool, error) {
	f, err := cl.call(ctx, &pimv1.Frame{Body: &pimv1.Frame_SettingsReq{SettingsReq: &pimv1.SettingsReq{}}})
	if err != nil {
		return false, fmt.Errorf("pim: read settings: %w", err)
	}
	r := f.GetSettingsResp()
	if r == nil {
		return false, fmt.Errorf("pim: read settings: unexpected answer %T", f.GetBody())
	}
	return r.GetReadReceipts(), nil
}

// MessageReceipts is who read one of the user's messages.
type MessageReceipts struct {
	Conv string
	Seq  uint64
	// ReadCount is the number of users (the sender excepted) who read it.
	ReadCount int
	// Readers names them, sorted by user id.
	Readers []string
}

// Receipts asks the server who read conv/seq, one of this user's own
// messages (online; FORBIDDEN for another user's message or with read
// receipts off). It reads every page of readers; ReceiptsPage reads one.
func (cl *Client) Receipts(ctx context.Context, conv string, seq uint64) (*MessageReceipts, error) {
	out := &MessageReceipts{Conv: conv, Seq: seq, Readers: []string{}}
	after := ""
	for {
		p, err := cl.ReceiptsPage(ctx, conv, seq, after, 1000)
		if err != nil {
			return nil, err
		}
		out.ReadCount = int(p.GetReadCount())
		out.Readers = append(out.Readers, p.GetReaders()...)
		if !p.GetHasMore() || len(p.GetReaders()) == 0 {
			return out, nil
		}
		after = p.GetReaders()[len(p.GetReaders())-1]
	}
}

// ReceiptsPage asks for one page of the readers of conv/seq: up to limit
// (0: the server's default) after the user afterUser ("": from the first).
func (cl *Client) ReceiptsPage(ctx context.Context, conv string, seq uint64, afterUser string, limit int) (*pimv1.ReceiptsResp, error) {
	f, err := cl.call(ctx, &pimv1.Frame{Body: &pimv1.Frame_ReceiptsReq{ReceiptsReq: &pimv1.ReceiptsReq{
		Conv: conv, Seq: seq, AfterUser: afterUser, Limit: uint32(max(limit, 0)),
	}}})
	if err != nil {
		return nil, fmt.Errorf("pim: receipts of %s/%d: %w", conv, seq, err)
	}
	r := f.GetReceiptsResp()
	if r == nil {
		return nil, fmt.Errorf("pim: receipts of %s/%d: unexpected answer %T", conv, seq, f.GetBody())
	}
	return r, nil
}

// command queues an offline command about conv and returns its handle.
func (cl *Client) command(ctx context.Context, conv string, f *pimv1.Frame) (*Command, error) {
	var cmd *Command
	err := cl.do(ctx, func(l *loop, now time.Time) error {
		id, err := l.c.Command(now, f)
		if err != nil {
			return fmt.Errorf("pim: command in %s: %w", conv, err)
		}
		cmd = newCommand(id, conv, cl.loopDone)
		l.commands[id] = cmd
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cmd, nil
}

func (cl *Client) groupCommand(ctx context.Context, op pimv1.GroupOp, group string, users []string) (*Command, error) {
	if group == "" && op != pimv1.GroupOp_GROUP_OP_CREATE {
		return nil, errors.New("pim: group id required")
	}
	var cmd *Command
	err := cl.do(ctx, func(l *loop, now time.Time) error {
		g := group
		if g == "" {
			g = "g:" + l.c.NewID()
		}
		g = groupID(g)
		req := &pimv1.GroupReq{Op: op, Group: g, Users: append([]string(nil), users...)}
		id, err := l.c.Command(now, &pimv1.Frame{Body: &pimv1.Frame_GroupReq{GroupReq: req}})
		if err != nil {
			return fmt.Errorf("pim: %v %s: %w", op, g, err)
		}
		cmd = newCommand(id, g, cl.loopDone)
		l.commands[id] = cmd
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cmd, nil
}

// HistoryPage is one page of a conversation's history.
type HistoryPage struct {
	// Messages ascending by seq.
	Messages []*Message
	// HasMore: older messages visible to the caller exist.
	HasMore bool
}

// History reads conv backwards from the server: up to limit messages
// before beforeSeq (0: the newest). It needs the connection: it waits for
// it (within ctx) and is re-sent if the connection drops meanwhile.
func (cl *Client) History(ctx context.Context, conv string, beforeSeq uint64, limit int) (*HistoryPage, error) {
	f, err := cl.call(ctx, &pimv1.Frame{Body: &pimv1.Frame_HistoryReq{HistoryReq: &pimv1.HistoryReq{
		Conv: conv, BeforeSeq: beforeSeq, Limit: uint32(max(limit, 0)),
	}}})
	if err != nil {
		return nil, fmt.Errorf("pim: history of %s: %w", conv, err)
	}
	h := f.GetHistoryResp()
	if h == nil {
		return nil, fmt.Errorf("pim: history of %s: unexpected answer %T", conv, f.GetBody())
	}
	return &HistoryPage{Messages: h.GetMessages(), HasMore: h.GetHasMore()}, nil
}

// Members lists a group's members from the server (online, like History).
func (cl *Client) Members(ctx context.Context, group string) ([]*pimv1.Member, error) {
	g := groupID(group)
	f, err := cl.call(ctx, &pimv1.Frame{Body: &pimv1.Frame_GroupReq{GroupReq: &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_MEMBERS, Group: g,
	}}})
	if err != nil {
		return nil, fmt.Errorf("pim: members of %s: %w", g, err)
	}
	r := f.GetGroupResp()
	if r == nil {
		return nil, fmt.Errorf("pim: members of %s: unexpected answer %T", g, f.GetBody())
	}
	return r.GetMembers(), nil
}

// call sends a read-only request through the loop and waits for its
// answer.
func (cl *Client) call(ctx context.Context, f *pimv1.Frame) (*pimv1.Frame, error) {
	ch := make(chan callResult, 1)
	var id uint64
	if err := cl.do(ctx, func(l *loop, now time.Time) error {
		id = l.startCall(f, ch)
		return nil
	}); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r.f, r.err
	case <-ctx.Done():
		_ = cl.do(context.Background(), func(l *loop, now time.Time) error {
			delete(l.calls, id)
			return nil
		})
		return nil, ctx.Err()
	case <-cl.loopDone:
		return nil, cl.errOrClosed()
	}
}

// NetworkChanged tells the SDK the device moved to another network
// (network names it, e.g. a Wi-Fi SSID or "cellular"): a live connection
// is probed at once, a waiting reconnect happens at once, and heartbeats
// use what was learned on that network.
func (cl *Client) NetworkChanged(network string) {
	_ = cl.do(context.Background(), func(l *loop, now time.Time) error {
		l.c.NetworkChanged(now, network)
		return nil
	})
}

// SetForeground tells the SDK whether the app is in the foreground
// (foreground: the shortest heartbeat, and an immediate reconnect).
func (cl *Client) SetForeground(fg bool) {
	_ = cl.do(context.Background(), func(l *loop, now time.Time) error {
		l.c.SetForeground(now, fg)
		return nil
	})
}

// SetToken replaces the token (e.g. after ConnStateEvent{State: Stopped}
// for an expired token); a stopped client resumes connecting.
func (cl *Client) SetToken(token string) {
	_ = cl.do(context.Background(), func(l *loop, now time.Time) error {
		l.token = token
		l.c.SetToken(now, token)
		return nil
	})
}

// ConnState is the connection's state (as of the last event).
func (cl *Client) ConnState() ConnState { return cl.snap.Load().conn }

// Delivered is the user seq of the last timeline event delivered to the
// app.
func (cl *Client) Delivered() uint64 { return cl.snap.Load().delivered }

// ServerNow is the local clock corrected by the estimated offset to the
// server's clock (the local clock until the first round trip).
func (cl *Client) ServerNow() time.Time { return time.Now().Add(cl.snap.Load().offset) }

// ClockOffset is the estimated server-minus-local clock offset and its
// error bound (half the best round trip); ok is false before the first
// measurement.
func (cl *Client) ClockOffset() (offset, errorBound time.Duration, ok bool) {
	s := cl.snap.Load()
	return s.offset, s.bound, s.clockOK
}

// Timeline returns up to limit entries of the local timeline after
// afterUserSeq, in order and gap-free: every event delivered (messages,
// and reads, hidden messages and receipts as Event), from the local store.
func (cl *Client) Timeline(afterUserSeq uint64, limit int) ([]TimelineEntry, error) {
	return cl.st.timeline(afterUserSeq, limit)
}

// Messages returns up to limit locally stored messages of conv before
// beforeSeq (0: the newest), ascending. Messages the user hid are not
// returned.
func (cl *Client) Messages(conv string, beforeSeq uint64, limit int) ([]*Message, error) {
	return cl.st.messages(conv, beforeSeq, limit)
}

// Conversations returns the local conversation list, most recent activity
// first, from the store (it works offline). The SDK loads it from the
// server once, syncs what changed (by version) at every connection, and
// keeps it current from the timeline: unread counts, read positions and
// peer positions equal the server's once the device is caught up (an entry
// it cannot derive exactly is Stale until it is fetched again).
// ConversationEvents report each change.
func (cl *Client) Conversations() ([]Conversation, error) {
	return cl.st.conversations()
}

// Conversation returns one entry of the local conversation list (ok false
// if the list has none for conv).
func (cl *Client) Conversation(conv string) (c Conversation, ok bool, err error) {
	return cl.st.conversation(conv)
}

// ConvListStatus is the conversation list's synchronisation state (as of
// the last event).
func (cl *Client) ConvListStatus() ListStatus { return cl.snap.Load().list }
