// Package readmodel is the plain definition of a conversation list: each
// entry derived from scratch out of a user's whole timeline. The Pebble
// store keeps entries incrementally and the SDK keeps its own copy from the
// events it receives; the store's reference model, the SDK's simulation and
// the end-to-end tests check both against this one derivation.
//
// Invariants of the definition:
//   - An entry exists for every conversation with a message in the timeline.
//     Its Version is the user seq of the last event that changed it (a
//     message, a read-sync, a DELIVERED receipt, a Hidden event; group READ
//     receipts change no entry) and its Activity that of its last message.
//   - ReadSeq is the highest of the user's own read-syncs (every read that
//     moves a position sends one to the reader), PeerReadSeq the highest
//     read-sync of anyone else, PeerDeliveredSeq the highest DELIVERED
//     receipt.
//   - Unread counts the conversation's messages in the timeline that are
//     content from others (store.CountsAsUnread), not hidden, with seq >
//     max(ReadSeq, JoinSeq), JoinSeq being that of the user's last join.
package readmodel

import (
	"slices"

	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Derive returns user's conversation entries, without LastMessage, from
// their whole timeline: every event in user-seq order from 1, each with its
// kind (and a message event with its message).
func Derive(user string, timeline []*pimv1.Event) map[string]*pimv1.Conversation {
	out := make(map[string]*pimv1.Conversation)
	entry := func(conv string) *pimv1.Conversation {
		if out[conv] == nil {
			out[conv] = &pimv1.Conversation{Conv: conv}
		}
		return out[conv]
	}
	hidden := make(map[string][]uint64)
	for _, ev := range timeline {
		us := ev.GetUserSeq()
		switch k := ev.GetKind().(type) {
		case *pimv1.Event_Message:
			noteMessage(entry(k.Message.Conv), user, us, k.Message)
		case *pimv1.Event_Read:
			c := entry(k.Read.Conv)
			if k.Read.User == user {
				c.ReadSeq = max(c.ReadSeq, k.Read.Seq)
			} else {
				c.PeerReadSeq = max(c.PeerReadSeq, k.Read.Seq)
			}
			c.Version = us
		case *pimv1.Event_Hidden:
			entry(k.Hidden.Conv).Version = us
			hidden[k.Hidden.Conv] = append(hidden[k.Hidden.Conv], k.Hidden.Seq)
		case *pimv1.Event_Receipt:
			if k.Receipt.Kind == pimv1.ReceiptKind_RECEIPT_KIND_DELIVERED {
				c := entry(k.Receipt.Conv)
				c.PeerDeliveredSeq = max(c.PeerDeliveredSeq, k.Receipt.Seq)
				c.Version = us
			}
		}
	}
	for _, ev := range timeline {
		m := ev.GetMessage()
		if m == nil {
			continue
		}
		c := out[m.Conv]
		if m.Seq > max(c.ReadSeq, c.JoinSeq) && store.CountsAsUnread(m, user) && !slices.Contains(hidden[m.Conv], m.Seq) {
			c.Unread++
		}
	}
	return out
}

// noteMessage applies message m, delivered at user seq us, to c.
func noteMessage(c *pimv1.Conversation, user string, us uint64, m *pimv1.Message) {
	c.LastSeq, c.Activity, c.Version = m.Seq, us, us
	mine := slices.Contains(m.Members, user)
	switch m.Type {
	case pimv1.MessageType_MESSAGE_TYPE_GROUP_CREATED, pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED:
		if mine {
			c.JoinSeq, c.Left = m.Seq, false
		}
	case pimv1.MessageType_MESSAGE_TYPE_MEMBERS_REMOVED:
		if mine {
			c.Left = true
		}
	}
}
