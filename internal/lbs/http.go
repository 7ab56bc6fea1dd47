// The HTTP face of the LBS: GET /v1/lbs.
//
// Invariants of this file:
//   - Nothing is answered without a valid user token (Authorization:
//     Bearer); errors use the API's JSON shape {"error": {"code", "message"}}
//     and status codes (401, 405, 503).
//   - Answers are never cached by intermediaries (Cache-Control: no-store):
//     each one is a fresh random choice; the client caches it for ttl_ms.
package lbs

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
)

// Authenticator verifies a user token (satisfied by *auth.Keys).
type Authenticator interface {
	Verify(token string) (user string, err error)
}

// Handler serves GET /v1/lbs with b, for clients authenticated by auth.
func Handler(b *Balancer, auth Authenticator, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "BAD_REQUEST", "method "+r.Method+" not allowed on /v1/lbs (allowed: GET)", 0)
			return
		}
		scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pim"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "missing credential: send Authorization: Bearer <token>", 0)
			return
		}
		user, err := auth.Verify(strings.TrimSpace(tok))
		if err != nil {
			log.Debug("lbs: token refused", "remote", r.RemoteAddr, "err", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="pim"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "invalid token", 0)
			return
		}
		ans, err := b.Resolve()
		if err != nil {
			log.Warn("lbs: cannot answer", "user", user, "err", err)
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "no gateway available, retry", 1000)
			return
		}
		writeJSON(w, http.StatusOK, ans)
	})
}

type errorBody struct {
	Error struct {
		Code         string `json:"code"`
		Message      string `json:"message"`
		RetryAfterMs uint32 `json:"retry_after_ms,omitempty"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, msg string, retryMs uint32) {
	var e errorBody
	e.Error.Code, e.Error.Message, e.Error.RetryAfterMs = code, msg, retryMs
	if retryMs > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((retryMs+999)/1000)))
	}
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"INTERNAL","message":"cannot encode the response"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
