// Tests of admission control over HTTP: the per-user and per-IP send rates,
// pipeline shedding, retries of refused sends, and one budget shared with
// the long connections. The clock is a fake one (Config.Now) except where a
// real gateway shares the controller; no test sleeps.
package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/bus/local"
	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/gateway"
	"github.com/pim-project/pim/internal/logic"
	pebblestore "github.com/pim-project/pim/internal/store/pebble"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// admitEnv is an API over a real store whose writes pass ctl.
type admitEnv struct {
	h     http.Handler
	svc   *logic.Service
	bus   *local.Bus
	keys  *auth.Keys
	ctl   *admission.Controller
	clock *fakeClock
	toks  map[string]string
}

// newAdmitEnv builds the API with a controller for cfg whose clock starts
// at t0; the API's clock is clock (nil: the real one).
func newAdmitEnv(t *testing.T, cfg admission.Config, clock *fakeClock) *admitEnv {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := local.New()
	e := &admitEnv{svc: logic.New(logic.Config{Store: st, Bus: b}), bus: b,
		keys: auth.NewForTest(signing, adminKey, time.Now), clock: clock,
		toks: map[string]string{"admin": "Bearer " + adminKey}}
	origin, now := time.Now(), time.Now
	if clock != nil {
		origin, now = clock.Now(), clock.Now
	}
	e.ctl = admission.New(cfg, origin)
	e.h = api.New(api.Config{Logic: e.svc, Keys: e.keys, Admission: e.ctl, Now: now})
	for _, u := range []string{"alice", "bob", "carol"} {
		tok, err := e.keys.Issue(u, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		e.toks[u] = "Bearer " + tok
	}
	return e
}

// answer is a decoded response.
type answer struct {
	status int
	hdr    http.Header
	body   map[string]any
}

// errCode is the answer's error code ("" for a success).
func (a answer) errCode() string {
	e, _ := a.body["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

// do serves one request from remote ("" : httptest's default address) with
// the credential named as.
func (e *admitEnv) do(t *testing.T, as, remote, method, path, body string) answer {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", e.toks[as])
	if remote != "" {
		req.RemoteAddr = remote
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	a := answer{status: rec.Code, hdr: rec.Header()}
	if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
		t.Fatalf("%s %s: answer is not a JSON object: %v: %s", method, path, err, rec.Body)
	}
	return a
}

// send posts a text message from as to bob with client_msg_id cmid.
func (e *admitEnv) send(t *testing.T, as, remote, cmid string) answer {
	t.Helper()
	path := "/v1/messages"
	if strings.HasPrefix(as, "admin:") {
		as, path = "admin", path+"?as="+strings.TrimPrefix(as, "admin:")
	}
	to := "bob"
	if as == "bob" || strings.HasSuffix(path, "as=bob") {
		to = "alice"
	}
	return e.do(t, as, remote, "POST", path, `{"to":"`+to+`","text":"msg `+cmid+`","client_msg_id":"`+cmid+`"}`)
}

// mustOK fails unless a is a success.
func mustOK(t *testing.T, what string, a answer) {
	t.Helper()
	if a.status != http.StatusOK && a.status != http.StatusCreated {
		t.Fatalf("%s: status %d, want success: %v", what, a.status, a.body)
	}
}

// mustRefuse fails unless a is a refusal with status, code and a consistent
// retry_after_ms and Retry-After; it returns the retry_after.
func mustRefuse(t *testing.T, what string, a answer, status int, code string) time.Duration {
	t.Helper()
	if a.status != status || a.errCode() != code {
		t.Fatalf("%s: status %d %q, want %d %s: %v", what, a.status, a.errCode(), status, code, a.body)
	}
	ms, _ := a.body["error"].(map[string]any)["retry_after_ms"].(float64)
	if ms <= 0 {
		t.Fatalf("%s: retry_after_ms %v, want > 0", what, a.body["error"])
	}
	secs, err := strconv.Atoi(a.hdr.Get("Retry-After"))
	if want := max(1, (int(ms)+999)/1000); err != nil || secs != want {
		t.Fatalf("%s: Retry-After %q, want %d (retry_after_ms %v)", what, a.hdr.Get("Retry-After"), want, ms)
	}
	return time.Duration(ms) * time.Millisecond
}

// history returns the client_msg_ids of alice and bob's conversation as bob
// sees it (alice hides messages in some tests).
func (e *admitEnv) history(t *testing.T) []string {
	t.Helper()
	a := e.do(t, "bob", "", "GET", "/v1/conversations/d:alice:bob/history", "")
	mustOK(t, "history", a)
	var ids []string
	for _, m := range a.body["messages"].([]any) {
		ids = append(ids, m.(map[string]any)["client_msg_id"].(string))
	}
	return ids
}

func wantHistory(t *testing.T, e *admitEnv, want ...string) {
	t.Helper()
	if got := e.history(t); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("history %v, want %v", got, want)
	}
}

func TestSendUserRate(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newAdmitEnv(t, admission.Config{UserSend: admission.Limit{Rate: 1, Burst: 3}}, clock)
	for _, id := range []string{"c1", "c2", "c3"} {
		mustOK(t, "send "+id, e.send(t, "alice", "", id))
	}
	wait := mustRefuse(t, "send over the burst", e.send(t, "alice", "", "c4"), 429, "RATE_LIMITED")
	if wait < time.Second || wait >= 2*time.Second {
		t.Errorf("retry_after %v, want in [1s, 2s): one token at 1/s, full jitter", wait)
	}
	wantHistory(t, e, "c1", "c2", "c3") // the refused send was not stored
	mustOK(t, "another user's budget", e.send(t, "bob", "", "b1"))

	clock.Add(wait)
	a := e.send(t, "alice", "", "c4")
	mustOK(t, "retry after retry_after", a)
	if a.body["duplicate"] == true {
		t.Errorf("the retried send is a duplicate: %v", a.body)
	}
	clock.Add(time.Hour)
	a = e.send(t, "alice", "", "c4")
	mustOK(t, "retry again", a)
	if a.body["duplicate"] != true {
		t.Errorf("resending c4 is not a duplicate: %v", a.body)
	}
	wantHistory(t, e, "c1", "c2", "c3", "b1", "c4") // stored once
}

func TestSendIPRate(t *testing.T) {
	e := newAdmitEnv(t, admission.Config{IPSend: admission.Limit{Rate: 1, Burst: 2}}, &fakeClock{t: t0})
	mustOK(t, "alice from A", e.send(t, "alice", "10.0.0.1:1000", "a1"))
	mustOK(t, "bob from A, another port", e.send(t, "bob", "10.0.0.1:2000", "b1"))
	mustRefuse(t, "bob from A again", e.send(t, "bob", "10.0.0.1:2001", "b2"), 429, "RATE_LIMITED")

	// X-Forwarded-For is not trusted: it cannot move a client to another budget.
	req := httptest.NewRequest("POST", "/v1/messages", strings.NewReader(`{"to":"alice","text":"x","client_msg_id":"b3"}`))
	req.Header.Set("Authorization", e.toks["bob"])
	req.Header.Set("X-Forwarded-For", "10.9.9.9")
	req.RemoteAddr = "10.0.0.1:2002"
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("with X-Forwarded-For: status %d, want 429: %s", rec.Code, rec.Body)
	}

	mustOK(t, "bob from B", e.send(t, "bob", "[2001:db8::1]:3000", "b4"))
	// The admin key is bound by its source's budget like any client.
	mustRefuse(t, "admin as carol from A", e.send(t, "admin:carol", "10.0.0.1:4000", "k1"), 429, "RATE_LIMITED")
	wantHistory(t, e, "a1", "b1", "b4")
}

func TestSendAdminDrawsFromTheActingUser(t *testing.T) {
	e := newAdmitEnv(t, admission.Config{UserSend: admission.Limit{Rate: 1, Burst: 1}}, &fakeClock{t: t0})
	mustOK(t, "admin as bob", e.send(t, "admin:bob", "", "k1"))
	mustRefuse(t, "bob after the admin used his budget", e.send(t, "bob", "", "b1"), 429, "RATE_LIMITED")
	mustRefuse(t, "admin as bob again", e.send(t, "admin:bob", "", "k2"), 429, "RATE_LIMITED")
	mustOK(t, "admin as alice", e.send(t, "admin:alice", "", "k3"))
	wantHistory(t, e, "k1", "k3")
}

func TestShedding(t *testing.T) {
	clock := &fakeClock{t: t0}
	e := newAdmitEnv(t, admission.Config{Shed: &admission.ShedConfig{MaxInflight: 1, Target: -1, Interval: time.Second}}, clock)
	mustOK(t, "group", e.do(t, "alice", "", "POST", "/v1/groups", `{"group":"team","users":["bob"]}`))
	mustOK(t, "first message", e.send(t, "alice", "", "c1"))

	// A send held in flight fills the pipeline: writes are shed, reads are not.
	held := e.ctl.BeginSend(clock.Now())
	if !held.OK {
		t.Fatal("cannot fill the pipeline")
	}
	writes := []struct{ name, method, path, body string }{
		{"send", "POST", "/v1/messages", `{"to":"bob","text":"x","client_msg_id":"c2"}`},
		{"create group", "POST", "/v1/groups", `{"group":"other","users":["bob"]}`},
		{"add members", "POST", "/v1/groups/team/members", `{"users":["carol"]}`},
		{"remove member", "DELETE", "/v1/groups/team/members/bob", ""},
		{"group settings", "PATCH", "/v1/groups/team", `{"receipts_visible":true}`},
		{"mark read", "POST", "/v1/conversations/d:alice:bob/read", `{"seq":1}`},
		{"hide", "POST", "/v1/conversations/d:alice:bob/messages/1/hide", `{}`},
		{"settings change", "PATCH", "/v1/settings", `{"read_receipts":false}`},
	}
	for _, w := range writes {
		mustRefuse(t, w.name, e.do(t, "alice", "", w.method, w.path, w.body), 503, "UNAVAILABLE")
	}
	for _, path := range []string{"/v1/conversations/d:alice:bob/history", "/v1/groups/team/members",
		"/v1/settings", "/v1/conversations"} {
		mustOK(t, "read "+path, e.do(t, "alice", "", "GET", path, ""))
	}
	e.ctl.EndSend(clock.Now(), clock.Now())

	// Nothing refused was stored; each write now passes, and every one
	// admitted (also when logic or decoding refuses it) leaves the pipeline.
	wantHistory(t, e, "c1")
	for _, w := range writes {
		mustOK(t, w.name, e.do(t, "alice", "", w.method, w.path, w.body))
	}
	if a := e.do(t, "carol", "", "POST", "/v1/messages", `{"conv":"d:alice:bob","text":"x"}`); a.status != 403 {
		t.Fatalf("send to others' conversation: status %d, want 403 (from logic, after admission)", a.status)
	}
	if a := e.do(t, "alice", "", "POST", "/v1/messages", `{"to":"bob"}`); a.status != 400 {
		t.Fatalf("send without a body: status %d, want 400 (before admission)", a.status)
	}
	if n, _ := e.ctl.Pipeline(clock.Now()); n != 0 {
		t.Fatalf("%d writes left in the pipeline, want 0", n)
	}
	wantHistory(t, e, "c1", "c2")
}

// TestOneBudgetWithLongConnections runs a gateway and the API on one
// controller: a user's sends over both draw from one per-user budget.
func TestOneBudgetWithLongConnections(t *testing.T) {
	// One token an hour: real time cannot refill it during the test.
	e := newAdmitEnv(t, admission.Config{UserSend: admission.Limit{Rate: 1.0 / 3600, Burst: 2}}, nil)
	g := gateway.New(gateway.Config{Logic: e.svc, Bus: e.bus, Auth: e.keys, Admission: e.ctl})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.ServeTCP(ln) }()
	t.Cleanup(func() { // before the store closes
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("gateway shutdown: %v", err)
		}
		<-served
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, _ := e.keys.Issue("alice", time.Hour)
	conn, err := client.Dial(ctx, client.Options{Addr: ln.Addr().String(), Token: tok, Device: "phone", DiscardPushes: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lcSend := func(cmid string) error {
		_, err := conn.Send(ctx, &pimv1.SendReq{ToUser: "bob", ClientMsgId: cmid,
			Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("msg " + cmid), ClientTime: 1})
		return err
	}

	if err := lcSend("l1"); err != nil {
		t.Fatalf("long-connection send: %v", err)
	}
	mustOK(t, "HTTP send", e.send(t, "alice", "", "h1"))
	mustRefuse(t, "HTTP send over the shared burst", e.send(t, "alice", "", "h2"), 429, "RATE_LIMITED")
	var ce *errcode.Error
	if err := lcSend("l2"); !errors.As(err, &ce) || ce.Code != pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED {
		t.Fatalf("long-connection send over the shared burst: %v, want RATE_LIMITED", err)
	}
	wantHistory(t, e, "l1", "h1")
}
