package main

// End-to-end tests of the read-state commands (convs, receipts, hide,
// settings) and of tail's read-state events, against a real in-process
// server. Nothing waits on a clock: a running command's output is watched,
// and each step waits for the line that proves the previous one happened.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/server"
)

// rsWait bounds every wait; a healthy run needs a tiny fraction of it.
const rsWait = 20 * time.Second

func startReadStateServer(t *testing.T) *server.Server {
	t.Helper()
	srv, err := server.Start(server.Config{DataDir: t.TempDir(), TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), rsWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv
}

// watchedOutput is a writer whose content a test can wait on.
type watchedOutput struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed (and replaced) at every write
}

func newWatchedOutput() *watchedOutput { return &watchedOutput{changed: make(chan struct{})} }

func (w *watchedOutput) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.changed)
	w.changed = make(chan struct{})
	return w.buf.Write(p)
}

func (w *watchedOutput) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor waits until ok holds for the complete lines written so far.
func (w *watchedOutput) waitFor(t *testing.T, what string, ok func(lines []string) bool) {
	t.Helper()
	deadline := time.After(rsWait)
	for {
		w.mu.Lock()
		s, ch := w.buf.String(), w.changed
		w.mu.Unlock()
		var lines []string
		if i := strings.LastIndexByte(s, '\n'); i >= 0 {
			lines = strings.Split(s[:i], "\n")
		}
		if ok(lines) {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no %s within %v; output:\n%s", what, rsWait, s)
		}
	}
}

// cliProc is a pim command running until stopped (tail).
type cliProc struct {
	out, err *watchedOutput
	cancel   context.CancelFunc
	done     chan struct{}
	code     int
}

func startCLI(t *testing.T, args ...string) *cliProc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &cliProc{out: newWatchedOutput(), err: newWatchedOutput(), cancel: cancel, done: make(chan struct{})}
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(p.out)
	root.SetErr(p.err)
	go func() {
		defer close(p.done)
		cmd, err := root.ExecuteContextC(ctx)
		p.code = report(p.err, cmd, err)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop cancels the command and returns its exit status.
func (p *cliProc) stop(t *testing.T) int {
	t.Helper()
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(rsWait):
		t.Fatalf("command did not end within %v of its cancellation", rsWait)
	}
	return p.code
}

// jsonLines parses lines of JSON objects.
func jsonLines(t *testing.T, lines []string) []map[string]any {
	t.Helper()
	out := make([]map[string]any, 0, len(lines))
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// has reports whether some object has every key/value of kv (numbers as float64).
func has(objs []map[string]any, kv map[string]any) bool {
	for _, o := range objs {
		match := true
		for k, v := range kv {
			if fmt.Sprint(o[k]) != fmt.Sprint(v) {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

func count(objs []map[string]any, kv map[string]any) int {
	n := 0
	for _, o := range objs {
		if has([]map[string]any{o}, kv) {
			n++
		}
	}
	return n
}

// jsonEvents waits until the JSON lines of w satisfy ok.
func jsonEvents(t *testing.T, w *watchedOutput, what string, ok func([]map[string]any) bool) {
	t.Helper()
	w.waitFor(t, what, func(lines []string) bool { return ok(jsonLines(t, lines)) })
}

func TestReadStateCommandsEndToEnd(t *testing.T) {
	srv := startReadStateServer(t)
	addr := srv.TCPAddr().String()
	tok := func(user string) string {
		s, err := srv.Keys().Issue(user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	alice, bob, carol := tok("alice"), tok("bob"), tok("carol")
	cli := func(token string, args ...string) (int, string, string) {
		t.Helper()
		return runCLI(t, append(args, "--server", addr, "--token", token)...)
	}
	mustCLI := func(token string, args ...string) string {
		t.Helper()
		code, out, errOut := cli(token, args...)
		if code != exitOK || errOut != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
		}
		return out
	}
	convLines := func(token string, args ...string) map[string]map[string]any {
		t.Helper()
		out := mustCLI(token, append([]string{"convs", "--json"}, args...)...)
		byConv := map[string]map[string]any{}
		for _, o := range jsonLines(t, strings.Split(strings.TrimSpace(out), "\n")) {
			byConv[o["conv"].(string)] = o
		}
		return byConv
	}
	wantFields := func(what string, o map[string]any, kv map[string]any) {
		t.Helper()
		if o == nil {
			t.Errorf("%s: missing", what)
			return
		}
		for k, v := range kv {
			if fmt.Sprint(o[k]) != fmt.Sprint(v) {
				t.Errorf("%s: %s = %v, want %v (%v)", what, k, o[k], v, o)
			}
		}
	}

	// alice follows her timeline on a device of her own; bob's phone
	// receives (and so acknowledges) alice's messages.
	aliceTail := startCLI(t, "tail", "--server", addr, "--token", alice, "--device", "watch", "--json")
	bobTail := startCLI(t, "tail", "--server", addr, "--token", bob, "--device", "phone", "--json")

	mustCLI(alice, "send", "--to", "bob", "hello bob")
	mustCLI(alice, "send", "--to", "bob", "second")
	jsonEvents(t, bobTail.out, "bob's two messages", func(evs []map[string]any) bool {
		return has(evs, map[string]any{"type": "text", "conv": "d:alice:bob", "seq": 2})
	})
	// Delivered: bob's phone acknowledged them.
	jsonEvents(t, aliceTail.out, "a delivered receipt", func(evs []map[string]any) bool {
		return has(evs, map[string]any{"type": "receipt", "kind": "delivered", "conv": "d:alice:bob", "seq": 2, "user": "bob"})
	})

	// Read: the peer's read reaches alice, and bob's own devices.
	if out := mustCLI(bob, "read", "--conv", "d:alice:bob", "--seq", "2"); out != "d:alice:bob read up to #2\n" {
		t.Errorf("read: %q", out)
	}
	readEv := map[string]any{"type": "read", "conv": "d:alice:bob", "seq": 2, "user": "bob", "device": "cli"}
	jsonEvents(t, aliceTail.out, "bob's read", func(evs []map[string]any) bool { return has(evs, readEv) })
	jsonEvents(t, bobTail.out, "bob's own read", func(evs []map[string]any) bool { return has(evs, readEv) })

	// A group: bob's read of alice's message comes back as a read count.
	mustCLI(alice, "group", "create", "--group", "team", "bob", "carol")
	mustCLI(alice, "send", "--group", "team", "hi team")
	mustCLI(bob, "read", "--conv", "team", "--seq", "2")
	jsonEvents(t, aliceTail.out, "a group read receipt", func(evs []map[string]any) bool {
		for _, e := range evs {
			if e["type"] == "receipt" && e["kind"] == "read" && e["conv"] == "g:team" {
				b, _ := json.Marshal(e["messages"])
				return string(b) == `[{"read_count":1,"seq":2}]`
			}
		}
		return false
	})

	// receipts: the sender sees who read; others are refused with what to do.
	if out := mustCLI(alice, "receipts", "--conv", "team", "--seq", "2", "--json"); out != `{"conv":"g:team","seq":2,"read_count":1,"readers":["bob"],"has_more":false}`+"\n" {
		t.Errorf("receipts --json: %q", out)
	}
	if out := mustCLI(alice, "receipts", "--conv", "d:alice:bob", "--seq", "1"); out != "d:alice:bob #1: read by 1\n  bob\n" {
		t.Errorf("receipts: %q", out)
	}
	if out := mustCLI(alice, "receipts", "--conv", "g:team", "--seq", "1"); out != "g:team #1: read by 1\n  bob\n" {
		t.Errorf("receipts of the membership message: %q", out)
	}
	code, out, errOut := cli(bob, "receipts", "--conv", "team", "--seq", "2")
	if code != exitFailure || out != "" || !strings.HasPrefix(errOut, "pim: receipts of g:team #2: only the sender of g:team/2 may read its receipts (the group's owner can make them visible to members) (code FORBIDDEN); ") ||
		!strings.Contains(errOut, "pim settings --read-receipts on") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("receipts by a reader: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, _, errOut = cli(alice, "receipts", "--conv", "team", "--seq", "99")
	if code != exitFailure || !strings.Contains(errOut, "(code NOT_FOUND)") {
		t.Errorf("receipts of no message: exit %d, stderr %q", code, errOut)
	}

	// convs: each user's view.
	a := convLines(alice)
	wantFields("alice d:alice:bob", a["d:alice:bob"], map[string]any{"last_seq": 2, "read_seq": 0, "unread": 0,
		"peer_read_seq": 2, "peer_delivered_seq": 2, "left": false, "join_seq": 0})
	wantFields("alice g:team", a["g:team"], map[string]any{"last_seq": 2, "unread": 0, "join_seq": 1, "peer_read_seq": 0})
	if lm, _ := a["g:team"]["last_message"].(map[string]any); lm["body"] != "hi team" || lm["sender"] != "alice" || lm["seq"] != 2.0 {
		t.Errorf("alice g:team last_message %v", lm)
	}
	order := mustCLI(alice, "convs", "--json")
	if i, j := strings.Index(order, `"conv":"g:team"`), strings.Index(order, `"conv":"d:alice:bob"`); i < 0 || j < i {
		t.Errorf("not newest activity first:\n%s", order)
	}
	b := convLines(bob)
	wantFields("bob d:alice:bob", b["d:alice:bob"], map[string]any{"last_seq": 2, "read_seq": 2, "unread": 0})
	wantFields("bob g:team", b["g:team"], map[string]any{"read_seq": 2, "unread": 0})
	c := convLines(carol)
	wantFields("carol g:team", c["g:team"], map[string]any{"read_seq": 0, "unread": 1, "last_seq": 2})
	if len(c) != 1 {
		t.Errorf("carol's list %v", c)
	}
	if got := convLines(alice, "--limit", "1"); len(got) != 1 || got["g:team"] == nil {
		t.Errorf("--limit 1: %v", got)
	}
	var since float64
	for _, o := range a {
		since = max(since, o["version"].(float64))
	}

	human := mustCLI(alice, "convs")
	lines := strings.Split(strings.TrimSuffix(human, "\n"), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "CONV") || !strings.HasPrefix(lines[1], "g:team ") ||
		!strings.Contains(lines[2], "read #2") || !strings.Contains(lines[2], "alice: second") ||
		!strings.Contains(lines[3], "pim convs --since ") {
		t.Errorf("human list:\n%s", human)
	}

	// hide: idempotent, and only alice's view changes.
	if out := mustCLI(alice, "hide", "--conv", "d:alice:bob", "--seq", "1"); out != "d:alice:bob #1 hidden for you (your other devices are told; other members still see it)\n" {
		t.Errorf("hide: %q", out)
	}
	if out := mustCLI(alice, "hide", "--conv", "d:alice:bob", "--seq", "1", "--json"); out != `{"conv":"d:alice:bob","seq":1,"hidden":true}`+"\n" {
		t.Errorf("hide again: %q", out)
	}
	code, _, errOut = cli(carol, "hide", "--conv", "d:alice:bob", "--seq", "1")
	if code != exitFailure || !strings.HasPrefix(errOut, "pim: hide d:alice:bob #1: ") || !strings.Contains(errOut, "(code FORBIDDEN)") {
		t.Errorf("hide by an outsider: exit %d, stderr %q", code, errOut)
	}
	code, _, errOut = cli(alice, "hide", "--conv", "d:alice:bob", "--seq", "99")
	if code != exitFailure || !strings.Contains(errOut, "(code NOT_FOUND)") {
		t.Errorf("hide of no message: exit %d, stderr %q", code, errOut)
	}
	// bob's reply is the barrier: once alice's tail has it, it has every
	// earlier event of hers.
	mustCLI(bob, "send", "--to", "alice", "after the hide")
	jsonEvents(t, aliceTail.out, "bob's reply", func(evs []map[string]any) bool {
		return has(evs, map[string]any{"type": "text", "body": "after the hide"})
	})
	evs := jsonLines(t, strings.Split(strings.TrimSpace(aliceTail.out.String()), "\n"))
	if n := count(evs, map[string]any{"type": "hidden", "conv": "d:alice:bob", "seq": 1, "device": "cli"}); n != 1 {
		t.Errorf("%d hidden events, want 1 (hiding twice writes nothing):\n%s", n, aliceTail.out.String())
	}
	for i, e := range evs {
		if e["type"] == nil || e["user_seq"] == nil || (i > 0 && e["user_seq"].(float64) <= evs[i-1]["user_seq"].(float64)) {
			t.Errorf("event %d %v: no type, or user seqs not ascending", i, e)
		}
	}

	// convs --since: only what changed since, i.e. bob's reply.
	changed := convLines(alice, "--since", fmt.Sprint(since))
	if len(changed) != 1 {
		t.Errorf("changes since %v: %v", since, changed)
	}
	wantFields("changed d:alice:bob", changed["d:alice:bob"], map[string]any{"last_seq": 3, "unread": 1})
	if out := mustCLI(alice, "convs", "--since", "1000000"); !strings.HasPrefix(out, "(no changes since version 1000000; list version ") {
		t.Errorf("no changes: %q", out)
	}

	// settings: read receipts off means not seeing them either.
	if out := mustCLI(alice, "settings"); out != "read receipts: on\n" {
		t.Errorf("settings: %q", out)
	}
	if out := mustCLI(alice, "settings", "--read-receipts", "off", "--json"); out != `{"read_receipts":false}`+"\n" {
		t.Errorf("settings off: %q", out)
	}
	if out := mustCLI(alice, "settings", "--json"); out != `{"read_receipts":false}`+"\n" {
		t.Errorf("settings read back: %q", out)
	}
	code, _, errOut = cli(alice, "receipts", "--conv", "team", "--seq", "2")
	if code != exitFailure || !strings.Contains(errOut, "read receipts are off") || !strings.Contains(errOut, "pim settings --read-receipts on") {
		t.Errorf("receipts with them off: exit %d, stderr %q", code, errOut)
	}
	if out := mustCLI(alice, "settings", "--read-receipts", "on"); out != "read receipts: on\n" {
		t.Errorf("settings on: %q", out)
	}

	// The human tail shows every kind readably (a new device: the whole backlog).
	humanTail := startCLI(t, "tail", "--server", addr, "--token", alice, "--device", "eyes")
	humanTail.out.waitFor(t, "the human backlog", func(lines []string) bool {
		return len(lines) > 0 && strings.HasSuffix(lines[len(lines)-1], "bob/cli: after the hide")
	})
	for _, want := range []string{
		"d:alice:bob #1 alice/cli: hello bob",
		"d:alice:bob delivered up to #2 to bob",
		"d:alice:bob read up to #2 by bob/cli",
		"g:team #1 alice/cli: [created the group: ",
		"g:team read: #2 by 1",
		"d:alice:bob #1 hidden (deleted for you on cli)",
	} {
		if !strings.Contains(humanTail.out.String(), want) {
			t.Errorf("human tail lacks %q:\n%s", want, humanTail.out.String())
		}
	}
	for _, p := range []*cliProc{aliceTail, bobTail, humanTail} {
		if code := p.stop(t); code != exitOK || p.err.String() != "" {
			t.Errorf("tail: exit %d, stderr %q", code, p.err.String())
		}
	}
}

func TestReadStateUsageErrors(t *testing.T) {
	t.Setenv(tokenEnv, "")
	for _, tc := range []struct {
		args []string
		hint string
		msg  string
	}{
		{[]string{"convs", "--token", "T", "--limit", "-1"}, "pim convs", "--limit must not be negative"},
		{[]string{"convs", "--token", "T", "--since", "x"}, "pim convs", "invalid argument"},
		{[]string{"convs", "--token", "T", "extra"}, "pim convs", "unknown command"},
		{[]string{"convs"}, "pim convs", "no token"},
		{[]string{"receipts", "--token", "T", "--conv", "team"}, "pim receipts", "--conv and a positive --seq are required"},
		{[]string{"receipts", "--token", "T", "--seq", "3"}, "pim receipts", "--conv and a positive --seq are required"},
		{[]string{"hide", "--token", "T", "--conv", "team", "--seq", "0"}, "pim hide", "--conv and a positive --seq are required"},
		{[]string{"hide", "--token", "T", "--conv", "team", "--seq", "-1"}, "pim hide", "invalid argument"},
		{[]string{"settings", "--token", "T", "--read-receipts", "maybe"}, "pim settings", `--read-receipts: want on or off, not "maybe"`},
		{[]string{"settings", "--token", "T", "--read-receipts", ""}, "pim settings", "want on or off"},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, tc.msg) || !strings.Contains(errOut, "Run '"+tc.hint+" --help' for usage.") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, out, errOut, tc.msg)
		}
	}
}
