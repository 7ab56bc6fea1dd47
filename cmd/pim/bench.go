package main

// bench.go: `pim bench`, whole-system benchmarks with a correctness check
// (internal/bench does the work; docs/benchmarks.md documents the reports).
//
// Invariants: with --json, stdout carries exactly one JSON object (the
// report) and everything else goes to stderr; the exit status is 1 when a
// check failed (a lost, duplicated or out-of-order message, a failed
// connection, ...) and the report is still printed; a spawned server is
// always stopped, also on Ctrl-C. New benchmarks (storm, fault injection)
// are new subcommands built the same way: benchTarget, a Run* function of
// internal/bench, and printReport.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pim-project/pim/internal/bench"
)

// benchFlags are the flags every benchmark shares: the target and the output.
type benchFlags struct {
	spawn        bool
	serverBin    string
	serverArgs   []string
	serverEnv    []string
	fsync        string
	maxGroupSize int
	keepData     bool
	cpuProfile   string
	heapProfile  string

	server    string
	serverPID int
	data      string
	adminKey  string
	http      string
	tls       bool
	tlsPin    string
	tlsCA     string
	insecure  bool

	sourceIPs   string
	concurrency int
	json        bool
	every       time.Duration

	// spawnTCP, if set, is the spawned server's fixed listen address
	// (--faults kill restarts it there).
	spawnTCP string
}

func (f *benchFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&f.spawn, "spawn", false, "start a fresh `pim serve` on a temporary data dir and free loopback ports, measure it, stop it at the end")
	fs.StringVar(&f.serverBin, "server-bin", "", "with --spawn: the pim binary to run as the server (default: this one)")
	fs.StringArrayVar(&f.serverArgs, "server-arg", nil, "with --spawn: one more `pim serve` flag, e.g. --server-arg=--heartbeat=1m (repeatable)")
	fs.StringArrayVar(&f.serverEnv, "server-env", nil, "with --spawn: an environment variable for the server, e.g. GOGC=200 (repeatable)")
	fs.StringVar(&f.fsync, "fsync", "", `with --spawn: the server's --fsync ("always", the default, or "off"); without: what to report`)
	fs.IntVar(&f.maxGroupSize, "max-group-size", 0, "with --spawn: the server's --max-group-size (default: the server's, raised to --members for group)")
	fs.BoolVar(&f.keepData, "keep-data", false, "with --spawn: keep the server's data dir and log (printed on stderr)")
	fs.StringVar(&f.cpuProfile, "server-cpuprofile", "", "with --spawn: write the server's CPU profile of the measured phase to this file")
	fs.StringVar(&f.heapProfile, "server-heapprofile", "", "with --spawn: write the server's heap profile at the end of the measured phase to this file")

	fs.StringVar(&f.server, "server", "", "without --spawn: the TCP address of a running server")
	fs.IntVar(&f.serverPID, "server-pid", 0, "without --spawn: the running server's PID, for its CPU and memory figures (/proc; without it: its /metrics, if --http)")
	fs.StringVar(&f.data, "data", "", "without --spawn: the running server's data dir, to mint tokens with its key")
	fs.StringVar(&f.adminKey, "admin-key", "", "without --spawn: the admin key, to mint tokens over HTTP (needs --http)")
	fs.StringVar(&f.http, "http", "", "without --spawn: the running server's HTTP address (host:port) for tokens and /metrics")
	fs.BoolVar(&f.tls, "tls", false, "use TLS (with --spawn: the server gets --tls-self-signed and its certificate is pinned)")
	fs.StringVar(&f.tlsPin, "tls-pin", "", "without --spawn: trust the server certificate with this SHA-256 fingerprint; implies --tls")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "without --spawn: verify the server against the CA certificates in this PEM file; implies --tls")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "without --spawn: TLS without verifying the server (testing only); implies --tls")

	fs.StringVar(&f.sourceIPs, "source-ips", "", "local addresses to spread connections over, e.g. 127.0.0.2-127.0.0.60 (ranges, lists, prefixes)")
	fs.IntVar(&f.concurrency, "concurrency", 64, "connections being set up at once")
	fs.BoolVar(&f.json, "json", false, "print the report as one JSON object on stdout (the summary goes to stderr)")
	fs.DurationVar(&f.every, "progress-every", 5*time.Second, "when stderr is not a terminal, print a progress line this often")
}

// target opens the server under test. extraArgs are spawn flags the
// benchmark itself needs.
func (f *benchFlags) target(ctx context.Context, stderr io.Writer, extraArgs ...string) (*bench.Target, error) {
	if f.spawn && f.server != "" {
		return nil, usagef("give either --spawn or --server, not both")
	}
	if !f.spawn && (f.serverBin != "" || len(f.serverArgs) > 0 || len(f.serverEnv) > 0 || f.keepData || f.maxGroupSize != 0 ||
		f.cpuProfile != "" || f.heapProfile != "") {
		return nil, usagef("--server-bin, --server-arg, --server-env, --keep-data, --max-group-size and the profiles need --spawn")
	}
	if f.spawn && (f.serverPID != 0 || f.data != "" || f.adminKey != "" || f.http != "" || f.tlsPin != "" || f.tlsCA != "" || f.insecure) {
		return nil, usagef("--server-pid, --data, --admin-key, --http and the TLS trust flags are for a running server (--server), not --spawn")
	}
	if f.fsync != "" && f.fsync != "always" && f.fsync != "off" {
		return nil, usagef(`--fsync must be "always" or "off"`)
	}
	o := bench.TargetOptions{
		Spawn: f.spawn,
		SpawnOptions: bench.SpawnOptions{Bin: f.serverBin, TLS: f.tls, Keep: f.keepData, Env: f.serverEnv,
			Pprof: f.cpuProfile != "" || f.heapProfile != "", TCP: f.spawnTCP},
		Server: f.server, ServerPID: f.serverPID, DataDir: f.data, AdminKey: f.adminKey, HTTP: f.http,
		TLS: f.tls, TLSPin: f.tlsPin, TLSCA: f.tlsCA, Insecure: f.insecure, Fsync: f.fsync,
	}
	if f.spawn {
		o.Args = append(o.Args, extraArgs...)
		if f.maxGroupSize > 0 {
			o.Args = append(o.Args, "--max-group-size", strconv.Itoa(f.maxGroupSize))
		}
		o.Args = append(o.Args, f.serverArgs...)
	}
	t, err := bench.OpenTarget(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	t.CPUProfile, t.HeapProfile = f.cpuProfile, f.heapProfile
	if t.Spawned != nil && f.keepData {
		fmt.Fprintf(stderr, "pim bench: server data in %s, log in %s\n", t.Spawned.DataDir, t.Spawned.LogPath)
	}
	switch {
	case t.PID == 0 && t.HTTPBase == "":
		fmt.Fprintf(stderr, "pim bench: no --server-pid and no --http: the server's CPU and memory are not measured\n")
	case t.PID == 0:
		fmt.Fprintf(stderr, "pim bench: no --server-pid: the server's CPU and memory come from its /metrics (10 ms resolution, no peak RSS)\n")
	}
	return t, nil
}

func (f *benchFlags) ips() ([]netip.Addr, error) {
	ips, err := bench.ParseSourceIPs(f.sourceIPs)
	if err != nil {
		return nil, usageErr(err)
	}
	return ips, nil
}

// benchReport is what every benchmark result is.
type benchReport interface {
	Rows() []bench.Row
	Passed() bool
}

// printReport prints the summary (and the JSON) and turns a failed check
// into the exit status.
func printReport(cmd *cobra.Command, f *benchFlags, title string, r benchReport) error {
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	summary := stdout
	if f.json {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
			return err
		}
		summary = stderr
	}
	fmt.Fprint(summary, bench.FormatRows(title, r.Rows()))
	if !r.Passed() {
		return errors.New("benchmark failed its checks (see result)")
	}
	return nil
}

// commandLine is the command as run: its path and every flag given.
func commandLine(cmd *cobra.Command) []string {
	args := strings.Fields(cmd.CommandPath())
	cmd.Flags().Visit(func(fl *pflag.Flag) {
		if sv, ok := fl.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				args = append(args, "--"+fl.Name+"="+v)
			}
			return
		}
		args = append(args, "--"+fl.Name+"="+fl.Value.String())
	})
	return args
}

// runBench opens the target, runs fn against it and always closes it.
func runBench(cmd *cobra.Command, f *benchFlags, title string, extraArgs []string,
	fn func(ctx context.Context, t *bench.Target, args []string, prog *bench.Progress) (benchReport, error)) error {
	ctx := cmd.Context()
	stderr := cmd.ErrOrStderr()
	bench.RaiseFileLimit()
	prog := bench.NewProgress(stderr, f.every)
	t, err := f.target(ctx, stderr, extraArgs...)
	if err != nil {
		return err
	}
	r, err := fn(ctx, t, commandLine(cmd), prog)
	prog.Stop()
	closeErr := t.Close()
	if err != nil {
		return err
	}
	if closeErr != nil {
		fmt.Fprintf(stderr, "pim bench: %v\n", closeErr)
	}
	return printReport(cmd, f, title, r)
}

func newBenchCmd() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark a server: idle connections, 1:1 and group traffic, offline catch-up",
		Long: "bench measures a PIM server over real sockets and checks, while it measures, that no\n" +
			"acknowledged message is lost, duplicated or reordered. --spawn starts a fresh server\n" +
			"(and stops it); --server ADDR measures a running one. Reports: docs/benchmarks.md.",
		Example: "  pim bench e2e --spawn --pairs 1000 --duration 20s\n" +
			"  pim bench e2e --spawn --pairs 1000 --rate 2000 --json\n" +
			"  pim bench e2e --spawn --faults kill,cut --duration 60s\n" +
			"  pim bench conns --spawn --clients 15000 --source-ips 127.0.0.2-127.0.0.60\n" +
			"  pim bench group --spawn --members 1000 --online 996\n" +
			"  pim bench sync --spawn --missed 10000\n" +
			"  pim bench catchup --spawn --outage 30s --rate 200\n" +
			"  pim bench wire --spawn [--tls]",
	}
	f.register(cmd.PersistentFlags())
	cmd.AddCommand(newBenchConnsCmd(&f), newBenchE2ECmd(&f), newBenchGroupCmd(&f), newBenchSyncCmd(&f),
		newBenchConnsWorkerCmd(), newBenchServeCmd())
	cmd.AddCommand(newBenchStormCmd())     // bench_storm.go
	cmd.AddCommand(newBenchCatchUpCmd(&f)) // bench_catchup.go
	cmd.AddCommand(newBenchWireCmd(&f))    // bench_wire.go
	return cmd
}

// trafficFlags are the flags of the benchmarks that send messages.
type trafficFlags struct {
	duration, warmup, drain time.Duration
	rate                    float64
	window, size            int
	ack                     ackFlags
}

// ackFlags is how the load generator's devices batch PushAcks (the SDK's defaults).
type ackFlags struct {
	every int
	delay time.Duration
}

func (a *ackFlags) register(fs *pflag.FlagSet) {
	fs.IntVar(&a.every, "ack-every", bench.DefaultAckPolicy.Every, "each device sends a PushAck once this many events are unacknowledged (as the SDK)")
	fs.DurationVar(&a.delay, "ack-delay", bench.DefaultAckPolicy.Delay, "... or this long after the first unacknowledged one (as the SDK)")
}

func (a *ackFlags) policy() (bench.AckPolicy, error) {
	if a.every <= 0 || a.delay <= 0 {
		return bench.AckPolicy{}, usagef("--ack-every and --ack-delay must be positive")
	}
	return bench.AckPolicy{Every: a.every, Delay: a.delay}, nil
}

func (t *trafficFlags) register(fs *pflag.FlagSet) {
	fs.DurationVar(&t.duration, "duration", 10*time.Second, "length of the measured phase")
	fs.DurationVar(&t.warmup, "warmup", 2*time.Second, "load before the measured phase (not counted)")
	fs.DurationVar(&t.drain, "drain-timeout", 30*time.Second, "after the measured phase, how long to wait for every ack and delivery")
	fs.Float64Var(&t.rate, "rate", 0, "messages per second in all, paced (open loop); 0: closed loop with --window per sender")
	fs.IntVar(&t.window, "window", 8, "closed loop: sends in flight per sender (pipelined)")
	fs.IntVar(&t.size, "size", 128, "message body bytes")
	t.ack.register(fs)
}

func (t *trafficFlags) check() error {
	switch {
	case t.duration <= 0:
		return usagef("--duration must be positive")
	case t.warmup < 0 || t.drain <= 0:
		return usagef("--warmup must not be negative and --drain-timeout must be positive")
	case t.rate < 0:
		return usagef("--rate must not be negative")
	case t.window <= 0:
		return usagef("--window must be positive")
	case t.size <= 0 || t.size > 64<<10:
		return usagef("--size must be 1-65536 bytes")
	}
	_, err := t.ack.policy()
	return err
}

func (t *trafficFlags) config() bench.TrafficConfig {
	p, _ := t.ack.policy()
	return bench.TrafficConfig{Window: t.window, Rate: t.rate, Size: t.size, Ack: p}
}

func newBenchE2ECmd(f *benchFlags) *cobra.Command {
	var (
		tf    trafficFlags
		ff    faultFlags
		pairs int
	)
	cmd := &cobra.Command{
		Use:   "e2e",
		Short: "1:1 traffic between sender/receiver pairs: throughput, latency, invariant check (--faults: under kills and cuts)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := tf.check(); err != nil {
				return err
			}
			if pairs <= 0 {
				return usagef("--pairs must be positive")
			}
			fl := cmd.Flags()
			if fl.Changed("faults") {
				if !fl.Changed("pairs") {
					pairs = faultPairs
				}
				return runE2EFaults(cmd, f, &tf, pairs, &ff)
			}
			if fl.Changed("kill-every") || fl.Changed("cut-every") {
				return usagef("--kill-every and --cut-every need --faults")
			}
			ips, err := f.ips()
			if err != nil {
				return err
			}
			return runBench(cmd, f, "pim bench e2e", nil, func(ctx context.Context, t *bench.Target, args []string, prog *bench.Progress) (benchReport, error) {
				return bench.RunE2E(ctx, t, bench.E2EConfig{Pairs: pairs, Warmup: tf.warmup, Duration: tf.duration,
					DrainTimeout: tf.drain, Traffic: tf.config(), Concurrency: f.concurrency, SourceIPs: ips}, args, prog)
			})
		}),
	}
	tf.register(cmd.Flags())
	ff.register(cmd.Flags())
	cmd.Flags().IntVar(&pairs, "pairs", 100, "sender/receiver pairs (user s_i sends to user r_i)")
	return cmd
}

func newBenchGroupCmd(f *benchFlags) *cobra.Command {
	var (
		tf                              trafficFlags
		members, online, senders, batch int
	)
	cmd := &cobra.Command{
		Use:   "group",
		Short: "fan-out from senders to one group: deliveries/s, latency, per-member invariant check",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := tf.check(); err != nil {
				return err
			}
			if online < 0 {
				online = members - senders
			}
			if members <= 0 || senders <= 0 || online < 0 || senders+online > members {
				return usagef("need --members > 0, --senders > 0 and --senders + --online <= --members")
			}
			ips, err := f.ips()
			if err != nil {
				return err
			}
			var extra []string
			if f.maxGroupSize == 0 && members > 1000 {
				extra = []string{"--max-group-size", strconv.Itoa(members)}
			}
			return runBench(cmd, f, "pim bench group", extra, func(ctx context.Context, t *bench.Target, args []string, prog *bench.Progress) (benchReport, error) {
				return bench.RunGroup(ctx, t, bench.GroupConfig{Members: members, Online: online, Senders: senders, Batch: batch,
					Warmup: tf.warmup, Duration: tf.duration, DrainTimeout: tf.drain, Traffic: tf.config(),
					Concurrency: f.concurrency, SourceIPs: ips}, args, prog)
			})
		}),
	}
	tf.register(cmd.Flags())
	cmd.Flags().IntVar(&members, "members", 1000, "group size (the senders are members)")
	cmd.Flags().IntVar(&online, "online", -1, "members connected as receivers (default: every member but the senders)")
	cmd.Flags().IntVar(&senders, "senders", 4, "members sending to the group")
	cmd.Flags().IntVar(&batch, "batch", 100, "members added per group request while building the group")
	return cmd
}

func newBenchSyncCmd(f *benchFlags) *cobra.Command {
	var (
		missed, window, size int
		timeout              time.Duration
		ack                  ackFlags
	)
	cmd := &cobra.Command{
		Use:   "sync",
		Short: "an offline device catches up on N missed messages: time and bytes",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if missed <= 0 || window <= 0 || size <= 0 || size > 64<<10 || timeout <= 0 {
				return usagef("--missed, --window, --timeout must be positive and --size 1-65536")
			}
			ap, err := ack.policy()
			if err != nil {
				return err
			}
			ips, err := f.ips()
			if err != nil {
				return err
			}
			return runBench(cmd, f, "pim bench sync", nil, func(ctx context.Context, t *bench.Target, args []string, prog *bench.Progress) (benchReport, error) {
				return bench.RunSync(ctx, t, bench.SyncConfig{Missed: missed, Window: window, Size: size, Timeout: timeout,
					SourceIPs: ips, Ack: ap}, args, prog)
			})
		}),
	}
	cmd.Flags().IntVar(&missed, "missed", 10000, "messages sent to the device while it is offline")
	cmd.Flags().IntVar(&window, "window", 256, "sends in flight while filling")
	cmd.Flags().IntVar(&size, "size", 128, "message body bytes")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "time limit of the fill and of the catch-up")
	ack.register(cmd.Flags())
	return cmd
}

func newBenchConnsCmd(f *benchFlags) *cobra.Command {
	var (
		clients, perProc int
		idle, settle     time.Duration
		ping             bool
	)
	cmd := &cobra.Command{
		Use:   "conns",
		Short: "N idle authenticated connections: server memory per connection, connect rate, idle CPU",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if clients <= 0 || perProc <= 0 || idle <= 0 || settle < 0 {
				return usagef("--clients, --per-proc and --idle must be positive")
			}
			ips, err := f.ips()
			if err != nil {
				return err
			}
			return runBench(cmd, f, "pim bench conns", nil, func(ctx context.Context, t *bench.Target, args []string, prog *bench.Progress) (benchReport, error) {
				return bench.RunConns(ctx, t, bench.ConnsConfig{Clients: clients, Concurrency: f.concurrency, SourceIPs: ips,
					PerProc: perProc, Idle: idle, Settle: settle, Ping: ping}, args, prog)
			})
		}),
	}
	cmd.Flags().IntVar(&clients, "clients", 1000, "idle connections, each its own user")
	cmd.Flags().IntVar(&perProc, "per-proc", 15000, "connections per load process; more are spread over worker processes (a process may hold at most RLIMIT_NOFILE files)")
	cmd.Flags().DurationVar(&idle, "idle", 5*time.Second, "the idle phase whose server CPU is measured")
	cmd.Flags().DurationVar(&settle, "settle", 2*time.Second, "read the server's RSS for at least this long, until it is stable, before and after connecting")
	cmd.Flags().BoolVar(&ping, "ping", true, "ping each connection once per heartbeat interval (spread evenly), as a real client does")
	return cmd
}

func newBenchConnsWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "conns-worker",
		Short:  "one load process of pim bench conns (internal; reads its job on stdin)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return bench.RunConnsWorker(cmd.Context(), cmd.InOrStdin(), cmd.OutOrStdout())
		}),
	}
}
