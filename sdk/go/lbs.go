// The LBS resolver: which gateways to dial, from GET {LBSURL}/v1/lbs.
//
// Invariants of this file:
//   - Parsing is tolerant: unknown fields are ignored, an endpoint's address
//     may be "address" or "addr" (or host plus port), its transport "tcp",
//     "tls", "ws" or "wss" (empty: tcp); an answer with no usable endpoint
//     is an error, never an empty server list.
//   - The token goes only in the Authorization header, never in the URL.
//   - Answers are bounded in size (1 MiB) and time (the caller's context).
//   - The LBS's retry_after is never dropped: an answer's retry_after_ms is
//     LBSAnswer.RetryAfter (the driver holds its next dial for it), an error
//     answer's (or its Retry-After header's) is LBSError.RetryAfter (the
//     driver does not ask the LBS again before it).

package pim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pim-project/pim/sdk/go/internal/transport"
)

// LBSEndpoint is one gateway endpoint of an LBS answer.
type LBSEndpoint struct {
	// Transport is "tcp" or "ws".
	Transport string
	// Addr is host:port for tcp, a ws:// or wss:// URL for ws.
	Addr string
	TLS  bool
	Node string
}

// Server is the endpoint's address in the form Options.Servers takes.
func (e LBSEndpoint) Server() string {
	if e.Transport == "ws" {
		return e.Addr
	}
	if e.TLS {
		return "tls://" + e.Addr
	}
	return "tcp://" + e.Addr
}

// LBSAnswer is the LBS's answer.
type LBSAnswer struct {
	// Endpoints, best first.
	Endpoints []LBSEndpoint
	// TTL is how long the answer may be used (0: not said).
	TTL time.Duration
	// RetryAfter, if set, asks the client to wait before connecting (every
	// gateway is at its hand-out cap or draining); the Client holds its
	// next dial that long (plus a little jitter).
	RetryAfter time.Duration
}

// LBSError is an error answer of the LBS (a status other than 200).
type LBSError struct {
	Status  int    // HTTP status code
	Code    string // the error's code, e.g. "UNAVAILABLE" (may be empty)
	Message string
	// RetryAfter is when the LBS may be asked again: the body's
	// retry_after_ms, else the Retry-After header (seconds); 0: not said.
	// The Client does not ask the LBS again before it.
	RetryAfter time.Duration
}

func (e *LBSError) Error() string {
	s := fmt.Sprintf("pim: LBS: %d %s: %s %s", e.Status, http.StatusText(e.Status), e.Code, e.Message)
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %v)", e.RetryAfter)
	}
	return s
}

// lbsError reads an error answer tolerantly.
func lbsError(resp *http.Response, body []byte) *LBSError {
	var e struct {
		Error struct {
			Code         string   `json:"code"`
			Message      string   `json:"message"`
			RetryAfterMs *float64 `json:"retry_after_ms"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	le := &LBSError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	switch {
	case e.Error.RetryAfterMs != nil && *e.Error.RetryAfterMs > 0:
		le.RetryAfter = time.Duration(*e.Error.RetryAfterMs * float64(time.Millisecond))
	default:
		if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s > 0 {
			le.RetryAfter = time.Duration(s) * time.Second
		}
	}
	return le
}

// Servers lists the endpoints as Options.Servers addresses, best first;
// with preferWS the WebSocket ones come first.
func (a *LBSAnswer) Servers(preferWS bool) []string {
	var ws, tcp []string
	for _, e := range a.Endpoints {
		if e.Transport == "ws" {
			ws = append(ws, e.Server())
		} else {
			tcp = append(tcp, e.Server())
		}
	}
	if preferWS {
		return append(ws, tcp...)
	}
	return append(tcp, ws...)
}

// ResolveLBS asks the LBS at baseURL (GET {baseURL}/v1/lbs; a URL already
// ending in /v1/lbs is used as is) which gateways to use. hc nil means
// http.DefaultClient. An error answer is an *LBSError (with the LBS's
// retry_after, if it gave one).
func ResolveLBS(ctx context.Context, hc *http.Client, baseURL, token string) (*LBSAnswer, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	u := strings.TrimRight(baseURL, "/")
	if !strings.HasSuffix(u, "/v1/lbs") {
		u += "/v1/lbs"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("pim: LBS request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pim: LBS: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("pim: LBS: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, lbsError(resp, body)
	}
	a, err := parseLBS(body)
	if err != nil {
		return nil, fmt.Errorf("pim: LBS %s: %w", u, err)
	}
	return a, nil
}

// parseLBS reads an answer tolerantly.
func parseLBS(body []byte) (*LBSAnswer, error) {
	var raw struct {
		Endpoints    []map[string]any `json:"endpoints"`
		Servers      []string         `json:"servers"`
		TTLMs        *float64         `json:"ttl_ms"`
		TTL          *float64         `json:"ttl"` // seconds
		RetryAfterMs *float64         `json:"retry_after_ms"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("answer is not JSON: %w", err)
	}
	a := &LBSAnswer{}
	switch {
	case raw.TTLMs != nil:
		a.TTL = time.Duration(*raw.TTLMs) * time.Millisecond
	case raw.TTL != nil:
		a.TTL = time.Duration(*raw.TTL * float64(time.Second))
	}
	if raw.RetryAfterMs != nil && *raw.RetryAfterMs > 0 {
		a.RetryAfter = time.Duration(*raw.RetryAfterMs * float64(time.Millisecond))
	}
	for _, m := range raw.Endpoints {
		if e, ok := lbsEndpoint(m); ok {
			a.Endpoints = append(a.Endpoints, e)
		}
	}
	for _, s := range raw.Servers {
		if ep, err := transport.Parse(s, false, false); err == nil {
			e := LBSEndpoint{Transport: "tcp", Addr: ep.Addr, TLS: ep.TLS}
			if ep.Kind == transport.WebSocket {
				e.Transport = "ws"
			}
			a.Endpoints = append(a.Endpoints, e)
		}
	}
	if len(a.Endpoints) == 0 {
		return nil, fmt.Errorf("answer lists no usable endpoint: %.200s", body)
	}
	return a, nil
}

func str(m map[string]any, keys ...string) string {
	for _, k := range keys {
		switch v := m[k].(type) {
		case string:
			if v != "" {
				return v
			}
		case float64:
			return strconv.FormatFloat(v, 'f', -1, 64)
		}
	}
	return ""
}

func lbsEndpoint(m map[string]any) (LBSEndpoint, bool) {
	addr := str(m, "address", "addr", "url")
	if addr == "" {
		if h, p := str(m, "host"), str(m, "port"); h != "" && p != "" {
			addr = net.JoinHostPort(h, p)
		}
	}
	if addr == "" {
		return LBSEndpoint{}, false
	}
	tlsOn, _ := m["tls"].(bool)
	e := LBSEndpoint{Addr: addr, TLS: tlsOn, Node: str(m, "node", "id")}
	tr := strings.ToLower(str(m, "transport", "kind", "type"))
	if strings.Contains(addr, "://") { // a full address says it all
		ep, err := transport.Parse(addr, false, false)
		if err != nil {
			return LBSEndpoint{}, false
		}
		e.Addr, e.TLS, tr = ep.Addr, ep.TLS, "tcp"
		if ep.Kind == transport.WebSocket {
			tr = "ws"
		}
	}
	switch tr {
	case "", "tcp":
		e.Transport = "tcp"
	case "tls":
		e.Transport, e.TLS = "tcp", true
	case "ws", "wss", "websocket":
		e.Transport = "ws"
		if !strings.Contains(addr, "://") {
			sc := "ws"
			if e.TLS || tr == "wss" {
				sc, e.TLS = "wss", true
			}
			e.Addr = sc + "://" + addr + "/ws"
		}
	default:
		return LBSEndpoint{}, false
	}
	if e.Transport == "tcp" {
		if _, _, err := net.SplitHostPort(e.Addr); err != nil {
			return LBSEndpoint{}, false
		}
	}
	return e, true
}
