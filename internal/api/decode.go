package api

// Request decoding. Invariants: at most maxBody bytes of a body are read;
// exactly one JSON object is accepted (unknown fields, trailing data and an
// empty body are refused with BAD_REQUEST, an oversized body with TOO_LARGE).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func (s *server) decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body) // limited to maxBody by route

	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON object")
			if tooLarge(terr) {
				err = terr
			}
		}
	}
	if err == nil {
		return nil
	}
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
	)
	switch {
	case tooLarge(err):
		return errcode.New(pimv1.ErrorCode_ERROR_CODE_TOO_LARGE, "request body exceeds %d bytes", s.maxBody)
	case errors.Is(err, io.EOF):
		return badRequest("empty request body: expected a JSON object")
	case errors.As(err, &syn):
		return badRequest("bad JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ) && typ.Field != "":
		return badRequest("bad JSON: field %q must be %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	return badRequest("bad JSON: %v", err)
}

func tooLarge(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	}
	return "a number"
}

func badRequest(format string, args ...any) error {
	return errcode.New(pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST, format, args...)
}

// queryUint reads an optional unsigned query parameter (0 if absent).
func queryUint(r *http.Request, name string) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, badRequest("query parameter %s=%q is not a non-negative integer", name, v)
	}
	return n, nil
}

// Duration is a JSON duration: a Go duration string ("24h", "90m") or a
// number of seconds.
type Duration time.Duration

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: use a form like \"24h\" or \"90m\", or seconds as a number", s)
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("a duration must be a string like \"24h\" or a number of seconds")
	}
	if secs > float64(1<<63-1)/float64(time.Second) || secs < -float64(1<<63-1)/float64(time.Second) {
		return fmt.Errorf("duration of %g seconds is out of range", secs)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}
