#!/usr/bin/env bash
# The benchmark suite of BENCHMARKS.md: every `pim bench` run, REPS times,
# interleaved (so that a noisy neighbour spreads over all of them), one JSON
# report per run in bench/results/DATE-NAME[-rN].json, CPU/heap profiles of
# the first repetition in bench/results/profiles/.
#
#   go build -buildvcs=true -o /tmp/pim ./cmd/pim
#   PIM=/tmp/pim REPS=3 bench/run.sh
#
# Runs take about 4 minutes per repetition on the 2-core machine. Every run
# spawns its own fresh server (--spawn) and stops it.
set -u
cd "$(dirname "$0")/.."
PIM=${PIM:-pim}
REPS=${REPS:-3}
DATE=${DATE:-$(date -u +%F)}
R=bench/results
P=$R/profiles
mkdir -p "$P"
run() { # name, args...
  local name=$1; shift
  echo "== $name: pim bench $* ($(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$PIM" bench "$@" --json > "$R/$DATE-$name.json" || echo "   (exit $?: a check failed, see the report)" >&2
}
for rep in $(seq 1 "$REPS"); do
  prof() { if [ "$rep" = 1 ]; then echo "--server-$1 $P/$DATE-$2.$3"; fi; }
  run conns-15000-tcp-r$rep conns --spawn --clients 15000 --source-ips 127.0.0.2-127.0.0.60 $(prof heapprofile conns-15000-tcp heap)
  run conns-15000-tls-r$rep conns --spawn --clients 15000 --source-ips 127.0.0.2-127.0.0.60 --tls $(prof heapprofile conns-15000-tls heap)
  run e2e-1000pairs-closed-r$rep e2e --spawn --pairs 1000 --duration 20s --warmup 3s $(prof cpuprofile e2e-1000pairs-closed cpu)
  run e2e-64pairs-closed-r$rep e2e --spawn --pairs 64 --duration 20s --warmup 3s $(prof cpuprofile e2e-64pairs-closed cpu)
  run e2e-1000pairs-rate2000-r$rep e2e --spawn --pairs 1000 --rate 2000 --duration 20s --warmup 3s $(prof cpuprofile e2e-1000pairs-rate2000 cpu)
  run e2e-64pairs-rate10000-r$rep e2e --spawn --pairs 64 --rate 10000 --duration 20s --warmup 3s
  run e2e-64pairs-rate4000-r$rep e2e --spawn --pairs 64 --rate 4000 --duration 20s --warmup 3s
  run group-1000-r$rep group --spawn --members 1000 --duration 20s --warmup 3s $(prof cpuprofile group-1000 cpu)
  run sync-10000-r$rep sync --spawn --missed 10000 $(prof cpuprofile sync-10000 cpu)
done
run e2e-64pairs-closed-fsyncoff e2e --spawn --pairs 64 --duration 20s --warmup 3s --fsync off
run conns-19000-tcp-2procs conns --spawn --clients 19000 --per-proc 10000 --source-ips 127.0.0.2-127.0.0.60
run e2e-faults-kill-cut e2e --spawn --faults kill,cut --duration 60s

# The go test benchmarks of the hot paths (6 runs each, for benchstat).
go test -run '^$' -bench . -count 6 ./internal/wire > "$R/$DATE-gotest-wire.txt"
go test -run '^$' -bench Pipeline -count 6 ./internal/e2e > "$R/$DATE-gotest-pipeline.txt"
go test -run '^$' -bench . -count 6 ./internal/store/pebble > "$R/$DATE-gotest-store.txt"
