package main

// Tests of `pim send --data` against an in-process server: the outbox in
// --data keeps a message the server could not take, the next run sends it
// first, and every message is stored once, in order.

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/server"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	pim "github.com/pim-project/pim/sdk/go"
)

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// history returns the messages stored in conv, as user sees them.
func history(t *testing.T, srv *server.Server, user, conv string) []*pimv1.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), chatWait)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{Addr: srv.TCPAddr().String(), Token: chatToken(t, srv, user),
		Device: "check", DiscardPushes: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := c.History(ctx, &pimv1.HistoryReq{Conv: conv, Limit: 100})
	if err != nil {
		t.Fatalf("history of %s: %v", conv, err)
	}
	return h.Messages
}

// checkHistory fails unless conv holds exactly bodies, in this order.
func checkHistory(t *testing.T, srv *server.Server, conv string, bodies ...string) {
	t.Helper()
	var got []string
	for i, m := range history(t, srv, "bob", conv) {
		got = append(got, string(m.Body))
		if m.Seq != uint64(i+1) {
			t.Errorf("message %q has seq %d, want %d", m.Body, m.Seq, i+1)
		}
	}
	if strings.Join(got, "|") != strings.Join(bodies, "|") {
		t.Fatalf("%s holds %q, want %q", conv, got, bodies)
	}
}

// ackLine parses the one JSON ack of send --json.
func ackLine(t *testing.T, out string) (ack struct {
	Conv        string `json:"conv"`
	Seq         uint64 `json:"seq"`
	ClientMsgID string `json:"client_msg_id"`
	Duplicate   bool   `json:"duplicate"`
}) {
	t.Helper()
	if strings.Count(out, "\n") != 1 {
		t.Fatalf("stdout %q is not one line", out)
	}
	if err := json.Unmarshal([]byte(out), &ack); err != nil {
		t.Fatalf("stdout %q: %v", out, err)
	}
	return ack
}

func TestSendDataKeepsTheMessageUntilTheServerIsBack(t *testing.T) {
	srv := startChatServer(t)
	addr := srv.TCPAddr().String()
	dir := filepath.Join(t.TempDir(), "alice-ci")
	send := func(server string, args ...string) (int, string, string) {
		return runCLI(t, append([]string{"send", "--server", server, "--token", chatToken(t, srv, "alice"),
			"--device", "ci", "--data", dir}, args...)...)
	}

	// The server is down: the message waits in the outbox, and the error
	// says where and what sends it.
	code, out, errOut := send(deadAddr(t), "--timeout", "300ms", "--to", "bob", "first")
	if code != exitFailure || out != "" {
		t.Fatalf("server down: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, want := range []string{"not sent within --timeout 300ms", "1 unsent message(s) wait in the outbox in " + dir,
		"the next pim send, chat or tail with --data " + dir + " --device ci sends them",
		"resending is safe: each keeps its client_msg_id, so the server stores it once"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}

	// The server is back: the earlier message goes first (stderr), then
	// this run's (stdout, as without --data).
	code, out, errOut = send(addr, "--to", "bob", "--json", "second")
	if code != exitOK {
		t.Fatalf("server up: exit %d, stderr %q", code, errOut)
	}
	if ack := ackLine(t, out); ack.Conv != "d:alice:bob" || ack.Seq != 2 || ack.Duplicate {
		t.Errorf("ack %+v, want seq 2 of d:alice:bob", ack)
	}
	if !regexp.MustCompile(`^pim: sent from the outbox \(left by an earlier run\): sent d:alice:bob seq=1 msg_id=\S+ client_msg_id=\S+\n$`).MatchString(errOut) {
		t.Errorf("stderr %q does not report the earlier message", errOut)
	}
	checkHistory(t, srv, "d:alice:bob", "first", "second")

	// Nothing waits now: without TEXT, send --data has nothing to do.
	if code, out, errOut := send(addr); code != exitOK || out != "" || errOut != "" {
		t.Errorf("empty outbox: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	checkHistory(t, srv, "d:alice:bob", "first", "second")
}

// --client-msg-id with --data: a script that runs again with the same id
// stores its message once, whether the earlier run's copy is still in the
// outbox or already sent.
func TestSendDataClientMsgIDStoresOnce(t *testing.T) {
	srv := startChatServer(t)
	addr, dead := srv.TCPAddr().String(), deadAddr(t)
	dir := filepath.Join(t.TempDir(), "alice-ci")
	send := func(server string, args ...string) (int, string, string) {
		return runCLI(t, append([]string{"send", "--server", server, "--token", chatToken(t, srv, "alice"),
			"--device", "ci", "--data", dir, "--timeout", "300ms"}, args...)...)
	}
	build := []string{"--to", "bob", "--client-msg-id", "build-42", "--json", "build 42 is green"}
	for run := 0; run < 2; run++ {
		code, _, errOut := send(dead, build...)
		if code != exitFailure || !strings.Contains(errOut, "1 unsent message(s) wait in the outbox") {
			t.Fatalf("offline run %d: exit %d, stderr %q; want one message in the outbox", run, code, errOut)
		}
	}
	// Another text under an id in the outbox is refused before anything
	// is sent.
	code, _, errOut := send(dead, "--to", "bob", "--client-msg-id", "build-42", "something else")
	if code != exitFailure || !strings.Contains(errOut, "already in the outbox for another message") {
		t.Fatalf("another text under the id: exit %d, stderr %q", code, errOut)
	}

	code, out, errOut := send(addr, build...)
	if code != exitOK || errOut != "" {
		t.Fatalf("online: exit %d, stderr %q", code, errOut)
	}
	first := ackLine(t, out)
	if first.ClientMsgID != "build-42" || first.Seq != 1 {
		t.Fatalf("ack %+v", first)
	}
	// Sent already: the server's duplicate (or the SDK's own copy of it),
	// the same seq, nothing stored.
	code, out, errOut = send(addr, build...)
	if code != exitOK || errOut != "" {
		t.Fatalf("again: exit %d, stderr %q", code, errOut)
	}
	if again := ackLine(t, out); again.Seq != first.Seq || again.ClientMsgID != "build-42" {
		t.Fatalf("again: ack %+v, want seq %d", again, first.Seq)
	}
	checkHistory(t, srv, "d:alice:bob", "build 42 is green")
}

// A message the server refuses is not kept: as after a one-shot send,
// nothing was stored and the same error is shown.
func TestSendDataRefusedIsDropped(t *testing.T) {
	srv := startChatServer(t)
	dir := filepath.Join(t.TempDir(), "alice-ci")
	args := []string{"send", "--server", srv.TCPAddr().String(), "--token", chatToken(t, srv, "alice"), "--device", "ci", "--data", dir}
	code, out, errOut := runCLI(t, append(args, "--group", "nosuch", "hello")...)
	if code != exitFailure || out != "" || !regexp.MustCompile(`^pim: send: .+ \(code [A-Z_]+\)\n$`).MatchString(errOut) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if c, _, oneShot := runCLI(t, "send", "--server", srv.TCPAddr().String(), "--token", chatToken(t, srv, "alice"),
		"--group", "nosuch", "hello"); c != exitFailure || oneShot != errOut {
		t.Errorf("one-shot: exit %d, stderr %q; with --data %q", c, oneShot, errOut)
	}
	if code, out, errOut := runCLI(t, args...); code != exitOK || out != "" || errOut != "" {
		t.Errorf("the outbox after a refusal: exit %d, stdout %q, stderr %q; want it empty", code, out, errOut)
	}
}

// A message the server refused while pim chat had the outbox stays there
// for chat's /retry or /discard: send --data leaves it and says so.
func TestSendDataLeavesChatsRefusedMessage(t *testing.T) {
	srv := startChatServer(t)
	dir := filepath.Join(t.TempDir(), "alice-ci")
	tok := chatToken(t, srv, "alice")
	cl, err := pim.Connect(context.Background(), pim.Options{Servers: []string{"tcp://" + srv.TCPAddr().String()},
		Token: tok, DeviceID: "ci", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), chatWait)
	defer cancel()
	o, err := cl.Send(ctx, "g:nosuch", "hello")
	if err != nil {
		t.Fatal(err)
	}
	var se *pim.ServerError
	if err := o.Wait(ctx); !errors.As(err, &se) {
		t.Fatalf("send to a group that does not exist: %v, want the server's refusal", err)
	}
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}

	args := []string{"send", "--server", srv.TCPAddr().String(), "--token", tok, "--device", "ci", "--data", dir}
	note := "1 refused message(s) wait in the outbox in " + dir + " (pim chat --data " + dir + ", then /retry or /discard)"
	if code, out, errOut := runCLI(t, args...); code != exitFailure || out != "" || errOut != "pim: "+note+"\n" {
		t.Errorf("without TEXT: exit %d, stdout %q, stderr %q; want exit 1 and %q", code, out, errOut, note)
	}
	code, out, errOut := runCLI(t, append(args, "--to", "bob", "--json", "hi")...)
	if code != exitOK || ackLine(t, out).Seq != 1 || errOut != "pim: "+note+"\n" {
		t.Errorf("with TEXT: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	checkHistory(t, srv, "d:alice:bob", "hi")
}

func TestSendDataUsageErrors(t *testing.T) {
	t.Setenv(tokenEnv, "")
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"send", "--data", dir, "--token", "T", "--to", "bob"}, "need TEXT"},
		{[]string{"send", "--data", dir, "--token", "T", "--client-msg-id", "m1"}, "need TEXT"},
		{[]string{"send", "--data", dir, "--token", "T", "hi"}, "exactly one of --to"},
		{[]string{"send", "--data", dir, "--token", "T", "--to", "not valid", "hi"}, "invalid --to"},
		{[]string{"send", "--data", dir, "--token", "T", "--group", "a b", "hi"}, "invalid --group"},
		{[]string{"send", "--data", dir, "--token", "T", "--to", "bob", "--client-msg-id", strings.Repeat("x", 65), "hi"}, "--client-msg-id must be 1-64 bytes"},
		{[]string{"send", "--data", dir, "--to", "bob", "hi"}, "no token"},
		{[]string{"send", "--data", dir, "--token", "not-a-jwt", "--to", "bob", "hi"}, "the token names no user"},
		{[]string{"tail", "--data", dir, "--token", "not-a-jwt"}, "the token names no user"},
	} {
		code, out, errOut := runCLI(t, tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, tc.msg) || !strings.Contains(errOut, "--help' for usage") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, out, errOut, tc.msg)
		}
	}
}
