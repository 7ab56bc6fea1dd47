// The LBS resolver: tolerant parsing, the real handler's format, and the
// driver's use of it (first resolution, caching, re-resolution after
// repeated failures, the LBS's retry_after).

package pim

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/lbs"
	"github.com/pim-project/pim/sdk/go/core"
)

func TestParseLBSTolerant(t *testing.T) {
	cases := []struct {
		body string
		want []string
		ttl  time.Duration
	}{
		{`{"endpoints":[{"addr":"127.0.0.1:7400","transport":"tcp","tls":false}],"ttl_ms":30000}`,
			[]string{"tcp://127.0.0.1:7400"}, 30 * time.Second},
		{`{"endpoints":[{"node":"n1","transport":"tcp","address":"10.0.0.1:7400","tls":true},
		  {"node":"n1","transport":"ws","address":"wss://10.0.0.1:7480/ws","tls":true}],"ttl_ms":600000,"extra":1}`,
			[]string{"tls://10.0.0.1:7400", "wss://10.0.0.1:7480/ws"}, 10 * time.Minute},
		{`{"endpoints":[{"host":"h","port":7400},{"addr":"h:7480","transport":"ws"},{"addr":"x","transport":"carrier-pigeon"},{}],"ttl":5}`,
			[]string{"tcp://h:7400", "ws://h:7480/ws"}, 5 * time.Second},
		{`{"servers":["tls://a:1","b:2"]}`, []string{"tls://a:1", "tcp://b:2"}, 0},
		{`{"endpoints":[{"address":"tls://c:3"}]}`, []string{"tls://c:3"}, 0},
	}
	for _, c := range cases {
		a, err := parseLBS([]byte(c.body))
		if err != nil {
			t.Errorf("%s: %v", c.body, err)
			continue
		}
		if got := a.Servers(false); !slices.Equal(got, c.want) || a.TTL != c.ttl {
			t.Errorf("%s: got %v ttl %v, want %v ttl %v", c.body, got, a.TTL, c.want, c.ttl)
		}
	}
	for _, bad := range []string{`nope`, `{}`, `{"endpoints":[{"transport":"tcp"}]}`, `{"endpoints":[{"addr":"no-port"}]}`} {
		if _, err := parseLBS([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestResolveLBSAgainstTheRealHandler(t *testing.T) {
	srv := startServer(t)
	b := lbs.New(lbs.Config{Registry: &lbs.Local{ID: "n1", Endpoints: []lbs.Endpoint{
		{Transport: lbs.TransportWS, Address: "ws://" + srv.HTTPAddr().String() + "/ws"},
		{Transport: lbs.TransportTCP, Address: srv.TCPAddr().String()},
	}}})
	hs := httptest.NewServer(lbs.Handler(b, srv.Keys(), nil))
	defer hs.Close()
	a, err := ResolveLBS(ctxT(t), nil, hs.URL, token(t, srv, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"tcp://" + srv.TCPAddr().String(), "ws://" + srv.HTTPAddr().String() + "/ws"}
	if got := a.Servers(false); !slices.Equal(got, want) || a.TTL != lbs.DefaultTTL {
		t.Fatalf("servers %v ttl %v, want %v", got, a.TTL, want)
	}
	if got := a.Servers(true); got[0] != want[1] {
		t.Fatalf("preferring WebSocket: %v", got)
	}
	if _, err := ResolveLBS(ctxT(t), nil, hs.URL+"/v1/lbs", "bad-token"); err == nil {
		t.Fatal("a bad token was accepted")
	}
}

// The first answer names a dead gateway: after repeated failures the
// driver asks again and reaches the live one; a restart uses the cached
// answer without the LBS.
func TestConnectThroughLBS(t *testing.T) {
	srv := startServer(t)
	var calls atomic.Int32
	dead := "127.0.0.1:1" // nothing listens there
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/lbs" || r.Header.Get("Authorization") == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		addr := srv.TCPAddr().String()
		if calls.Add(1) == 1 {
			addr = dead
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"endpoints":[{"addr":"` + addr + `","transport":"tcp","tls":false}],"ttl_ms":60000}`))
	}))
	defer hs.Close()
	dir := t.TempDir()
	tok := token(t, srv, "alice") // the user comes from the token
	opts := Options{LBSURL: hs.URL, Token: tok, DeviceID: "phone", DataDir: dir, Tuning: testTuning()}
	opts.Tuning.Backoff.ReResolveAfter = 2
	cl, err := Connect(ctxT(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder("alice/phone")
	rec.attach(cl)
	o, err := cl.SendTo(ctxT(t), "alice", "note-0")
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Wait(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	rec.waitMessages(t, 1)
	if n := calls.Load(); n < 2 {
		t.Fatalf("%d LBS calls, want a re-resolution", n)
	}
	if cl.User() != "alice" {
		t.Fatalf("user %q", cl.User())
	}
	cl.Close()
	rec.detach()

	// The LBS is gone; the cached answer still leads to the server.
	hs.Close()
	cl, err = Connect(ctxT(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rec.attach(cl)
	if _, err := cl.SendTo(ctxT(t), "alice", "note-1"); err != nil {
		t.Fatal(err)
	}
	rec.waitMessages(t, 2)
	rec.check(t, map[string]int{"note": 2})
}

func TestParseLBSRetryAfter(t *testing.T) {
	a, err := parseLBS([]byte(`{"endpoints":[{"addr":"h:1"}],"ttl_ms":1000,"retry_after_ms":2500}`))
	if err != nil || a.RetryAfter != 2500*time.Millisecond {
		t.Fatalf("retry_after_ms 2500: %+v, %v", a, err)
	}
	if a, err := parseLBS([]byte(`{"endpoints":[{"addr":"h:1"}],"retry_after_ms":-5}`)); err != nil || a.RetryAfter != 0 {
		t.Fatalf("negative retry_after_ms: %+v, %v", a, err)
	}
}

// An error answer is an *LBSError with the LBS's retry_after: from the
// body (the real handler's format), else from the Retry-After header.
func TestResolveLBSErrorCarriesRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header string
		body   string
		code   string
		want   time.Duration
	}{
		{"body", "1", `{"error":{"code":"UNAVAILABLE","message":"no gateway available, retry","retry_after_ms":1500}}`, "UNAVAILABLE", 1500 * time.Millisecond},
		{"header", "3", `{"error":{"code":"UNAVAILABLE","message":"later"}}`, "UNAVAILABLE", 3 * time.Second},
		{"none", "", `not json`, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.header != "" {
					w.Header().Set("Retry-After", tc.header)
				}
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte(tc.body))
			}))
			defer hs.Close()
			_, err := ResolveLBS(ctxT(t), nil, hs.URL, "tok")
			var le *LBSError
			if !errors.As(err, &le) {
				t.Fatalf("error %v (%T), want an *LBSError", err, err)
			}
			if le.Status != http.StatusServiceUnavailable || le.Code != tc.code || le.RetryAfter != tc.want {
				t.Fatalf("%+v, want status 503, code %q, retry after %v", le, tc.code, tc.want)
			}
		})
	}
}

// An LBS answer with retry_after_ms (every gateway at its cap) holds the
// first dial that long: the client connects no sooner.
func TestConnectWaitsForLBSRetryAfter(t *testing.T) {
	srv := startServer(t)
	const hint = 400 * time.Millisecond
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"endpoints":[{"addr":"` + srv.TCPAddr().String() + `","transport":"tcp"}],"ttl_ms":60000,"retry_after_ms":400}`))
	}))
	defer hs.Close()
	opts := Options{LBSURL: hs.URL, Token: token(t, srv, "alice"), DeviceID: "phone", DataDir: t.TempDir(), Tuning: testTuning()}
	start := time.Now()
	cl, err := Connect(ctxT(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var first *ConnStateEvent
	for ev := range cl.Events() {
		e, ok := ev.(ConnStateEvent)
		if !ok {
			continue
		}
		if first == nil {
			first = &e
		}
		if e.State == Connected {
			break
		}
	}
	if took := time.Since(start); took < hint {
		t.Fatalf("connected %v after Connect, before the LBS's retry_after (%v)", took, hint)
	}
	if first.State != Disconnected || !errors.Is(first.Err, core.ErrRetryLater) || first.Retry.Sub(start) < hint {
		t.Fatalf("first connection event %+v, want Disconnected (retry later) until %v from the start", *first, hint)
	}
}

// After an error answer with retry_after, the LBS is not asked again before
// it, however many dials fail and ask for a re-resolution meanwhile.
func TestLBSErrorRetryAfterStopsLookups(t *testing.T) {
	var calls atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"UNAVAILABLE","message":"busy","retry_after_ms":60000}}`))
	}))
	defer hs.Close()
	tune := testTuning()
	tune.Backoff = BackoffConfig{Base: time.Millisecond, Cap: 2 * time.Millisecond, HealthyAfter: time.Second, ReResolveAfter: 1}
	opts := Options{LBSURL: hs.URL, Servers: []string{"127.0.0.1:1"}, User: "alice", Token: "tok", DeviceID: "phone",
		DataDir: t.TempDir(), Tuning: tune}
	cl, err := Connect(ctxT(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	failed := 0
	for ev := range cl.Events() {
		if e, ok := ev.(ConnStateEvent); ok && e.State == Disconnected {
			if failed++; failed == 20 {
				break
			}
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the LBS was asked %d times within its retry_after, want once", n)
	}
}
