// Package api is PIM's HTTP API (the article's short-connection REST
// channel): minting tokens, managing groups, sending messages and reading
// history, over the same logic.Service the long connections use.
//
// Every endpoint lives under /v1/, takes and returns JSON, and answers errors
// as {"error": {"code": "FORBIDDEN", "message": "..."}} with the status
// errcode.HTTPStatus gives the code.
//
// Authentication is "Authorization: Bearer <credential>":
//   - the admin key (DATA/admin.key) for POST /v1/tokens, and for any user
//     endpoint when the request names the acting user with ?as=USER;
//   - a user token for the user endpoints: the token's user is the actor,
//     always (?as may only repeat it).
//
// Invariants:
//   - The actor of a user endpoint comes only from the credential (a user
//     token's subject, or ?as with the admin key), never from the body.
//   - Nothing reaches logic before the request is authenticated and its body
//     (at most Config.MaxBody bytes, unknown fields refused) decoded.
//   - Writes pass the long connections' admission control before logic
//     (admit.go): a refused one stores nothing and is answered 429 or 503
//     with Retry-After.
package api

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/logic"
)

// DefaultMaxBody is the default limit of a request body, in bytes.
const DefaultMaxBody = 1 << 20

// DefaultDevice is the device id of messages and group changes made over HTTP.
const DefaultDevice = "http"

// Config configures the API handler.
type Config struct {
	Logic  *logic.Service
	Keys   *auth.Keys
	Logger *slog.Logger // nil: discarded
	// MaxBody limits request bodies in bytes (0: DefaultMaxBody).
	MaxBody int64
	// Admission, if set, limits sends and other writes as on the long
	// connections (share the gateway's: one budget per user); nil: none.
	Admission *admission.Controller
	// Now is the clock of admission decisions (nil: time.Now). Tests inject one.
	Now func() time.Time
}

type server struct {
	logic   *logic.Service
	keys    *auth.Keys
	log     *slog.Logger
	maxBody int64
	mux     *http.ServeMux
	admit   *admission.Controller // nil: no limits
	now     func() time.Time
}

// New returns the API handler. It serves paths under /v1/ (mount it at
// "/v1/" without stripping the prefix) and answers a JSON 404 or 405 for
// any other path under /v1/.
func New(cfg Config) http.Handler {
	s := &server{logic: cfg.Logic, keys: cfg.Keys, log: cfg.Logger, maxBody: cfg.MaxBody, mux: http.NewServeMux(),
		admit: cfg.Admission, now: cfg.Now}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	s.route("POST /v1/tokens", adminOnly, s.createToken)
	s.route("POST /v1/groups", asUser, s.createGroup)
	s.route("POST /v1/groups/{id}/members", asUser, s.addMembers)
	s.route("DELETE /v1/groups/{id}/members/{user}", asUser, s.removeMember)
	s.route("GET /v1/groups/{id}/members", asUser, s.listMembers)
	s.route("PATCH /v1/groups/{id}", asUser, s.groupSettings)
	s.route("POST /v1/messages", asUser, s.sendMessage)
	s.route("GET /v1/conversations/{conv}/history", asUser, s.history)
	s.route("POST /v1/conversations/{conv}/read", asUser, s.markRead)
	s.route("GET /v1/conversations", asUser, s.listConversations)
	s.route("GET /v1/conversations/{conv}/messages/{seq}/receipts", userOrAdmin, s.receipts)
	s.route("POST /v1/conversations/{conv}/messages/{seq}/hide", asUser, s.hide)
	s.route("GET /v1/settings", asUser, s.settings)
	s.route("PATCH /v1/settings", asUser, s.settings)
	s.mux.HandleFunc("/v1/", s.noRoute)
	return s.mux
}
