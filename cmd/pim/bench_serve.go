package main

// bench_serve.go: `pim bench serve`, hidden: exactly `pim serve` plus a
// loopback profiling endpoint, so that `pim bench --spawn
// --server-cpuprofile` can profile the measured phase of a spawned server.
// `pim serve` itself has no profiling flag.

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/tlsutil"
)

func newBenchServeCmd() *cobra.Command {
	cmd := newServeCmd()
	cmd.Hidden = true
	cmd.Short = "pim serve with a loopback profiling endpoint (used by pim bench --server-cpuprofile)"
	var addr string
	cmd.Flags().StringVar(&addr, "bench-pprof", "127.0.0.1:0", "loopback address of the profiling endpoint (POST /cpu/start, POST /cpu/stop, GET /heap)")
	serve := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if !tlsutil.IsLoopback(addr) {
			return usagef("--bench-pprof must be a loopback address")
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("pprof listener: %w", err)
		}
		srv := &http.Server{Handler: profileHandler(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		fmt.Fprintf(c.OutOrStdout(), "  pprof:     %s\n", ln.Addr())
		return serve(c, args)
	}
	return cmd
}

// profileHandler serves a CPU profile between a start and a stop call, and
// heap profiles.
func profileHandler() http.Handler {
	var (
		mu  sync.Mutex
		buf *bytes.Buffer
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /cpu/start", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if buf != nil {
			http.Error(w, "a CPU profile is already running", http.StatusConflict)
			return
		}
		b := new(bytes.Buffer)
		if err := pprof.StartCPUProfile(b); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		buf = b
	})
	mux.HandleFunc("POST /cpu/stop", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if buf == nil {
			http.Error(w, "no CPU profile is running", http.StatusConflict)
			return
		}
		pprof.StopCPUProfile()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(buf.Bytes())
		buf = nil
	})
	mux.HandleFunc("GET /heap", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") != "" {
			runtime.GC()
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		if err := pprof.Lookup("heap").WriteTo(w, 0); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return mux
}
