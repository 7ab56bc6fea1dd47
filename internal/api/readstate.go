// Read-state endpoints: the conversation list, receipts, delete-for-me and
// settings. A user reads their own; an admin (?as=USER) reads any user's
// list and any message's receipts. Writes among them (hide, a settings
// change) pass the pipeline's admission (admit.go); reads do not.
package api

import (
	"net/http"
	"strconv"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Conversation is one entry of GET /v1/conversations.
type Conversation struct {
	Conv             string   `json:"conv"`
	LastSeq          uint64   `json:"last_seq"`
	ReadSeq          uint64   `json:"read_seq"`
	Unread           uint64   `json:"unread"`
	Version          uint64   `json:"version"`
	Activity         uint64   `json:"activity"`
	JoinSeq          uint64   `json:"join_seq,omitempty"`
	Left             bool     `json:"left,omitempty"`
	PeerReadSeq      uint64   `json:"peer_read_seq,omitempty"`
	PeerDeliveredSeq uint64   `json:"peer_delivered_seq,omitempty"`
	LastMessage      *Message `json:"last_message,omitempty"`
}

// ConversationView converts a list entry.
func ConversationView(c *pimv1.Conversation) Conversation {
	v := Conversation{
		Conv: c.Conv, LastSeq: c.LastSeq, ReadSeq: c.ReadSeq, Unread: c.Unread, Version: c.Version,
		Activity: c.Activity, JoinSeq: c.JoinSeq, Left: c.Left, PeerReadSeq: c.PeerReadSeq,
		PeerDeliveredSeq: c.PeerDeliveredSeq,
	}
	if c.LastMessage != nil {
		m := MessageView(c.LastMessage, 0)
		v.LastMessage = &m
	}
	return v
}

// Conversations is the answer of GET /v1/conversations.
type Conversations struct {
	Conversations []Conversation `json:"conversations"`
	HasMore       bool           `json:"has_more"`
	Version       uint64         `json:"version"`
}

// Receipts is the answer of GET /v1/conversations/{conv}/messages/{seq}/receipts.
type Receipts struct {
	Conv      string   `json:"conv"`
	Seq       uint64   `json:"seq"`
	ReadCount uint32   `json:"read_count"`
	Readers   []string `json:"readers"`
	HasMore   bool     `json:"has_more"`
}

// Settings is the body and answer of /v1/settings.
type Settings struct {
	ReadReceipts *bool `json:"read_receipts,omitempty"`
}

// HideRequest is the body of POST /v1/conversations/{conv}/messages/{seq}/hide.
type HideRequest struct {
	Device string `json:"device,omitempty"` // default "http"
}

func (s *server) listConversations(r *http.Request, actor string) (int, any, error) {
	since, err := queryUint(r, "since")
	if err != nil {
		return 0, nil, err
	}
	before, err := queryUint(r, "before")
	if err != nil {
		return 0, nil, err
	}
	limit, err := queryUint(r, "limit")
	if err != nil {
		return 0, nil, err
	}
	resp, err := s.logic.Conversations(r.Context(), actor, &pimv1.ConvListReq{
		SinceVersion: since, BeforeActivity: before, Limit: uint32(min(limit, 1<<31))})
	if err != nil {
		return 0, nil, err
	}
	out := Conversations{Conversations: make([]Conversation, 0, len(resp.Convs)), HasMore: resp.HasMore, Version: resp.Version}
	for _, c := range resp.Convs {
		out.Conversations = append(out.Conversations, ConversationView(c))
	}
	return http.StatusOK, out, nil
}

func (s *server) receipts(r *http.Request, actor string) (int, any, error) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		return 0, nil, badRequest("invalid seq %q: want a number", r.PathValue("seq"))
	}
	limit, err := queryUint(r, "limit")
	if err != nil {
		return 0, nil, err
	}
	req := &pimv1.ReceiptsReq{Conv: ConvID(r.PathValue("conv")), Seq: seq,
		AfterUser: r.URL.Query().Get("after"), Limit: uint32(min(limit, 1<<31))}
	var resp *pimv1.ReceiptsResp
	if s.isAdmin(r) {
		resp, err = s.logic.AdminReceipts(r.Context(), req)
	} else {
		resp, err = s.logic.Receipts(r.Context(), actor, req)
	}
	if err != nil {
		return 0, nil, err
	}
	readers := resp.Readers
	if readers == nil {
		readers = []string{}
	}
	return http.StatusOK, Receipts{Conv: resp.Conv, Seq: resp.Seq, ReadCount: resp.ReadCount, Readers: readers, HasMore: resp.HasMore}, nil
}

func (s *server) hide(r *http.Request, actor string) (int, any, error) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		return 0, nil, badRequest("invalid seq %q: want a number", r.PathValue("seq"))
	}
	var req HideRequest
	if err := s.decode(r, &req); err != nil {
		return 0, nil, err
	}
	device, err := deviceOf(req.Device)
	if err != nil {
		return 0, nil, err
	}
	done, err := s.admitWrite()
	if err != nil {
		return 0, nil, err
	}
	defer done()
	resp, err := s.logic.Hide(r.Context(), actor, device, &pimv1.HideReq{Conv: ConvID(r.PathValue("conv")), Seq: seq})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, map[string]any{"conv": resp.Conv, "seq": resp.Seq, "hidden": true}, nil
}

func (s *server) settings(r *http.Request, actor string) (int, any, error) {
	req := &pimv1.SettingsReq{}
	if r.Method != http.MethodGet {
		var body Settings
		if err := s.decode(r, &body); err != nil {
			return 0, nil, err
		}
		req.ReadReceipts = body.ReadReceipts
		done, err := s.admitWrite()
		if err != nil {
			return 0, nil, err
		}
		defer done()
	}
	resp, err := s.logic.Settings(r.Context(), actor, req)
	if err != nil {
		return 0, nil, err
	}
	on := resp.ReadReceipts
	return http.StatusOK, Settings{ReadReceipts: &on}, nil
}

// isAdmin reports whether r carries the admin key (authorize has checked it).
func (s *server) isAdmin(r *http.Request) bool {
	cred, ok := bearer(r)
	return ok && s.keys.IsAdmin(cred)
}
