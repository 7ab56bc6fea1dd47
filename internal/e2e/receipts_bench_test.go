package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/server"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// BenchmarkReceipts1000 measures one receipt query of a message in a
// 1,000-member group that every member has read, over loopback TCP against
// an in-process server: read_count and the first page of 100 readers. The
// query walks the receipt index from the message's seq (O(log n + readers)),
// never the conversation; a longer conversation does not change it.
//
//	go test -run '^$' -bench Receipts1000 -count 6 ./internal/e2e
func BenchmarkReceipts1000(b *testing.B) {
	srv, err := server.Start(server.Config{DataDir: b.TempDir(), TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		Fsync: server.FsyncOff, MaxGroupSize: 1001})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tok, _ := srv.Keys().Issue("owner", time.Hour)
	owner, err := client.Dial(ctx, client.Options{Addr: srv.TCPAddr().String(), Token: tok, Device: "d", DiscardPushes: true})
	if err != nil {
		b.Fatal(err)
	}
	defer owner.Close()
	members := ids(1000, "m")
	if _, err := owner.Group(ctx, &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_CREATE, Group: "g:k", Users: members}); err != nil {
		b.Fatal(err)
	}
	for i := range 50 { // a conversation with some history
		if _, err := owner.Send(ctx, &pimv1.SendReq{ClientMsgId: fmt.Sprint(i), Conv: "g:k", Type: 1, Body: []byte("x")}); err != nil {
			b.Fatal(err)
		}
	}
	const seq = 2 // the first message: every reader counts
	for _, m := range members {
		if _, err := srv.Logic().Read(ctx, m, "d", &pimv1.ReadReq{Conv: "g:k", Seq: 51}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		r, err := owner.Receipts(ctx, &pimv1.ReceiptsReq{Conv: "g:k", Seq: seq, Limit: 100})
		if err != nil || r.ReadCount != 1000 || len(r.Readers) != 100 {
			b.Fatalf("receipts: %v %v", r, err)
		}
	}
}
