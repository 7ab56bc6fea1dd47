package bench

// The fault run against the real binary: a spawned `pim serve` killed with
// SIGKILL and restarted on its port every 2 s, connections cut every 1 s,
// SDK devices sending all along; nothing may be lost, duplicated or
// reordered.

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/pimproc"
)

// pimBinary builds cmd/pim once per test run.
func pimBinary(t *testing.T) string {
	t.Helper()
	bin, err := pimproc.Build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestParseFaults(t *testing.T) {
	for _, tc := range []struct {
		in        string
		kill, cut bool
		err       bool
	}{
		{"kill,cut", true, true, false},
		{"cut", false, true, false},
		{" kill ", true, false, false},
		{"kill,cut,kill", true, true, false},
		{"", false, false, true},
		{"kill,delay", false, false, true},
	} {
		f, err := ParseFaults(tc.in)
		if (err != nil) != tc.err || err == nil && (f.Kill != tc.kill || f.Cut != tc.cut) {
			t.Errorf("ParseFaults(%q) = %+v, %v", tc.in, f, err)
		}
	}
}

func TestRunE2EFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("builds pim and kills server processes")
	}
	bin := pimBinary(t)
	addr, err := FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	tg, err := OpenTarget(context.Background(), TargetOptions{Spawn: true, SpawnOptions: SpawnOptions{Bin: bin, TCP: addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tg.Close(); err != nil {
			t.Errorf("stop the server: %v", err)
		}
	}()
	res, err := RunE2EFaults(ctxT(t), tg, FaultsConfig{
		Faults: Faults{Kill: true, KillEvery: 2 * time.Second, Cut: true, CutEvery: time.Second},
		Pairs:  5, Warmup: 300 * time.Millisecond, Duration: 6 * time.Second, DrainTimeout: 20 * time.Second,
		Window: 4, Size: 128,
	}, []string{"x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(res)
	t.Logf("%s", b)
	checkCommon(t, &res.Common, "e2e")
	if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 {
		t.Errorf("invariants: %+v", res.Invariants)
	}
	if res.Kills < 2 || res.Cuts < 3 || res.Reconnects < 10 || res.RestartMax <= 0 || res.ProxyConns <= 10 {
		t.Errorf("the faults did not bite: %d kills (restart max %v ms), %d cuts, %d reconnects, %d proxied connections",
			res.Kills, res.RestartMax, res.Cuts, res.Reconnects, res.ProxyConns)
	}
	if res.Acked == 0 || res.Sent != res.Acked || res.Delivered != res.Acked || res.Echoed != res.Acked || res.SendErrors != 0 {
		t.Errorf("counts: sent %d acked %d delivered %d echoed %d failed %d", res.Sent, res.Acked, res.Delivered, res.Echoed, res.SendErrors)
	}
	if res.Server.Addr != addr || tg.Spawned.TCP != addr || tg.Spawned.Restarts != int(res.Kills) {
		t.Errorf("the server moved: reported at %s, listens at %s after %d restarts; want %s, %d restarts",
			res.Server.Addr, tg.Spawned.TCP, tg.Spawned.Restarts, addr, res.Kills)
	}
	for _, k := range []string{`"kills"`, `"cuts"`, `"reconnects"`, `"lost"`, `"ack_p99_ms"`, `"deliver_p99_ms"`, `"msgs_per_sec"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("json: no %s", k)
		}
	}
	if len(res.Rows()) == 0 {
		t.Error("no summary")
	}
}
