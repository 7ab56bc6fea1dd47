package main

// serve.go: `pim serve`, the whole server in one process. It prints where it
// listens and how to get a token, and shuts down gracefully on SIGTERM/SIGINT.

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/server"
)

func newServeCmd() *cobra.Command {
	var cfg server.Config
	var logLevel string
	var shutdownTimeout time.Duration
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
	f.DurationVar(&cfg.Heartbeat, "heartbeat", 30*time.Second, "heartbeat interval announced to clients")
	f.DurationVar(&shutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown may take")
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
	cfg.Logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
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
	if fp := srv.Fingerprint(); fp != "" {
		fmt.Fprintf(out, "  self-signed certificate sha256: %s (clients: --tls-pin %s)\n", fp, fp)
	}
	fmt.Fprintf(out, "get a token:  pim token --data %s --user alice\n", cfg.DataDir)
	fmt.Fprintf(out, "admin key for the HTTP API is in %s/admin.key\n", cfg.DataDir)
}
