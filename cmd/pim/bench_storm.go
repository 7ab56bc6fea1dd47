package main

// bench_storm.go: `pim bench storm`, the reconnect storm (internal/storm does
// the work; docs/benchmarks.md and BENCHMARKS.md have the reports).
//
// Invariants: with --json, stdout carries exactly one JSON object and the
// summary goes to stderr; the exit status is 1 when the storm failed a
// check (a message lost, duplicated, out of order or never acknowledged, or
// clients not back and caught up within --timeout), and the report is still
// printed; every server process started is stopped, also on Ctrl-C.
//
// The flags every `pim bench` benchmark shares (--spawn, --server-arg,
// --tls, --source-ips, --json, ...) are declared here too, under the same
// names: under `pim bench` they shadow the inherited ones (same meaning), and
// the command also works on its own.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/bench"
	"github.com/pim-project/pim/internal/storm"
	"github.com/pim-project/pim/sdk/go/core"
)

func newBenchStormCmd() *cobra.Command {
	var (
		cfg         storm.Config
		spawn, tls  bool
		keepData    bool
		jsonOut     bool
		admissionOn bool
		serverBin   string
		serverArgs  []string
		serverEnv   []string
		fsync       string
		sourceIPs   string
		every       time.Duration
		acceptRate  float64
		acceptBurst int
		drainWindow time.Duration
	)
	cmd := &cobra.Command{
		Use:   "storm",
		Short: "Reconnect storm: N clients, the server killed (or drained) and restarted; reconnect and catch-up times, no message lost",
		Long: "storm connects N clients exchanging messages, kills the server (SIGKILL) or drains it (SIGTERM) and\n" +
			"restarts it on the same data and addresses, and measures how the clients come back: they reconnect\n" +
			"as the SDK does, with sdk/go/core's own functions and default settings (full jitter after a failure,\n" +
			"the hint plus a little jitter after a refusal with retry_after or a GoAway; --backoff double is the\n" +
			"SDK from before hinted refusals stopped doubling its backoff, to compare). It reports the time to\n" +
			"reconnect and to catch up, the peak accepted connections per second against the configured rate,\n" +
			"the server's peak RSS and CPU, and checks that every message sent during the storm is delivered\n" +
			"exactly once and in order (exit status 1 otherwise).",
		Example: "  pim bench storm --spawn --clients 5000\n" +
			"  pim bench storm --spawn --clients 15000 --source-ips 127.0.0.2-127.0.0.41 --accept-rate 1000 --json\n" +
			"  pim bench storm --spawn --clients 15000 --source-ips 127.0.0.2-127.0.0.41 --admission=false\n" +
			"  pim bench storm --spawn --clients 15000 --source-ips 127.0.0.2-127.0.0.41 --backoff double\n" +
			"  pim bench storm --spawn --clients 5000 --mode drain --drain-window 10s",
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if !spawn {
				return usagef("pim bench storm needs --spawn: it kills and restarts the server it measures")
			}
			if fsync != "" && fsync != "always" && fsync != "off" {
				return usagef(`--fsync must be "always" or "off"`)
			}
			if cfg.Rate < 0 || cfg.Size <= 0 || cfg.Size > 64<<10 || acceptRate < 0 {
				return usagef("--rate and --accept-rate must not be negative, --size must be 1-65536")
			}
			ips, err := bench.ParseSourceIPs(sourceIPs)
			if err != nil {
				return usageErr(err)
			}
			cfg.SourceIPs = ips
			if cfg.Rate == 0 {
				cfg.Rate = float64(max(cfg.Clients/10, 1))
			}
			var args []string
			if fsync != "" {
				args = append(args, "--fsync", fsync)
			}
			if !admissionOn {
				args = append(args, "--admission=false")
			}
			if acceptRate > 0 {
				b := acceptBurst
				if b <= 0 {
					b = max(int(acceptRate/10), 1)
				}
				args = append(args, "--accept-rate", strconv.FormatFloat(acceptRate, 'g', -1, 64), "--accept-burst", strconv.Itoa(b))
			}
			if drainWindow > 0 {
				args = append(args, "--drain-window", drainWindow.String(), "--shutdown-timeout", (drainWindow + time.Minute).String())
			}
			args = append(args, serverArgs...)
			ctx := cmd.Context()
			stderr := cmd.ErrOrStderr()
			bench.RaiseFileLimit()
			srv, err := storm.Spawn(ctx, storm.SpawnOptions{SpawnOptions: bench.SpawnOptions{
				Bin: serverBin, Args: args, TLS: tls, Keep: keepData, Env: serverEnv}})
			if err != nil {
				return fmt.Errorf("server: %w", err)
			}
			prog := bench.NewProgress(stderr, every)
			res, err := storm.Run(ctx, srv, cfg, commandLine(cmd), prog)
			prog.Stop()
			if keepData {
				fmt.Fprintf(stderr, "pim bench storm: server logs %v\n", srv.LogPaths())
			}
			if cerr := srv.Close(); cerr != nil {
				fmt.Fprintf(stderr, "pim bench storm: %v\n", cerr)
			}
			if err != nil {
				return err
			}
			return printStormReport(cmd, jsonOut, res)
		}),
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Clients, "clients", 1000, "clients, each its own user, in pairs that message each other")
	f.StringVar(&cfg.Mode, "mode", storm.ModeKill, `"kill": SIGKILL and restart; "drain": SIGTERM (the server drains) and restart`)
	f.Float64Var(&cfg.Rate, "rate", 0, "messages per second in all, from connected clients, one in flight per client (default: clients/10)")
	f.IntVar(&cfg.Size, "size", 64, "message body bytes")
	f.DurationVar(&cfg.Before, "before", 5*time.Second, "traffic before the server is killed")
	f.DurationVar(&cfg.Down, "down", 0, "kill mode: how long the server stays down before the restart")
	f.DurationVar(&cfg.Timeout, "timeout", 90*time.Second, "every client must be back and caught up within this of the kill")
	f.DurationVar(&cfg.After, "after", 2*time.Second, "traffic after the storm settled")
	f.DurationVar(&cfg.DrainTimeout, "drain-timeout", time.Minute, "at the end, how long to wait for every ack and delivery")
	f.DurationVar(&cfg.BackoffBase, "backoff-base", core.DefaultBackoffBase, "clients' reconnect backoff after a failure: full jitter in [0, min(cap, base*2^failures)); the default is the SDK's")
	f.DurationVar(&cfg.BackoffCap, "backoff-cap", core.DefaultBackoffCap, "clients' reconnect backoff cap; the default is the SDK's")
	f.DurationVar(&cfg.HealthyAfter, "healthy-after", core.DefaultHealthyAfter, "a connection up this long resets the client's failure count; the default is the SDK's")
	f.StringVar(&cfg.Backoff, "backoff", storm.BackoffSDK, `clients' reconnect policy: "sdk" (sdk/go/core's: a refusal with retry_after or a GoAway waits the hint plus a little jitter without doubling the backoff; other failures double it) or "double" (the SDK before that: every failure, refusals included, waits max(full jitter, retry_after) and doubles it; a GoAway waits its retry_after); "hint" is an old name of "sdk"`)
	f.DurationVar(&cfg.DialTimeout, "dial-timeout", 10*time.Second, "a connection attempt (TCP, TLS, Hello/Welcome) fails after this")
	f.IntVar(&cfg.PerProc, "per-proc", 15000, "clients per load process; more are spread over worker processes (a process may hold at most RLIMIT_NOFILE files)")
	f.Uint64Var(&cfg.Seed, "seed", 0, "seed of the clients' randomness (0: random)")
	f.BoolVar(&admissionOn, "admission", true, "the server's admission control (false: --admission=false to the server, to compare)")
	f.Float64Var(&acceptRate, "accept-rate", 0, "the server's --accept-rate (default: the server's)")
	f.IntVar(&acceptBurst, "accept-burst", 0, "the server's --accept-burst (default: a tenth of --accept-rate)")
	f.DurationVar(&drainWindow, "drain-window", 0, "the server's --drain-window (drain mode; default: the server's)")
	// The flags of every `pim bench` benchmark.
	f.BoolVar(&spawn, "spawn", false, "start a fresh `pim serve` on a temporary data dir and free loopback ports (required)")
	f.StringVar(&serverBin, "server-bin", "", "the pim binary to run as the server (default: this one)")
	f.StringArrayVar(&serverArgs, "server-arg", nil, "one more `pim serve` flag, e.g. --server-arg=--max-conns=20000 (repeatable)")
	f.StringArrayVar(&serverEnv, "server-env", nil, "an environment variable for the server, e.g. GOGC=200 (repeatable)")
	f.StringVar(&fsync, "fsync", "", `the server's --fsync ("always", the default, or "off")`)
	f.BoolVar(&keepData, "keep-data", false, "keep the server's data dir and logs (printed on stderr)")
	f.BoolVar(&tls, "tls", false, "TLS: the server gets --tls-self-signed and its certificate is pinned")
	f.StringVar(&sourceIPs, "source-ips", "", "local addresses to spread connections over, e.g. 127.0.0.2-127.0.0.41")
	f.IntVar(&cfg.Concurrency, "concurrency", 64, "initial connections being set up at once (the storm itself is not paced)")
	f.BoolVar(&jsonOut, "json", false, "print the report as one JSON object on stdout (the summary goes to stderr)")
	f.DurationVar(&every, "progress-every", 5*time.Second, "when stderr is not a terminal, print a progress line this often")
	cmd.AddCommand(&cobra.Command{
		Use:    "worker",
		Short:  "one load process of pim bench storm (internal; reads its job on stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return storm.RunWorker(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		}),
	})
	return cmd
}

// printStormReport prints the summary (and the JSON) and turns a failed
// check into the exit status.
func printStormReport(cmd *cobra.Command, jsonOut bool, r *storm.Result) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	summary := stdout
	if jsonOut {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return fmt.Errorf("encode the report: %w", err)
		}
		if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
			return err
		}
		summary = stderr
	}
	fmt.Fprint(summary, bench.FormatRows("pim bench storm", r.Rows()))
	if !r.OK {
		return errors.New("storm failed its checks (see result)")
	}
	return nil
}
