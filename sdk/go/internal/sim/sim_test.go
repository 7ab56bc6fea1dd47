package sim

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	flagSeeds  = flag.Int("sim.seeds", 1000, "number of seeds to run (seeds 1..N)")
	flagSeed   = flag.Uint64("sim.seed", 0, "run only this seed, with a trace")
	flagActive = flag.Duration("sim.active", 0, "virtual duration of the faulty phase (0: default)")
	flagV      = flag.Bool("sim.v", false, "print statistics of every seed")
)

func TestSimulation(t *testing.T) {
	seeds := make([]uint64, 0, *flagSeeds)
	if *flagSeed != 0 {
		seeds = append(seeds, *flagSeed)
	} else {
		for s := 1; s <= *flagSeeds; s++ {
			seeds = append(seeds, uint64(s))
		}
	}
	active := *flagActive
	if active == 0 && raceEnabled {
		active = 20 * time.Second
	}
	// The runs allocate a lot of short-lived garbage: trade memory for time.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	start := time.Now()
	var (
		mu     sync.Mutex
		failed []Result
		total  Stats
		next   int
	)
	workers := min(runtime.GOMAXPROCS(0), len(seeds))
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= len(seeds) {
					mu.Unlock()
					return
				}
				seed := seeds[next]
				next++
				mu.Unlock()
				res := Run(Options{Seed: seed, Active: active, Trace: *flagSeed != 0})
				mu.Lock()
				if len(res.Violations) > 0 {
					failed = append(failed, res)
				}
				total.Sent += res.Stats.Sent
				total.Shown += res.Stats.Shown
				total.Commands += res.Stats.Commands
				total.Faults += res.Stats.Faults
				total.Restarts += res.Stats.Restarts
				total.BudgetFailures += res.Stats.BudgetFailures
				total.ReResolves += res.Stats.ReResolves
				total.Steps += res.Stats.Steps
				total.DeadConns += res.Stats.DeadConns
				total.GoAways += res.Stats.GoAways
				total.Learned += res.Stats.Learned
				total.Reads += res.Stats.Reads
				total.Hidden += res.Stats.Hidden
				total.Receipts += res.Stats.Receipts
				total.ListReqs += res.Stats.ListReqs
				total.StaleEntries += res.Stats.StaleEntries
				total.Virtual += res.Stats.Virtual
				if *flagV {
					t.Logf("seed %d: %+v", seed, res.Stats)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("%d seeds in %v: %d messages sent, %d shown, %d commands, %d faults, %d app restarts, "+
		"%d budget failures, %d dead connections detected, %d GoAways, %d re-resolves, "+
		"%d networks with a learned heartbeat, %d read, %d hidden and %d receipt events shown, "+
		"%d ConvListReqs, %d stale entries refetched, %d steps, %v virtual",
		len(seeds), time.Since(start).Round(time.Millisecond), total.Sent, total.Shown, total.Commands,
		total.Faults, total.Restarts, total.BudgetFailures, total.DeadConns, total.GoAways, total.ReResolves,
		total.Learned, total.Reads, total.Hidden, total.Receipts, total.ListReqs, total.StaleEntries,
		total.Steps, total.Virtual.Round(time.Second))
	for _, res := range failed {
		var b strings.Builder
		fmt.Fprintf(&b, "seed %d: %d violations:\n", res.Seed, len(res.Violations))
		for i, v := range res.Violations {
			if i == 10 {
				fmt.Fprintf(&b, "  ...\n")
				break
			}
			fmt.Fprintf(&b, "  %s\n", v)
		}
		if len(res.Trace) > 0 {
			tr := res.Trace
			if len(tr) > traceKeep && os.Getenv("SIM_FULL_TRACE") == "" {
				fmt.Fprintf(&b, "  (last %d of %d trace lines; SIM_FULL_TRACE=1 for all)\n", traceKeep, len(tr))
				tr = tr[len(tr)-traceKeep:]
			}
			for _, l := range tr {
				fmt.Fprintf(&b, "  | %s\n", l)
			}
		}
		fmt.Fprintf(&b, "replay: go test ./sdk/go/internal/sim -run 'TestSimulation$' -count=1 -v -sim.seed=%d", res.Seed)
		if raceEnabled {
			b.WriteString(" -race")
		}
		if *flagActive != 0 {
			fmt.Fprintf(&b, " -sim.active=%v", *flagActive)
		}
		t.Error(b.String())
	}
}
