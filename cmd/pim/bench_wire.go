package main

// bench_wire.go: `pim bench wire`, bytes on the wire per message and per
// idle hour of heartbeats, counted through proxies in front of Go SDK
// devices (internal/bench.RunWire; docs/benchmarks.md).
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

func newBenchWireCmd(f *benchFlags) *cobra.Command {
	var cfg bench.WireConfig
	cmd := &cobra.Command{
		Use:   "wire",
		Short: "bytes on the wire per message (sender and receiver SDK devices) and per idle hour of heartbeats",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			switch {
			case cfg.Messages <= 0 || cfg.Burst < 0:
				return usagef("--messages must be positive and --burst not negative")
			case cfg.Size <= 0 || cfg.Size > 64<<10:
				return usagef("--size must be 1-65536 bytes")
			case cfg.Gap <= 0 || cfg.Idle <= 0 || cfg.PingEvery <= 0 || cfg.Timeout <= 0:
				return usagef("--gap, --idle, --ping-every and --timeout must be positive")
			case f.sourceIPs != "":
				return usagef("--source-ips does not apply to wire")
			}
			return runBench(cmd, f, "pim bench wire", nil, func(ctx context.Context, t *bench.Target, args []string, prog *bench.Progress) (benchReport, error) {
				return bench.RunWire(ctx, t, cfg, args, prog)
			})
		}),
	}
	fs := cmd.Flags()
	fs.IntVar(&cfg.Messages, "messages", 20, "messages sent one at a time, each followed by --gap of quiet")
	fs.IntVar(&cfg.Burst, "burst", 100, "then this many messages queued at once (0: none)")
	fs.IntVar(&cfg.Size, "size", 128, "message body bytes")
	fs.DurationVar(&cfg.Gap, "gap", 1500*time.Millisecond, "quiet after each message, longer than twice the SDK's ack delay (500 ms: the receiver acks, the server sends the sender a receipt, the sender acks it) so that the frames a message causes are counted with it")
	fs.DurationVar(&cfg.Idle, "idle", 5*time.Second, "how long to watch the idle device's pings")
	fs.DurationVar(&cfg.PingEvery, "ping-every", 500*time.Millisecond, "the idle device's heartbeat interval during --idle (only the bytes are measured; the hourly counts come from the SDK's default schedule)")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "time limit to connect and for each message")
	return cmd
}
