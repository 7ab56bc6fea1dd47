package api

// Admission control of the HTTP API: the long connections' checks
// (internal/gateway, session.go), against the same admission.Controller, so
// a user's sends over HTTP and over long connections draw from one budget.
//
// Invariants of this file:
//   - A send (POST /v1/messages) passes the per-IP and per-user send rates,
//     then the pipeline's shedder; the other writes (group changes, read
//     marks, hide, settings changes) pass the pipeline only, as on a long
//     connection. Reads and token minting pass nothing.
//   - The checks run after the request is authenticated, decoded and
//     validated, right before logic: a malformed request is answered 400
//     without using the budget, and the pipeline measures logic's latency,
//     never a slow upload.
//   - A refused request reaches no logic call (nothing is stored) and is
//     answered 429 RATE_LIMITED (a rate) or 503 UNAVAILABLE (shedding) with
//     retry_after_ms and Retry-After (respond.go); it may be retried as is
//     (same client_msg_id).
//   - Every BeginSend that admitted is ended by exactly one EndSend, also
//     when logic fails or panics (the done func is deferred).
//   - The per-IP key is the TCP peer's host (r.RemoteAddr), never a header
//     such as X-Forwarded-For: PIM has no trusted-proxy setting, and a
//     header any client can write would let it pick its own budget.
//   - The admin key acting ?as=USER draws from USER's per-user budget and
//     from its source IP's budget like any client: the per-IP limit bounds
//     what one address pushes into the pipeline whoever holds the key (a
//     leaked key or a runaway script included), and the controller has no
//     per-user-only check that would not also split the shared budget. An
//     operator whose backend sends a lot from one address sizes
//     --ip-send-rate for it (it is off by default).

import (
	"errors"
	"net"
	"net/http"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// errRefused is the cause of every refusal by admission control (it is
// logged at debug level, not as a failure, whatever its status).
var errRefused = errors.New("refused by admission control")

func noop() {}

// admitSend asks admission control about a send by actor: the per-IP and
// per-user rates, then the pipeline. When err is nil the caller must call
// done once logic has answered.
func (s *server) admitSend(r *http.Request, actor string) (done func(), err error) {
	if s.admit == nil {
		return noop, nil
	}
	if d := s.admit.Send(s.now(), actor, remoteIP(r)); !d.OK {
		return nil, refusal(d)
	}
	return s.admitWrite()
}

// admitWrite asks the pipeline's shedder about one more write. When err is
// nil the caller must call done once logic has answered.
func (s *server) admitWrite() (done func(), err error) {
	if s.admit == nil {
		return noop, nil
	}
	begin := s.now()
	if d := s.admit.BeginSend(begin); !d.OK {
		return nil, refusal(d)
	}
	return func() { s.admit.EndSend(begin, s.now()) }, nil
}

// remoteIP is the key of per-IP limits: r.RemoteAddr's host (all of it if
// it has no port).
func remoteIP(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// refusal is the error answering a request refused by admission control: the
// gateway's code, message and retry_after.
func refusal(d admission.Decision) error {
	e := &errcode.Error{Code: pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, Msg: "server busy (" + d.Reason + "), retry later",
		RetryAfter: admission.Millis(d.RetryAfter), Err: errRefused}
	if d.Reason == admission.ReasonOverload {
		e.Code, e.Msg = pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE, "server overloaded, retry later"
	}
	return e
}
