package bench

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 15012
go_memstats_heap_inuse_bytes 1.2345e+08
pim_frames_in_total{type="hello"} 10
pim_frames_in_total{type="send_req"} 32
pim_connections 15000
weird{a="}"} 3
bad_value abc
`
	got := ParseMetrics(strings.NewReader(text), "go_goroutines", "go_memstats_heap_inuse_bytes", "pim_frames_in_total", "missing", "bad_value", "weird")
	want := map[string]float64{"go_goroutines": 15012, "go_memstats_heap_inuse_bytes": 123450000, "pim_frames_in_total": 42, "weird": 3}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestParseBanner(t *testing.T) {
	banner := `pim serving, data in /tmp/d (epoch abc, fsync always)
  tcp:       127.0.0.1:41234 (tls: true)
  websocket: wss://127.0.0.1:41235/ws
  api:       https://127.0.0.1:41235/v1/   metrics: https://127.0.0.1:41235/metrics
  self-signed certificate sha256: 0123abcd (clients: --tls-pin 0123abcd)
  pprof:     127.0.0.1:5555
get a token:  pim token --data /tmp/d --user alice
admin key for the HTTP API is in /tmp/d/admin.key`
	var b Banner
	for i, l := range strings.Split(banner, "\n") {
		if b.Done {
			t.Fatalf("done before line %d", i)
		}
		b.ParseBannerLine(l)
	}
	want := Banner{TCP: "127.0.0.1:41234", TLS: true, HTTPBase: "https://127.0.0.1:41235", Fingerprint: "0123abcd", Pprof: "127.0.0.1:5555", Done: true}
	if b != want {
		t.Errorf("got %+v, want %+v", b, want)
	}
	var p Banner
	p.ParseBannerLine("  tcp:       127.0.0.1:7400 (tls: false)")
	p.ParseBannerLine("")
	if p.TCP != "127.0.0.1:7400" || p.TLS || p.Done {
		t.Errorf("plaintext: %+v", p)
	}
}
