// Tests of the server's own endpoints over a real server: GET /v1/lbs (the
// listeners as configured, the per-node cap), POST /v1/admin/drain and
// /healthz while draining, and Kill.
package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/lbs"
)

func startTest(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.DataDir, cfg.TCPAddr, cfg.HTTPAddr = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	srv, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv
}

func do(t *testing.T, method, url, auth string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp, []byte(b.String())
}

func TestLBSEndpoint(t *testing.T) {
	srv := startTest(t, Config{Advertise: "gw.example", LBS: admission.Limit{Rate: 1.0 / 3600, Burst: 2}})
	base := "http://" + srv.HTTPAddr().String()
	tok, err := srv.Keys().Issue("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := do(t, "GET", base+"/v1/lbs", ""); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %s", r.Status)
	}
	if r, _ := do(t, "POST", base+"/v1/lbs", tok); r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %s", r.Status)
	}
	_, port, _ := strings.Cut(srv.TCPAddr().String(), ":")
	_, hport, _ := strings.Cut(srv.HTTPAddr().String(), ":")
	for i := 0; i < 3; i++ {
		r, body := do(t, "GET", base+"/v1/lbs", tok)
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET: %s %s", r.Status, body)
		}
		var ans lbs.Answer
		if err := json.Unmarshal(body, &ans); err != nil {
			t.Fatal(err)
		}
		want := []lbs.Endpoint{{Transport: "tcp", Address: "gw.example:" + port}, {Transport: "ws", Address: "ws://gw.example:" + hport + "/ws"}}
		if len(ans.Endpoints) != 2 || ans.Endpoints[0].Endpoint != want[0] || ans.Endpoints[1].Endpoint != want[1] || ans.TTLMs <= 0 {
			t.Fatalf("answer %s", body)
		}
		// The node's cap: two clients per hour; the third is told to wait.
		if (i < 2) != (ans.RetryAfterMs == 0) {
			t.Fatalf("answer %d: retry_after_ms %d", i, ans.RetryAfterMs)
		}
	}
}

func TestAdminDrainAndHealthz(t *testing.T) {
	srv := startTest(t, Config{DrainWindow: 5 * time.Second, DrainRate: -1})
	base := "http://" + srv.HTTPAddr().String()
	admin := srv.Keys().AdminKey()
	tok, _ := srv.Keys().Issue("alice", time.Hour)
	c, err := client.Dial(context.Background(), client.Options{Addr: srv.TCPAddr().String(), Token: tok, Device: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, body := do(t, "GET", base+"/healthz", ""); r.StatusCode != 200 || string(body) != "ok\n" {
		t.Fatalf("healthz: %s %q", r.Status, body)
	}
	if r, _ := do(t, "POST", base+"/v1/admin/drain", tok); r.StatusCode != http.StatusUnauthorized {
		t.Fatalf("drain with a user token: %s", r.Status)
	}
	if r, _ := do(t, "GET", base+"/v1/admin/drain", admin); r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET drain: %s", r.Status)
	}
	if r, _ := do(t, "POST", base+"/v1/admin/drain?window=nope", admin); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("bad window: %s", r.Status)
	}
	r, body := do(t, "POST", base+"/v1/admin/drain?window=200ms", admin)
	var dr DrainResponse
	if r.StatusCode != http.StatusAccepted || json.Unmarshal(body, &dr) != nil || !dr.Draining || dr.Sessions != 1 || dr.WindowMs != 200 {
		t.Fatalf("drain: %s %s", r.Status, body)
	}
	select {
	case ga := <-c.GoAway():
		if ga.RetryAfterMs == 0 {
			t.Fatalf("GoAway %v", ga)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no GoAway after the admin drain")
	}
	if r, body := do(t, "GET", base+"/healthz", ""); r.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "draining") {
		t.Fatalf("healthz while draining: %s %q", r.Status, body)
	}
	if _, err := client.Dial(context.Background(), client.Options{Addr: srv.TCPAddr().String(), Token: tok, Device: "laptop"}); err == nil {
		t.Fatal("a new connection was accepted while draining")
	}
	// A second drain changes nothing.
	r, body = do(t, "POST", base+"/v1/admin/drain", admin)
	if r.StatusCode != http.StatusAccepted || !strings.Contains(string(body), `"window_ms":200`) {
		t.Fatalf("second drain: %s %s", r.Status, body)
	}
}

func TestKillResetsWithoutGoAway(t *testing.T) {
	cfg := Config{DataDir: t.TempDir(), TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}
	srv, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := srv.Keys().Issue("alice", time.Hour)
	c, err := client.Dial(context.Background(), client.Options{Addr: srv.TCPAddr().String(), Token: tok, Device: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr := srv.TCPAddr().String()
	srv.Kill()
	select {
	case ga := <-c.GoAway():
		t.Fatalf("GoAway %v on a kill", ga)
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the connection survived the kill")
	}
	// The same data and port take a new server at once.
	cfg.TCPAddr = addr
	srv2, err := Start(cfg)
	if err != nil {
		t.Fatalf("restart on %s: %v", addr, err)
	}
	defer srv2.Shutdown(context.Background())
	if got := srv2.TCPAddr().String(); got != addr {
		t.Fatalf("restarted on %s", got)
	}
}
