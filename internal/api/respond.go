package api

// Responses. Invariant: every answer, success or error, is one JSON value
// with Content-Type application/json; an error's HTTP status is always
// errcode.HTTPStatus of its code (405 aside, which has no code of its own),
// and its message is the client-facing one (causes are only logged); a
// retry_after becomes retry_after_ms and Retry-After (whole seconds, rounded
// up, at least 1).

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// ErrorBody is the JSON of an error answer: {"error": {...}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail describes an error: code is the protocol code's short name
// (see CodeName).
type ErrorDetail struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMs uint32 `json:"retry_after_ms,omitempty"`
}

// CodeName is the short name of an error code: "FORBIDDEN" for
// ERROR_CODE_FORBIDDEN.
func CodeName(c pimv1.ErrorCode) string {
	return strings.TrimPrefix(c.String(), "ERROR_CODE_")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"INTERNAL","message":"cannot encode the response"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError answers err (an *errcode.Error or anything, which is INTERNAL).
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := errcode.From(err)
	status := errcode.HTTPStatus(e.Code)
	if status >= 500 && !errors.Is(err, errRefused) {
		s.log.Error("api: request failed", "method", r.Method, "path", r.URL.Path, "code", CodeName(e.Code), "err", err)
	} else {
		s.log.Debug("api: request refused", "method", r.Method, "path", r.URL.Path, "code", CodeName(e.Code), "err", err)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((time.Duration(e.RetryAfter)*time.Millisecond+time.Second-1)/time.Second)))
	}
	if e.Code == pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pim"`)
	}
	writeJSON(w, status, ErrorBody{Error: ErrorDetail{Code: CodeName(e.Code), Message: e.Msg, RetryAfterMs: e.RetryAfter}})
}

// noRoute answers paths under /v1/ that no endpoint serves: 405 if the path
// exists with another method, else 404.
func (s *server) noRoute(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := s.mux.Handler(probe); pattern != "" && pattern != "/v1/" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) == 0 {
		s.writeError(w, r, errcode.New(pimv1.ErrorCode_ERROR_CODE_NOT_FOUND, "no such endpoint: %s %s", r.Method, r.URL.Path))
		return
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeJSON(w, http.StatusMethodNotAllowed, ErrorBody{Error: ErrorDetail{
		Code:    CodeName(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST),
		Message: fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allowed, ", ")),
	}})
}
