package e2e

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/client"
)

// pimCmd runs the pim binary and returns its stdout; it fails the test on a non-zero exit.
func pimCmd(t *testing.T, bin string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pim %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
}

// The README's demo, run for real: token, send (twice with one id), tail,
// groups, over plaintext TCP and over TLS with a pinned self-signed certificate.
func TestCLIDemo(t *testing.T) {
	bin := pimBinary(t)
	for _, tlsMode := range []bool{false, true} {
		name := "plaintext"
		if tlsMode {
			name = "tls-pinned"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			srv, pin := startChildTLS(t, bin, dir, tlsMode)
			defer srv.Kill()
			conn := []string{"--server", srv.Addr}
			if tlsMode {
				conn = append(conn, "--tls-pin", pin)
			}
			alice := strings.TrimSpace(pimCmd(t, bin, "token", "--data", dir, "--user", "alice"))
			bob := strings.TrimSpace(pimCmd(t, bin, "token", "--data", dir, "--user", "bob", "--ttl", "1h"))
			with := func(tok, dev string, args ...string) []string {
				return append(append(args, conn...), "--token", tok, "--device", dev)
			}

			type ack struct {
				Conv      string `json:"conv"`
				Seq       uint64 `json:"seq"`
				MsgID     string `json:"msg_id"`
				ServerTim int64  `json:"server_time"`
				Duplicate bool   `json:"duplicate"`
			}
			var a1, a2 ack
			decodeJSON(t, pimCmd(t, bin, with(alice, "phone", "send", "--to", "bob", "--client-msg-id", "m1", "--json", "hello", "bob")...), &a1)
			decodeJSON(t, pimCmd(t, bin, with(alice, "phone", "send", "--to", "bob", "--client-msg-id", "m1", "--json", "hello", "bob")...), &a2)
			if a1.Conv != "d:alice:bob" || a1.Seq != 1 || a1.MsgID == "" || a1.ServerTim == 0 {
				t.Fatalf("first ack = %+v", a1)
			}
			if a2.Seq != a1.Seq || a2.MsgID != a1.MsgID || a2.ServerTim != a1.ServerTim || !a2.Duplicate {
				t.Fatalf("same --client-msg-id printed %+v, first %+v", a2, a1)
			}

			var g struct {
				Group string `json:"group"`
			}
			decodeJSON(t, pimCmd(t, bin, with(alice, "phone", "group", "create", "--json", "bob")...), &g)
			pimCmd(t, bin, with(alice, "phone", "send", "--group", g.Group, "hi group")...)

			out := pimCmd(t, bin, with(bob, "laptop", "tail", "--json", "--exit-when-idle", "500ms")...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 {
				t.Fatalf("tail printed %d lines, want 3:\n%s", len(lines), out)
			}
			var ev struct {
				Conv         string `json:"conv"`
				Seq          uint64 `json:"seq"`
				UserSeq      uint64 `json:"user_seq"`
				Sender       string `json:"sender"`
				SenderDevice string `json:"sender_device"`
				ClientMsgID  string `json:"client_msg_id"`
				Type         string `json:"type"`
				Body         string `json:"body"`
				ServerTime   int64  `json:"server_time"`
			}
			decodeJSON(t, lines[0], &ev)
			if ev.Conv != "d:alice:bob" || ev.Seq != 1 || ev.UserSeq != 1 || ev.Sender != "alice" || ev.SenderDevice != "phone" || ev.ClientMsgID != "m1" ||
				ev.Type != "text" || ev.Body != "hello bob" || ev.ServerTime == 0 {
				t.Fatalf("first tail line = %s", lines[0])
			}
			decodeJSON(t, lines[2], &ev)
			if ev.Conv != g.Group || ev.Body != "hi group" || ev.UserSeq != 3 {
				t.Fatalf("last tail line = %s", lines[2])
			}
			// Everything printed was acknowledged: a second tail prints nothing.
			if out := pimCmd(t, bin, with(bob, "laptop", "tail", "--json", "--exit-when-idle", "300ms")...); out != "" {
				t.Fatalf("second tail printed %q", out)
			}
			members := pimCmd(t, bin, with(bob, "laptop", "group", "members", "--group", g.Group)...)
			if !strings.Contains(members, "alice") || !strings.Contains(members, "bob") {
				t.Fatalf("members = %q", members)
			}
		})
	}
}

// startChildTLS starts `pim serve`, with --tls-self-signed when tlsMode is
// set, and returns it with the certificate fingerprint it printed.
func startChildTLS(t *testing.T, bin, dir string, tlsMode bool) (*child, string) {
	t.Helper()
	if !tlsMode {
		return startChild(t, bin, dir), ""
	}
	c := startChildArgs(t, bin, "serve", "--data", dir, "--tcp", "127.0.0.1:0", "--http", "", "--tls-self-signed")
	if c.Pin == "" {
		t.Fatal("pim serve --tls-self-signed printed no fingerprint")
	}
	return c, c.Pin
}

// SIGTERM drains: every session gets GoAway with a retry_after, the process
// exits 0, and a restart keeps the data.
func TestSIGTERMSendsGoAwayAndExitsCleanly(t *testing.T) {
	bin := pimBinary(t)
	dir := t.TempDir()
	srv := startChild(t, bin, dir)
	tok := func(u string) string { return pimTok(t, bin, dir, u) }
	c, err := client.Dial(ctxT(t), client.Options{Addr: srv.Addr, Token: tok("alice"), Device: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send(t, c, "bob", "", "before-term", "before")
	if err := srv.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case ga := <-c.GoAway():
		if ga.RetryAfterMs == 0 {
			t.Fatalf("GoAway without retry_after: %v", ga)
		}
	case <-time.After(waitFor):
		t.Fatal("no GoAway after SIGTERM")
	}
	<-srv.Done
	if code := srv.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("pim serve exited %d after SIGTERM", code)
	}
	srv2 := startChild(t, bin, dir)
	defer srv2.Kill()
	c2, err := client.Dial(ctxT(t), client.Options{Addr: srv2.Addr, Token: tok("bob"), Device: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if evs := recv(t, c2, 1); string(evs[0].GetMessage().GetBody()) != "before" {
		t.Fatalf("after restart bob got %v", evs)
	}
}

func pimTok(t *testing.T, bin, dir, user string) string {
	return strings.TrimSpace(pimCmd(t, bin, "token", "--data", dir, "--user", user))
}
