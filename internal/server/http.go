// The server's own HTTP endpoints: the LBS (GET /v1/lbs, internal/lbs over a
// one-node Registry), the admin drain (POST /v1/admin/drain) and /healthz.
// (The admin backup, GET /v1/admin/backup, is in backup.go.)
//
// Invariants of this file:
//   - The LBS advertises exactly the listeners that are open, with their
//     real ports and TLS mode, under the advertised host.
//   - POST /v1/admin/drain needs the admin key (compared in constant time by
//     auth.Keys.IsAdmin, in requireAdmin, as for every admin endpoint
//     here); it only ever starts a drain (idempotent), never stops the
//     process.
//   - /healthz answers 200 "ok" while the node takes new clients and 503
//     "draining" once it drains, so a load balancer stops sending clients.
package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pim-project/pim/internal/lbs"
)

// newBalancer builds the LBS over this node.
func (s *Server) newBalancer() *lbs.Balancer {
	s.nodeID = s.cfg.Advertise
	if s.nodeID == "" {
		if h, err := os.Hostname(); err == nil {
			s.nodeID = h
		} else {
			s.nodeID = "local"
		}
	}
	maxConns := s.cfg.Admission.MaxConns
	reg := &lbs.Local{
		ID:        s.nodeID,
		Endpoints: s.endpoints(),
		Load: func() float64 {
			if maxConns <= 0 || s.gw == nil {
				return 0
			}
			return float64(s.gw.Sessions()) / float64(maxConns)
		},
		Draining: func() bool { return s.gw != nil && s.gw.Draining() },
	}
	return lbs.New(lbs.Config{Registry: reg, PerNode: s.cfg.LBS, TTL: s.cfg.LBSTTL})
}

// endpoints lists this node's gateway endpoints as clients reach them.
func (s *Server) endpoints() []lbs.Endpoint {
	var out []lbs.Endpoint
	if s.tcpLn != nil {
		out = append(out, lbs.Endpoint{Transport: lbs.TransportTCP, Address: s.advertised(s.tcpLn.Addr()), TLS: s.tls})
	}
	if s.httpLn != nil {
		scheme := "ws"
		if s.tls {
			scheme = "wss"
		}
		out = append(out, lbs.Endpoint{Transport: lbs.TransportWS,
			Address: scheme + "://" + s.advertised(s.httpLn.Addr()) + "/ws", TLS: s.tls})
	}
	return out
}

// advertised is a listener's address with the advertised host.
func (s *Server) advertised(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	switch {
	case s.cfg.Advertise != "":
		host = s.cfg.Advertise
	case net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified():
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return net.JoinHostPort(host, port)
}

// DrainRequest is the optional body of POST /v1/admin/drain.
type DrainRequest struct {
	// Window overrides the configured drain window ("10s", "2m").
	Window string `json:"window,omitempty"`
}

// DrainResponse answers POST /v1/admin/drain.
type DrainResponse struct {
	Draining bool      `json:"draining"`
	Sessions int       `json:"sessions"`
	WindowMs int64     `json:"window_ms"`
	Started  time.Time `json:"started"`
	Ends     time.Time `json:"ends"`
}

func (s *Server) drainHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			writeErr(w, http.StatusMethodNotAllowed, "BAD_REQUEST", "method "+r.Method+" not allowed on /v1/admin/drain (allowed: POST)")
			return
		}
		if !s.requireAdmin(w, r) {
			return
		}
		var req DrainRequest
		body, err := io.ReadAll(io.LimitReader(r.Body, 4096))
		if err == nil && len(strings.TrimSpace(string(body))) > 0 {
			err = json.Unmarshal(body, &req)
		}
		if err != nil {
			writeErr(w, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("bad drain request: %v", err))
			return
		}
		window := time.Duration(0)
		if v := r.URL.Query().Get("window"); v != "" {
			req.Window = v
		}
		if req.Window != "" {
			if window, err = time.ParseDuration(req.Window); err != nil || window <= 0 {
				writeErr(w, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("bad window %q: want a positive duration like 30s", req.Window))
				return
			}
		}
		st := s.gw.Drain(window)
		s.log.Info("drain requested over HTTP", "remote", r.RemoteAddr, "sessions", st.Sessions, "window", st.Window)
		writeJSONResp(w, http.StatusAccepted, DrainResponse{Draining: true, Sessions: st.Sessions,
			WindowMs: st.Window.Milliseconds(), Started: st.Started.UTC(), Ends: st.Ends.UTC()})
	})
}

// requireAdmin reports whether r carries the admin key as its bearer
// token; if not, it answers 401.
func (s *Server) requireAdmin(w http.ResponseWriter, r *http.Request) bool {
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if ok && strings.EqualFold(scheme, "Bearer") && s.keys.IsAdmin(strings.TrimSpace(cred)) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="pim"`)
	writeErr(w, http.StatusUnauthorized, "UNAUTHENTICATED", "this endpoint needs the admin key")
	return false
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	if s.gw.Draining() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "draining")
		return
	}
	fmt.Fprintln(w, "ok")
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSONResp(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSONResp(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"INTERNAL","message":"cannot encode the response"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
