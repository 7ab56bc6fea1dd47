package bench

// End-to-end tests of the benchmarks against an in-process server: short
// runs that check the machinery (connect, traffic, invariant check, report),
// not the figures.

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/server"
)

func startServer(t *testing.T, cfg server.Config) (*server.Server, string) {
	t.Helper()
	dir := t.TempDir()
	cfg.DataDir, cfg.TCPAddr, cfg.HTTPAddr = dir, "127.0.0.1:0", "127.0.0.1:0"
	srv, err := server.Start(cfg)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv, dir
}

// target points at an in-process server; its "server process" is this one.
func target(t *testing.T, srv *server.Server, dir string) *Target {
	t.Helper()
	o := TargetOptions{Server: srv.TCPAddr().String(), ServerPID: os.Getpid(), DataDir: dir, HTTP: srv.HTTPAddr().String()}
	if srv.TLS() {
		o.TLSPin = srv.Fingerprint()
	}
	tg, err := OpenTarget(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tg.Close() })
	return tg
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func checkCommon(t *testing.T, c *Common, bench string) {
	t.Helper()
	if !c.OK || len(c.Failures) > 0 {
		t.Errorf("%s failed: %v", bench, c.Failures)
	}
	if c.Bench != bench || c.Schema != Schema || c.Env.NProc < 1 || !c.Server.Measured {
		t.Errorf("common fields: %+v", c)
	}
}

func TestRunE2E(t *testing.T) {
	for _, tc := range []struct {
		name string
		tcfg TrafficConfig
	}{
		{"closed loop", TrafficConfig{Window: 4, Size: 64, Ack: AckPolicy{Every: 3, Delay: 10 * time.Millisecond}}},
		{"paced", TrafficConfig{Rate: 400, Size: 200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, dir := startServer(t, server.Config{})
			res, err := RunE2E(ctxT(t), target(t, srv, dir), E2EConfig{Pairs: 3, Warmup: 50 * time.Millisecond,
				Duration: 300 * time.Millisecond, DrainTimeout: 20 * time.Second, Traffic: tc.tcfg, Concurrency: 4}, []string{"x"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkCommon(t, &res.Common, "e2e")
			if res.Acked == 0 || res.Delivered != res.Acked || res.Sent != res.Acked || res.MeasuredAcked == 0 || res.MsgsPerSec <= 0 {
				t.Errorf("counts: sent %d acked %d delivered %d measured %d rate %v", res.Sent, res.Acked, res.Delivered, res.MeasuredAcked, res.MsgsPerSec)
			}
			if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 || res.AckP99Ms <= 0 || res.DeliverP99Ms <= 0 {
				t.Errorf("invariants or latency: %+v %+v %+v", res.Invariants, res.AckLatency, res.DeliverLatency)
			}
			if len(res.Rows()) == 0 {
				t.Error("no summary")
			}
			b, err := json.Marshal(res)
			if err != nil || !strings.Contains(string(b), `"ack_p99_ms"`) || !strings.Contains(string(b), `"server_cpu_us_per_msg"`) {
				t.Errorf("json: %s, %v", b, err)
			}
		})
	}
}

func TestRunGroup(t *testing.T) {
	srv, dir := startServer(t, server.Config{})
	res, err := RunGroup(ctxT(t), target(t, srv, dir), GroupConfig{Members: 12, Online: 8, Senders: 2, Batch: 5,
		Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond, DrainTimeout: 20 * time.Second,
		Traffic: TrafficConfig{Window: 2, Size: 128}, Concurrency: 4}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCommon(t, &res.Common, "group")
	if res.Acked == 0 || res.Delivered != 8*res.Acked || res.DeliveriesPerSec <= 0 {
		t.Errorf("acked %d delivered %d (want 8 per message), %v/s", res.Acked, res.Delivered, res.DeliveriesPerSec)
	}
	if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 {
		t.Errorf("invariants: %+v", res.Invariants)
	}
}

func TestRunSyncTLS(t *testing.T) {
	srv, dir := startServer(t, server.Config{TLSSelfSigned: true})
	res, err := RunSync(ctxT(t), target(t, srv, dir), SyncConfig{Missed: 300, Window: 32, Size: 128, Timeout: 30 * time.Second}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCommon(t, &res.Common, "sync")
	if res.Received != 300 || res.CatchUpMs <= 0 || res.Bytes < 300*128 || res.BytesIn+res.BytesOut != res.Bytes || res.PushFrames == 0 {
		t.Errorf("received %d in %v ms, %d bytes, %d push frames", res.Received, res.CatchUpMs, res.Bytes, res.PushFrames)
	}
	if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 {
		t.Errorf("invariants: %+v", res.Invariants)
	}
}

func TestRunConns(t *testing.T) {
	srv, dir := startServer(t, server.Config{})
	ips, err := ParseSourceIPs("127.0.0.1-3")
	if err != nil {
		t.Fatal(err)
	}
	res, err := RunConns(ctxT(t), target(t, srv, dir), ConnsConfig{Clients: 30, Concurrency: 8, SourceIPs: ips,
		Idle: 100 * time.Millisecond, Ping: true}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCommon(t, &res.Common, "conns")
	if res.Connected != 30 || res.Alive != 30 || res.Failed != 0 || res.Procs != 1 || res.ConnectsPerSec <= 0 || res.GoroutinesPerConn <= 0 {
		t.Errorf("%+v", res)
	}
}

// The worker protocol, in process: job, "connected", "check" -> "alive", "close".
func TestConnsWorkerProtocol(t *testing.T) {
	srv, dir := startServer(t, server.Config{})
	tg := target(t, srv, dir)
	toks, err := tg.Tokens(context.Background(), []string{"w1", "w2", "w3"})
	if err != nil {
		t.Fatal(err)
	}
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- RunConnsWorker(context.Background(), inR, outW)
		outW.Close()
	}()
	job, _ := json.Marshal(ConnsJob{Addr: tg.Addr, Tokens: toks, Device: "d", Concurrency: 2, SourceIPs: []string{"127.0.0.1"}})
	if _, err := inW.Write(append(job, '\n')); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bufio.NewReader(outR))
	next := func(event string) workerMsg {
		t.Helper()
		for {
			var m workerMsg
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("waiting for %q: %v", event, err)
			}
			if m.Event == event {
				return m
			}
		}
	}
	if m := next("connected"); m.Connected != 3 || m.Failed != 0 || m.HeartbeatMs == 0 {
		t.Fatalf("connected: %+v", m)
	}
	io.WriteString(inW, "check\n")
	if m := next("alive"); m.Alive != 3 {
		t.Fatalf("alive: %+v", m)
	}
	io.WriteString(inW, "close\n")
	go io.Copy(io.Discard, outR)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	inW.Close()
}

func TestTokensOverHTTP(t *testing.T) {
	srv, _ := startServer(t, server.Config{})
	tg, err := OpenTarget(context.Background(), TargetOptions{Server: srv.TCPAddr().String(), AdminKey: srv.Keys().AdminKey(),
		HTTP: srv.HTTPAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	toks, err := tg.Tokens(context.Background(), []string{"u1", "u2"})
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range []string{"u1", "u2"} {
		if got, err := srv.Keys().Verify(toks[i]); err != nil || got != u {
			t.Errorf("token %d: %q, %v", i, got, err)
		}
	}
	if _, err := OpenTarget(context.Background(), TargetOptions{Server: "127.0.0.1:1", AdminKey: "k"}); err == nil {
		t.Error("--admin-key without --http accepted")
	}
	if _, err := OpenTarget(context.Background(), TargetOptions{Server: "127.0.0.1:1"}); err == nil {
		t.Error("no way to get tokens accepted")
	}
	bad, _ := OpenTarget(context.Background(), TargetOptions{Server: srv.TCPAddr().String(), AdminKey: "wrong", HTTP: srv.HTTPAddr().String()})
	if _, err := bad.Tokens(context.Background(), []string{"u1"}); err == nil {
		t.Error("a wrong admin key minted a token")
	}
	if m := tg.Metrics(context.Background(), "go_goroutines"); m["go_goroutines"] <= 0 {
		t.Errorf("metrics: %v", m)
	}
}

// Without a PID the server's figures come from its /metrics.
func TestMeasureFromMetrics(t *testing.T) {
	srv, dir := startServer(t, server.Config{})
	tg, err := OpenTarget(context.Background(), TargetOptions{Server: srv.TCPAddr().String(), DataDir: dir, HTTP: srv.HTTPAddr().String()})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	res, err := RunSync(ctxT(t), tg, SyncConfig{Missed: 100, Window: 16, Size: 64, Timeout: 30 * time.Second}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkCommon(t, &res.Common, "sync")
	if res.Server.Source != "metrics" || res.Server.PeakRSSBytes <= 0 || res.Server.RSSEndBytes <= 0 {
		t.Errorf("server figures from /metrics: %+v", res.Server)
	}
}
