// The simulated server: a small, plain model of the protocol semantics of
// docs/protocol.md (one durable store, several gateways in front of it).
//
// Invariants of this file:
//   - store is the durable state: it survives gateway crashes and whole
//     server restarts; everything in a gateway or session is lost with it.
//     Every write to the store is "durable" the moment it happens, and acks
//     are only built after it, as in the real server.
//   - Conversation seqs and user seqs are gap-free by construction (append
//     only); a resend with the same (user, device, client_msg_id) returns the
//     original ack with duplicate set and stores nothing.
//   - A session answers its connection's requests one at a time in arrival
//     order; its Push stream is gap-free from push_from_user_seq+1 with at
//     most window events pushed and not acknowledged.
//   - The model also records what the checker needs (effective group
//     changes, refusals and whether they were legitimate, sender-order
//     violations); recording never changes behaviour.
//   - The read state (readstate.go) follows the real server: every change
//     to a conversation entry is made with the timeline event announcing
//     it, versioned by that event's user seq.

package sim

import (
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	pimstore "github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// ref is one timeline entry: the message conv/seq, or (ev set) an event
// about it (a read, a hidden message, a receipt; kind only).
type ref struct {
	conv string
	seq  uint64
	ev   *pimv1.Event
}

type dedupKey struct{ user, device, cmid string }

type member struct {
	joinSeq uint64
	owner   bool
}

// groupOp is an effective group change, for the offline-command check.
type groupOp struct {
	user, device string
	op           pimv1.GroupOp
	group        string
	users        []string
}

// store is the durable state of the server.
type store struct {
	epoch     string
	msgs      map[string][]*pimv1.Message
	timelines map[string][]ref
	dedup     map[dedupKey]ref
	cursors   map[[2]string]uint64
	groups    map[string]map[string]*member
	msgN      uint64
	clientSeq map[[3]string]uint64 // (user, device, conv) -> client_seq of the last message stored
	groupLog  []groupOp
	rs        readStore
}

func newStore(epoch string) *store {
	return &store{
		epoch:     epoch,
		msgs:      make(map[string][]*pimv1.Message),
		timelines: make(map[string][]ref),
		dedup:     make(map[dedupKey]ref),
		cursors:   make(map[[2]string]uint64),
		groups:    make(map[string]map[string]*member),
		clientSeq: make(map[[3]string]uint64),
		rs:        newReadStore(),
	}
}

func (st *store) head(user string) uint64 { return uint64(len(st.timelines[user])) }

func (st *store) event(user string, us uint64) *pimv1.Event {
	r := st.timelines[user][us-1]
	if r.ev != nil {
		ev := proto.Clone(r.ev).(*pimv1.Event)
		ev.UserSeq = us
		return ev
	}
	return &pimv1.Event{UserSeq: us, Kind: &pimv1.Event_Message{Message: st.msgs[r.conv][r.seq-1]}}
}

// appendEvent appends ev (kind only) about conv/seq to user's timeline and
// returns its user seq.
func (st *store) appendEvent(user, conv string, seq uint64, ev *pimv1.Event) uint64 {
	st.timelines[user] = append(st.timelines[user], ref{conv, seq, ev})
	return st.head(user)
}

// members returns conv's members, sorted; ok is false for an unknown group.
func (st *store) members(conv string) ([]string, bool) {
	if a, b, ok := parseDirect(conv); ok {
		if a == b {
			return []string{a}, true
		}
		return []string{a, b}, true
	}
	g, ok := st.groups[conv]
	if !ok {
		return nil, false
	}
	us := make([]string, 0, len(g))
	for u := range g {
		us = append(us, u)
	}
	slices.Sort(us)
	return us, true
}

func (st *store) isMember(conv, user string) bool {
	ms, _ := st.members(conv)
	return slices.Contains(ms, user)
}

// appendMsg sequences msg into its conversation and every recipient's
// timeline; it returns the recipients.
func (st *store) appendMsg(msg *pimv1.Message, recipients []string) []string {
	st.msgN++
	msg.MsgId = fmt.Sprintf("m%08d", st.msgN)
	msg.Seq = uint64(len(st.msgs[msg.Conv]) + 1)
	st.msgs[msg.Conv] = append(st.msgs[msg.Conv], msg)
	for _, u := range recipients {
		st.timelines[u] = append(st.timelines[u], ref{conv: msg.Conv, seq: msg.Seq})
		st.noteMessage(u, st.head(u), msg)
	}
	return recipients
}

// ack moves (user, device)'s cursor and returns the new cursor.
func (st *store) ack(user, device string, us uint64) uint64 {
	k := [2]string{user, device}
	st.cursors[k] = max(st.cursors[k], min(us, st.head(user)))
	return st.cursors[k]
}

func parseDirect(conv string) (a, b string, ok bool) {
	if len(conv) < 2 || conv[:2] != "d:" {
		return "", "", false
	}
	rest := conv[2:]
	for i := 0; i < len(rest); i++ {
		if rest[i] == ':' {
			a, b = rest[:i], rest[i+1:]
			return a, b, a != "" && b != "" && a <= b
		}
	}
	return "", "", false
}

func protoErr(code pimv1.ErrorCode, msg string) *pimv1.Error {
	return &pimv1.Error{Code: code, Message: msg}
}

// server is the store plus its gateways.
type server struct {
	w         *world
	st        *store
	gws       []*gateway
	downUntil time.Time // store outage: requests answer UNAVAILABLE
	window    uint64
	hb        time.Duration
	// orderGuard is the server rule this SDK asks for (see the package
	// comment): a SendReq refused with a retryable error is refused with
	// fatal set, and the connection is closed without processing anything
	// after it. Without it, a send pipelined behind a refused one can be
	// stored first.
	orderGuard bool
	// hiccup: this many next SendReqs are refused as if storage failed.
	hiccup int
	// rc coalesces group read receipts (logic.RunReceipts): in memory, lost
	// with a whole-server restart.
	rc coalescer
}

// ack is logic.Ack: the cursor moves, and the newly acknowledged range
// becomes delivered receipts for 1:1 peers.
func (s *server) ack(user, device string, us uint64) {
	if c := s.st.ack(user, device, us); c > 0 {
		s.deliver(s.st.markDelivered(user, c))
	}
}

func (s *server) storeDown() bool { return s.w.s.now.Before(s.downUntil) }

// send is the send pipeline of logic.Send over the store.
func (s *server) send(user, device string, req *pimv1.SendReq) (*pimv1.SendAck, *pimv1.Error) {
	st := s.st
	conv := req.GetConv()
	switch {
	case req.GetConv() != "" && req.GetToUser() != "":
		return nil, protoErr(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "both conv and to_user")
	case req.GetToUser() != "":
		a, b := user, req.GetToUser()
		if b < a {
			a, b = b, a
		}
		conv = "d:" + a + ":" + b
	case conv == "":
		return nil, protoErr(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "missing conv")
	}
	if a, b, ok := parseDirect(conv); ok && a != user && b != user {
		return nil, s.w.refused("send", user, device, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, false)
	}
	if n := len(req.GetClientMsgId()); n == 0 || n > 64 || len(req.GetBody()) == 0 {
		return nil, protoErr(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "bad send")
	}
	switch req.GetType() {
	case pimv1.MessageType_MESSAGE_TYPE_TEXT:
		if !utf8.Valid(req.GetBody()) {
			return nil, protoErr(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "bad text")
		}
	case pimv1.MessageType_MESSAGE_TYPE_BINARY:
	default:
		return nil, protoErr(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "bad type")
	}
	dk := dedupKey{user, device, req.GetClientMsgId()}
	if r, ok := st.dedup[dk]; ok {
		m := st.msgs[r.conv][r.seq-1]
		return &pimv1.SendAck{ClientMsgId: dk.cmid, Conv: m.Conv, Seq: m.Seq, MsgId: m.MsgId,
			ServerTime: m.ServerTime, Duplicate: true}, nil
	}
	ms, ok := st.members(conv)
	if !ok {
		// Groups are never deleted: only a send overtaking its group's
		// CREATE can meet a missing group.
		return nil, s.w.refused("send", user, device, pimv1.ErrorCode_ERROR_CODE_NOT_FOUND, false)
	}
	if !slices.Contains(ms, user) {
		return nil, s.w.refused("send", user, device, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, true)
	}
	sk := [3]string{user, device, conv}
	if last := st.clientSeq[sk]; req.GetClientSeq() <= last {
		s.w.violation("sender order: %s/%s stored client_seq %d in %s after %d", user, device,
			req.GetClientSeq(), conv, last)
	}
	st.clientSeq[sk] = req.GetClientSeq()
	msg := &pimv1.Message{
		Conv: conv, Sender: user, SenderDevice: device, ClientMsgId: req.GetClientMsgId(),
		Type: req.GetType(), Body: slices.Clone(req.GetBody()), ClientTime: req.GetClientTime(),
		ServerTime: s.w.s.now.UnixMilli(), ClientSeq: req.GetClientSeq(),
	}
	s.deliver(st.appendMsg(msg, ms))
	st.dedup[dk] = ref{conv: conv, seq: msg.Seq}
	return &pimv1.SendAck{ClientMsgId: dk.cmid, Conv: conv, Seq: msg.Seq, MsgId: msg.MsgId,
		ServerTime: msg.ServerTime}, nil
}

// group is logic.Group over the store.
func (s *server) group(user, device string, req *pimv1.GroupReq) (*pimv1.GroupResp, *pimv1.Error) {
	st := s.st
	g := req.GetGroup()
	bad := func(msg string) *pimv1.Error { return protoErr(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, msg) }
	validGroup := len(g) > 2 && g[:2] == "g:"
	switch req.GetOp() {
	case pimv1.GroupOp_GROUP_OP_CREATE:
		if !validGroup {
			return nil, bad("group id")
		}
		if _, ok := st.groups[g]; ok {
			// A retried CREATE meets its own group: legitimate only then.
			return nil, s.w.refused("group", user, device, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST,
				s.w.createdBy(g, user, device))
		}
		users := append([]string{user}, req.GetUsers()...)
		slices.Sort(users)
		users = slices.Compact(users)
		msg := &pimv1.Message{Conv: g, Sender: user, SenderDevice: device,
			Type: pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, ServerTime: s.w.s.now.UnixMilli(), Members: users}
		mem := make(map[string]*member)
		s.deliver(st.appendMsg(msg, users))
		for _, u := range users {
			mem[u] = &member{joinSeq: msg.Seq, owner: u == user}
		}
		st.groups[g] = mem
		st.groupLog = append(st.groupLog, groupOp{user, device, req.GetOp(), g, slices.Clone(req.GetUsers())})
		return s.groupResp(g, msg.Seq), nil
	case pimv1.GroupOp_GROUP_OP_ADD, pimv1.GroupOp_GROUP_OP_REMOVE:
		if !validGroup {
			return nil, bad("group id")
		}
		if len(req.GetUsers()) == 0 {
			return nil, bad("no users")
		}
		mem, ok := st.groups[g]
		if !ok {
			return nil, s.w.refused("group", user, device, pimv1.ErrorCode_ERROR_CODE_NOT_FOUND, false)
		}
		me, ok := mem[user]
		if !ok {
			return nil, s.w.refused("group", user, device, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, true)
		}
		users := slices.Clone(req.GetUsers())
		slices.Sort(users)
		users = slices.Compact(users)
		if req.GetOp() == pimv1.GroupOp_GROUP_OP_REMOVE && !me.owner {
			for _, u := range users {
				if u != user {
					return nil, s.w.refused("group", user, device, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, true)
				}
			}
		}
		var changed []string
		for _, u := range users {
			if _, in := mem[u]; in == (req.GetOp() == pimv1.GroupOp_GROUP_OP_REMOVE) {
				changed = append(changed, u)
			}
		}
		if len(changed) == 0 {
			return s.groupResp(g, 0), nil
		}
		typ := pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED
		if req.GetOp() == pimv1.GroupOp_GROUP_OP_REMOVE {
			typ = pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED
		} else {
			seq := uint64(len(st.msgs[g]) + 1)
			for _, u := range changed {
				mem[u] = &member{joinSeq: seq}
			}
		}
		recipients, _ := st.members(g)
		msg := &pimv1.Message{Conv: g, Sender: user, SenderDevice: device, Type: typ,
			ServerTime: s.w.s.now.UnixMilli(), Members: changed}
		s.deliver(st.appendMsg(msg, recipients))
		if typ == pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED {
			for _, u := range changed {
				delete(mem, u)
			}
		}
		st.groupLog = append(st.groupLog, groupOp{user, device, req.GetOp(), g, users})
		if _, still := mem[user]; !still {
			return &pimv1.GroupResp{Group: g, Seq: msg.Seq}, nil
		}
		return s.groupResp(g, msg.Seq), nil
	case pimv1.GroupOp_GROUP_OP_MEMBERS:
		if !st.isMember(g, user) {
			return nil, s.w.refused("group", user, device, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, true)
		}
		return s.groupResp(g, 0), nil
	}
	return nil, bad("op")
}

func (s *server) groupResp(g string, seq uint64) *pimv1.GroupResp {
	resp := &pimv1.GroupResp{Group: g, Seq: seq}
	ms, _ := s.st.members(g)
	for _, u := range ms {
		m := s.st.groups[g][u]
		role := "member"
		if m.owner {
			role = "owner"
		}
		resp.Members = append(resp.Members, &pimv1.Member{User: u, JoinSeq: m.joinSeq, Role: role})
	}
	return resp
}

// deliver wakes the push streams of the recipients' sessions.
func (s *server) deliver(users []string) {
	for _, gw := range s.gws {
		for _, ss := range slices.Clone(gw.sessions) {
			if slices.Contains(users, ss.user) {
				ss.pump()
			}
		}
	}
}

// gateway is one access node: its sessions die with it.
type gateway struct {
	srv         *server
	addr        string
	up          bool
	refuseUntil time.Time // admission control: Hello refused with RATE_LIMITED
	sessions    []*session
}

func (g *gateway) remove(ss *session) {
	g.sessions = slices.DeleteFunc(g.sessions, func(x *session) bool { return x == ss })
}

// crash kills the gateway: every connection is reset (notified or silent)
// and what was in flight is lost.
func (g *gateway) crash(down time.Duration) {
	w := g.srv.w
	w.logf("gateway %s crashes (down %v)", g.addr, down)
	for _, ss := range slices.Clone(g.sessions) {
		ss.nc.reset(w.rnd.IntN(2) == 0)
	}
	g.sessions = nil
	g.up = false
	w.s.after(down, func() { g.up = true; w.logf("gateway %s up", g.addr) })
}

// drain sends GoAway on every connection and closes them, then the gateway
// is down for a while (a rolling restart).
func (g *gateway) drain(down time.Duration, others []string) {
	w := g.srv.w
	w.logf("gateway %s drains (down %v)", g.addr, down)
	for _, ss := range slices.Clone(g.sessions) {
		if ss.state != sessActive {
			continue
		}
		ss.write(&pimv1.Frame{Body: &pimv1.Frame_GoAway{GoAway: &pimv1.GoAway{
			RetryAfterMs: uint32(w.rnd.IntN(2000)), Servers: others, Reason: "drain"}}})
		ss.close()
	}
	g.up = false
	w.s.after(down, func() { g.up = true; w.logf("gateway %s up", g.addr) })
}

const (
	sessHello = iota
	sessActive
	sessClosing
)

// session is the server end of one connection.
type session struct {
	gw        *gateway
	nc        *netConn
	state     int
	user      string
	device    string
	pushed    uint64
	acked     uint64
	lastHeard time.Time
	// pendingAck is the highest PushAck not yet written to the store (a
	// cursor write that failed is retried with the next frame, as the SDK
	// asks of the gateway: PushAck has no answer, so the client cannot).
	pendingAck uint64
}

func (ss *session) srv() *server { return ss.gw.srv }

func (ss *session) write(f *pimv1.Frame) { ss.nc.fromServer(f) }

// close ends the session from the server side: what is queued is still
// delivered, then the client sees the connection close.
func (ss *session) close() {
	ss.state = sessClosing
	ss.gw.remove(ss)
	ss.nc.closeFromServer()
}

// ended: the connection is gone (client close, reset).
func (ss *session) ended() {
	ss.state = sessClosing
	ss.gw.remove(ss)
}

func (ss *session) fatal(id uint64, code pimv1.ErrorCode, msg string, retryAfter uint32) {
	ss.write(&pimv1.Frame{RequestId: id, Body: &pimv1.Frame_Error{Error: &pimv1.Error{
		Code: code, Message: msg, RetryAfterMs: retryAfter, Fatal: true}}})
	ss.close()
}

func (ss *session) reply(id uint64, f *pimv1.Frame) {
	f.RequestId = id
	ss.write(f)
}

func (ss *session) replyErr(id uint64, e *pimv1.Error) {
	ss.write(&pimv1.Frame{RequestId: id, Body: &pimv1.Frame_Error{Error: e}})
}

// onFrame processes one frame from the client.
func (ss *session) onFrame(f *pimv1.Frame) {
	w := ss.srv().w
	ss.lastHeard = w.s.now
	if ss.state == sessClosing {
		return
	}
	if ss.state == sessHello {
		ss.onHello(f)
		return
	}
	ss.armSilence()
	s := ss.srv()
	id := f.GetRequestId()
	if ss.pendingAck > 0 && !s.storeDown() {
		s.ack(ss.user, ss.device, ss.pendingAck)
		ss.pendingAck = 0
	}
	unavailable := &pimv1.Error{Code: pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, Message: "storage down", RetryAfterMs: 1000}
	switch b := f.GetBody().(type) {
	case *pimv1.Frame_PushAck:
		ss.acked = max(ss.acked, b.PushAck.GetUserSeq())
		if !s.storeDown() {
			s.ack(ss.user, ss.device, b.PushAck.GetUserSeq())
		} else {
			ss.pendingAck = max(ss.pendingAck, b.PushAck.GetUserSeq())
		}
		ss.pump()
	case *pimv1.Frame_SendReq:
		if s.hiccup > 0 || s.storeDown() {
			if s.hiccup > 0 {
				s.hiccup--
			}
			if s.orderGuard {
				ss.fatal(id, unavailable.Code, unavailable.Message, unavailable.RetryAfterMs)
				return
			}
			ss.replyErr(id, unavailable)
			return
		}
		ack, e := s.send(ss.user, ss.device, b.SendReq)
		w.logf("server %s conn %d: send %s cs=%d -> ack %v err %v", ss.device, ss.nc.id,
			b.SendReq.GetClientMsgId()[:6], b.SendReq.GetClientSeq(), ack.GetSeq(), e.GetCode())
		if e != nil {
			ss.replyErr(id, e)
			return
		}
		ss.reply(id, &pimv1.Frame{Body: &pimv1.Frame_SendAck{SendAck: ack}})
	case *pimv1.Frame_SyncReq:
		if s.storeDown() {
			ss.replyErr(id, unavailable)
			return
		}
		after := b.SyncReq.GetAfterUserSeq()
		if after > 0 {
			s.ack(ss.user, ss.device, after)
		}
		limit := int(b.SyncReq.GetLimit())
		if limit <= 0 {
			limit = 256
		}
		limit = min(limit, 1000)
		head := s.st.head(ss.user)
		resp := &pimv1.SyncResp{UserSeq: head}
		for us := after + 1; us <= head && len(resp.Events) < limit; us++ {
			resp.Events = append(resp.Events, s.st.event(ss.user, us))
		}
		resp.HasMore = len(resp.Events) > 0 && resp.Events[len(resp.Events)-1].UserSeq < head
		ss.reply(id, &pimv1.Frame{Body: &pimv1.Frame_SyncResp{SyncResp: resp}})
	case *pimv1.Frame_GroupReq:
		if s.storeDown() {
			ss.replyErr(id, unavailable)
			return
		}
		resp, e := s.group(ss.user, ss.device, b.GroupReq)
		w.logf("server %s conn %d: group %v %s %v -> seq %d err %v", ss.device, ss.nc.id, b.GroupReq.GetOp(),
			b.GroupReq.GetGroup(), b.GroupReq.GetUsers(), resp.GetSeq(), e.GetCode())
		if e != nil {
			ss.replyErr(id, e)
			return
		}
		ss.reply(id, &pimv1.Frame{Body: &pimv1.Frame_GroupResp{GroupResp: resp}})
	case *pimv1.Frame_ReadReq, *pimv1.Frame_HideReq, *pimv1.Frame_ConvListReq:
		if s.storeDown() {
			ss.replyErr(id, unavailable)
			return
		}
		resp, e := s.readState(ss.user, ss.device, f)
		w.logf("server %s conn %d: %T -> %v err %v", ss.device, ss.nc.id, b, resp.GetBody(), e.GetCode())
		if e != nil {
			ss.replyErr(id, e)
			return
		}
		ss.reply(id, resp)
	case *pimv1.Frame_Ping:
		ss.reply(id, &pimv1.Frame{Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{
			ServerTime: w.serverClock(), ClientTime: b.Ping.GetClientTime()}}})
	default:
		ss.fatal(id, pimv1.ErrorCode_ERROR_CODE_PROTOCOL, fmt.Sprintf("unexpected %T", b), 0)
	}
}

func (ss *session) onHello(f *pimv1.Frame) {
	s := ss.srv()
	w := s.w
	h := f.GetHello()
	id := f.GetRequestId()
	switch {
	case h == nil:
		ss.fatal(id, pimv1.ErrorCode_ERROR_CODE_PROTOCOL, "Hello first", 0)
		return
	case h.GetProtocolVersion() != 1:
		ss.fatal(id, pimv1.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION, "version", 0)
		return
	case !pimstore.ValidID(h.GetDeviceId()):
		ss.fatal(id, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "device id", 0)
		return
	}
	user, ok := w.verifyToken(h.GetToken())
	if !ok {
		ss.fatal(id, pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, "token", 0)
		return
	}
	if w.s.now.Before(ss.gw.refuseUntil) {
		ss.fatal(id, pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, "admission", uint32(200+w.rnd.IntN(1500)))
		return
	}
	if s.storeDown() {
		ss.fatal(id, pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "storage down", 1000)
		return
	}
	ss.user, ss.device = user, h.GetDeviceId()
	cursor := s.st.cursors[[2]string{user, ss.device}]
	head := s.st.head(user)
	pushFrom := cursor
	if h.GetEpoch() == "" || h.GetEpoch() == s.st.epoch {
		pushFrom = max(min(h.GetLastUserSeq(), head), cursor)
	}
	ss.state = sessActive
	ss.pushed, ss.acked = pushFrom, pushFrom
	ss.reply(id, &pimv1.Frame{Body: &pimv1.Frame_Welcome{Welcome: &pimv1.Welcome{
		ProtocolVersion: 1, ServerTime: w.serverClock(), HeartbeatMs: uint32(s.hb.Milliseconds()),
		AckedUserSeq: cursor, UserSeq: head, PushFromUserSeq: pushFrom, Session: "s",
		Epoch: s.st.epoch, User: user, MaxFrameBytes: 1 << 20,
	}}})
	ss.armSilence()
	ss.pump()
}

// armSilence closes the session if the client stays silent for 2.5
// heartbeat intervals.
func (ss *session) armSilence() {
	s := ss.srv()
	limit := s.hb * 5 / 2
	heard := ss.lastHeard
	s.w.s.after(limit, func() {
		if ss.state == sessActive && ss.lastHeard.Equal(heard) {
			s.w.logf("server closes silent session of %s", ss.device)
			ss.close()
		}
	})
}

// pump pushes what the window allows.
func (ss *session) pump() {
	if ss.state != sessActive {
		return
	}
	s := ss.srv()
	head := s.st.head(ss.user)
	for ss.pushed < head && ss.pushed-ss.acked < s.window {
		p := &pimv1.Push{}
		for ss.pushed < head && ss.pushed-ss.acked < s.window && len(p.Events) < 16 {
			ss.pushed++
			p.Events = append(p.Events, s.st.event(ss.user, ss.pushed))
		}
		ss.write(&pimv1.Frame{Body: &pimv1.Frame_Push{Push: p}})
	}
}
