package api_test

// Tests of the read-state endpoints: the conversation list, receipts,
// delete-for-me and settings. Invariants checked: a user token reads only its
// own user's list and settings and only its own messages' receipts; the admin
// key (with ?as) reads any list and any message's receipts; hiding and
// settings are idempotent; "changed since V" returns exactly the entries
// whose version is above V. Every expected version is a user seq, fixed by the
// order of the steps, so nothing here depends on timing.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// convsAre checks the conv ids of a conversation list, in order.
func convsAre(ids ...string) func(t *testing.T, r map[string]any, _ http.Header) {
	return func(t *testing.T, r map[string]any, _ http.Header) {
		t.Helper()
		list, ok := r["conversations"].([]any)
		if !ok {
			t.Fatalf("conversations is %T, want an array", r["conversations"])
		}
		var got []string
		for _, c := range list {
			got = append(got, c.(map[string]any)["conv"].(string))
		}
		if strings.Join(got, ",") != strings.Join(ids, ",") {
			t.Errorf("conversations %v, want %v", got, ids)
		}
	}
}

// entry returns the i-th entry of a conversation list.
func entry(t *testing.T, r map[string]any, i int) map[string]any {
	t.Helper()
	list, _ := r["conversations"].([]any)
	if i >= len(list) {
		t.Fatalf("no entry %d in %v", i, r)
	}
	return list[i].(map[string]any)
}

// checks runs several checks on one answer.
func checks(fs ...func(t *testing.T, r map[string]any, h http.Header)) func(t *testing.T, r map[string]any, h http.Header) {
	return func(t *testing.T, r map[string]any, h http.Header) {
		t.Helper()
		for _, f := range fs {
			f(t, r, h)
		}
	}
}

func fields(kv ...any) func(t *testing.T, r map[string]any, _ http.Header) {
	return func(t *testing.T, r map[string]any, _ http.Header) {
		t.Helper()
		for i := 0; i+1 < len(kv); i += 2 {
			want(t, r, kv[i].(string), kv[i+1])
		}
	}
}

func absent(keys ...string) func(t *testing.T, r map[string]any, _ http.Header) {
	return func(t *testing.T, r map[string]any, _ http.Header) {
		t.Helper()
		for _, k := range keys {
			if _, ok := r[k]; ok {
				t.Errorf("%s present: %v", k, r[k])
			}
		}
	}
}

func allow(methods string) func(t *testing.T, _ map[string]any, h http.Header) {
	return func(t *testing.T, _ map[string]any, h http.Header) {
		t.Helper()
		if h.Get("Allow") != methods {
			t.Errorf("Allow %q, want %q", h.Get("Allow"), methods)
		}
	}
}

func send(as, body string) step {
	return step{name: "send " + as + " " + body, as: as, method: "POST", path: "/v1/messages", body: body, status: 200}
}

func TestConversationList(t *testing.T) {
	e := newEnv(t)
	// bob's timeline: 1-3 the direct messages, 4 the group's creation, 5 "hi team".
	e.run(t, []step{
		send("alice", `{"to":"bob","text":"one"}`),
		send("alice", `{"to":"bob","text":"two"}`),
		send("bob", `{"to":"alice","text":"three"}`),
		{name: "create group", as: "alice", method: "POST", path: "/v1/groups", body: `{"group":"team","users":["bob"]}`, status: 201},
		send("alice", `{"conv":"team","text":"hi team"}`),
	})
	bobList := checks(convsAre("g:team", "d:alice:bob"), fields("version", 5, "has_more", false),
		func(t *testing.T, r map[string]any, _ http.Header) {
			g, d := entry(t, r, 0), entry(t, r, 1)
			want(t, g, "last_seq", 2)
			want(t, g, "read_seq", 0)
			want(t, g, "unread", 1) // "hi team"; the membership message does not count
			want(t, g, "activity", 5)
			want(t, g, "version", 5)
			want(t, g, "join_seq", 1)
			want(t, d, "last_seq", 3)
			want(t, d, "unread", 2) // bob's own "three" does not count
			want(t, d, "activity", 3)
			want(t, d, "version", 3)
			last, _ := d["last_message"].(map[string]any)
			want(t, last, "body", "three")
			want(t, last, "sender", "bob")
			absent("join_seq", "left", "peer_read_seq", "peer_delivered_seq")(t, d, nil)
		})
	e.run(t, []step{
		{name: "own list", as: "bob", method: "GET", path: "/v1/conversations", status: 200, check: bobList},
		{name: "admin as bob", as: "admin", method: "GET", path: "/v1/conversations?as=bob", status: 200, check: bobList},
		{name: "user as another user", as: "alice", method: "GET", path: "/v1/conversations?as=bob", status: 403, code: "FORBIDDEN"},
		{name: "admin without as", as: "admin", method: "GET", path: "/v1/conversations", status: 400, code: "BAD_REQUEST"},
		{name: "no credential", as: "none", method: "GET", path: "/v1/conversations", status: 401, code: "UNAUTHENTICATED"},
		{name: "expired token", as: "expired", method: "GET", path: "/v1/conversations", status: 401, code: "UNAUTHENTICATED"},
		{name: "empty list is an array", as: "carol", method: "GET", path: "/v1/conversations", status: 200,
			check: checks(convsAre(), fields("conversations", []any{}, "version", 0, "has_more", false))},
		{name: "first page", as: "bob", method: "GET", path: "/v1/conversations?limit=1", status: 200,
			check: checks(convsAre("g:team"), fields("has_more", true, "version", 5))},
		{name: "next page below the last activity", as: "bob", method: "GET", path: "/v1/conversations?limit=1&before=5", status: 200,
			check: checks(convsAre("d:alice:bob"), fields("has_more", false))},
		{name: "nothing below the oldest", as: "bob", method: "GET", path: "/v1/conversations?before=3", status: 200, check: convsAre()},
		{name: "bad since", as: "bob", method: "GET", path: "/v1/conversations?since=abc", status: 400, code: "BAD_REQUEST"},
		{name: "negative before", as: "bob", method: "GET", path: "/v1/conversations?before=-1", status: 400, code: "BAD_REQUEST"},
		{name: "bad limit", as: "bob", method: "GET", path: "/v1/conversations?limit=x", status: 400, code: "BAD_REQUEST"},
		{name: "nothing changed since the version", as: "bob", method: "GET", path: "/v1/conversations?since=5", status: 200,
			check: checks(convsAre(), fields("version", 5, "has_more", false))},
		{name: "changes since 3", as: "bob", method: "GET", path: "/v1/conversations?since=3", status: 200, check: convsAre("g:team")},
		{name: "everything since 0 is the full list", as: "bob", method: "GET", path: "/v1/conversations?since=0", status: 200, check: convsAre("g:team", "d:alice:bob")},

		// bob reads the direct conversation (bob's user seq 6, alice's 6: a read receipt).
		{name: "read", as: "bob", method: "POST", path: "/v1/conversations/d:alice:bob/read", body: `{"seq":2}`, status: 200},
		{name: "only the read entry changed since 5", as: "bob", method: "GET", path: "/v1/conversations?since=5", status: 200,
			check: checks(convsAre("d:alice:bob"), fields("version", 6), func(t *testing.T, r map[string]any, _ http.Header) {
				d := entry(t, r, 0)
				want(t, d, "read_seq", 2)
				want(t, d, "unread", 0)
				want(t, d, "version", 6)
				want(t, d, "activity", 3) // a read is a change, not activity
			})},
		{name: "the list order is by activity, not by change", as: "bob", method: "GET", path: "/v1/conversations", status: 200,
			check: convsAre("g:team", "d:alice:bob")},
		{name: "the sender sees the peer's read position", as: "alice", method: "GET", path: "/v1/conversations?since=5", status: 200,
			check: checks(convsAre("d:alice:bob"), func(t *testing.T, r map[string]any, _ http.Header) {
				d := entry(t, r, 0)
				want(t, d, "peer_read_seq", 2)
				want(t, d, "unread", 1) // bob's "three"
				want(t, d, "version", 6)
			})},
	})
}

func TestReceipts(t *testing.T) {
	e := newEnv(t)
	e.run(t, []step{
		send("alice", `{"to":"bob","text":"one"}`),
		send("bob", `{"to":"alice","text":"back"}`),
		{name: "create group", as: "alice", method: "POST", path: "/v1/groups", body: `{"group":"team","users":["bob","carol"]}`, status: 201},
		send("alice", `{"conv":"team","text":"hi team"}`),
		{name: "bob reads direct", as: "bob", method: "POST", path: "/v1/conversations/d:alice:bob/read", body: `{"seq":2}`, status: 200},
		{name: "bob reads group", as: "bob", method: "POST", path: "/v1/conversations/team/read", body: `{"seq":2}`, status: 200},
		{name: "carol reads group", as: "carol", method: "POST", path: "/v1/conversations/team/read", body: `{"seq":2}`, status: 200},
	})
	const d1 = "/v1/conversations/d:alice:bob/messages/1/receipts"
	readBy := func(n int, readers ...string) func(t *testing.T, r map[string]any, _ http.Header) {
		if readers == nil {
			readers = []string{}
		}
		return fields("read_count", n, "readers", readers)
	}
	tests := []step{
		// Who may ask: the sender, or the admin key for any message.
		{name: "sender", as: "alice", path: d1, status: 200,
			check: checks(fields("conv", "d:alice:bob", "seq", 1, "has_more", false), readBy(1, "bob"))},
		{name: "the peer, not the sender", as: "bob", path: d1, status: 403, code: "FORBIDDEN"},
		{name: "not a member", as: "carol", path: d1, status: 403, code: "FORBIDDEN"},
		{name: "admin key", as: "admin", path: d1 + "?as=carol", status: 200, check: readBy(1, "bob")},
		{name: "admin key without as", as: "admin", path: d1, status: 200, check: readBy(1, "bob")},
		{name: "user token as the sender", as: "bob", path: d1 + "?as=alice", status: 403, code: "FORBIDDEN"},
		{name: "no credential", as: "none", path: d1, status: 401, code: "UNAUTHENTICATED"},
		{name: "expired token", as: "expired", path: d1, status: 401, code: "UNAUTHENTICATED"},
		{name: "unread message: empty readers array", as: "bob", path: "/v1/conversations/d:alice:bob/messages/2/receipts", status: 200, check: readBy(0)},
		{name: "escaped conv", as: "alice", path: "/v1/conversations/d%3Aalice%3Abob/messages/1/receipts", status: 200, check: readBy(1, "bob")},

		// Bad seqs and conversations.
		{name: "seq not a number", as: "alice", path: "/v1/conversations/d:alice:bob/messages/x/receipts", status: 400, code: "BAD_REQUEST"},
		{name: "negative seq", as: "alice", path: "/v1/conversations/d:alice:bob/messages/-1/receipts", status: 400, code: "BAD_REQUEST"},
		{name: "seq 0", as: "alice", path: "/v1/conversations/d:alice:bob/messages/0/receipts", status: 404, code: "NOT_FOUND"},
		{name: "seq past the end", as: "alice", path: "/v1/conversations/d:alice:bob/messages/99/receipts", status: 404, code: "NOT_FOUND"},
		{name: "admin, seq past the end", as: "admin", path: "/v1/conversations/d:alice:bob/messages/99/receipts?as=x", status: 404, code: "NOT_FOUND"},
		{name: "unknown group", as: "alice", path: "/v1/conversations/g:nope/messages/1/receipts", status: 404, code: "NOT_FOUND"},
		{name: "admin, unknown group", as: "admin", path: "/v1/conversations/g:nope/messages/1/receipts?as=x", status: 404, code: "NOT_FOUND"},
		{name: "direct conversation never written", as: "alice", path: "/v1/conversations/d:alice:zed/messages/1/receipts", status: 404, code: "NOT_FOUND"},
		{name: "invalid conv id", as: "alice", path: "/v1/conversations/d:zed:alice/messages/1/receipts", status: 400, code: "BAD_REQUEST"},

		// Group readers, paged by user id.
		{name: "group", as: "alice", path: "/v1/conversations/team/messages/2/receipts", status: 200,
			check: checks(fields("conv", "g:team", "has_more", false), readBy(2, "bob", "carol"))},
		{name: "group first page", as: "alice", path: "/v1/conversations/g:team/messages/2/receipts?limit=1", status: 200,
			check: checks(fields("has_more", true), readBy(2, "bob"))},
		{name: "group next page", as: "alice", path: "/v1/conversations/g:team/messages/2/receipts?limit=1&after=bob", status: 200,
			check: checks(fields("has_more", false), readBy(2, "carol"))},
		{name: "member, not the sender", as: "carol", path: "/v1/conversations/team/messages/2/receipts", status: 403, code: "FORBIDDEN"},
		{name: "bad after", as: "alice", path: "/v1/conversations/team/messages/2/receipts?after=a%20b", status: 400, code: "BAD_REQUEST"},
		{name: "bad limit", as: "alice", path: "/v1/conversations/team/messages/2/receipts?limit=-1", status: 400, code: "BAD_REQUEST"},
		{name: "wrong method", as: "alice", method: "POST", path: d1, status: 405, code: "BAD_REQUEST", check: allow("GET")},
	}
	for i := range tests {
		if tests[i].method == "" {
			tests[i].method = "GET"
		}
	}
	e.run(t, tests)
}

func TestReceiptsOff(t *testing.T) {
	e := newEnv(t)
	e.run(t, []step{
		send("alice", `{"to":"bob","text":"one"}`),
		send("alice", `{"to":"bob","text":"two"}`),
		// A reader with read receipts off is not counted for that read.
		{name: "bob turns them off", as: "bob", method: "PATCH", path: "/v1/settings", body: `{"read_receipts":false}`, status: 200},
		{name: "bob reads", as: "bob", method: "POST", path: "/v1/conversations/d:alice:bob/read", body: `{"seq":1}`, status: 200},
		{name: "not counted", as: "alice", method: "GET", path: "/v1/conversations/d:alice:bob/messages/1/receipts", status: 200,
			check: fields("read_count", 0, "readers", []string{})},
		{name: "no peer read position", as: "alice", method: "GET", path: "/v1/conversations", status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) { absent("peer_read_seq")(t, entry(t, r, 0), nil) }},
		{name: "bob turns them on", as: "bob", method: "PATCH", path: "/v1/settings", body: `{"read_receipts":true}`, status: 200},
		{name: "bob reads on", as: "bob", method: "POST", path: "/v1/conversations/d:alice:bob/read", body: `{"seq":2}`, status: 200},
		{name: "counted from then on", as: "alice", method: "GET", path: "/v1/conversations/d:alice:bob/messages/2/receipts", status: 200,
			check: fields("read_count", 1, "readers", []string{"bob"})},
		{name: "up to the new position", as: "alice", method: "GET", path: "/v1/conversations/d:alice:bob/messages/1/receipts", status: 200,
			check: fields("read_count", 1, "readers", []string{"bob"})},
		// A sender with read receipts off may not see them.
		{name: "alice turns them off", as: "alice", method: "PATCH", path: "/v1/settings", body: `{"read_receipts":false}`, status: 200},
		{name: "the sender with them off", as: "alice", method: "GET", path: "/v1/conversations/d:alice:bob/messages/2/receipts", status: 403, code: "FORBIDDEN",
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				if msg := r["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "off") {
					t.Errorf("message %q does not say receipts are off", msg)
				}
			}},
		{name: "the admin still can", as: "admin", method: "GET", path: "/v1/conversations/d:alice:bob/messages/2/receipts?as=alice", status: 200,
			check: fields("read_count", 1)},
	})
}

func TestHide(t *testing.T) {
	e := newEnv(t)
	hidePath := func(conv string, seq any) string {
		return fmt.Sprintf("/v1/conversations/%s/messages/%v/hide", conv, seq)
	}
	historySeqs := func(seqs ...int) func(t *testing.T, r map[string]any, _ http.Header) {
		return func(t *testing.T, r map[string]any, _ http.Header) {
			t.Helper()
			var got []int
			for _, m := range r["messages"].([]any) {
				got = append(got, int(m.(map[string]any)["seq"].(float64)))
			}
			if fmt.Sprint(got) != fmt.Sprint(seqs) {
				t.Errorf("history seqs %v, want %v", got, seqs)
			}
		}
	}
	var version float64
	e.run(t, []step{
		send("alice", `{"to":"bob","text":"one"}`),
		send("alice", `{"to":"bob","text":"two"}`),
		send("alice", `{"to":"bob","text":"three"}`),
		{name: "hide", as: "bob", method: "POST", path: hidePath("d:alice:bob", 1), body: `{}`, status: 200,
			check: fields("conv", "d:alice:bob", "seq", 1, "hidden", true)},
		{name: "list version after the hide", as: "bob", method: "GET", path: "/v1/conversations", status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) {
				version = r["version"].(float64)
				want(t, r, "version", 4) // 3 messages, then the Hidden event
			}},
		{name: "hide again, another device", as: "bob", method: "POST", path: hidePath("d:alice:bob", 1), body: `{"device":"pc"}`, status: 200,
			check: fields("conv", "d:alice:bob", "seq", 1, "hidden", true)},
		{name: "hiding twice writes nothing", as: "bob", method: "GET", path: "/v1/conversations", status: 200,
			check: func(t *testing.T, r map[string]any, _ http.Header) { want(t, r, "version", version) }},
		{name: "gone from the hider's history", as: "bob", method: "GET", path: "/v1/conversations/d:alice:bob/history", status: 200, check: historySeqs(2, 3)},
		{name: "still in the peer's history", as: "alice", method: "GET", path: "/v1/conversations/d:alice:bob/history", status: 200, check: historySeqs(1, 2, 3)},
		{name: "the sender hides their own", as: "alice", method: "POST", path: hidePath("d:alice:bob", 2), body: `{"device":"laptop"}`, status: 200},
		{name: "sender's history", as: "alice", method: "GET", path: "/v1/conversations/d:alice:bob/history", status: 200, check: historySeqs(1, 3)},
		{name: "admin as bob", as: "admin", method: "POST", path: hidePath("d:alice:bob", 3) + "?as=bob", body: `{}`, status: 200},
		{name: "bob's history after the admin's hide", as: "bob", method: "GET", path: "/v1/conversations/d:alice:bob/history", status: 200, check: historySeqs(2)},

		{name: "not a member", as: "carol", method: "POST", path: hidePath("d:alice:bob", 1), body: `{}`, status: 403, code: "FORBIDDEN"},
		{name: "user as another user", as: "carol", method: "POST", path: hidePath("d:alice:bob", 1) + "?as=bob", body: `{}`, status: 403, code: "FORBIDDEN"},
		{name: "seq not a number", as: "bob", method: "POST", path: hidePath("d:alice:bob", "x"), body: `{}`, status: 400, code: "BAD_REQUEST"},
		{name: "seq 0", as: "bob", method: "POST", path: hidePath("d:alice:bob", 0), body: `{}`, status: 404, code: "NOT_FOUND"},
		{name: "seq past the end", as: "bob", method: "POST", path: hidePath("d:alice:bob", 99), body: `{}`, status: 404, code: "NOT_FOUND"},
		{name: "unknown group", as: "bob", method: "POST", path: hidePath("g:nope", 1), body: `{}`, status: 404, code: "NOT_FOUND"},
		{name: "invalid conv id", as: "bob", method: "POST", path: hidePath("d:bob:alice", 1), body: `{}`, status: 400, code: "BAD_REQUEST"},
		{name: "bad device", as: "bob", method: "POST", path: hidePath("d:alice:bob", 1), body: `{"device":"a b"}`, status: 400, code: "BAD_REQUEST"},
		{name: "unknown field", as: "bob", method: "POST", path: hidePath("d:alice:bob", 1), body: `{"seq":1}`, status: 400, code: "BAD_REQUEST"},
		{name: "empty body", as: "bob", method: "POST", path: hidePath("d:alice:bob", 1), status: 400, code: "BAD_REQUEST"},
		{name: "wrong method", as: "bob", method: "GET", path: hidePath("d:alice:bob", 1), status: 405, code: "BAD_REQUEST", check: allow("POST")},
	})
}

func TestSettings(t *testing.T) {
	e := newEnv(t)
	on := fields("read_receipts", true)
	off := fields("read_receipts", false)
	e.run(t, []step{
		{name: "default on", as: "alice", method: "GET", path: "/v1/settings", status: 200, check: on},
		{name: "turn off", as: "alice", method: "PATCH", path: "/v1/settings", body: `{"read_receipts":false}`, status: 200, check: off},
		{name: "read back", as: "alice", method: "GET", path: "/v1/settings", status: 200, check: off},
		{name: "turn off again", as: "alice", method: "PATCH", path: "/v1/settings", body: `{"read_receipts":false}`, status: 200, check: off},
		{name: "empty object changes nothing", as: "alice", method: "PATCH", path: "/v1/settings", body: `{}`, status: 200, check: off},
		{name: "null changes nothing", as: "alice", method: "PATCH", path: "/v1/settings", body: `{"read_receipts":null}`, status: 200, check: off},
		{name: "per user", as: "bob", method: "GET", path: "/v1/settings", status: 200, check: on},
		{name: "admin reads", as: "admin", method: "GET", path: "/v1/settings?as=alice", status: 200, check: off},
		{name: "admin writes", as: "admin", method: "PATCH", path: "/v1/settings?as=alice", body: `{"read_receipts":true}`, status: 200, check: on},
		{name: "round trip", as: "alice", method: "GET", path: "/v1/settings", status: 200, check: on},
		{name: "admin without as", as: "admin", method: "GET", path: "/v1/settings", status: 400, code: "BAD_REQUEST"},
		{name: "user reads another's", as: "bob", method: "GET", path: "/v1/settings?as=alice", status: 403, code: "FORBIDDEN"},
		{name: "user writes another's", as: "bob", method: "PATCH", path: "/v1/settings?as=alice", body: `{"read_receipts":false}`, status: 403, code: "FORBIDDEN"},
		{name: "unchanged by the refused write", as: "alice", method: "GET", path: "/v1/settings", status: 200, check: on},
		{name: "no credential", as: "none", method: "GET", path: "/v1/settings", status: 401, code: "UNAUTHENTICATED"},
		{name: "wrong type", as: "alice", method: "PATCH", path: "/v1/settings", body: `{"read_receipts":"off"}`, status: 400, code: "BAD_REQUEST"},
		{name: "unknown field", as: "alice", method: "PATCH", path: "/v1/settings", body: `{"typing":false}`, status: 400, code: "BAD_REQUEST"},
		{name: "empty body", as: "alice", method: "PATCH", path: "/v1/settings", status: 400, code: "BAD_REQUEST"},
		{name: "PUT is not PATCH", as: "alice", method: "PUT", path: "/v1/settings", body: `{"read_receipts":false}`, status: 405, code: "BAD_REQUEST",
			check: allow("GET, PATCH")},
		{name: "still on", as: "alice", method: "GET", path: "/v1/settings", status: 200, check: on},
	})
}
