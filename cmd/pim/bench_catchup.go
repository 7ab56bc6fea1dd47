package main

// bench_catchup.go: `pim bench catchup`, the time a Go SDK device takes to
// catch up after its network was gone for --outage while others kept
// sending to it (internal/bench.RunCatchUp; docs/benchmarks.md).
//
// Invariants: built like the other benchmarks (benchTarget, a Run*
// function, printReport): one JSON object on stdout with --json, exit
// status 1 when a check failed, 2 on a usage error.

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/bench"
)

func newBenchCatchUpCmd(f *benchFlags) *cobra.Command {
	var (
		cfg     bench.CatchUpConfig
		noNotif bool
	)
	cmd := &cobra.Command{
		Use:   "catchup",
		Short: "an SDK device loses its network for --outage while others send to it: time to catch up when it returns",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			switch {
			case cfg.Outage <= 0 || cfg.Rate <= 0 || cfg.Senders <= 0:
				return usagef("--outage, --rate and --senders must be positive")
			case cfg.Size <= 0 || cfg.Size > 64<<10:
				return usagef("--size must be 1-65536 bytes")
			case cfg.Warmup < 0 || cfg.Timeout <= 0 || cfg.DrainTimeout <= 0:
				return usagef("--warmup must not be negative, --timeout and --drain-timeout must be positive")
			case cfg.Cut != bench.CutDrop && cfg.Cut != bench.CutBlackhole:
				return usagef("--cut must be %q or %q", bench.CutDrop, bench.CutBlackhole)
			case f.sourceIPs != "":
				return usagef("--source-ips does not apply to catchup")
			}
			cfg.NetworkChanged = !noNotif
			return runBench(cmd, f, "pim bench catchup", nil, func(ctx context.Context, t *bench.Target, args []string, prog *bench.Progress) (benchReport, error) {
				return bench.RunCatchUp(ctx, t, cfg, args, prog)
			})
		}),
	}
	fs := cmd.Flags()
	fs.DurationVar(&cfg.Outage, "outage", 30*time.Second, "how long the device's network is gone")
	fs.Float64Var(&cfg.Rate, "rate", 200, "messages per second in all that the senders send to the device, all along")
	fs.IntVar(&cfg.Senders, "senders", 4, "users sending to the device (each its own 1:1 conversation)")
	fs.IntVar(&cfg.Size, "size", 128, "message body bytes")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "receiving online before the outage")
	fs.StringVar(&cfg.Cut, "cut", bench.CutDrop, `how the network goes: "drop" (its connection closed, new ones refused) or "blackhole" (everything stalls, nobody is told)`)
	fs.BoolVar(&noNotif, "no-network-changed", false, "on return, do not call Client.NetworkChanged (as an app does on a connectivity change): the SDK finds out by itself, after its backoff")
	fs.DurationVar(&cfg.Timeout, "timeout", 3*time.Minute, "time limit to catch up after the network returns")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "after catching up, how long to wait for every ack and delivery")
	return cmd
}
