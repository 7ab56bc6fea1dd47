package pebblestore_test

import (
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pim-project/pim/internal/store"
	pebblestore "github.com/pim-project/pim/internal/store/pebble"
	"github.com/pim-project/pim/internal/store/storetest"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(tb testing.TB, dir string) *pebblestore.Store {
	tb.Helper()
	s, err := pebblestore.Open(dir, pebblestore.Options{Sync: true, Logger: quiet})
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dir string) store.Store { return open(t, dir) })
}

// TestConformanceNoSync: the same contract holds without fsync (only
// durability against machine crashes is weaker, which no test here sees).
func TestConformanceNoSync(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dir string) store.Store {
		s, err := pebblestore.Open(dir, pebblestore.Options{Sync: false, Logger: quiet})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		return s
	})
}

var body128 = make([]byte, 128)

func sendReq(conv, sender string, n int64) store.SendRequest {
	return store.SendRequest{
		Conv: conv, Sender: sender, Device: "bench", ClientMsgID: fmt.Sprintf("c%d", n),
		MsgID: fmt.Sprintf("m%d", n), Type: pimv1.MessageType_MESSAGE_TYPE_BINARY,
		Body: body128, ClientTime: n, ServerTime: n, ClientSeq: uint64(n),
	}
}

// BenchmarkSendDurable: one sender, one 1:1 conversation, each Send fsynced.
func BenchmarkSendDurable(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	conv := store.DirectConv("alice", "bob")
	ctx := b.Context()
	b.ResetTimer()
	for i := range b.N {
		if _, err := s.Send(ctx, sendReq(conv, "alice", int64(i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkSendDurableParallel: ~64 concurrent senders (GOMAXPROCS x 32),
// each in its own 1:1 conversation; concurrent Sends share fsyncs.
func BenchmarkSendDurableParallel(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	ctx := b.Context()
	var senders, n atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := senders.Add(1)
		sender := fmt.Sprintf("s%d", id)
		conv := store.DirectConv(sender, fmt.Sprintf("r%d", id))
		for pb.Next() {
			if _, err := s.Send(ctx, sendReq(conv, sender, n.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkAck: concurrent acks of advancing cursors, the hot path of
// delivery (one per push batch).
func BenchmarkAck(b *testing.B) {
	s := open(b, b.TempDir())
	defer s.Close()
	ctx := b.Context()
	const users = 64
	for u := range users {
		if _, err := s.Send(ctx, sendReq(store.DirectConv(fmt.Sprint("a", u), fmt.Sprint("b", u)), fmt.Sprint("a", u), int64(u))); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := next.Add(1)
		user := fmt.Sprint("a", id%users)
		var seq uint64
		for pb.Next() {
			seq++
			dev := fmt.Sprint("dev", id, "-", seq) // a new cursor each time: every ack writes
			if _, err := s.Ack(ctx, user, dev, 1); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// OnCommit sees every delivery once, and each user's events in user-seq
// order, however many writers race.
func TestOnCommitInUserSeqOrder(t *testing.T) {
	s, ann := openAnnounced(t)
	users := []string{"a", "b", "c", "d"}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				from, to := users[(w+i)%4], users[(w+2*i+1)%4]
				if _, err := s.Send(t.Context(), store.SendRequest{Conv: store.DirectConv(from, to), Sender: from, Device: "d",
					ClientMsgID: fmt.Sprintf("%d-%d", w, i), Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("x")}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	ann.check(t, s, users)
}

// announced records what OnCommit announces and checks that each user's
// events arrive once, gap-free, in user-seq order.
type announced struct {
	mu   sync.Mutex
	last map[string]uint64
	bad  []string
}

// openAnnounced opens a store whose OnCommit feeds the returned record; it
// is closed at the end of the test.
func openAnnounced(t *testing.T) (*pebblestore.Store, *announced) {
	t.Helper()
	a := &announced{last: map[string]uint64{}}
	s, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Logger: quiet, OnCommit: a.record})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, a
}

func (a *announced) record(ds []store.Delivery) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range ds {
		if d.Event.UserSeq != a.last[d.User]+1 {
			a.bad = append(a.bad, fmt.Sprintf("%s: %d after %d", d.User, d.Event.UserSeq, a.last[d.User]))
		}
		a.last[d.User] = d.Event.UserSeq
	}
}

// check fails t if an announcement was out of order, or if a user's head
// is not the last event announced to them.
func (a *announced) check(t *testing.T, s *pebblestore.Store, users []string) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.bad) > 0 {
		t.Fatalf("%d deliveries out of order or missing, e.g. %v", len(a.bad), a.bad[:min(5, len(a.bad))])
	}
	for _, u := range users {
		if h, _ := s.Head(t.Context(), u); h != a.last[u] {
			t.Fatalf("%s: head %d, announced up to %d", u, h, a.last[u])
		}
	}
}
