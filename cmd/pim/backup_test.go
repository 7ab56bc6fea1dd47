package main

// Tests of `pim backup` and `pim restore` against a real in-process server:
// the archive, the epochs printed, the refusals, and a server on the
// restored directory that keeps the data and the tokens.

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pim-project/pim/internal/server"
)

var epochLine = regexp.MustCompile(`epoch: ([0-9a-f]{32}) -> ([0-9a-f]{32})\n`)

// epochs returns the old and new epochs restore printed.
func epochs(t *testing.T, out string) (string, string) {
	t.Helper()
	m := epochLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no epoch change in %q", out)
	}
	return m[1], m[2]
}

func sendSeq(t *testing.T, addr, tok, body string) uint64 {
	t.Helper()
	code, out, errOut := runCLI(t, "send", "--server", addr, "--token", tok, "--to", "bob", "--json", body)
	if code != exitOK {
		t.Fatalf("send: exit %d: %s", code, errOut)
	}
	var ack struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal([]byte(out), &ack); err != nil {
		t.Fatalf("send output %q: %v", out, err)
	}
	return ack.Seq
}

func TestBackupAndRestoreCommands(t *testing.T) {
	srv := startReadStateServer(t)
	tok := chatToken(t, srv, "alice")
	sendSeq(t, srv.TCPAddr().String(), tok, "one")
	sendSeq(t, srv.TCPAddr().String(), tok, "two")

	out := filepath.Join(t.TempDir(), "b.tar.gz")
	keyFile := filepath.Join(srv.DataDir(), "admin.key")
	httpURL := "http://" + srv.HTTPAddr().String()
	code, stdout, errOut := runCLI(t, "backup", "--server", httpURL, "--admin-key", keyFile, "--out", out)
	if code != exitOK || !strings.Contains(stdout, "backup written to "+out) || !strings.Contains(stdout, "epoch "+srv.Epoch()) {
		t.Fatalf("backup: exit %d, stdout %q, stderr %q", code, stdout, errOut)
	}
	if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600", st, err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".pim-backup-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	// host:port works too; an existing --out is never overwritten; a wrong key is refused.
	code, _, errOut = runCLI(t, "backup", "--server", srv.HTTPAddr().String(), "--admin-key", keyFile, "--out", out)
	if code != exitUsage || !strings.Contains(errOut, "already exists") {
		t.Fatalf("backup over an existing file: exit %d, %q", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.key")
	writeFile(t, bad, "nope\n")
	code, _, errOut = runCLI(t, "backup", "--server", httpURL, "--admin-key", bad, "--out", out+"2")
	if code != exitFailure || !strings.Contains(errOut, "401") || !strings.Contains(errOut, "admin key") {
		t.Fatalf("backup with a wrong key: exit %d, %q", code, errOut)
	}
	if _, err := os.Stat(out + "2"); err == nil {
		t.Fatal("a refused backup left a file")
	}

	dir := filepath.Join(t.TempDir(), "restored")
	code, stdout, errOut = runCLI(t, "restore", "--from", out, "--data", dir)
	if code != exitOK || !strings.Contains(stdout, "resync") {
		t.Fatalf("restore: exit %d, stdout %q, stderr %q", code, stdout, errOut)
	}
	old, fresh := epochs(t, stdout)
	if old != srv.Epoch() || fresh == old {
		t.Fatalf("restore printed %s -> %s; the server's epoch is %s", old, fresh, srv.Epoch())
	}
	code, _, errOut = runCLI(t, "restore", "--from", out, "--data", dir)
	if code != exitFailure || !strings.Contains(errOut, "not empty") {
		t.Fatalf("restore into a non-empty dir: exit %d, %q", code, errOut)
	}

	// The hand-copy path: --in-place gives the directory another epoch.
	code, stdout, errOut = runCLI(t, "restore", "--in-place", "--data", dir)
	if code != exitOK {
		t.Fatalf("restore --in-place: exit %d, %q", code, errOut)
	}
	again, newer := epochs(t, stdout)
	if again != fresh || newer == fresh {
		t.Fatalf("--in-place printed %s -> %s, want a change from %s", again, newer, fresh)
	}
	// ... but not while a server has it open.
	code, _, errOut = runCLI(t, "restore", "--in-place", "--data", srv.DataDir())
	if code != exitFailure || !strings.Contains(errOut, "is its server stopped?") {
		t.Fatalf("--in-place on a running server's data: exit %d, %q", code, errOut)
	}

	srv2, err := server.Start(server.Config{DataDir: dir, TCPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Shutdown(context.Background())
	if srv2.Epoch() != newer {
		t.Fatalf("restored server's epoch %s, want %s", srv2.Epoch(), newer)
	}
	// The old token works and the conversation goes on after its 2 messages.
	if seq := sendSeq(t, srv2.TCPAddr().String(), tok, "three"); seq != 3 {
		t.Fatalf("first message after the restore has seq %d, want 3", seq)
	}
}

func TestRestoreUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"restore", "--data", t.TempDir()}, "exactly one of --from FILE and --in-place"},
		{[]string{"restore", "--from", "x", "--in-place", "--data", t.TempDir()}, "exactly one of"},
		{[]string{"restore", "--from", "x"}, `"data" not set`},
		{[]string{"backup", "--server", "http://127.0.0.1:1"}, `"out" not set`},
		{[]string{"backup", "--server", "ftp://x", "--out", "o"}, "--server"},
		{[]string{"backup", "--server", "http://127.0.0.1:1", "--tls-pin", "ab", "--out", "o"}, "https://"},
	} {
		code, _, errOut := runCLI(t, c.args...)
		if code != exitUsage || !strings.Contains(errOut, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want a usage error with %q", c.args, code, errOut, c.msg)
		}
	}
	code, _, errOut := runCLI(t, "restore", "--from", filepath.Join(t.TempDir(), "missing.tar.gz"), "--data", t.TempDir())
	if code != exitFailure || !strings.Contains(errOut, "no such file") {
		t.Fatalf("restore of a missing file: exit %d, %q", code, errOut)
	}
}
