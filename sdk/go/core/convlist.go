// The conversation list: a local copy of the user's list on the server
// (ConvListReq), loaded once, synced by version on every connection, and
// kept current between syncs from the timeline events themselves.
//
// Invariants of this file:
//   - Each entry means what the server's Conversation means, and its
//     Version is the user seq of the last event that changed it. An event
//     at user seq us about a conversation is applied to its entry iff us >
//     Version (an entry fetched from the server already includes every
//     event up to its version); an entry from the server replaces the local
//     one iff its Version >= the local Version (the server's answer is never
//     older than what it pushed before it). So the list converges whatever
//     the order in which answers and events arrive, and a late answer (after
//     a timeout) is merged safely.
//   - Unread is never guessed. UnreadSeqs lists the unread messages above
//     UnreadFloor (at most maxUnreadSeqs of them); the other
//     Unread-len(UnreadSeqs) unread messages are at or below UnreadFloor,
//     known by number only (an entry from the server knows none by seq). A
//     change that cannot be derived exactly from that (a read or a hide
//     inside the unknown range, an event about a conversation missing from
//     a list not loaded yet) marks the entry Stale, and a ConvListReq since
//     a version below the entry's fetches it again.
//   - Meta.ListLoaded: the first load ran to its end: pages by activity
//     (newest first), then, if there were several pages, a sync since the
//     first page's version (an entry that moved while the pages were read
//     is above the cursor). From then on the list holds every entry as of
//     Meta.ListVersion (Stale ones excepted), ListVersion >= Delivered,
//     and every delivered event raises it; an event about a conversation
//     missing from it is a new conversation.
//   - Every connection syncs since ListVersion (O(changed)) once; stale
//     entries are refetched whenever there are some. At most one ConvListReq
//     is in flight; only the answer of the current one moves the paging. A
//     server that refuses ConvListReq for good (a non-retryable error) is
//     not asked again until the core restarts.
//   - An epoch change drops the list (Persist.ResetConvs) with the cursor.

package core

import (
	"cmp"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// maxUnreadSeqs bounds ConvEntry.UnreadSeqs (the entry is rewritten with
// every message): beyond it the oldest are known by number only.
const maxUnreadSeqs = 256

// Conversation is one entry of the conversation list as the app sees it
// (the server's Conversation; see docs/protocol.md, "Conversation list").
type Conversation struct {
	Conv string
	// LastSeq and LastMessage: the conversation's last message delivered to
	// the user.
	LastSeq     uint64
	LastMessage *pimv1.Message
	// ReadSeq is the user's read position; Unread counts the content
	// messages from others above max(ReadSeq, JoinSeq) that the user did
	// not hide.
	ReadSeq uint64
	Unread  uint64
	// Version is the user seq of the last event that changed the entry;
	// Activity the user seq of its last message (the list's order).
	Version  uint64
	Activity uint64
	// JoinSeq is where the user's visible range of a group starts; Left is
	// set once they are no longer a member.
	JoinSeq uint64
	Left    bool
	// 1:1: how far the peer read (0 while either user has read receipts
	// off) and the highest seq of the user's messages that reached a device
	// of the peer.
	PeerReadSeq      uint64
	PeerDeliveredSeq uint64
	// Stale: a change could not be derived locally; the entry is being
	// fetched from the server and Unread may be off until then.
	Stale bool
}

// ListStatus describes the conversation list's synchronisation.
type ListStatus struct {
	// Loaded: the first full load completed.
	Loaded bool
	// Version: the list holds every entry as of this user seq.
	Version uint64
	// Stale entries wait to be fetched again.
	Stale int
	// Syncing: a ConvListReq is in flight or a paged sync is under way.
	Syncing bool
	// Synced: the current connection's sync completed.
	Synced bool
}

// listSync is the in-memory state of the list's synchronisation.
type listSync struct {
	req     uint64    // ConvListReq in flight (0: none)
	retryAt time.Time // no request before this
	synced  bool      // a sync completed on this connection
	off     bool      // the server refused ConvListReq for good

	// The run under way: a sequence of pages.
	running bool
	full    bool   // pages by activity (else by version)
	before  uint64 // full: the next before_activity (0: the top)
	first   uint64 // full: the version of the first page
	pages   int    // full: pages read
	since   uint64 // by version: the next since_version
	load    bool   // the run is the first load
}

func (ls *listSync) connLost() {
	ls.req, ls.retryAt, ls.synced = 0, time.Time{}, false
}

func (ls *listSync) timedOut(id uint64) {
	if ls.req == id {
		ls.req = 0
	}
}

// resetList drops the list (an epoch change).
func (c *Core) resetList() {
	c.convs = make(map[string]*ConvEntry)
	c.staleN = 0
	c.meta.ListLoaded, c.meta.ListVersion = false, 0
	c.dirtyMeta()
	c.ls = listSync{}
	c.out.convReset = true
	clear(c.out.convDty)
	clear(c.out.convEvSet)
	c.out.convEv = nil
}

// Conversations returns the conversation list, most recent activity first.
func (c *Core) Conversations() []Conversation {
	out := make([]Conversation, 0, len(c.convs))
	for _, e := range c.convs {
		out = append(out, e.view())
	}
	SortConversations(out)
	return out
}

// SortConversations sorts a list by activity, newest first (then by id).
func SortConversations(cs []Conversation) {
	slices.SortFunc(cs, func(a, b Conversation) int {
		if a.Activity != b.Activity {
			return cmp.Compare(b.Activity, a.Activity)
		}
		switch {
		case a.Conv < b.Conv:
			return -1
		case a.Conv > b.Conv:
			return 1
		}
		return 0
	})
}

// ListStatus reports the list's synchronisation state.
func (c *Core) ListStatus() ListStatus {
	return ListStatus{Loaded: c.meta.ListLoaded, Version: c.meta.ListVersion, Stale: c.staleN,
		Syncing: c.ls.running || c.ls.req != 0, Synced: c.ls.synced}
}

// view is the entry as the app sees it.
func (e *ConvEntry) view() Conversation {
	v := Conversation{
		Conv: e.Conv, LastSeq: e.LastSeq, ReadSeq: e.ReadSeq, Unread: e.Unread, Version: e.Version,
		Activity: e.Activity, JoinSeq: e.JoinSeq, Left: e.Left, PeerReadSeq: e.PeerReadSeq,
		PeerDeliveredSeq: e.PeerDeliveredSeq, Stale: e.Stale,
	}
	if len(e.LastMessage) > 0 {
		m := new(pimv1.Message)
		if proto.Unmarshal(e.LastMessage, m) == nil {
			v.LastMessage = m
		}
	}
	return v
}

// Conversation returns the entry as the app sees it.
func (e ConvEntry) Conversation() Conversation { return e.view() }

// sameView reports whether a and b look the same to the app.
func sameView(a, b *ConvEntry) bool {
	return a.Conv == b.Conv && a.LastSeq == b.LastSeq && slices.Equal(a.LastMessage, b.LastMessage) &&
		a.ReadSeq == b.ReadSeq && a.Unread == b.Unread && a.Version == b.Version && a.Activity == b.Activity &&
		a.JoinSeq == b.JoinSeq && a.Left == b.Left && a.PeerReadSeq == b.PeerReadSeq &&
		a.PeerDeliveredSeq == b.PeerDeliveredSeq && a.Stale == b.Stale
}

// setConv replaces old (nil: none) by n, recording what changed.
func (c *Core) setConv(old, n *ConvEntry) {
	public := old == nil || !sameView(old, n)
	if !public && slices.Equal(old.UnreadSeqs, n.UnreadSeqs) && old.UnreadFloor == n.UnreadFloor {
		return
	}
	if old != nil && old.Stale {
		c.staleN--
	}
	if n.Stale {
		c.staleN++
	}
	c.convs[n.Conv] = n
	c.out.convDty[n.Conv] = true
	if public && !c.out.convEvSet[n.Conv] {
		c.out.convEvSet[n.Conv] = true
		c.out.convEv = append(c.out.convEv, n.Conv)
	}
}

// eventConv is the conversation whose entry ev changes ("": none; group
// READ receipts change no entry).
func eventConv(ev *pimv1.Event) string {
	switch k := ev.GetKind().(type) {
	case *pimv1.Event_Message:
		return k.Message.GetConv()
	case *pimv1.Event_Read:
		return k.Read.GetConv()
	case *pimv1.Event_Hidden:
		return k.Hidden.GetConv()
	case *pimv1.Event_Receipt:
		if k.Receipt.GetKind() == pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED {
			return k.Receipt.GetConv()
		}
	}
	return ""
}

// listEvent applies the event just delivered (at Delivered) to the list.
func (c *Core) listEvent(ev *pimv1.Event) {
	if !c.cfg.ConvList {
		if c.meta.ListLoaded {
			c.resetList() // events go by unapplied: the list cannot stay complete
		}
		return
	}
	us := ev.GetUserSeq()
	complete := c.meta.ListLoaded // then ListVersion >= us-1
	if complete && us > c.meta.ListVersion {
		c.meta.ListVersion = us
		c.dirtyMeta()
	}
	conv := eventConv(ev)
	if conv == "" {
		return
	}
	old := c.convs[conv]
	if old != nil && us <= old.Version {
		return // the entry came from the server after this event
	}
	var n ConvEntry
	if old != nil {
		n = old.clone()
	} else {
		// Complete list: a new conversation. Otherwise its earlier events
		// are unknown here: fetch it.
		n = ConvEntry{Conv: conv, Stale: !complete}
	}
	n.apply(ev, c.cfg.User)
	n.Version = us
	c.setConv(old, &n)
}

// countsAsUnread is the server's rule: content messages from others.
func countsAsUnread(m *pimv1.Message, user string) bool {
	return m.GetSender() != user && m.GetType() < pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED
}

// unlisted is how many unread messages are known by number only.
func (e *ConvEntry) unlisted() uint64 {
	return e.Unread - min(e.Unread, uint64(len(e.UnreadSeqs)))
}

// apply changes e as ev (of its conversation, newer than e) does on the
// server (internal/store/pebble/readstate.go: noteMessage, noteRead,
// noteHidden, deliveredTo).
func (e *ConvEntry) apply(ev *pimv1.Event, me string) {
	switch k := ev.GetKind().(type) {
	case *pimv1.Event_Message:
		m := k.Message
		e.LastSeq, e.Activity = m.GetSeq(), ev.GetUserSeq()
		e.LastMessage, _ = proto.Marshal(m)
		switch m.GetType() {
		case pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED:
			if slices.Contains(m.GetMembers(), me) {
				// A (re)joined member starts at 0: everything before is
				// below the join point.
				e.JoinSeq, e.Left = m.GetSeq(), false
				e.Unread, e.UnreadSeqs, e.UnreadFloor = 0, nil, 0
			}
		case pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED:
			if slices.Contains(m.GetMembers(), me) {
				e.Left = true
			}
		}
		if countsAsUnread(m, me) && m.GetSeq() > max(e.ReadSeq, e.JoinSeq) {
			e.Unread++
			e.UnreadSeqs = append(e.UnreadSeqs, m.GetSeq())
			if over := len(e.UnreadSeqs) - maxUnreadSeqs; over > 0 {
				e.UnreadFloor = max(e.UnreadFloor, e.UnreadSeqs[over-1])
				e.UnreadSeqs = slices.Clone(e.UnreadSeqs[over:])
			}
		}
	case *pimv1.Event_Read:
		r := k.Read
		if r.GetUser() != me {
			e.PeerReadSeq = max(e.PeerReadSeq, r.GetSeq()) // a 1:1 read receipt
			return
		}
		e.ReadSeq = max(e.ReadSeq, r.GetSeq())
		from := max(e.ReadSeq, e.JoinSeq)
		unlisted := e.unlisted()
		i, _ := slices.BinarySearch(e.UnreadSeqs, from+1)
		e.UnreadSeqs = slices.Clone(e.UnreadSeqs[i:])
		if unlisted > 0 && from < e.UnreadFloor {
			// How many of the unknown ones are at or below from is not
			// known here: keep the upper bound and fetch the entry.
			e.Unread = unlisted + uint64(len(e.UnreadSeqs))
			e.Stale = true
			return
		}
		e.Unread, e.UnreadFloor = uint64(len(e.UnreadSeqs)), 0
	case *pimv1.Event_Hidden:
		s := k.Hidden.GetSeq()
		if i, found := slices.BinarySearch(e.UnreadSeqs, s); found {
			e.UnreadSeqs = slices.Delete(slices.Clone(e.UnreadSeqs), i, i+1)
			e.Unread-- // unlisted is unchanged: Unread > len(UnreadSeqs) before
			return
		}
		if e.unlisted() > 0 && s > max(e.ReadSeq, e.JoinSeq) && s <= e.UnreadFloor {
			e.Stale = true // maybe one of the unread known by number only
		}
	case *pimv1.Event_Receipt:
		if r := k.Receipt; r.GetKind() == pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED {
			e.PeerDeliveredSeq = max(e.PeerDeliveredSeq, r.GetSeq())
		}
	}
}

// entryFromServer is a server entry as a local one.
func entryFromServer(sc *pimv1.Conversation) ConvEntry {
	e := ConvEntry{
		Conv: sc.GetConv(), LastSeq: sc.GetLastSeq(), ReadSeq: sc.GetReadSeq(), Unread: sc.GetUnread(),
		Version: sc.GetVersion(), Activity: sc.GetActivity(), JoinSeq: sc.GetJoinSeq(), Left: sc.GetLeft(),
		PeerReadSeq: sc.GetPeerReadSeq(), PeerDeliveredSeq: sc.GetPeerDeliveredSeq(),
	}
	if m := sc.GetLastMessage(); m != nil {
		e.LastMessage, _ = proto.Marshal(m)
	}
	if e.Unread > 0 {
		e.UnreadFloor = e.LastSeq // every unread message is at or below the last one
	}
	return e
}

// mergeConv takes an entry from the server.
func (c *Core) mergeConv(sc *pimv1.Conversation) {
	if sc.GetConv() == "" {
		return
	}
	old := c.convs[sc.GetConv()]
	if old != nil && sc.GetVersion() < old.Version {
		return // the local entry applied newer events already
	}
	n := entryFromServer(sc)
	if old != nil && !old.Stale && old.Version == n.Version && old.Unread == n.Unread &&
		old.ReadSeq == n.ReadSeq && old.JoinSeq == n.JoinSeq {
		// The same state: keep knowing which messages are unread.
		n.UnreadSeqs, n.UnreadFloor = slices.Clone(old.UnreadSeqs), old.UnreadFloor
	}
	c.setConv(old, &n)
}

// minStaleVersion is the lowest version of a stale entry (0: none).
func (c *Core) minStaleVersion() uint64 {
	var v uint64
	for _, e := range c.convs {
		if e.Stale && (v == 0 || e.Version < v) {
			v = e.Version
		}
	}
	return v
}

// startListRun starts the run the list needs now; false if none.
func (c *Core) startListRun() bool {
	ls := &c.ls
	var since uint64
	switch {
	case !c.meta.ListLoaded:
		*ls = listSync{synced: ls.synced, retryAt: ls.retryAt, running: true, full: true, load: true}
		return true
	case !ls.synced:
		since = c.meta.ListVersion
	case c.staleN > 0:
		since = min(c.meta.ListVersion, max(c.minStaleVersion(), 1)-1)
	default:
		return false
	}
	ls.running, ls.load, ls.before, ls.first, ls.pages = true, false, 0, 0, 0
	ls.full, ls.since = since == 0, since // since 0 would mean "by activity" to the server
	return true
}

func (c *Core) listPump(now time.Time) {
	ls := &c.ls
	if !c.cfg.ConvList || ls.off || ls.req != 0 || now.Before(ls.retryAt) {
		return
	}
	if !ls.running && !c.startListRun() {
		return
	}
	q := &pimv1.ConvListReq{Limit: c.cfg.ConvListLimit}
	if ls.full {
		q.BeforeActivity = ls.before
	} else {
		q.SinceVersion = ls.since
	}
	r := c.reqs.add(&request{kind: reqConvList, sent: now, deadline: now.Add(c.cfg.RequestTimeout), full: ls.full})
	ls.req = r.id
	c.write(now, &pimv1.Frame{RequestId: r.id, Body: &pimv1.Frame_ConvListReq{ConvListReq: q}})
}

func (c *Core) onConvListAnswer(now time.Time, r *request, resp *pimv1.ConvListResp, se *ServerError) {
	ls := &c.ls
	current := ls.req == r.id
	if current {
		ls.req = 0
	}
	if se == nil && resp == nil {
		se = &ServerError{Code: pimv1.ErrorCode_ERROR_CODE_INTERNAL, Message: "unexpected answer to ConvListReq"}
	}
	if se != nil {
		if !current {
			return
		}
		if se.retryable() {
			ls.retryAt = now.Add(max(se.RetryAfter, DefaultRetryAfter))
			return
		}
		ls.off, ls.running = true, false
		return
	}
	for _, sc := range resp.GetConvs() {
		c.mergeConv(sc)
	}
	if !current || !ls.running || r.full != ls.full {
		return
	}
	convs := resp.GetConvs()
	more := resp.GetHasMore() && len(convs) > 0
	if ls.full {
		if ls.pages == 0 {
			ls.first = resp.GetVersion()
		}
		ls.pages++
		if more {
			ls.before = convs[len(convs)-1].GetActivity()
			return
		}
		if ls.pages > 1 && ls.first > 0 {
			// An entry that changed while the pages were read may have
			// moved above the cursor: fetch what changed since the first.
			ls.full, ls.since = false, ls.first
			return
		}
	} else if more {
		ls.since = convs[len(convs)-1].GetVersion()
		return
	}
	c.listRunDone(now, resp.GetVersion())
}

// listRunDone ends a run whose last page answered at version.
func (c *Core) listRunDone(now time.Time, version uint64) {
	ls := &c.ls
	if ls.load {
		c.meta.ListLoaded = true
	}
	// Complete as of the answer, and as of every event delivered meanwhile
	// (each was applied, or made its entry stale).
	c.meta.ListVersion = max(c.meta.ListVersion, version, c.meta.Delivered)
	c.dirtyMeta()
	*ls = listSync{synced: true}
	if c.staleN > 0 {
		// Still stale: an event overtook the answer. Ask again, not at
		// once (a server that never versions an entry would make it spin).
		ls.retryAt = now.Add(DefaultRetryAfter)
	}
}

func (c *Core) listDeadlines(at func(time.Time)) {
	ls := &c.ls
	if c.cn.phase != phaseActive || !c.cfg.ConvList || ls.off || ls.req != 0 {
		return
	}
	if ls.running || !c.meta.ListLoaded || !ls.synced || c.staleN > 0 {
		at(ls.retryAt)
	}
}
