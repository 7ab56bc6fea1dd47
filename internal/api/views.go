package api

// JSON views of protocol values, shared by the API and the pim CLI's --json
// output so both speak the same field names. Invariant: a text message's body
// is in "body", any other non-empty body is base64 in "body_base64"; arrays
// are never null.

import (
	"encoding/base64"
	"strings"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Message is the JSON form of a message, or of a timeline event when UserSeq
// is set.
type Message struct {
	Conv         string   `json:"conv"`
	Seq          uint64   `json:"seq"`
	UserSeq      uint64   `json:"user_seq,omitempty"`
	MsgID        string   `json:"msg_id"`
	Sender       string   `json:"sender"`
	SenderDevice string   `json:"sender_device"`
	ClientMsgID  string   `json:"client_msg_id"`
	Type         string   `json:"type"`
	Body         string   `json:"body,omitempty"`
	BodyBase64   string   `json:"body_base64,omitempty"`
	Members      []string `json:"members,omitempty"`
	ServerTime   int64    `json:"server_time"`
	ClientTime   int64    `json:"client_time"`
	ClientSeq    uint64   `json:"client_seq,omitempty"`
}

// MessageView renders m, from the timeline entry userSeq (0 for none).
func MessageView(m *pimv1.Message, userSeq uint64) Message {
	v := Message{
		Conv: m.GetConv(), Seq: m.GetSeq(), UserSeq: userSeq, MsgID: m.GetMsgId(),
		Sender: m.GetSender(), SenderDevice: m.GetSenderDevice(), ClientMsgID: m.GetClientMsgId(),
		Type: TypeName(m.GetType()), Members: m.GetMembers(),
		ServerTime: m.GetServerTime(), ClientTime: m.GetClientTime(), ClientSeq: m.GetClientSeq(),
	}
	switch {
	case m.GetType() == pimv1.MessageType_MESSAGE_TYPE_TEXT:
		v.Body = string(m.GetBody())
	case len(m.GetBody()) > 0:
		v.BodyBase64 = base64.StdEncoding.EncodeToString(m.GetBody())
	}
	return v
}

// TypeName is the short lower-case name of a message type: "text",
// "binary", "group_created", "members_added", "members_removed".
func TypeName(t pimv1.MessageType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "MESSAGE_TYPE_"))
}

// Ack is the JSON form of a SendAck.
type Ack struct {
	Conv        string `json:"conv"`
	Seq         uint64 `json:"seq"`
	MsgID       string `json:"msg_id"`
	ServerTime  int64  `json:"server_time"`
	ClientMsgID string `json:"client_msg_id"`
	Duplicate   bool   `json:"duplicate"`
}

// AckView renders a SendAck.
func AckView(a *pimv1.SendAck) Ack {
	return Ack{
		Conv: a.GetConv(), Seq: a.GetSeq(), MsgID: a.GetMsgId(), ServerTime: a.GetServerTime(),
		ClientMsgID: a.GetClientMsgId(), Duplicate: a.GetDuplicate(),
	}
}

// Group is the JSON form of a GroupResp.
type Group struct {
	Group string `json:"group"`
	// Seq is the seq of the membership message the change wrote (0: none).
	Seq     uint64   `json:"seq,omitempty"`
	Members []Member `json:"members"`
	// ReceiptsVisible: every member may read the read receipts of the
	// group's messages (not only each message's sender).
	ReceiptsVisible bool `json:"receipts_visible"`
}

// Member is one group member.
type Member struct {
	User    string `json:"user"`
	Role    string `json:"role"`
	JoinSeq uint64 `json:"join_seq"`
}

// GroupView renders a GroupResp.
func GroupView(g *pimv1.GroupResp) Group {
	v := Group{Group: g.GetGroup(), Seq: g.GetSeq(), Members: make([]Member, 0, len(g.GetMembers())),
		ReceiptsVisible: g.GetReceiptsVisible()}
	for _, m := range g.GetMembers() {
		v.Members = append(v.Members, Member{User: m.GetUser(), Role: m.GetRole(), JoinSeq: m.GetJoinSeq()})
	}
	return v
}

// History is the JSON form of a HistoryResp.
type History struct {
	Messages []Message `json:"messages"`
	HasMore  bool      `json:"has_more"`
}

// GroupID returns the group conversation id for id: "g:xyz" for "xyz" or
// "g:xyz" ("" stays "").
func GroupID(id string) string {
	if id == "" || strings.HasPrefix(id, "g:") {
		return id
	}
	return "g:" + id
}

// ConvID returns the conversation id for id: direct ("d:a:b") and group
// ("g:x") ids as they are, anything else as a group id ("x" -> "g:x").
func ConvID(id string) string {
	if strings.HasPrefix(id, "d:") {
		return id
	}
	return GroupID(id)
}
