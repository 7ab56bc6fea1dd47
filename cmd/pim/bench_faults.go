package main

// bench_faults.go: `pim bench e2e --faults kill,cut`, 1:1 traffic between
// Go SDK devices while the spawned server is killed with SIGKILL and
// restarted on the same port and the devices' connections are cut through a
// fault-injecting proxy (internal/bench.RunE2EFaults; docs/benchmarks.md).

import (
	"context"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pim-project/pim/internal/bench"
)

// faultPairs is --pairs with --faults unless given: each pair is two SDK
// clients with their own local stores, heavier than the raw devices.
const faultPairs = 20

// faultFlags are the fault-injection flags of `pim bench e2e`.
type faultFlags struct {
	faults              string
	killEvery, cutEvery time.Duration
}

func (ff *faultFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&ff.faults, "faults", "", "inject faults during the measured phase, with Go SDK devices: kill (SIGKILL the spawned server and restart it), cut (cut every connection through a proxy), or kill,cut; --pairs then defaults to 20")
	fs.DurationVar(&ff.killEvery, "kill-every", 5*time.Second, "with --faults kill: kill and restart the server this often")
	fs.DurationVar(&ff.cutEvery, "cut-every", 2*time.Second, "with --faults cut: cut every connection this often")
}

// runE2EFaults checks the flags of a fault run and runs it.
func runE2EFaults(cmd *cobra.Command, f *benchFlags, tf *trafficFlags, pairs int, ff *faultFlags) error {
	faults, err := bench.ParseFaults(ff.faults)
	if err != nil {
		return usagef("--faults: %v", err)
	}
	switch {
	case ff.killEvery <= 0 || ff.cutEvery <= 0:
		return usagef("--kill-every and --cut-every must be positive")
	case tf.rate > 0:
		return usagef("--faults runs closed loop (--window per sender): drop --rate")
	case f.sourceIPs != "":
		return usagef("--source-ips does not apply to --faults (the SDK devices dial from the default address)")
	case faults.Kill && !f.spawn:
		return usagef("--faults kill needs --spawn: the benchmark kills and restarts the server it started")
	case faults.Kill && (f.cpuProfile != "" || f.heapProfile != ""):
		return usagef("the server profiles do not survive --faults kill")
	}
	faults.KillEvery, faults.CutEvery = ff.killEvery, ff.cutEvery
	if faults.Kill {
		// The server comes back on the port its clients (and the proxy) dial.
		if f.spawnTCP, err = bench.FreeLoopbackAddr(); err != nil {
			return err
		}
	}
	ack, _ := tf.ack.policy()
	return runBench(cmd, f, "pim bench e2e --faults", nil, func(ctx context.Context, t *bench.Target, args []string, prog *bench.Progress) (benchReport, error) {
		return bench.RunE2EFaults(ctx, t, bench.FaultsConfig{Faults: faults, Pairs: pairs, Warmup: tf.warmup,
			Duration: tf.duration, DrainTimeout: tf.drain, Window: tf.window, Size: tf.size, Ack: ack}, args, prog)
	})
}
