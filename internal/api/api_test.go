package api_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/bus/local"
	"github.com/pim-project/pim/internal/logic"
	pebblestore "github.com/pim-project/pim/internal/store/pebble"
)

const adminKey = "test-admin-key"

var signing = []byte("0123456789abcdef0123456789abcdef")

type env struct {
	h    http.Handler
	keys *auth.Keys
	toks map[string]string // credential name -> Authorization value
}

func newEnv(t *testing.T) *env {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	svc := logic.New(logic.Config{Store: st, Bus: local.New(), MaxGroupSize: 4})
	keys := auth.NewForTest(signing, adminKey, time.Now)
	e := &env{h: api.New(api.Config{Logic: svc, Keys: keys}), keys: keys, toks: map[string]string{"admin": "Bearer " + adminKey, "none": ""}}
	for _, u := range []string{"alice", "bob", "carol"} {
		tok, err := keys.Issue(u, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		e.toks[u] = "Bearer " + tok
	}
	past := auth.NewForTest(signing, adminKey, func() time.Time { return time.Now().Add(-48 * time.Hour) })
	expired, _ := past.Issue("alice", time.Hour)
	e.toks["expired"] = "Bearer " + expired
	e.toks["garbage"] = "Bearer not.a.token"
	e.toks["basic"] = "Basic " + adminKey
	return e
}

// step is one request of a scenario whose steps share state.
type step struct {
	name   string
	as     string // credential name
	method string
	path   string
	body   string
	status int
	code   string // error code, for error answers
	check  func(t *testing.T, resp map[string]any, hdr http.Header)
}

func (e *env) run(t *testing.T, steps []step) {
	t.Helper()
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			var body io.Reader
			if s.body != "" {
				body = strings.NewReader(s.body)
			}
			req := httptest.NewRequest(s.method, s.path, body)
			if a := e.toks[s.as]; a != "" {
				req.Header.Set("Authorization", a)
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			var resp map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("answer is not a JSON object: %v: %s", err, rec.Body)
			}
			if rec.Code != s.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, s.status, rec.Body)
			}
			if s.code != "" {
				errObj, _ := resp["error"].(map[string]any)
				if errObj["code"] != s.code || errObj["message"] == "" {
					t.Fatalf("error %v, want code %s and a message", resp["error"], s.code)
				}
			} else if _, isErr := resp["error"]; isErr {
				t.Fatalf("unexpected error answer: %s", rec.Body)
			}
			if s.check != nil {
				s.check(t, resp, rec.Header())
			}
		})
	}
}

func want(t *testing.T, resp map[string]any, field string, v any) {
	t.Helper()
	got, _ := json.Marshal(resp[field])
	var norm any // v as generic JSON, so object keys sort alike
	b, _ := json.Marshal(v)
	json.Unmarshal(b, &norm)
	exp, _ := json.Marshal(norm)
	if string(got) != string(exp) {
		t.Errorf("%s = %s, want %s", field, got, exp)
	}
}

func TestTokens(t *testing.T) {
	e := newEnv(t)
	big := `{"user":"alice","ttl":"` + strings.Repeat("x", api.DefaultMaxBody) + `"}`
	e.run(t, []step{
		{name: "no credential", as: "none", method: "POST", path: "/v1/tokens", body: `{"user":"alice"}`, status: 401, code: "UNAUTHENTICATED",
			check: func(t *testing.T, _ map[string]any, h http.Header) {
				if h.Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate")
				}
			}},
		{name: "not bearer", as: "basic", method: "POST", path: "/v1/tokens", body: `{"user":"alice"}`, status: 401, code: "UNAUTHENTICATED"},
		{name: "garbage token", as: "garbage", method: "POST", path: "/v1/tokens", body: `{"user":"alice"}`, status: 401, code: "UNAUTHENTICATED"},
		{name: "user token", as: "alice", method: "POST", path: "/v1/tokens", body: `{"user":"alice"}`, status: 403, code: "FORBIDDEN"},
		{name: "admin default ttl", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":"dave"}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				want(t, r, "user", "dave")
				tok, _ := r["token"].(string)
				if u, err := e.keys.Verify(tok); err != nil || u != "dave" {
					t.Errorf("token verifies as %q, %v", u, err)
				}
				exp, err := time.Parse(time.RFC3339, r["expires_at"].(string))
				if err != nil || time.Until(exp) > 24*time.Hour+time.Second || time.Until(exp) < 24*time.Hour-5*time.Second {
					t.Errorf("expires_at %v (%v)", r["expires_at"], err)
				}
			}},
		{name: "ttl string", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":"dave","ttl":"90m"}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				exp, _ := time.Parse(time.RFC3339, r["expires_at"].(string))
				if d := time.Until(exp); d > 90*time.Minute+time.Second || d < 89*time.Minute {
					t.Errorf("expires in %v", d)
				}
			}},
		{name: "ttl seconds", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":"dave","ttl":60}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				exp, _ := time.Parse(time.RFC3339, r["expires_at"].(string))
				if d := time.Until(exp); d > 61*time.Second || d < 55*time.Second {
					t.Errorf("expires in %v", d)
				}
			}},
		{name: "negative ttl", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":"dave","ttl":"-1h"}`, status: 400, code: "BAD_REQUEST"},
		{name: "bad ttl", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":"dave","ttl":"soon"}`, status: 400, code: "BAD_REQUEST"},
		{name: "invalid user", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":"a b"}`, status: 400, code: "BAD_REQUEST"},
		{name: "missing user", as: "admin", method: "POST", path: "/v1/tokens", body: `{}`, status: 400, code: "BAD_REQUEST"},
		{name: "bad JSON", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":`, status: 400, code: "BAD_REQUEST"},
		{name: "wrong type", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":5}`, status: 400, code: "BAD_REQUEST",
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				if msg := r["error"].(map[string]any)["message"].(string); !strings.Contains(msg, `"user"`) {
					t.Errorf("message %q does not name the field", msg)
				}
			}},
		{name: "unknown field", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":"dave","role":"admin"}`, status: 400, code: "BAD_REQUEST"},
		{name: "trailing data", as: "admin", method: "POST", path: "/v1/tokens", body: `{"user":"dave"} {}`, status: 400, code: "BAD_REQUEST"},
		{name: "empty body", as: "admin", method: "POST", path: "/v1/tokens", status: 400, code: "BAD_REQUEST"},
		{name: "body too large", as: "admin", method: "POST", path: "/v1/tokens", body: big, status: 413, code: "TOO_LARGE"},
	})
}

func TestMessagesAndHistory(t *testing.T) {
	e := newEnv(t)
	var firstMsgID string
	bin := base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 0xff})
	e.run(t, []step{
		{name: "send text", as: "alice", method: "POST", path: "/v1/messages", body: `{"to":"bob","text":"hello","client_msg_id":"c1"}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				want(t, r, "conv", "d:alice:bob")
				want(t, r, "seq", 1)
				want(t, r, "client_msg_id", "c1")
				want(t, r, "duplicate", false)
				firstMsgID, _ = r["msg_id"].(string)
				if firstMsgID == "" || r["server_time"].(float64) == 0 {
					t.Errorf("ack %v", r)
				}
			}},
		{name: "resend is duplicate", as: "alice", method: "POST", path: "/v1/messages", body: `{"to":"bob","text":"hello","client_msg_id":"c1"}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				want(t, r, "seq", 1)
				want(t, r, "duplicate", true)
				want(t, r, "msg_id", firstMsgID)
			}},
		{name: "binary by conv, other device", as: "alice", method: "POST", path: "/v1/messages",
			body: `{"conv":"d:alice:bob","body_base64":"` + bin + `","device":"laptop"}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				want(t, r, "seq", 2)
				if id, _ := r["client_msg_id"].(string); len(id) != 32 {
					t.Errorf("generated client_msg_id %q", id)
				}
			}},
		{name: "admin as bob", as: "admin", method: "POST", path: "/v1/messages?as=bob", body: `{"to":"alice","text":"hi alice"}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) { want(t, r, "seq", 3) }},
		{name: "admin without as", as: "admin", method: "POST", path: "/v1/messages", body: `{"to":"alice","text":"x"}`, status: 400, code: "BAD_REQUEST"},
		{name: "admin with invalid as", as: "admin", method: "POST", path: "/v1/messages?as=a%20b", body: `{"to":"alice","text":"x"}`, status: 400, code: "BAD_REQUEST"},
		{name: "user as someone else", as: "alice", method: "POST", path: "/v1/messages?as=bob", body: `{"to":"carol","text":"x"}`, status: 403, code: "FORBIDDEN"},
		{name: "user as self", as: "alice", method: "POST", path: "/v1/messages?as=alice", body: `{"to":"carol","text":"x"}`, status: 200},
		{name: "expired token", as: "expired", method: "POST", path: "/v1/messages", body: `{"to":"bob","text":"x"}`, status: 401, code: "UNAUTHENTICATED",
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				if msg := r["error"].(map[string]any)["message"]; msg != "token expired" {
					t.Errorf("message %q", msg)
				}
			}},
		{name: "someone else's conversation", as: "carol", method: "POST", path: "/v1/messages", body: `{"conv":"d:alice:bob","text":"x"}`, status: 403, code: "FORBIDDEN"},
		{name: "text and binary", as: "alice", method: "POST", path: "/v1/messages", body: `{"to":"bob","text":"x","body_base64":"eA=="}`, status: 400, code: "BAD_REQUEST"},
		{name: "no body", as: "alice", method: "POST", path: "/v1/messages", body: `{"to":"bob"}`, status: 400, code: "BAD_REQUEST"},
		{name: "bad base64", as: "alice", method: "POST", path: "/v1/messages", body: `{"to":"bob","body_base64":"!!"}`, status: 400, code: "BAD_REQUEST"},
		{name: "to and conv", as: "alice", method: "POST", path: "/v1/messages", body: `{"to":"bob","conv":"d:alice:bob","text":"x"}`, status: 400, code: "BAD_REQUEST"},
		{name: "no target", as: "alice", method: "POST", path: "/v1/messages", body: `{"text":"x"}`, status: 400, code: "BAD_REQUEST"},
		{name: "bad device", as: "alice", method: "POST", path: "/v1/messages", body: `{"to":"bob","text":"x","device":"a/b"}`, status: 400, code: "BAD_REQUEST"},
		{name: "body over the message limit", as: "alice", method: "POST", path: "/v1/messages",
			body: `{"to":"bob","text":"` + strings.Repeat("x", logic.DefaultMaxBody+1) + `"}`, status: 413, code: "TOO_LARGE"},
		{name: "unknown group", as: "alice", method: "POST", path: "/v1/messages", body: `{"conv":"nope","text":"x"}`, status: 404, code: "NOT_FOUND"},

		{name: "history", as: "bob", method: "GET", path: "/v1/conversations/d:alice:bob/history", status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				want(t, r, "has_more", false)
				msgs := r["messages"].([]any)
				if len(msgs) != 3 {
					t.Fatalf("%d messages, want 3", len(msgs))
				}
				m0, m1, m2 := msgs[0].(map[string]any), msgs[1].(map[string]any), msgs[2].(map[string]any)
				want(t, m0, "type", "text")
				want(t, m0, "body", "hello")
				want(t, m0, "sender", "alice")
				want(t, m0, "sender_device", "http")
				want(t, m0, "client_msg_id", "c1")
				want(t, m0, "msg_id", firstMsgID)
				want(t, m1, "type", "binary")
				want(t, m1, "body_base64", bin)
				want(t, m1, "sender_device", "laptop")
				want(t, m2, "sender", "bob")
				if _, ok := m0["user_seq"]; ok {
					t.Error("history message has a user_seq")
				}
			}},
		{name: "history page", as: "alice", method: "GET", path: "/v1/conversations/d:alice:bob/history?before=3&limit=1", status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				want(t, r, "has_more", true)
				msgs := r["messages"].([]any)
				if len(msgs) != 1 || msgs[0].(map[string]any)["seq"].(float64) != 2 {
					t.Errorf("page %v", msgs)
				}
			}},
		{name: "history escaped path", as: "alice", method: "GET", path: "/v1/conversations/d%3Aalice%3Abob/history?limit=1", status: 200},
		{name: "history bad limit", as: "alice", method: "GET", path: "/v1/conversations/d:alice:bob/history?limit=-1", status: 400, code: "BAD_REQUEST"},
		{name: "history of others", as: "carol", method: "GET", path: "/v1/conversations/d:alice:bob/history", status: 403, code: "FORBIDDEN"},
		{name: "history bad conv", as: "alice", method: "GET", path: "/v1/conversations/d:zed:alice/history", status: 400, code: "BAD_REQUEST"},
		{name: "read", as: "bob", method: "POST", path: "/v1/conversations/d:alice:bob/read", body: `{"seq":2}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) { want(t, r, "read_seq", 2) }},
		{name: "read never moves back", as: "bob", method: "POST", path: "/v1/conversations/d:alice:bob/read", body: `{"seq":1,"device":"pc"}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) { want(t, r, "read_seq", 2) }},
		{name: "read of others", as: "carol", method: "POST", path: "/v1/conversations/d:alice:bob/read", body: `{"seq":1}`, status: 403, code: "FORBIDDEN"},
		{name: "read bad device", as: "bob", method: "POST", path: "/v1/conversations/d:alice:bob/read", body: `{"seq":1,"device":"a b"}`, status: 400, code: "BAD_REQUEST"},
	})
}

func TestGroups(t *testing.T) {
	e := newEnv(t)
	members := func(users ...string) func(t *testing.T, r map[string]any, _ http.Header) {
		return func(t *testing.T, r map[string]any, _ http.Header) {
			t.Helper()
			var got []string
			for _, m := range r["members"].([]any) {
				got = append(got, m.(map[string]any)["user"].(string))
			}
			if strings.Join(got, ",") != strings.Join(users, ",") {
				t.Errorf("members %v, want %v", got, users)
			}
		}
	}
	e.run(t, []step{
		{name: "create", as: "alice", method: "POST", path: "/v1/groups", body: `{"group":"team","users":["bob"]}`, status: 201,
			check: func(t *testing.T, r map[string]any, h http.Header) {
				want(t, r, "group", "g:team")
				want(t, r, "seq", 1)
				want(t, r, "members", []api.Member{{User: "alice", Role: "owner", JoinSeq: 1}, {User: "bob", Role: "member", JoinSeq: 1}})
			}},
		{name: "create taken id", as: "bob", method: "POST", path: "/v1/groups", body: `{"group":"g:team","users":[]}`, status: 400, code: "BAD_REQUEST"},
		{name: "create server-picked id", as: "carol", method: "POST", path: "/v1/groups", body: `{"users":["alice"]}`, status: 201,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				if g, _ := r["group"].(string); !strings.HasPrefix(g, "g:") || len(g) < 4 {
					t.Errorf("group %q", g)
				}
			}},
		{name: "create too large", as: "alice", method: "POST", path: "/v1/groups", body: `{"users":["b","c","d","e"]}`, status: 422, code: "GROUP_TOO_LARGE"},
		{name: "create invalid user", as: "alice", method: "POST", path: "/v1/groups", body: `{"users":["no body"]}`, status: 400, code: "BAD_REQUEST"},
		{name: "create invalid id", as: "alice", method: "POST", path: "/v1/groups", body: `{"group":"a:b","users":[]}`, status: 400, code: "BAD_REQUEST"},
		{name: "members by member", as: "bob", method: "GET", path: "/v1/groups/team/members", status: 200, check: members("alice", "bob")},
		{name: "members with prefix", as: "alice", method: "GET", path: "/v1/groups/g:team/members", status: 200, check: members("alice", "bob")},
		{name: "members by outsider", as: "carol", method: "GET", path: "/v1/groups/team/members", status: 403, code: "FORBIDDEN"},
		{name: "members by admin as outsider", as: "admin", method: "GET", path: "/v1/groups/team/members?as=carol", status: 403, code: "FORBIDDEN"},
		{name: "add by member", as: "bob", method: "POST", path: "/v1/groups/team/members", body: `{"users":["carol"]}`, status: 200,
			check: func(t *testing.T, r map[string]any, h http.Header) {
				members("alice", "bob", "carol")(t, r, h)
				want(t, r, "seq", 2)
			}},
		{name: "add by outsider", as: "admin", method: "POST", path: "/v1/groups/team/members?as=dave", body: `{"users":["dave"]}`, status: 403, code: "FORBIDDEN"},
		{name: "add with group in body", as: "bob", method: "POST", path: "/v1/groups/team/members", body: `{"group":"x","users":["dave"]}`, status: 400, code: "BAD_REQUEST"},
		{name: "add no users", as: "bob", method: "POST", path: "/v1/groups/team/members", body: `{"users":[]}`, status: 400, code: "BAD_REQUEST"},
		{name: "send to group", as: "carol", method: "POST", path: "/v1/messages", body: `{"conv":"team","text":"hi all"}`, status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				want(t, r, "conv", "g:team")
				want(t, r, "seq", 3)
			}},
		{name: "member cannot remove others", as: "bob", method: "DELETE", path: "/v1/groups/team/members/carol", status: 403, code: "FORBIDDEN"},
		{name: "member leaves", as: "carol", method: "DELETE", path: "/v1/groups/team/members/carol", status: 200,
			check: func(t *testing.T, r map[string]any, h http.Header) {
				members()(t, r, h) // no longer a member: no list
				want(t, r, "seq", 4)
			}},
		{name: "owner removes", as: "alice", method: "DELETE", path: "/v1/groups/g:team/members/bob", status: 200, check: members("alice")},
		{name: "removed cannot send", as: "bob", method: "POST", path: "/v1/messages", body: `{"conv":"g:team","text":"x"}`, status: 403, code: "FORBIDDEN"},
		{name: "group history", as: "alice", method: "GET", path: "/v1/conversations/team/history", status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				msgs := r["messages"].([]any)
				var types []string
				for _, m := range msgs {
					types = append(types, m.(map[string]any)["type"].(string))
				}
				if strings.Join(types, ",") != "group_created,members_added,text,members_removed,members_removed" {
					t.Errorf("types %v", types)
				}
				want(t, msgs[0].(map[string]any), "members", []string{"alice", "bob"})
				want(t, msgs[1].(map[string]any), "members", []string{"carol"})
			}},
		{name: "unknown group", as: "alice", method: "GET", path: "/v1/groups/nope/members", status: 404, code: "NOT_FOUND"},
	})
}

func TestRouting(t *testing.T) {
	e := newEnv(t)
	e.run(t, []step{
		{name: "unknown path", as: "alice", method: "GET", path: "/v1/nope", status: 404, code: "NOT_FOUND"},
		{name: "unknown path unauthenticated", as: "none", method: "GET", path: "/v1/", status: 404, code: "NOT_FOUND"},
		{name: "wrong method", as: "alice", method: "GET", path: "/v1/messages", status: 405, code: "BAD_REQUEST",
			check: func(t *testing.T, _ map[string]any, h http.Header) {
				if h.Get("Allow") != "POST" {
					t.Errorf("Allow %q", h.Get("Allow"))
				}
			}},
		{name: "wrong method on members", as: "alice", method: "PUT", path: "/v1/groups/x/members", status: 405, code: "BAD_REQUEST",
			check: func(t *testing.T, _ map[string]any, h http.Header) {
				if h.Get("Allow") != "GET, POST" {
					t.Errorf("Allow %q", h.Get("Allow"))
				}
			}},
	})
}

func TestDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{`"24h"`: 24 * time.Hour, `"1m30s"`: 90 * time.Second, `60`: time.Minute, `0.5`: 500 * time.Millisecond} {
		var d api.Duration
		if err := json.Unmarshal([]byte(in), &d); err != nil || time.Duration(d) != want {
			t.Errorf("%s -> %v, %v", in, time.Duration(d), err)
		}
	}
	for _, in := range []string{`"x"`, `true`, `1e300`, `[]`} {
		var d api.Duration
		if err := json.Unmarshal([]byte(in), &d); err == nil {
			t.Errorf("%s accepted", in)
		}
	}
}
