package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/bench"
	"github.com/pim-project/pim/internal/server"
)

func TestBenchUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		hint string
		msg  string
	}{
		{[]string{"bench", "e2e", "--spawn", "--server", "127.0.0.1:1"}, "pim bench e2e", "either --spawn or --server"},
		{[]string{"bench", "e2e", "--server", "127.0.0.1:1", "--server-arg", "--fsync=off"}, "pim bench e2e", "need --spawn"},
		{[]string{"bench", "e2e", "--spawn", "--data", "x"}, "pim bench e2e", "for a running server"},
		{[]string{"bench", "e2e", "--pairs", "0"}, "pim bench e2e", "--pairs"},
		{[]string{"bench", "e2e", "--window", "0"}, "pim bench e2e", "--window"},
		{[]string{"bench", "e2e", "--size", "70000"}, "pim bench e2e", "--size"},
		{[]string{"bench", "e2e", "--ack-every", "0"}, "pim bench e2e", "--ack-every"},
		{[]string{"bench", "e2e", "--spawn", "--fsync", "sometimes"}, "pim bench e2e", "--fsync"},
		{[]string{"bench", "e2e", "--source-ips", "127.0.0.9-2"}, "pim bench e2e", "source IPs"},
		{[]string{"bench", "e2e", "--faults", "kill,flood"}, "pim bench e2e", "unknown fault"},
		{[]string{"bench", "e2e", "--faults", "kill", "--server", "127.0.0.1:1"}, "pim bench e2e", "needs --spawn"},
		{[]string{"bench", "e2e", "--faults", "cut", "--rate", "100"}, "pim bench e2e", "drop --rate"},
		{[]string{"bench", "e2e", "--faults", "cut", "--cut-every", "0s"}, "pim bench e2e", "--cut-every"},
		{[]string{"bench", "e2e", "--kill-every", "1s"}, "pim bench e2e", "need --faults"},
		{[]string{"bench", "group", "--members", "5", "--senders", "4", "--online", "3"}, "pim bench group", "--members"},
		{[]string{"bench", "sync", "--missed", "0"}, "pim bench sync", "--missed"},
		{[]string{"bench", "conns", "--clients", "0"}, "pim bench conns", "--clients"},
		{[]string{"bench", "catchup", "--outage", "0s"}, "pim bench catchup", "--outage"},
		{[]string{"bench", "catchup", "--cut", "flood"}, "pim bench catchup", "--cut"},
		{[]string{"bench", "catchup", "--size", "0"}, "pim bench catchup", "--size"},
		{[]string{"bench", "wire", "--messages", "0"}, "pim bench wire", "--messages"},
		{[]string{"bench", "wire", "--gap", "0s"}, "pim bench wire", "--gap"},
	}
	for _, tc := range tests {
		code, out, errOut := runCLI(t, tc.args...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, tc.msg) || !strings.Contains(errOut, "Run '"+tc.hint+" --help' for usage.") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tc.args, code, out, errOut, tc.msg)
		}
	}
	// No server and no way to tokens: a failure, not a usage error.
	if code, _, errOut := runCLI(t, "bench", "sync", "--server", "127.0.0.1:1"); code != exitFailure || !strings.Contains(errOut, "tokens are needed") {
		t.Errorf("no --data: exit %d, %q", code, errOut)
	}
}

// `pim bench e2e --json` against a running (in-process) server prints one
// JSON object with the documented fields on stdout and the summary on stderr.
func TestBenchE2EJSON(t *testing.T) {
	dir := t.TempDir()
	srv, err := server.Start(server.Config{DataDir: dir, TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	code, out, errOut := runCLI(t, "bench", "e2e", "--server", srv.TCPAddr().String(), "--data", dir,
		"--server-pid", strconv.Itoa(os.Getpid()), "--http", srv.HTTPAddr().String(),
		"--pairs", "2", "--duration", "200ms", "--warmup", "0s", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, out)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("more than one JSON value on stdout: %s", out)
	}
	for _, k := range []string{"msgs_per_sec", "acked", "ack_p99_ms", "deliver_p99_ms", "server_cpu_us_per_msg", "lost", "duplicated", "out_of_order", "server", "loadgen", "machine", "env"} {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing", k)
		}
	}
	if m["ok"] != true || m["bench"] != "e2e" {
		t.Errorf("ok %v bench %v", m["ok"], m["bench"])
	}
	args, _ := json.Marshal(m["args"])
	if !bytes.Contains(args, []byte(`"--pairs=2"`)) {
		t.Errorf("args %s", args)
	}
	if !strings.Contains(errOut, "pim bench e2e") || !strings.Contains(errOut, "PASS") {
		t.Errorf("summary not on stderr: %q", errOut)
	}
}

// The heartbeat schedule of `pim bench wire` assumes `pim serve`'s default
// --heartbeat when it states what the default server announces.
func TestServeHeartbeatDefault(t *testing.T) {
	fl := newServeCmd().Flags().Lookup("heartbeat")
	if fl == nil || fl.DefValue != bench.ServeHeartbeat.String() {
		t.Fatalf("pim serve --heartbeat defaults to %v, bench.ServeHeartbeat is %v", fl, bench.ServeHeartbeat)
	}
}
