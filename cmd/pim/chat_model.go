package main

// The state of `pim chat`, without I/O: SDK events, typed lines and the
// results of SDK calls go in; effects (SDK calls to make), log lines (the
// --plain output) and a screen (chat_view.go) come out. Invariants:
//   - Nothing here calls the SDK, reads a clock or touches a terminal; the
//     drivers (chat.go) carry out effects and feed their results back, so
//     every behaviour is testable by feeding values.
//   - Timeline events are applied once each: an event at or below the last
//     user seq applied (the history loaded at start included) is ignored,
//     and a message already shown (same seq, or the same client_msg_id for
//     this device's own) updates its line instead of adding one.
//   - Each of this device's messages has one line from the moment it is
//     typed, whose state follows its SendStateEvents even when they arrive
//     before Send returned its id (they wait in early until then).
//   - A conversation's lines are ordered by seq; lines without a seq yet
//     (not stored by the server) follow, in the order they were typed.
//   - Unread: the SDK's conversation list (its exact count, kept by
//     ConversationEvents and loaded at start) wherever it has an entry
//     (what an earlier run printed is not read unless it was marked read);
//     zero once this client marked the conversation read up to the entry's
//     last message (the mark is on its way). Without an entry: messages of
//     other users above the read position, which moves with this user's
//     ReadEvents (any device), with the marks this client makes, and over
//     history loaded from the local store (seen in an earlier run).
//   - Marks on this user's messages: in 1:1, read up to the peer's read
//     position, delivered up to the peer's delivered position (from the
//     list, ReadEvents and DELIVERED receipts); in groups, the read counts of
//     READ receipts. A HiddenEvent removes its message's line.

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	pim "github.com/pim-project/pim/sdk/go"
)

// lineState is the state of one shown message.
type lineState uint8

const (
	// stReceived: another user's message, or one from this user's other
	// devices: it has no send state here.
	stReceived lineState = iota
	// stTyped: typed here, Send has not returned yet (not on disk yet).
	stTyped
	stQueued
	stSending
	stSent
	stFailed
)

// pending reports whether a message of this device is still on its way.
func (s lineState) pending() bool { return s == stTyped || s == stQueued || s == stSending }

func fromSendState(st pim.SendState) lineState {
	switch st {
	case pim.Queued:
		return stQueued
	case pim.Sending:
		return stSending
	case pim.Sent:
		return stSent
	case pim.Failed:
		return stFailed
	}
	return stQueued
}

func (s lineState) String() string {
	switch s {
	case stTyped, stQueued:
		return "queued"
	case stSending:
		return "sending"
	case stSent:
		return "sent"
	case stFailed:
		return "failed"
	}
	return "received"
}

// chatLine is one message of a conversation.
type chatLine struct {
	local  int    // this run's number for a line typed here (0: none)
	id     string // client_msg_id of this device's messages
	seq    uint64 // 0 until the server stored it
	sender string
	device string
	text   string
	time   time.Time // server time, or when it was typed
	own    bool      // sent by this user (from any device)
	state  lineState
	err    string // why it failed
	order  int    // arrival order, for lines without a seq
	// placeholder: the text is not known (a message an earlier run left in
	// the outbox) until its echo arrives.
	placeholder bool
}

// convState is one conversation.
type convState struct {
	id            string
	lines         []*chatLine
	bySeq         map[uint64]*chatLine
	readSeq       uint64 // this user's read position (as far as known)
	marked        uint64 // the highest MarkRead this client asked for
	peerRead      uint64 // a 1:1 peer's read position (read receipts)
	peerDelivered uint64 // a 1:1 peer's delivered position (delivered receipts)
	readCounts    map[uint64]uint32
	entry         *pim.Conversation // the SDK's list entry (nil: none yet)
	loggedUnread  int               // the unread count last logged (--plain)
	activity      int               // recency, for the order of the list
}

func (c *convState) lastSeq() uint64 {
	var last uint64
	for _, l := range c.lines {
		last = max(last, l.seq)
	}
	return last
}

// unread is the conversation's unread count: the SDK list's, else counted
// from the lines shown.
func (c *convState) unread() int {
	if e := c.entry; e != nil {
		if c.marked >= e.LastSeq {
			return 0 // marked read here up to its end: the mark is on its way
		}
		return int(e.Unread) // exact, whatever earlier runs printed
	}
	n := 0
	for _, l := range c.lines {
		if !l.own && l.seq > c.readSeq {
			n++
		}
	}
	return n
}

// lastKnown is the newest seq known, from the lines or the list.
func (c *convState) lastKnown() uint64 {
	last := c.lastSeq()
	if c.entry != nil {
		last = max(last, c.entry.LastSeq)
	}
	return last
}

// sortLines restores the order of the invariant after a seq was set.
func (c *convState) sortLines() {
	sort.SliceStable(c.lines, func(i, j int) bool {
		a, b := c.lines[i], c.lines[j]
		if (a.seq == 0) != (b.seq == 0) {
			return b.seq == 0
		}
		if a.seq != b.seq {
			return a.seq < b.seq
		}
		return a.order < b.order
	})
}

// Effects: SDK calls for the driver to make, in order.
type (
	effSend struct {
		local      int
		conv, text string
	}
	effRetry    struct{ id string }
	effDiscard  struct{ id string }
	effMarkRead struct {
		conv string
		seq  uint64
	}
	effCreate struct {
		group   string
		members []string
	}
	effLoad      struct{ conv string } // read the conversation from the local store
	effReconnect struct{}              // dial now (or probe a live connection)
	effQuit      struct{}
)

// Results of effects, fed back by the driver.
type (
	sendResult struct {
		local int
		id    string
		err   error
	}
	loadResult struct {
		conv string
		msgs []*pim.Message
		err  error
	}
	// opResult is the outcome of any other call (mostly, only failures
	// matter).
	opResult struct {
		what string
		id   string // effRetry's message
		read uint64 // effMarkRead's command id
		err  error
	}
)

// clockInfo is what the driver samples every second.
type clockInfo struct {
	now           time.Time
	offset, bound time.Duration
	ok            bool
}

// chatState is the whole state of a chat session.
type chatState struct {
	me, device string
	loc        *time.Location
	// autoRead marks the current conversation read whenever something
	// unread shows in it (the TUI, where the user is looking at it).
	autoRead bool

	convs map[string]*convState
	cur   string // the open conversation ("": none)

	lastUserSeq uint64
	early       map[string]pim.SendStateEvent // states of ids Send has not returned yet

	conn     pim.ConnState
	connAddr string
	connErr  error
	retryAt  time.Time
	caughtUp bool
	clock    clockInfo

	// readCmds are the MarkRead commands made (by id); refused holds the
	// refusals of commands not known yet. noReads: the server refused a
	// read mark, so no more are made this run (unread counts stay local).
	readCmds map[uint64]bool
	refused  map[uint64]error
	noReads  bool

	notice  string   // the latest info or error, for the status line
	log     []string // --plain output not yet printed
	local   int      // the last local number given
	order   int
	recency int
}

func newChatState(me, device string, loc *time.Location) *chatState {
	return &chatState{me: me, device: device, loc: loc, convs: make(map[string]*convState),
		early: make(map[string]pim.SendStateEvent), readCmds: make(map[uint64]bool), refused: make(map[uint64]error)}
}

// takeLog returns and clears the log lines.
func (s *chatState) takeLog() []string {
	l := s.log
	s.log = nil
	return l
}

func (s *chatState) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf(format, args...))
}

func (s *chatState) info(format string, args ...any) {
	s.notice = fmt.Sprintf(format, args...)
	s.logf("info %s", s.notice)
}

func (s *chatState) fail(format string, args ...any) {
	s.notice = "error: " + fmt.Sprintf(format, args...)
	s.logf("error %s", fmt.Sprintf(format, args...))
}

// conv returns conversation id, created if new.
func (s *chatState) conv(id string) *convState {
	c := s.convs[id]
	if c == nil {
		c = &convState{id: id, bySeq: make(map[uint64]*chatLine), readCounts: make(map[uint64]uint32)}
		s.convs[id] = c
	}
	return c
}

func (s *chatState) touch(c *convState) {
	s.recency++
	c.activity = s.recency
}

// convList is the conversations, most recently active first.
func (s *chatState) convList() []*convState {
	out := make([]*convState, 0, len(s.convs))
	for _, c := range s.convs {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].activity != out[j].activity {
			return out[i].activity > out[j].activity
		}
		return out[i].id < out[j].id
	})
	return out
}

// title is how a conversation is named on screen: @peer or #group.
func (s *chatState) title(conv string) string {
	if g, ok := strings.CutPrefix(conv, "g:"); ok {
		return "#" + g
	}
	if rest, ok := strings.CutPrefix(conv, "d:"); ok {
		if a, b, ok := strings.Cut(rest, ":"); ok {
			if a == s.me {
				return "@" + b
			}
			return "@" + a
		}
	}
	return conv
}

// open makes conv the current conversation and asks for its stored
// history.
func (s *chatState) open(conv string) []any {
	c := s.conv(conv)
	s.cur = conv
	s.touch(c)
	s.info("conversation %s (%s)", s.title(conv), conv)
	return append([]any{effLoad{conv: conv}}, s.autoMark()...)
}

// switchConv moves the selection by delta in the list (wrapping).
func (s *chatState) switchConv(delta int) []any {
	list := s.convList()
	if len(list) == 0 {
		return nil
	}
	i := -1 // none open: Tab takes the first, Shift-Tab the last
	if delta < 0 {
		i = len(list)
	}
	for k, c := range list {
		if c.id == s.cur {
			i = k
			break
		}
	}
	i = ((i+delta)%len(list) + len(list)) % len(list)
	s.cur = list[i].id
	return s.autoMark()
}

// autoMark marks the current conversation read up to its last seq when
// something unread shows in it (with autoRead).
func (s *chatState) autoMark() []any {
	if !s.autoRead || s.cur == "" {
		return nil
	}
	return s.markRead(s.cur, false)
}

// markRead marks conv read up to its last seq; with force, also when
// nothing is unread.
func (s *chatState) markRead(conv string, force bool) []any {
	c := s.convs[conv]
	if c == nil {
		return nil
	}
	last := c.lastKnown()
	if last == 0 || last <= c.marked || (!force && c.unread() == 0) {
		return nil
	}
	c.marked = last
	c.readSeq = max(c.readSeq, last)
	if s.noReads {
		if force {
			s.info("%s is read here; the server does not take read marks", s.title(conv))
		}
		return nil
	}
	return []any{effMarkRead{conv: conv, seq: last}}
}

// seed loads the tail of the local timeline: what earlier runs showed
// (so it is not unread), with the reads, deletions and receipts among it.
// delivered is the SDK's last delivered user seq.
func (s *chatState) seed(entries []pim.TimelineEntry, delivered uint64) {
	for _, e := range entries {
		if m := e.Message; m != nil {
			s.addMessage(m, m.GetSender() == s.me && m.GetSenderDevice() == s.device, true)
		}
		switch k := e.Event.GetKind().(type) {
		case *pimv1.Event_Read:
			s.noteRead(k.Read.GetConv(), k.Read.GetSeq(), k.Read.GetUser() == s.me)
		case *pimv1.Event_Hidden:
			s.hideLine(k.Hidden.GetConv(), k.Hidden.GetSeq())
		case *pimv1.Event_Receipt:
			r := k.Receipt
			var reads []pim.MessageReads
			for _, m := range r.GetMessages() {
				reads = append(reads, pim.MessageReads{Seq: m.GetSeq(), ReadCount: m.GetReadCount()})
			}
			s.noteReceipt(r.GetConv(), r.GetKind(), r.GetSeq(), reads)
		}
		s.lastUserSeq = max(s.lastUserSeq, e.UserSeq)
	}
	s.lastUserSeq = max(s.lastUserSeq, delivered)
}

// seedList takes the SDK's conversation list at start (most recent
// first): unread counts and read positions, and the order of the list.
func (s *chatState) seedList(convs []pim.Conversation) {
	for i := len(convs) - 1; i >= 0; i-- {
		c := s.setEntry(convs[i])
		c.loggedUnread = c.unread()
		s.touch(c)
	}
}

// setEntry takes an entry of the SDK's conversation list.
func (s *chatState) setEntry(e pim.Conversation) *convState {
	c := s.conv(e.Conv)
	c.entry = &e
	c.readSeq = max(c.readSeq, e.ReadSeq)
	c.peerRead = e.PeerReadSeq // exact (0 while read receipts are off)
	c.peerDelivered = max(c.peerDelivered, e.PeerDeliveredSeq)
	return c
}

// noteRead moves a read position: this user's (own) or a 1:1 peer's.
func (s *chatState) noteRead(conv string, seq uint64, own bool) {
	c := s.conv(conv)
	if own {
		c.readSeq = max(c.readSeq, seq)
	} else {
		c.peerRead = max(c.peerRead, seq)
	}
}

// hideLine removes conv/seq (deleted for this user).
func (s *chatState) hideLine(conv string, seq uint64) {
	c := s.conv(conv)
	if l := c.bySeq[seq]; l != nil {
		delete(c.bySeq, seq)
		s.removeLine(c, l)
	}
}

// noteReceipt records what happened to this user's messages.
func (s *chatState) noteReceipt(conv string, kind pimv1.ReceiptKind, seq uint64, reads []pim.MessageReads) {
	c := s.conv(conv)
	switch kind {
	case pim.ReceiptDelivered:
		c.peerDelivered = max(c.peerDelivered, seq)
	case pim.ReceiptRead:
		for _, r := range reads {
			c.readCounts[r.Seq] = r.ReadCount
		}
	}
}

// seedPending shows a message an earlier run left in the outbox (its text
// is not known until its echo).
func (s *chatState) seedPending(id, conv string, st pim.SendState, err error) {
	c := s.conv(conv)
	if s.findID(c, id) != nil {
		return
	}
	s.order++
	l := &chatLine{id: id, sender: s.me, device: s.device, own: true, text: "(queued by an earlier run)",
		placeholder: true, state: fromSendState(st), order: s.order}
	if err != nil {
		l.err = errText(err)
	}
	c.lines = append(c.lines, l)
	s.touch(c)
	s.logf("send %s id=%s %s (queued by an earlier run)", c.id, l.id, l.state)
}

func (s *chatState) findID(c *convState, id string) *chatLine {
	if id == "" {
		return nil
	}
	for _, l := range c.lines {
		if l.id == id {
			return l
		}
	}
	return nil
}

func (s *chatState) findLocal(local int) (*convState, *chatLine) {
	for _, c := range s.convs {
		for _, l := range c.lines {
			if l.local == local {
				return c, l
			}
		}
	}
	return nil, nil
}

// addMessage shows a stored message: a new line, or the update of the
// line it already has. seen: it comes from the local store, so it is
// read. It reports whether a line was added.
func (s *chatState) addMessage(m *pim.Message, ownDevice, seen bool) bool {
	if m == nil || m.Conv == "" {
		return false
	}
	c := s.conv(m.Conv)
	if seen {
		c.readSeq = max(c.readSeq, m.Seq)
	}
	t := time.UnixMilli(m.ServerTime)
	l := c.bySeq[m.Seq]
	if l == nil && m.Sender == s.me {
		l = s.findID(c, m.ClientMsgId)
	}
	if l != nil { // shown already: complete the line
		if l.seq == 0 {
			l.seq = m.Seq
			c.bySeq[m.Seq] = l
			c.sortLines()
		}
		l.time = t
		if l.state != stReceived && l.state != stSent {
			l.state, l.err = stSent, ""
		}
		if l.placeholder {
			l.text, l.placeholder = describe(m), false
		}
		return false
	}
	s.order++
	l = &chatLine{seq: m.Seq, sender: m.Sender, device: m.SenderDevice, text: describe(m), time: t,
		own: m.Sender == s.me, order: s.order}
	if ownDevice && (m.Type == pimv1.MessageType_MESSAGE_TYPE_TEXT || m.Type == pimv1.MessageType_MESSAGE_TYPE_BINARY) {
		l.id, l.state = m.ClientMsgId, stSent // a message this device sent (not a group change)
	}
	c.lines = append(c.lines, l)
	c.bySeq[m.Seq] = l
	c.sortLines()
	s.touch(c)
	return true
}

// apply takes one SDK event.
func (s *chatState) apply(ev pim.Event) []any {
	switch e := ev.(type) {
	case pim.MessageEvent:
		if e.UserSeq <= s.lastUserSeq {
			return nil
		}
		s.lastUserSeq = e.UserSeq
		m := e.Message
		if s.addMessage(m, e.Own, false) && !e.Own {
			s.logf("msg %s #%d %s/%s: %s", m.Conv, m.Seq, m.Sender, m.SenderDevice, describe(m))
		}
	case pim.SendStateEvent:
		s.sendState(e)
	case pim.ReadEvent:
		if e.UserSeq != 0 && e.UserSeq <= s.lastUserSeq {
			return nil
		}
		s.lastUserSeq = max(s.lastUserSeq, e.UserSeq)
		s.noteRead(e.Conv, e.Seq, e.Own)
		s.logf("read %s #%d by %s/%s", e.Conv, e.Seq, e.User, e.Device)
	case pim.HiddenEvent:
		if e.UserSeq != 0 && e.UserSeq <= s.lastUserSeq {
			return nil
		}
		s.lastUserSeq = max(s.lastUserSeq, e.UserSeq)
		s.hideLine(e.Conv, e.Seq)
		s.logf("hidden %s #%d on %s", e.Conv, e.Seq, e.Device)
	case pim.ReceiptEvent:
		if e.UserSeq != 0 && e.UserSeq <= s.lastUserSeq {
			return nil
		}
		s.lastUserSeq = max(s.lastUserSeq, e.UserSeq)
		s.noteReceipt(e.Conv, e.Kind, e.Seq, e.Reads)
		if e.Kind == pim.ReceiptDelivered {
			s.logf("receipt %s delivered #%d to %s", e.Conv, e.Seq, e.User)
		} else {
			var parts []string
			for _, r := range e.Reads {
				parts = append(parts, fmt.Sprintf("#%d by %d", r.Seq, r.ReadCount))
			}
			s.logf("receipt %s read %s", e.Conv, strings.Join(parts, ", "))
		}
	case pim.UnknownEvent:
		s.lastUserSeq = max(s.lastUserSeq, e.UserSeq)
	case pim.ConversationEvent:
		c := s.setEntry(e.Conversation)
		if n := c.unread(); n != c.loggedUnread {
			c.loggedUnread = n
			s.logf("unread %s %d", c.id, n)
		}
	case pim.ConnStateEvent:
		s.conn, s.connAddr, s.connErr, s.retryAt = e.State, e.Addr, e.Err, e.Retry
		if e.State != pim.Connected {
			s.caughtUp = false
		}
		switch {
		case e.Err != nil && e.State == pim.Disconnected && !e.Retry.IsZero():
			s.logf("conn %s %s: %s (retry at %s)", e.State, e.Addr, errText(e.Err), e.Retry.In(s.loc).Format("15:04:05"))
		case e.Err != nil:
			s.logf("conn %s %s: %s", e.State, e.Addr, errText(e.Err))
		default:
			s.logf("conn %s %s", e.State, e.Addr)
		}
	case pim.CaughtUpEvent:
		s.caughtUp = true
		s.logf("caught-up")
	case pim.ResyncEvent:
		for _, c := range s.convs {
			c.lines, c.bySeq, c.readCounts = nil, make(map[uint64]*chatLine), make(map[uint64]uint32)
			c.readSeq, c.marked, c.peerRead, c.peerDelivered, c.entry = 0, 0, 0, 0, nil
		}
		s.lastUserSeq = 0
		s.info("the server's data changed (epoch %s -> %s): the timeline is delivered again", e.OldEpoch, e.NewEpoch)
	case pim.GroupEvent:
		if e.Me && e.Type == pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED {
			s.info("you are no longer a member of %s", s.title(e.Conv))
		}
	case pim.CommandResultEvent:
		if e.Err != nil {
			s.fail("command %d: %s", e.ID, errText(e.Err))
			if s.readCmds[e.ID] {
				s.readsRefused()
			} else {
				s.refused[e.ID] = e.Err
			}
		}
		delete(s.readCmds, e.ID)
	}
	return s.autoMark()
}

// sendState follows one of this device's messages.
func (s *chatState) sendState(e pim.SendStateEvent) {
	c := s.conv(e.Conv)
	l := s.findID(c, e.ClientMsgID)
	if l == nil {
		s.early[e.ClientMsgID] = e
		return
	}
	s.setState(c, l, e)
}

func (s *chatState) setState(c *convState, l *chatLine, e pim.SendStateEvent) {
	if l.state == stSent {
		return // final: a late event cannot undo it
	}
	st := fromSendState(e.State)
	if st == l.state && st != stFailed {
		return // nothing new (Send's result already showed it queued)
	}
	l.state, l.err = st, ""
	if e.Err != nil {
		l.err = errText(e.Err)
	}
	suffix := ""
	if e.State == pim.Sent && e.Ack != nil && e.Ack.Seq != 0 {
		if l.seq == 0 {
			l.seq = e.Ack.Seq
			if e.Ack.ServerTime != 0 {
				l.time = time.UnixMilli(e.Ack.ServerTime)
			}
			c.bySeq[l.seq] = l
			c.sortLines()
		}
		suffix = fmt.Sprintf(" #%d", e.Ack.Seq)
	}
	if l.err != "" {
		suffix += ": " + l.err + " (/retry sends it again)"
	}
	s.logf("send %s id=%s %s%s", c.id, l.id, l.state, suffix)
}

// result takes the result of an effect.
func (s *chatState) result(r any) []any {
	switch r := r.(type) {
	case sendResult:
		c, l := s.findLocal(r.local)
		if l == nil {
			return nil
		}
		if r.err != nil {
			l.state, l.err = stFailed, "not queued: "+errText(r.err)
			s.fail("send to %s: %s", s.title(c.id), errText(r.err))
			return nil
		}
		if other := s.findID(c, r.id); other != nil && other != l {
			// The echo came first and made its own line: keep that one.
			s.removeLine(c, l)
			return nil
		}
		l.id, l.state = r.id, stQueued
		s.logf("send %s id=%s queued: %s", c.id, r.id, l.text)
		if e, ok := s.early[r.id]; ok {
			delete(s.early, r.id)
			s.setState(c, l, e)
		}
	case loadResult:
		if r.err != nil {
			s.fail("read %s from the local store: %s", r.conv, errText(r.err))
			return nil
		}
		for _, m := range r.msgs {
			s.addMessage(m, m.SenderDevice == s.device && m.Sender == s.me, true)
		}
		return s.autoMark()
	case opResult:
		if r.read != 0 {
			if _, ok := s.refused[r.read]; ok {
				delete(s.refused, r.read)
				s.readsRefused()
			} else {
				s.readCmds[r.read] = true
			}
		}
		if r.err != nil {
			s.fail("%s: %s", r.what, errText(r.err))
			if r.id != "" {
				for _, c := range s.convs {
					if l := s.findID(c, r.id); l != nil && l.state != stSent {
						l.state, l.err = stFailed, errText(r.err)
					}
				}
			}
		}
	case clockInfo:
		s.clock = r
	}
	return nil
}

// readsRefused turns read marks off for this run: a server that refuses
// them would refuse every one.
func (s *chatState) readsRefused() {
	if !s.noReads {
		s.noReads = true
		s.info("the server refused a read mark: read marks are off for this session (unread counts stay local)")
	}
}

func (s *chatState) removeLine(c *convState, l *chatLine) {
	for i, x := range c.lines {
		if x == l {
			c.lines = append(c.lines[:i], c.lines[i+1:]...)
			return
		}
	}
}

// submit takes one typed line: a message for the current conversation, or
// a command.
func (s *chatState) submit(line string) []any {
	line = strings.TrimRight(line, "\r\n")
	if strings.TrimSpace(line) == "" {
		return nil
	}
	if strings.HasPrefix(line, "/") && !strings.HasPrefix(line, "//") {
		return s.command(strings.Fields(line))
	}
	line = strings.TrimPrefix(line, "/") // "//x" sends "/x"
	if s.cur == "" {
		s.fail("no conversation open: /to USER or /group G first")
		return nil
	}
	c := s.conv(s.cur)
	s.local++
	s.order++
	c.lines = append(c.lines, &chatLine{local: s.local, sender: s.me, device: s.device, text: line,
		time: s.clock.now, own: true, state: stTyped, order: s.order})
	s.touch(c)
	return []any{effSend{local: s.local, conv: c.id, text: line}}
}

const chatHelp = "/to USER, /group G, /create G USER..., /retry, /discard, /read, /reconnect, /quit; Tab or Up/Down switch conversations; PgUp/PgDn scroll"

func (s *chatState) command(f []string) []any {
	switch f[0] {
	case "/quit", "/exit", "/q":
		return []any{effQuit{}}
	case "/help", "/?":
		s.info("%s", chatHelp)
	case "/to":
		if len(f) != 2 || !store.ValidID(f[1]) {
			s.fail("usage: /to USER (1-64 of A-Z a-z 0-9 . _ @ -)")
			return nil
		}
		return s.open(pim.DirectConv(s.me, f[1]))
	case "/group":
		if len(f) != 2 || !store.ValidID(strings.TrimPrefix(f[1], "g:")) {
			s.fail("usage: /group G")
			return nil
		}
		return s.open("g:" + strings.TrimPrefix(f[1], "g:"))
	case "/create":
		if len(f) < 2 || !store.ValidID(strings.TrimPrefix(f[1], "g:")) {
			s.fail("usage: /create G [USER...]")
			return nil
		}
		g := "g:" + strings.TrimPrefix(f[1], "g:")
		for _, u := range f[2:] {
			if !store.ValidID(u) {
				s.fail("/create: invalid user %q", u)
				return nil
			}
		}
		return append([]any{effCreate{group: g, members: f[2:]}}, s.open(g)...)
	case "/retry":
		return s.retry()
	case "/discard":
		return s.discard()
	case "/reconnect":
		s.info("reconnecting")
		return []any{effReconnect{}}
	case "/read":
		if s.cur == "" {
			s.fail("no conversation open")
			return nil
		}
		return s.markRead(s.cur, true)
	default:
		s.fail("unknown command %s (%s)", f[0], chatHelp)
	}
	return nil
}

// retry sends the current conversation's failed messages again: with the
// same id when they reached the outbox, else anew.
func (s *chatState) retry() []any {
	c := s.convs[s.cur]
	var effs []any
	if c != nil {
		for _, l := range c.lines {
			if l.state != stFailed {
				continue
			}
			if l.id != "" {
				l.state, l.err = stQueued, ""
				effs = append(effs, effRetry{id: l.id})
			} else if l.local != 0 {
				l.state, l.err = stTyped, ""
				effs = append(effs, effSend{local: l.local, conv: c.id, text: l.text})
			}
		}
	}
	if len(effs) == 0 {
		s.info("nothing failed here to retry")
		return nil
	}
	s.info("retrying %d message(s)", len(effs))
	return effs
}

// discard drops the current conversation's failed messages (from the
// outbox too: the messages behind them then go ahead).
func (s *chatState) discard() []any {
	c := s.convs[s.cur]
	var effs []any
	if c != nil {
		kept := c.lines[:0]
		for _, l := range c.lines {
			if l.state != stFailed {
				kept = append(kept, l)
				continue
			}
			if l.id != "" {
				effs = append(effs, effDiscard{id: l.id})
			}
		}
		n := len(c.lines) - len(kept)
		clear(c.lines[len(kept):])
		c.lines = kept
		if n > 0 {
			s.info("discarded %d failed message(s)", n)
			return effs
		}
	}
	s.info("nothing failed here to discard")
	return nil
}

// pendingSends counts this device's messages still on their way, and
// those that failed.
func (s *chatState) pendingSends() (pending, failed int) {
	for _, c := range s.convs {
		for _, l := range c.lines {
			switch {
			case l.state.pending():
				pending++
			case l.state == stFailed:
				failed++
			}
		}
	}
	return pending, failed
}

// errText is an error without the SDK's "pim: " prefix (the CLI adds its
// own).
func errText(err error) string {
	if errors.Is(err, pim.ErrRetryBudget) {
		return "retry budget spent"
	}
	var se *pim.ServerError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s (code %s)", se.Message, api.CodeName(se.Code))
	}
	return strings.TrimPrefix(err.Error(), "pim: ")
}
