package api

// Authentication and the actor. Invariants: a request reaches its handler
// only with a verified credential; the admin key is compared in constant
// time (auth.Keys.IsAdmin); a user token can never act as anyone else.

import (
	"errors"
	"net/http"
	"strings"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// access says who may call an endpoint.
type access int

const (
	adminOnly   access = iota // the admin key only
	asUser                    // a user token, or the admin key with ?as=USER
	userOrAdmin               // a user token (actor: its user), or the admin key (actor: "", ?as optional)
)

// handlerFunc serves an authenticated request on behalf of actor ("" for
// admin-only endpoints) and returns the status and JSON body to answer.
type handlerFunc func(r *http.Request, actor string) (int, any, error)

func (s *server) route(pattern string, a access, h handlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, s.maxBody)
		actor, err := s.authorize(r, a)
		if err == nil {
			var (
				status int
				body   any
			)
			if status, body, err = h(r, actor); err == nil {
				writeJSON(w, status, body)
				return
			}
		}
		s.writeError(w, r, err)
	})
}

// authorize checks the credential against a and returns the actor.
func (s *server) authorize(r *http.Request, a access) (string, error) {
	cred, ok := bearer(r)
	if !ok {
		return "", errcode.New(pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, "missing credential: send Authorization: Bearer <token or admin key>")
	}
	admin := s.keys.IsAdmin(cred)
	as := r.URL.Query().Get("as")
	if a == adminOnly {
		if !admin {
			if _, err := s.keys.Verify(cred); err != nil {
				return "", tokenErr(err)
			}
			return "", errcode.New(pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, "this endpoint needs the admin key")
		}
		return "", nil
	}
	if admin && a == userOrAdmin && as == "" {
		return "", nil
	}
	if admin {
		if as == "" {
			return "", errcode.New(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "with the admin key, name the acting user with ?as=USER")
		}
		if !store.ValidID(as) {
			return "", errcode.New(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, "invalid user id %q in ?as", as)
		}
		return as, nil
	}
	user, err := s.keys.Verify(cred)
	if err != nil {
		return "", tokenErr(err)
	}
	if as != "" && as != user {
		return "", errcode.New(pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, "a user token cannot act as another user (?as needs the admin key)")
	}
	return user, nil
}

func bearer(r *http.Request) (string, bool) {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

func tokenErr(err error) error {
	if errors.Is(err, auth.ErrExpired) {
		return errcode.Wrap(pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, err, "token expired")
	}
	return errcode.Wrap(pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, err, "invalid token")
}
