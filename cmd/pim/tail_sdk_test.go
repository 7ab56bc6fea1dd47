package main

// Tests of `pim tail --data` against an in-process server: each run prints
// what is new since the last one, once, in order, in the one-shot tail's
// formats; a run that ended, or never printed what the SDK stored, loses
// nothing.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/server"
	pim "github.com/pim-project/pim/sdk/go"
)

// tailEnv is a server, alice who sends to bob, and bob's tail --data.
type tailEnv struct {
	t   *testing.T
	srv *server.Server
	dir string // bob's --data
}

func newTailEnv(t *testing.T) *tailEnv {
	srv := startChatServer(t)
	return &tailEnv{t: t, srv: srv, dir: filepath.Join(t.TempDir(), "bob-laptop")}
}

// run runs a one-shot client command as user and fails the test unless it
// succeeds.
func (e *tailEnv) run(user string, args ...string) string {
	e.t.Helper()
	args = append([]string{args[0], "--server", e.srv.TCPAddr().String(), "--token", chatToken(e.t, e.srv, user)}, args[1:]...)
	code, out, errOut := runCLI(e.t, args...)
	if code != exitOK {
		e.t.Fatalf("%v: exit %d, stderr %q", args, code, errOut)
	}
	return out
}

// say sends texts from alice to bob, one at a time (each stored when it
// returns).
func (e *tailEnv) say(texts ...string) {
	e.t.Helper()
	for _, text := range texts {
		e.run("alice", "send", "--device", "phone", "--to", "bob", text)
	}
}

// tailArgs are bob's tail --data arguments.
func (e *tailEnv) tailArgs(extra ...string) []string {
	return append([]string{"tail", "--server", e.srv.TCPAddr().String(), "--token", chatToken(e.t, e.srv, "bob"),
		"--device", "laptop", "--data", e.dir}, extra...)
}

// tail runs bob's tail --data until it is idle and returns its output.
func (e *tailEnv) tail(extra ...string) string {
	e.t.Helper()
	code, out, errOut := runCLI(e.t, e.tailArgs(append([]string{"--exit-when-idle", "200ms"}, extra...)...)...)
	if code != exitOK || errOut != "" {
		e.t.Fatalf("tail --data: exit %d, stderr %q", code, errOut)
	}
	return out
}

// oneShot is the one-shot tail's output for a device that acknowledged
// nothing: bob's whole timeline, n lines.
func (e *tailEnv) oneShot(n int, device string, extra ...string) string {
	e.t.Helper()
	c := startCLI(e.t, append([]string{"tail", "--server", e.srv.TCPAddr().String(), "--token", chatToken(e.t, e.srv, "bob"),
		"--device", device}, extra...)...)
	c.out.waitFor(e.t, fmt.Sprintf("%d events", n), func(l []string) bool { return len(l) >= n })
	if code := c.stop(e.t); code != exitOK {
		e.t.Fatalf("one-shot tail: exit %d, stderr %q", code, c.err.String())
	}
	return c.out.String()
}

// lines splits output into its lines, each with its newline.
func lines(s string) []string {
	l := strings.SplitAfter(s, "\n")
	return l[:len(l)-1] // after the last newline: ""
}

// Each run prints what arrived since the last one, exactly once and in
// order, as the one-shot tail prints it (messages, read marks, hidden
// messages; text and --json).
func TestTailDataPrintsWhatIsNewSinceTheLastRun(t *testing.T) {
	e := newTailEnv(t)
	e.say("m1", "m2")
	run1 := e.tail("--json")

	e.say("m3")
	e.run("bob", "read", "--conv", "d:alice:bob", "--seq", "2")
	e.run("bob", "hide", "--conv", "d:alice:bob", "--seq", "1")
	run2 := e.tail("--json")
	if run3 := e.tail("--json"); run3 != "" {
		t.Errorf("third run printed %q, want nothing new", run3)
	}

	all := lines(e.oneShot(5, "fresh", "--json"))
	if len(all) != 5 {
		t.Fatalf("one-shot tail printed %d events, want 5:\n%s", len(all), strings.Join(all, ""))
	}
	if got, want := run1, strings.Join(all[:2], ""); got != want {
		t.Errorf("first run:\n%s\nwant:\n%s", got, want)
	}
	if got, want := run2, strings.Join(all[2:], ""); got != want {
		t.Errorf("second run:\n%s\nwant:\n%s", got, want)
	}
	for i, typ := range []string{`"type":"text"`, `"type":"text"`, `"type":"text"`, `"type":"read"`, `"type":"hidden"`} {
		if !strings.Contains(all[i], typ) {
			t.Errorf("event %d is %q, want %s", i+1, all[i], typ)
		}
	}

	// The text format too, from a new DIR: the whole timeline.
	e.dir = filepath.Join(t.TempDir(), "bob-other")
	if got, want := e.tail(), e.oneShot(5, "fresh2"); got != want {
		t.Errorf("text output:\n%s\nwant:\n%s", got, want)
	}
}

// A run that ended while following, and events the SDK stored that no run
// printed (as when tail is killed between the SDK's commit and its
// output), are not lost: the next run prints exactly what it had not.
func TestTailDataLosesNothing(t *testing.T) {
	e := newTailEnv(t)
	e.say("m1")

	// A run following (no --exit-when-idle) ends with Ctrl-C after m1.
	c := startCLI(t, e.tailArgs("--json")...)
	c.out.waitFor(t, "m1", func(l []string) bool { return len(l) >= 1 })
	if code := c.stop(t); code != exitOK || !strings.Contains(c.out.String(), `"body":"m1"`) {
		t.Fatalf("interrupted tail: exit %d, stdout %q, stderr %q", code, c.out.String(), c.err.String())
	}

	// The SDK on the same DIR receives m2 and m3 (its cursor moves past
	// them); tail printed neither.
	e.say("m2", "m3")
	cl, err := pim.Connect(context.Background(), pim.Options{Servers: []string{"tcp://" + e.srv.TCPAddr().String()},
		Token: chatToken(t, e.srv, "bob"), DeviceID: "laptop", DataDir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, cl, 3)
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}

	e.say("m4")
	got := lines(e.tail("--json"))
	var bodies []string
	for _, l := range got {
		bodies = append(bodies, l[strings.Index(l, `"body":`):][:11])
	}
	if strings.Join(bodies, " ") != `"body":"m2" "body":"m3" "body":"m4"` {
		t.Errorf("after the ended run printed:\n%s\nwant m2, m3 and m4 once each", strings.Join(got, ""))
	}
}

// A position that does not match the timeline (the server's data set
// changed) starts over; an unreadable one is an error that says what to do;
// an unreachable server is an error after --timeout.
func TestTailDataPositionAndErrors(t *testing.T) {
	e := newTailEnv(t)
	e.say("m1", "m2")
	first := e.tail()
	pos := filepath.Join(e.dir, tailPosFile)
	writeFile(t, pos, tailPosMagic+" 2 0123456789abcdef\n")
	code, out, errOut := runCLI(t, e.tailArgs("--exit-when-idle", "200ms")...)
	if code != exitOK || out != first || !strings.Contains(errOut, "is not the one printed up to user seq 2") {
		t.Errorf("mismatched position: exit %d, stdout %q (want %q), stderr %q", code, out, first, errOut)
	}

	writeFile(t, pos, "garbage")
	code, out, errOut = runCLI(t, e.tailArgs("--exit-when-idle", "200ms")...)
	if code != exitFailure || out != "" || !strings.Contains(errOut, pos+" is not a tail position: remove it") {
		t.Errorf("garbage position: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if err := os.Remove(pos); err != nil {
		t.Fatal(err)
	}

	args := e.tailArgs("--timeout", "300ms")
	args[2] = deadAddr(t) // --server
	code, out, errOut = runCLI(t, args...)
	// Offline, it still prints what the local store holds, then fails.
	if code != exitFailure || out != first || !strings.Contains(errOut, "not connected within --timeout 300ms") {
		t.Errorf("server down: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	other := startChatServer(t) // a token the server does not take
	args = e.tailArgs()
	args[4] = chatToken(t, other, "bob") // --token
	code, _, errOut = runCLI(t, args...)
	if code != exitFailure || !strings.Contains(errOut, "(code UNAUTHENTICATED)") {
		t.Errorf("bad token: exit %d, stderr %q", code, errOut)
	}
}

// waitDelivered reads cl's events until it shows the event at user seq n
// (it is in cl's store then).
func waitDelivered(t *testing.T, cl *pim.Client, n uint64) {
	t.Helper()
	deadline := time.After(chatWait)
	for {
		select {
		case ev := <-cl.Events():
			if m, ok := ev.(pim.MessageEvent); ok && m.UserSeq >= n {
				return
			}
		case <-deadline:
			t.Fatalf("the SDK did not deliver user seq %d", n)
		}
	}
}
