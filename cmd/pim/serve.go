package main

// serve.go: `pim serve`, the whole server in one process. It prints where it
// listens and how to get a token, and shuts down gracefully on SIGTERM/SIGINT:
// a drain (GoAways spread over --drain-window), then the stop, all within
// --shutdown-timeout, which must therefore exceed the window plus the
// gateway's grace (checked at start). A second SIGTERM/SIGINT stops at once.
//
// Admission control flags (docs/operations.md) default to limits generous
// enough for `pim bench` on one machine; --admission=false turns every limit
// off (to compare).

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/gateway"
	"github.com/pim-project/pim/internal/server"
)

// admissionFlags are the flags of admission control, load shedding and the LBS.
type admissionFlags struct {
	enabled                  bool
	maxConns                 int
	acceptRate, loginRate    float64
	acceptBurst, loginBurst  int
	userLoginRate, ipLogin   float64
	userLoginBurst, ipLoginB int
	userSendRate, ipSendRate float64
	userSendBurst, ipSendB   int
	maxInflight              int
	shedTarget               time.Duration
	lbsRate                  float64
	lbsBurst                 int
	lbsTTL                   time.Duration
}

// Defaults of the admission flags (docs/operations.md explains them).
const (
	defaultAcceptRate    = 10000
	defaultUserLoginRate = 5
	defaultUserSendRate  = 2000
	defaultMaxInflight   = 4096
	defaultShedTarget    = 500 * time.Millisecond
)

// defaultMaxConns is the open-file limit less a reserve for the store, the
// HTTP listener and the logs: a server never fails an accept for want of a
// descriptor, it refuses the connection first.
func defaultMaxConns() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil || r.Cur == 0 {
		return 10000
	}
	limit := int(min(r.Cur, 1<<30))
	return max(limit-max(1000, limit/20), 100)
}

func (a *admissionFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&a.enabled, "admission", true, "admission control and load shedding on (false: every limit below off, to compare)")
	f.IntVar(&a.maxConns, "max-conns", defaultMaxConns(), "most open long connections; more are refused at accept (default: the open-file limit less a reserve; 0: no limit)")
	f.Float64Var(&a.acceptRate, "accept-rate", defaultAcceptRate, "new connections per second, all sources together (token bucket; 0: no limit)")
	f.IntVar(&a.acceptBurst, "accept-burst", 0, "new connections at once (default: a tenth of --accept-rate, at least 1)")
	f.Float64Var(&a.loginRate, "login-rate", 0, "Hellos per second, all users together (0: no limit: every connection has one Hello, and --accept-rate limits connections already)")
	f.IntVar(&a.loginBurst, "login-burst", 0, "Hellos at once (default: a tenth of --login-rate)")
	f.Float64Var(&a.userLoginRate, "user-login-rate", defaultUserLoginRate, "Hellos per second of one user (0: no limit)")
	f.IntVar(&a.userLoginBurst, "user-login-burst", 20, "Hellos at once of one user")
	f.Float64Var(&a.ipLogin, "ip-login-rate", 0, "Hellos per second from one source IP (0: no limit; clients behind a NAT or proxy share one)")
	f.IntVar(&a.ipLoginB, "ip-login-burst", 100, "Hellos at once from one source IP")
	f.Float64Var(&a.userSendRate, "user-send-rate", defaultUserSendRate, "messages per second of one user, all devices (0: no limit)")
	f.IntVar(&a.userSendBurst, "user-send-burst", 4000, "messages at once of one user")
	f.Float64Var(&a.ipSendRate, "ip-send-rate", 0, "messages per second from one source IP (0: no limit)")
	f.IntVar(&a.ipSendB, "ip-send-burst", 1000, "messages at once from one source IP")
	f.IntVar(&a.maxInflight, "max-inflight", defaultMaxInflight, "sends and group changes in the pipeline at once; more are refused with UNAVAILABLE + retry_after (0: no bound but 32 per connection)")
	f.DurationVar(&a.shedTarget, "shed-target", defaultShedTarget, "load shedding: while the fastest send of the last 2x this took over half of it, new connections and logins are refused; over 4x it, sends too (0: latency not watched)")
	f.Float64Var(&a.lbsRate, "lbs-rate", 0, "clients per second the LBS sends to one node (default: --accept-rate; <0: no cap)")
	f.IntVar(&a.lbsBurst, "lbs-burst", 0, "clients at once the LBS sends to one node (default: --accept-burst)")
	f.DurationVar(&a.lbsTTL, "lbs-ttl", 10*time.Minute, "how long clients may keep an LBS answer")
}

// apply fills cfg's admission, shedding and LBS settings.
func (a *admissionFlags) apply(cfg *server.Config) error {
	for _, v := range []float64{a.acceptRate, a.loginRate, a.userLoginRate, a.ipLogin, a.userSendRate, a.ipSendRate} {
		if v < 0 {
			return usagef("rates must not be negative (0 turns a limit off)")
		}
	}
	if a.maxConns < 0 || a.maxInflight < 0 || a.shedTarget < 0 || a.lbsTTL < 0 {
		return usagef("--max-conns, --max-inflight, --shed-target and --lbs-ttl must not be negative")
	}
	cfg.LBSTTL = a.lbsTTL
	if !a.enabled {
		cfg.Admission = admission.Config{}
		cfg.LBS = admission.Limit{}
		return nil
	}
	burst := func(b int, rate float64, def int) int {
		if b > 0 {
			return b
		}
		if def > 0 {
			return def
		}
		return max(int(rate/10), 1)
	}
	acceptBurst := burst(a.acceptBurst, a.acceptRate, 0)
	login := admission.Limit{Rate: a.loginRate, Burst: burst(a.loginBurst, a.loginRate, 0)}
	lbsLimit := admission.Limit{Rate: a.lbsRate, Burst: burst(a.lbsBurst, a.lbsRate, acceptBurst)}
	switch {
	case a.lbsRate == 0:
		lbsLimit = admission.Limit{Rate: a.acceptRate, Burst: burst(a.lbsBurst, a.acceptRate, acceptBurst)}
	case a.lbsRate < 0:
		lbsLimit = admission.Limit{}
	}
	cfg.Admission = admission.Config{
		MaxConns:  a.maxConns,
		Accept:    admission.Limit{Rate: a.acceptRate, Burst: acceptBurst},
		Login:     login,
		UserLogin: admission.Limit{Rate: a.userLoginRate, Burst: max(a.userLoginBurst, 1)},
		IPLogin:   admission.Limit{Rate: a.ipLogin, Burst: max(a.ipLoginB, 1)},
		UserSend:  admission.Limit{Rate: a.userSendRate, Burst: max(a.userSendBurst, 1)},
		IPSend:    admission.Limit{Rate: a.ipSendRate, Burst: max(a.ipSendB, 1)},
	}
	if a.maxInflight > 0 || a.shedTarget > 0 {
		target := a.shedTarget
		if target == 0 {
			target = -1 // latency not watched
		}
		cfg.Admission.Shed = &admission.ShedConfig{MaxInflight: a.maxInflight, Target: target,
			Interval: max(2*a.shedTarget, 100*time.Millisecond)}
	}
	cfg.LBS = lbsLimit
	return nil
}

func newServeCmd() *cobra.Command {
	var cfg server.Config
	var logLevel string
	var shutdownTimeout time.Duration
	var adm admissionFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a PIM server (TCP and WebSocket long connections, HTTP API, metrics) on an embedded store",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
				return usageErr(fmt.Errorf("--log-level: %w", err))
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
			if err := adm.apply(&cfg); err != nil {
				return err
			}
			if cfg.DrainWindow <= 0 || cfg.DrainRate < 0 {
				return usagef("--drain-window must be positive and --drain-rate not negative")
			}
			if cfg.DrainRate == 0 {
				cfg.DrainRate = -1 // the gateway's "always the whole window" (its 0 is the default rate)
			}
			if need := cfg.DrainWindow + gateway.DefaultDrainGrace; shutdownTimeout <= need {
				return usagef("--shutdown-timeout (%v) must exceed --drain-window (%v) plus the drain grace (%v): the drain would be cut short",
					shutdownTimeout, cfg.DrainWindow, gateway.DefaultDrainGrace)
			}
			return runServe(cmd, cfg, shutdownTimeout)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", "pim-data", "data directory (store, keys, certificates)")
	f.StringVar(&cfg.TCPAddr, "tcp", "127.0.0.1:7400", "TCP long-connection listen address (port 0 picks a free port; empty disables)")
	f.StringVar(&cfg.HTTPAddr, "http", "127.0.0.1:7480", "HTTP listen address for /ws, /v1/, /metrics, /healthz (empty disables)")
	f.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate file (PEM)")
	f.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	f.BoolVar(&cfg.TLSSelfSigned, "tls-self-signed", false, "serve TLS with a self-signed certificate kept in the data dir (development)")
	f.BoolVar(&cfg.AllowPlaintext, "allow-plaintext", false, "allow plaintext listeners on non-loopback addresses")
	f.StringVar(&cfg.Fsync, "fsync", server.FsyncAlways, `durability: "always" acks after fsync (group commit); "off" acks once the OS has the write`)
	f.IntVar(&cfg.MaxGroupSize, "max-group-size", 1000, "largest group (write diffusion limit)")
	f.DurationVar(&cfg.Heartbeat, "heartbeat", 10*time.Minute,
		"longest ping interval clients may use, announced in Welcome (the smart heartbeat learns up to it); a connection silent 2.5x this long is closed")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 45*time.Second, "how long a graceful shutdown may take (must exceed --drain-window plus 5s of grace)")
	f.DurationVar(&cfg.DrainWindow, "drain-window", gateway.DefaultDrainWindow, "on SIGTERM or POST /v1/admin/drain, the longest the GoAways are spread over")
	f.Float64Var(&cfg.DrainRate, "drain-rate", gateway.DefaultDrainRate, "GoAways per second a drain aims at: the window shrinks to sessions/rate when shorter (0: always the whole window)")
	f.StringVar(&cfg.Advertise, "advertise", "", "host name or IP clients reach this node at, in LBS answers (default: the listeners' hosts)")
	f.Int64Var(&cfg.MaxBufferedBytes, "max-buffered-bytes", gateway.DefaultMaxBufferedBytes, "responses queued for all connections together; a connection that would pass it is disconnected as slow")
	f.IntVar(&cfg.CatchupConcurrency, "catchup-concurrency", 0, "backlog (timeline) reads of push streams at once (default: 4 x GOMAXPROCS, at least 8)")
	adm.register(f)
	f.BoolVar(&cfg.NoReadState, "no-read-state", false, "do not maintain conversation lists and delivered receipts (benchmarks of their cost only)")
	_ = f.MarkHidden("no-read-state")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	return cmd
}

func runServe(cmd *cobra.Command, cfg server.Config, shutdownTimeout time.Duration) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := server.Start(cfg)
	if err != nil {
		return fmt.Errorf("start server: %w", err)
	}
	printBanner(cmd, cfg, srv)
	<-ctx.Done()
	stop()
	cfg.Logger.Info("shutting down: draining", "window", cfg.DrainWindow, "timeout", shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// A second signal cuts the drain short.
	again := make(chan os.Signal, 1)
	signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(again)
	go func() { // ends with runServe (sctx is canceled by the deferred cancel)
		select {
		case <-again:
			cfg.Logger.Warn("second signal: stopping at once")
			cancel()
		case <-sctx.Done():
		}
	}()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	cfg.Logger.Info("stopped")
	return nil
}

func printBanner(cmd *cobra.Command, cfg server.Config, srv *server.Server) {
	out := cmd.OutOrStdout()
	scheme, wsScheme := "http", "ws"
	if srv.TLS() {
		scheme, wsScheme = "https", "wss"
	}
	fmt.Fprintf(out, "pim serving, data in %s (epoch %s, fsync %s)\n", cfg.DataDir, srv.Epoch(), cfg.Fsync)
	if a := srv.TCPAddr(); a != nil {
		fmt.Fprintf(out, "  tcp:       %s (tls: %v)\n", a, srv.TLS())
	}
	if a := srv.HTTPAddr(); a != nil {
		fmt.Fprintf(out, "  websocket: %s://%s/ws\n", wsScheme, a)
		fmt.Fprintf(out, "  api:       %s://%s/v1/   metrics: %s://%s/metrics\n", scheme, a, scheme, a)
	}
	if a := cfg.Admission; a.MaxConns > 0 || !a.Accept.Unlimited() {
		fmt.Fprintf(out, "  limits:    %s connections, %s new/s (burst %d), drain over %v\n",
			limitStr(float64(a.MaxConns)), limitStr(a.Accept.Rate), a.Accept.Burst, cfg.DrainWindow)
	} else {
		fmt.Fprintf(out, "  limits:    admission control off, drain over %v\n", cfg.DrainWindow)
	}
	if fp := srv.Fingerprint(); fp != "" {
		fmt.Fprintf(out, "  self-signed certificate sha256: %s (clients: --tls-pin %s)\n", fp, fp)
	}
	fmt.Fprintf(out, "get a token:  pim token --data %s --user alice\n", cfg.DataDir)
	fmt.Fprintf(out, "admin key for the HTTP API is in %s/admin.key\n", cfg.DataDir)
}

// limitStr formats a limit, "unlimited" for 0.
func limitStr(v float64) string {
	if v <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%g", v)
}
