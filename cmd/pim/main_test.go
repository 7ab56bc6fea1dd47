package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	t.Setenv(tokenEnv, "")
	tests := []struct {
		args []string
		hint string // the command path in the hint
		msg  string
	}{
		{[]string{"bogus"}, "pim", "unknown command"},
		{[]string{"send", "--nope"}, "pim send", "unknown flag"},
		{[]string{"send", "--token", "T", "hi"}, "pim send", "exactly one of --to"},
		{[]string{"send", "--token", "T", "--to", "a", "--group", "g", "hi"}, "pim send", "exactly one of --to"},
		{[]string{"send", "--token", "T", "--to", "a"}, "pim send", "arg"},
		{[]string{"send", "--to", "bob", "hi"}, "pim send", "no token"},
		{[]string{"send", "--token", "T", "--to", "bob", "--tls-pin", "nothex", "hi"}, "pim send", "--tls-pin"},
		{[]string{"tail", "--token", "T", "extra"}, "pim tail", "unknown command"},
		{[]string{"tail", "--token", "T", "--exit-when-idle", "soon"}, "pim tail", "invalid argument"},
		{[]string{"group"}, "pim group", "missing group command"},
		{[]string{"group", "bogus"}, "pim group", "unknown group command"},
		{[]string{"group", "add", "--token", "T", "bob"}, "pim group add", "--group is required"},
		{[]string{"group", "add", "--token", "T", "--group", "g"}, "pim group add", "arg"},
		{[]string{"group", "members", "--token", "T", "--group", "g", "bob"}, "pim group members", "unknown command"},
		{[]string{"token", "--data", t.TempDir()}, "pim token", `"user" not set`},
		{[]string{"token", "--user", "a b"}, "pim token", "invalid --user"},
		{[]string{"token", "--user", "alice", "--ttl", "-1h"}, "pim token", "--ttl"},
	}
	for _, tc := range tests {
		code, out, errOut := runCLI(t, tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, tc.msg) ||
			!strings.HasPrefix(errOut, "pim: ") || !strings.Contains(errOut, "Run '"+tc.hint+" --help' for usage.") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2, %q and a hint", tc.args, code, out, errOut, tc.msg)
		}
	}
}

func TestTokenCommand(t *testing.T) {
	dir := t.TempDir()
	code, _, errOut := runCLI(t, "token", "--data", dir, "--user", "alice")
	if code != exitFailure || !strings.Contains(errOut, "run `pim serve --data "+dir+"` once first") || strings.Contains(errOut, "--help") {
		t.Fatalf("no keys: exit %d, stderr %q", code, errOut)
	}
	keys, err := auth.LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "token", "--data", dir, "--user", "alice", "--ttl", "1h")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if user, err := keys.Verify(strings.TrimSpace(out)); err != nil || user != "alice" {
		t.Fatalf("token %q verifies as %q, %v", out, user, err)
	}
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Errorf("output %q is not one line", out)
	}
	// A corrupt key file is a failure, not "run serve".
	dir2 := t.TempDir()
	auth.LoadOrCreate(dir2)
	writeFile(t, filepath.Join(dir2, auth.TokenKeyFile), "zz")
	if code, _, errOut := runCLI(t, "token", "--data", dir2, "--user", "alice"); code != exitFailure || strings.Contains(errOut, "once first") {
		t.Errorf("corrupt key: exit %d, stderr %q", code, errOut)
	}
}

func TestServerErrorFormat(t *testing.T) {
	err := failed("send", &errcode.Error{Code: pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, Msg: "not a member of g:x"})
	if err.Error() != "send: not a member of g:x (code FORBIDDEN)" {
		t.Errorf("got %q", err)
	}
	var ce *errcode.Error
	if !errors.As(err, &ce) {
		t.Error("the server error is not in the chain")
	}
	err = failed("connect to x", errors.New("client: dial tcp: refused"))
	if err.Error() != "connect to x: dial tcp: refused" {
		t.Errorf("got %q", err)
	}
	var b bytes.Buffer
	if code := report(&b, newRootCmd(), runError{err}); code != exitFailure || b.String() != "pim: connect to x: dial tcp: refused\n" {
		t.Errorf("report: %d %q", code, b.String())
	}
	b.Reset()
	if code := report(&b, nil, runError{usagef("bad")}); code != exitUsage || !strings.Contains(b.String(), "Run 'pim --help'") {
		t.Errorf("report usage: %d %q", code, b.String())
	}
}

func TestServeStubIsWired(t *testing.T) {
	var found bool
	for _, c := range newRootCmd().Commands() {
		found = found || c.Name() == "serve"
	}
	if !found {
		t.Fatal("no serve command")
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
