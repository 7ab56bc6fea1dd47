// Package errcode carries a protocol error code through Go errors, so that the
// layer that answers a client (a long connection or the HTTP API) can tell the
// client what went wrong with a stable code, whatever layer the error came from.
package errcode

import (
	"errors"
	"fmt"
	"net/http"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Error is an error with a protocol error code.
type Error struct {
	Code       pimv1.ErrorCode
	Msg        string
	RetryAfter uint32 // milliseconds; 0 if none
	Err        error  // the cause, if any (not shown to clients)
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an Error with code and a formatted message for the client.
func New(code pimv1.ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with code and message whose cause is err.
func Wrap(code pimv1.ErrorCode, err error, msg string) *Error {
	return &Error{Code: code, Msg: msg, Err: err}
}

// From returns the Error in err's chain, or an INTERNAL one wrapping err.
func From(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: pimv1.ErrorCode_ERROR_CODE_INTERNAL, Msg: "internal error", Err: err}
}

// Code returns the error code of err (INTERNAL if it carries none, UNSPECIFIED for nil).
func Code(err error) pimv1.ErrorCode {
	if err == nil {
		return pimv1.ErrorCode_ERROR_CODE_UNSPECIFIED
	}
	return From(err).Code
}

// Proto renders err as a wire Error.
func Proto(err error) *pimv1.Error {
	e := From(err)
	return &pimv1.Error{Code: e.Code, Message: e.Msg, RetryAfterMs: e.RetryAfter, Fatal: Fatal(e.Code)}
}

// Fatal reports whether the connection is closed after an error with this code.
func Fatal(c pimv1.ErrorCode) bool {
	switch c {
	case pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, pimv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE,
		pimv1.ErrorCode_ERROR_CODE_MALFORMED, pimv1.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION,
		pimv1.ErrorCode_ERROR_CODE_PROTOCOL:
		return true
	}
	return false
}

// HTTPStatus maps a code to the HTTP status the API answers with.
func HTTPStatus(c pimv1.ErrorCode) int {
	switch c {
	case pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, pimv1.ErrorCode_ERROR_CODE_MALFORMED,
		pimv1.ErrorCode_ERROR_CODE_PROTOCOL, pimv1.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION:
		return http.StatusBadRequest
	case pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED:
		return http.StatusUnauthorized
	case pimv1.ErrorCode_ERROR_CODE_FORBIDDEN:
		return http.StatusForbidden
	case pimv1.ErrorCode_ERROR_CODE_NOT_FOUND:
		return http.StatusNotFound
	case pimv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE, pimv1.ErrorCode_ERROR_CODE_TOO_LARGE:
		return http.StatusRequestEntityTooLarge
	case pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED:
		return http.StatusTooManyRequests
	case pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE:
		return http.StatusServiceUnavailable
	case pimv1.ErrorCode_ERROR_CODE_GROUP_TOO_LARGE:
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}
