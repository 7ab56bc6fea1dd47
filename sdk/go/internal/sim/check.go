// The final checks of a run, after the heal phase reached quiescence:
// DESIGN.md section 4, invariants 1-7, as far as the SDK is concerned
// (6 includes the conversation list: every device's equals the server's,
// unread counts and read, join, peer-read and delivered positions exactly).
// (Several are also checked as the run goes: in device.go, at the moment a
// frame leaves or an event is shown, and in server.go, as messages are
// stored.)
//
// Invariants of this file:
//   - Checks only read the world; a failed check adds a violation.

package sim

import (
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

func (w *world) finalChecks() {
	st := w.srv.st
	// Server-side sanity of the model: one stored copy per client_msg_id.
	type key struct{ user, device, cmid string }
	stored := make(map[key]ref)
	for _, conv := range sortedKeys(st.msgs) {
		for _, m := range st.msgs[conv] {
			if m.ClientMsgId == "" {
				continue
			}
			k := key{m.Sender, m.SenderDevice, m.ClientMsgId}
			if _, dup := stored[k]; dup {
				w.violation("invariant 2: %v stored twice", k)
			}
			stored[k] = ref{conv: m.Conv, seq: m.Seq}
		}
	}
	for _, d := range w.devs {
		dk := &d.disk
		// 1, 3, 5, 6: the app showed the whole timeline, in order, once; the
		// devices of a user therefore agree.
		if got, want := len(dk.shown), int(st.head(d.user)); got != want {
			w.violation("invariant 1: %s showed %d of %d events", d.name, got, want)
		}
		if c := st.cursors[[2]string{d.user, d.name}]; c != uint64(len(dk.shown)) {
			w.violation("invariant 5: %s server cursor %d, shown %d", d.name, c, len(dk.shown))
		}
		// 1, 2: every message the app sent was stored exactly once (or
		// legitimately refused).
		for _, conv := range sortedKeys(dk.sentOrder) {
			var last uint64
			for _, cmid := range dk.sentOrder[conv] {
				r := dk.sent[cmid]
				ref, ok := stored[key{d.user, d.name, cmid}]
				switch {
				case r.state == core.Sent && !ok:
					w.violation("invariant 1: %s %s acknowledged but not stored", d.name, cmid)
				case r.state == core.Failed && r.rejected && !ok:
					// Refused (the server checked the refusal was legitimate).
					w.checkOwnLeave(d, r)
					continue
				case r.state != core.Sent:
					w.violation("invariant 1: %s %s ends %v (code %v, stored %v)", d.name, cmid, r.state, r.failCode, ok)
				}
				if !ok {
					continue
				}
				// 4: sender order.
				if ref.conv != conv {
					w.violation("%s %s stored in %s, sent to %s", d.name, cmid, ref.conv, conv)
				}
				if ref.seq <= last {
					w.violation("invariant 4: %s %s stored at %s/%d after seq %d", d.name, cmid, conv, ref.seq, last)
				}
				last = ref.seq
			}
		}
		// 7: offline commands answered once each, applied at most once, in
		// order within each conversation.
		for _, id := range dk.cmdOrder {
			if r := dk.cmds[id]; !r.done {
				w.violation("invariant 7: %s command %d never answered", d.name, id)
			}
		}
		lastIdx := make(map[string]int)
		applied := make(map[int]bool)
		for _, op := range st.groupLog {
			if op.user != d.user || op.device != d.name {
				continue
			}
			idx := slices.IndexFunc(dk.cmdOrder, func(id uint64) bool {
				g := dk.cmds[id].req
				return g.GetOp() == op.op && g.GetGroup() == op.group && slices.Equal(sorted(g.GetUsers()), sorted(op.users))
			})
			last, ok := lastIdx[op.group]
			switch {
			case idx < 0:
				w.violation("invariant 7: %s applied %v %s %v, which it never issued", d.name, op.op, op.group, op.users)
			case applied[idx]:
				w.violation("invariant 7: %s command #%d (%v %s %v) applied twice", d.name, idx, op.op, op.group, op.users)
			case ok && idx < last:
				w.violation("invariant 7: %s command #%d (%v %s %v) applied after #%d of the same group",
					d.name, idx, op.op, op.group, op.users, last)
			}
			if idx >= 0 {
				applied[idx] = true
				lastIdx[op.group] = idx
			}
		}
		// 6: after convergence each device's conversation list is the
		// server's, exactly.
		w.checkConvList(d)
		// R9: the clock offset is within its error bound of the truth.
		if off, bound, ok := d.c.Offset(); ok {
			truth := w.serverSkew - d.skew
			if diff := (off - truth).Abs(); diff > bound+2*time.Millisecond {
				w.violation("clock: %s offset %v, truth %v, bound %v", d.name, off, truth, bound)
			}
		} else {
			w.violation("clock: %s has no offset estimate", d.name)
		}
		// R23: learned heartbeats stay within bounds.
		for _, h := range dk.st.Heartbeats {
			if h.Interval < 2*time.Second || h.Interval > 8*time.Second {
				w.violation("heartbeat: %s learned %v on %s", d.name, h.Interval, h.Network)
			}
		}
	}
}

// checkConvList compares d's conversation list with its user's entries on
// the server, which it first checks against their derivation from the
// timeline.
func (w *world) checkConvList(d *device) {
	st := w.srv.st
	srv := st.rs.entries[d.user]
	derived := st.derivedEntries(d.user)
	for _, conv := range sortedKeys(derived) {
		if diff := convDiff(derived[conv], srv[conv]); diff != "" {
			w.violation("model: %s's entry %s: derived vs incremental: %s", d.user, conv, diff)
		}
	}
	if ls := d.c.ListStatus(); !ls.Loaded || ls.Stale > 0 || ls.Version != st.head(d.user) {
		w.violation("list: %s status %+v at head %d", d.name, ls, st.head(d.user))
	}
	local := make(map[string]*pimv1.Conversation)
	for _, c := range d.c.Conversations() {
		local[c.Conv] = &pimv1.Conversation{Conv: c.Conv, LastSeq: c.LastSeq, ReadSeq: c.ReadSeq, Unread: c.Unread,
			Version: c.Version, Activity: c.Activity, JoinSeq: c.JoinSeq, Left: c.Left, PeerReadSeq: c.PeerReadSeq,
			PeerDeliveredSeq: c.PeerDeliveredSeq}
		if c.Stale {
			w.violation("list: %s entry %s stale after convergence", d.name, c.Conv)
		}
		if want := st.msgs[c.Conv]; c.LastSeq == 0 || c.LastSeq > uint64(len(want)) ||
			c.LastMessage.GetMsgId() != want[c.LastSeq-1].MsgId {
			w.violation("list: %s entry %s last message %v at seq %d", d.name, c.Conv, c.LastMessage.GetMsgId(), c.LastSeq)
		}
	}
	for _, conv := range sortedKeys(srv) {
		if diff := convDiff(srv[conv], local[conv]); diff != "" {
			w.violation("list: %s entry %s: server vs device: %s", d.name, conv, diff)
		}
	}
	for _, conv := range sortedKeys(local) {
		if srv[conv] == nil {
			w.violation("list: %s has entry %s, the server none", d.name, conv)
		}
	}
}

// convDiff describes how two entries differ ("" if they do not), last
// messages aside.
func convDiff(a, b *pimv1.Conversation) string {
	if a == nil || b == nil {
		return fmt.Sprintf("%v vs %v", a, b)
	}
	a, b = proto.Clone(a).(*pimv1.Conversation), proto.Clone(b).(*pimv1.Conversation)
	a.LastMessage, b.LastMessage = nil, nil
	if proto.Equal(a, b) {
		return ""
	}
	return fmt.Sprintf("{%v} vs {%v}", a, b)
}

// checkOwnLeave: a message refused because the user left the group must
// not have been sent by the device before its own leave command.
func (w *world) checkOwnLeave(d *device, r *sentRec) {
	if r.failCode != pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		return
	}
	for _, op := range w.srv.st.groupLog {
		if op.op == pimv1.GroupOp_GROUP_OP_REMOVE && op.group == r.conv && op.user == d.user &&
			op.device == d.name && slices.Equal(op.users, []string{d.user}) {
			if r.appSeq < d.disk.leaveSeq[r.conv] {
				w.violation("invariant 4/7: %s sent %s to %s before leaving it, yet it was refused",
					d.name, r.cmid, r.conv)
			}
		}
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
