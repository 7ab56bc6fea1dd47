package api

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// DefaultTokenTTL is the lifetime of a token when the request gives none.
const DefaultTokenTTL = 24 * time.Hour

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	User string    `json:"user"`
	TTL  *Duration `json:"ttl,omitempty"`
}

// TokenResponse answers POST /v1/tokens.
type TokenResponse struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *server) createToken(r *http.Request, _ string) (int, any, error) {
	var req TokenRequest
	if err := s.decode(r, &req); err != nil {
		return 0, nil, err
	}
	if !store.ValidID(req.User) {
		return 0, nil, badRequest("invalid user id %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", req.User)
	}
	ttl := DefaultTokenTTL
	if req.TTL != nil {
		ttl = time.Duration(*req.TTL)
	}
	if ttl <= 0 {
		return 0, nil, badRequest("ttl must be positive, got %v", ttl)
	}
	tok, err := s.keys.Issue(req.User, ttl)
	if err != nil {
		return 0, nil, errcode.Wrap(pimv1.ErrorCode_ERROR_CODE_INTERNAL, err, "cannot issue the token")
	}
	// The expiry as signed into the token (whole seconds).
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil || claims.ExpiresAt == nil {
		return 0, nil, errcode.Wrap(pimv1.ErrorCode_ERROR_CODE_INTERNAL, err, "cannot read the issued token")
	}
	return http.StatusOK, TokenResponse{Token: tok, User: req.User, ExpiresAt: claims.ExpiresAt.UTC()}, nil
}

// GroupRequest is the body of POST /v1/groups and POST /v1/groups/{id}/members.
type GroupRequest struct {
	Group string   `json:"group,omitempty"` // create only: "g:x" or "x"; empty lets the server pick
	Users []string `json:"users"`
	Name  string   `json:"name,omitempty"` // create only
}

func (s *server) createGroup(r *http.Request, actor string) (int, any, error) {
	var req GroupRequest
	if err := s.decode(r, &req); err != nil {
		return 0, nil, err
	}
	return s.group(r, actor, http.StatusCreated, &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_CREATE, Group: GroupID(req.Group), Users: req.Users, Name: req.Name,
	})
}

func (s *server) addMembers(r *http.Request, actor string) (int, any, error) {
	var req GroupRequest
	if err := s.decode(r, &req); err != nil {
		return 0, nil, err
	}
	if req.Group != "" || req.Name != "" {
		return 0, nil, badRequest("the group is named in the path; the body takes only \"users\"")
	}
	return s.group(r, actor, http.StatusOK, &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_ADD, Group: GroupID(r.PathValue("id")), Users: req.Users,
	})
}

func (s *server) removeMember(r *http.Request, actor string) (int, any, error) {
	return s.group(r, actor, http.StatusOK, &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_REMOVE, Group: GroupID(r.PathValue("id")), Users: []string{r.PathValue("user")},
	})
}

func (s *server) listMembers(r *http.Request, actor string) (int, any, error) {
	return s.group(r, actor, http.StatusOK, &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_MEMBERS, Group: GroupID(r.PathValue("id")),
	})
}

// GroupSettings is the body of PATCH /v1/groups/{id}.
type GroupSettings struct {
	ReceiptsVisible *bool `json:"receipts_visible,omitempty"`
}

func (s *server) groupSettings(r *http.Request, actor string) (int, any, error) {
	var req GroupSettings
	if err := s.decode(r, &req); err != nil {
		return 0, nil, err
	}
	return s.group(r, actor, http.StatusOK, &pimv1.GroupReq{
		Op: pimv1.GroupOp_GROUP_OP_SETTINGS, Group: GroupID(r.PathValue("id")), ReceiptsVisible: req.ReceiptsVisible,
	})
}

func (s *server) group(r *http.Request, actor string, status int, req *pimv1.GroupReq) (int, any, error) {
	if req.Op != pimv1.GroupOp_GROUP_OP_MEMBERS { // a change: a write like a send
		done, err := s.admitWrite()
		if err != nil {
			return 0, nil, err
		}
		defer done()
	}
	resp, err := s.logic.Group(r.Context(), actor, DefaultDevice, req)
	if err != nil {
		return 0, nil, err
	}
	return status, GroupView(resp), nil
}

// MessageRequest is the body of POST /v1/messages. Exactly one of To and Conv,
// and exactly one of Text and BodyBase64, must be set.
type MessageRequest struct {
	To          string `json:"to,omitempty"`   // a user: the 1:1 conversation with them
	Conv        string `json:"conv,omitempty"` // "d:a:b", "g:x" or "x" (a group)
	Text        string `json:"text,omitempty"`
	BodyBase64  string `json:"body_base64,omitempty"` // a binary message
	ClientMsgID string `json:"client_msg_id,omitempty"`
	Device      string `json:"device,omitempty"`      // default "http"
	ClientTime  int64  `json:"client_time,omitempty"` // Unix ms; default now
}

func (s *server) sendMessage(r *http.Request, actor string) (int, any, error) {
	var req MessageRequest
	if err := s.decode(r, &req); err != nil {
		return 0, nil, err
	}
	send := &pimv1.SendReq{ToUser: req.To, ClientMsgId: req.ClientMsgID, ClientTime: req.ClientTime}
	if req.Conv != "" {
		send.Conv = ConvID(req.Conv)
	}
	switch {
	case req.Text != "" && req.BodyBase64 != "":
		return 0, nil, badRequest("set one of text and body_base64, not both")
	case req.Text != "":
		send.Type, send.Body = pimv1.MessageType_MESSAGE_TYPE_TEXT, []byte(req.Text)
	case req.BodyBase64 != "":
		b, err := base64.StdEncoding.DecodeString(req.BodyBase64)
		if err != nil {
			return 0, nil, badRequest("body_base64 is not standard base64: %v", err)
		}
		send.Type, send.Body = pimv1.MessageType_MESSAGE_TYPE_BINARY, b
	default:
		return 0, nil, badRequest("missing text or body_base64")
	}
	device, err := deviceOf(req.Device)
	if err != nil {
		return 0, nil, err
	}
	if send.ClientMsgId == "" {
		send.ClientMsgId = RandomClientMsgID()
	}
	if send.ClientTime == 0 {
		send.ClientTime = time.Now().UnixMilli()
	}
	done, err := s.admitSend(r, actor)
	if err != nil {
		return 0, nil, err
	}
	defer done()
	ack, err := s.logic.Send(r.Context(), actor, device, send)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, AckView(ack), nil
}

func (s *server) history(r *http.Request, actor string) (int, any, error) {
	before, err := queryUint(r, "before")
	if err != nil {
		return 0, nil, err
	}
	limit, err := queryUint(r, "limit")
	if err != nil {
		return 0, nil, err
	}
	if limit > 1<<31 {
		limit = 1 << 31 // logic caps it further
	}
	resp, err := s.logic.History(r.Context(), actor, &pimv1.HistoryReq{
		Conv: ConvID(r.PathValue("conv")), BeforeSeq: before, Limit: uint32(limit),
	})
	if err != nil {
		return 0, nil, err
	}
	h := History{Messages: make([]Message, 0, len(resp.Messages)), HasMore: resp.HasMore}
	for _, m := range resp.Messages {
		h.Messages = append(h.Messages, MessageView(m, 0))
	}
	return http.StatusOK, h, nil
}

// ReadRequest is the body of POST /v1/conversations/{conv}/read.
type ReadRequest struct {
	Seq    uint64 `json:"seq"`
	Device string `json:"device,omitempty"` // default "http"
}

// ReadPosition is the answer of POST /v1/conversations/{conv}/read.
type ReadPosition struct {
	Conv    string `json:"conv"`
	ReadSeq uint64 `json:"read_seq"`
}

func (s *server) markRead(r *http.Request, actor string) (int, any, error) {
	var req ReadRequest
	if err := s.decode(r, &req); err != nil {
		return 0, nil, err
	}
	device, err := deviceOf(req.Device)
	if err != nil {
		return 0, nil, err
	}
	done, err := s.admitWrite() // a read mark is a write like a group change
	if err != nil {
		return 0, nil, err
	}
	defer done()
	resp, err := s.logic.Read(r.Context(), actor, device, &pimv1.ReadReq{Conv: ConvID(r.PathValue("conv")), Seq: req.Seq})
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, ReadPosition{Conv: resp.Conv, ReadSeq: resp.ReadSeq}, nil
}

// deviceOf returns the device a request names, DefaultDevice if none.
func deviceOf(device string) (string, error) {
	if device == "" {
		return DefaultDevice, nil
	}
	if !store.ValidID(device) {
		return "", badRequest("invalid device id %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", device)
	}
	return device, nil
}

// RandomClientMsgID returns a fresh random client_msg_id (32 hex digits).
func RandomClientMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
