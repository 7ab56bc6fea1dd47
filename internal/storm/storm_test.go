// Storm tests: a real server in this process (internal/server on loopback),
// killed (every connection reset, no GoAway) or drained, and restarted on
// the same data and ports, with the storm clients reconnecting.
//
// Invariants: the assertions are the storm's own checks (nothing lost,
// duplicated or out of order; every client back and caught up) and the
// admission bound on accepted connections; the test waits on conditions,
// never sleeps to synchronize. 5,000 clients without -race (about 20 s
// here), 300 with it; -storm.clients asks for more.
package storm

import (
	"context"
	"flag"
	"net/http"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/bench"
	"github.com/pim-project/pim/internal/server"
)

var stormClients = flag.Int("storm.clients", defaultStormClients, "clients of TestStormKill")

// inproc is a Server in this process.
type inproc struct {
	t   *testing.T
	cfg server.Config
	srv *server.Server
}

func startInproc(t *testing.T, cfg server.Config) *inproc {
	t.Helper()
	cfg.DataDir, cfg.TCPAddr, cfg.HTTPAddr, cfg.Fsync = t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", server.FsyncOff
	srv, err := server.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.TCPAddr, cfg.HTTPAddr = srv.TCPAddr().String(), srv.HTTPAddr().String()
	return &inproc{t: t, cfg: cfg, srv: srv}
}

func (p *inproc) Addr() string           { return p.cfg.TCPAddr }
func (p *inproc) ClientTLS(*FleetConfig) {}
func (p *inproc) PID() int               { return 0 }
func (p *inproc) Tokens(_ context.Context, users []string) ([]string, error) {
	out := make([]string, len(users))
	for i, u := range users {
		tok, err := p.srv.Keys().Issue(u, time.Hour)
		if err != nil {
			return nil, err
		}
		out[i] = tok
	}
	return out, nil
}
func (p *inproc) Metrics(ctx context.Context, names ...string) map[string]float64 {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.cfg.HTTPAddr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	return bench.ParseMetrics(resp.Body, names...)
}
func (p *inproc) Kill(context.Context) error { p.srv.Kill(); return nil }
func (p *inproc) Drain(ctx context.Context) error {
	return p.srv.Shutdown(ctx)
}
func (p *inproc) Restart(context.Context) error {
	srv, err := server.Start(p.cfg)
	if err != nil {
		return err
	}
	p.srv = srv
	return nil
}
func (p *inproc) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return p.srv.Shutdown(ctx)
}

func runStorm(t *testing.T, srvCfg server.Config, cfg Config) *Result {
	t.Helper()
	p := startInproc(t, srvCfg)
	defer func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	cfg.Seed = 1
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, p, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK {
		t.Fatalf("storm failed: %v\n%s", res.Failures, bench.FormatRows("storm", res.Rows()))
	}
	if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 || res.Reconnected != int64(cfg.Clients) ||
		res.CaughtUp != int64(cfg.Clients) || res.Acked == 0 || res.Delivered != res.Expected {
		t.Fatalf("storm result:\n%s", bench.FormatRows("storm", res.Rows()))
	}
	t.Logf("\n%s", bench.FormatRows("storm", res.Rows()))
	return res
}

func TestStormKill(t *testing.T) {
	n := *stormClients
	rate, burst := float64(max(n/2, 100)), max(n/20, 10)
	res := runStorm(t, server.Config{Admission: admission.Config{
		Accept: admission.Limit{Rate: rate, Burst: burst}, Login: admission.Limit{Rate: rate, Burst: burst},
		SpreadMax: 30 * time.Second,
	}}, Config{Clients: n, Mode: ModeKill, Rate: float64(n) / 10, Before: 2 * time.Second, Timeout: 90 * time.Second,
		After: time.Second, Concurrency: 32})
	// Accepted connections never passed the configured rate (plus the burst;
	// 10% for the time the Welcome takes to reach the client).
	if limit := (rate + float64(burst)) * 1.1; res.PeakAcceptsPerSec > limit {
		t.Fatalf("peak %v accepts/s, configured %v/s burst %d", res.PeakAcceptsPerSec, rate, burst)
	}
	if res.ConfiguredAcceptsPerSec != rate {
		t.Fatalf("configured rate read as %v", res.ConfiguredAcceptsPerSec)
	}
}

func TestStormDrain(t *testing.T) {
	const n = 200
	runStorm(t, server.Config{DrainWindow: 2 * time.Second, DrainRate: -1},
		Config{Clients: n, Mode: ModeDrain, Rate: 100, Before: time.Second, Timeout: time.Minute, After: 500 * time.Millisecond})
}

func TestPeakWindowAndQuantile(t *testing.T) {
	ts := []int64{0, 100, 999, 1000, 1500, 1999, 2000, 2001}
	if got := peakWindow(ts, 1000); got != 4 { // 1000, 1500, 1999 + (999) ... [999,1999)
		t.Fatalf("peak %d", got)
	}
	if got := perSecond(ts, 0); len(got) != 3 || got[0] != 3 || got[1] != 3 || got[2] != 2 {
		t.Fatalf("per second %v", got)
	}
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if quantile(xs, .5) != 5 || quantile(xs, .99) != 10 || quantile(xs, 1) != 10 || quantile(nil, .5) != 0 {
		t.Fatal("quantile")
	}
}
