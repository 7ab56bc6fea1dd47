package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/bench"
	"github.com/pim-project/pim/internal/server"
)

// BenchmarkPipeline measures the whole send pipeline over loopback TCP
// against a real in-process server: 64 concurrent senders, each with one
// send in flight (send, wait for the SendAck, send the next), each to its
// own receiver, whose device takes the Push and acknowledges it in batches
// (as the SDK does). One op is one message: durably stored (fsync, group
// commit) and acknowledged, and pushed to the receiver. Every run checks
// that nothing was lost, duplicated or reordered. Metrics: msgs/s, and the
// p99 of send -> ack and send -> deliver in ms.
//
// The fsync=off variant is not a durability mode anyone should run: it shows
// how much of the time is the disk's.
//
//	go test -run '^$' -bench Pipeline -count 6 ./internal/e2e
func BenchmarkPipeline(b *testing.B) {
	for _, fsync := range []string{server.FsyncAlways, server.FsyncOff} {
		b.Run("fsync="+fsync, func(b *testing.B) { benchPipeline(b, 64, 1, fsync, false) })
	}
}

// BenchmarkPipelineWindow is BenchmarkPipeline (fsync=always, 64 senders)
// with each sender keeping 1 or 8 sends in flight (pipelined, as the SDK
// and pim bench e2e do).
//
//	go test -run '^$' -bench PipelineWindow -count 6 ./internal/e2e
func BenchmarkPipelineWindow(b *testing.B) {
	for _, w := range []int{1, 8} {
		b.Run(fmt.Sprintf("window=%d", w), func(b *testing.B) { benchPipeline(b, 64, w, server.FsyncAlways, false) })
	}
}

// BenchmarkPipelineReadState is BenchmarkPipeline (fsync=always) with and
// without the read state (conversation lists and delivered receipts): the
// ratio is what maintaining it costs per message.
//
//	go test -run '^$' -bench PipelineReadState -count 6 ./internal/e2e
func BenchmarkPipelineReadState(b *testing.B) {
	for _, off := range []bool{false, true} {
		b.Run(fmt.Sprintf("readstate=%v", !off), func(b *testing.B) { benchPipeline(b, 64, 1, server.FsyncAlways, off) })
	}
}

func benchPipeline(b *testing.B, senders, window int, fsync string, noReadState bool) {
	dir := b.TempDir()
	srv, err := server.Start(server.Config{DataDir: dir, TCPAddr: "127.0.0.1:0", Fsync: fsync, NoReadState: noReadState})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	users := make([]string, 2*senders)
	toks := make([]string, 2*senders)
	for i := range senders {
		users[i], users[senders+i] = fmt.Sprintf("s%d", i), fmt.Sprintf("r%d", i)
	}
	for i, u := range users {
		if toks[i], err = srv.Keys().Issue(u, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	conns, err := bench.DialAll(ctx, 2*senders, 16, func(i int) bench.DialOptions {
		return bench.DialOptions{Addr: srv.TCPAddr().String(), Token: toks[i], Device: "d"}
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	per := (b.N + senders - 1) / senders
	tr := bench.NewTraffic(bench.TrafficConfig{Window: window, Size: 128, Limit: uint64(per)},
		conns[:senders], conns[senders:],
		func(i int) bench.SendFields { return bench.SendFields{ToUser: users[senders+i], Type: 1} },
		func(i int) []int { return []int{i} })
	b.ResetTimer()
	start := time.Now()
	tr.Phase.Begin()
	tr.Start()
	acked := tr.WaitAcked(ctx, 5*time.Minute)
	delivered := tr.WaitDelivered(ctx, time.Minute)
	el := time.Since(start)
	b.StopTimer()
	tr.Phase.End()
	tr.Close()
	res := tr.Result()
	if !acked || !delivered || res.Acked != int64(per*senders) || len(res.Errors) > 0 {
		b.Fatalf("acked %d of %d, delivered %d: %v", res.Acked, per*senders, res.Delivered, res.Errors)
	}
	if res.Lost != 0 || res.Duplicated != 0 || res.OutOfOrder != 0 {
		b.Fatalf("invariants broken: %d lost, %d duplicated, %d out of order", res.Lost, res.Duplicated, res.OutOfOrder)
	}
	b.ReportMetric(float64(res.Acked)/el.Seconds(), "msgs/s")
	b.ReportMetric(res.Ack.P99, "p99-ack-ms")
	b.ReportMetric(res.Deliver.P99, "p99-deliver-ms")
}
