package pebblestore_test

// Tests of backup.go: a checkpoint taken while writes go on holds
// everything acknowledged before it, and ResetEpoch changes the epoch and
// nothing else.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pim-project/pim/internal/store"
	pebblestore "github.com/pim-project/pim/internal/store/pebble"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// acked is one acknowledged send.
type acked struct {
	conv string
	seq  uint64
	body string
}

func textReq(conv, sender, id string) store.SendRequest {
	return store.SendRequest{Conv: conv, Sender: sender, Device: "d", ClientMsgID: id, MsgID: "m-" + id,
		Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte(id)}
}

// checkHas fails unless s holds every message of want, and each
// conversation's seqs are 1..head without a gap.
func checkHas(t *testing.T, s store.Store, want []acked) {
	t.Helper()
	byConv := map[string]map[uint64]string{}
	for _, a := range want {
		if byConv[a.conv] == nil {
			byConv[a.conv] = map[uint64]string{}
		}
		byConv[a.conv][a.seq] = a.body
	}
	for conv, seqs := range byConv {
		msgs, _, err := s.History(t.Context(), conv, 0, 0, 1<<20)
		if err != nil {
			t.Fatalf("history %s: %v", conv, err)
		}
		got := map[uint64]string{}
		for i, m := range msgs {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d has seq %d (a gap)", conv, i, m.Seq)
			}
			got[m.Seq] = string(m.Body)
		}
		for seq, body := range seqs {
			if got[seq] != body {
				t.Fatalf("%s #%d: got %q, want %q (acknowledged before the checkpoint; %d messages there)", conv, seq, got[seq], body, len(msgs))
			}
		}
	}
}

// A checkpoint taken while four writers keep sending (without fsync, so the
// WAL flush matters) opens as a store with the same epoch that holds every
// message acknowledged before Checkpoint was called.
func TestCheckpointWhileWriting(t *testing.T) {
	s, err := pebblestore.Open(t.TempDir(), pebblestore.Options{Sync: false, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var (
		mu   sync.Mutex
		done []acked
		wg   sync.WaitGroup
	)
	stop := make(chan struct{})
	started := make(chan struct{}, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := fmt.Sprint("u", w)
			conv := store.DirectConv(from, fmt.Sprint("v", w))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("%d-%d", w, i)
				res, err := s.Send(t.Context(), textReq(conv, from, id))
				if err != nil {
					t.Errorf("send %s: %v", id, err)
					return
				}
				mu.Lock()
				done = append(done, acked{conv: conv, seq: res.Message.Seq, body: id})
				mu.Unlock()
				if i == 50 {
					started <- struct{}{} // this writer is well under way
				}
			}
		}()
	}
	for range 4 {
		<-started
	}
	mu.Lock()
	before := append([]acked(nil), done...)
	mu.Unlock()
	dir := filepath.Join(t.TempDir(), "ckpt", "store")
	err = s.Checkpoint(dir)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if len(before) < 200 {
		t.Fatalf("only %d sends before the checkpoint", len(before))
	}

	c := open(t, dir)
	defer c.Close()
	if c.Epoch() != s.Epoch() {
		t.Fatalf("checkpoint epoch %s, store's %s: a checkpoint keeps the epoch", c.Epoch(), s.Epoch())
	}
	checkHas(t, c, before)
	// The copy is a store of its own: it takes writes, the original does not see them.
	conv := store.DirectConv("u0", "v0")
	res, err := c.Send(t.Context(), textReq(conv, "u0", "after-restore"))
	if err != nil {
		t.Fatal(err)
	}
	orig, err := s.Send(t.Context(), textReq(conv, "u0", "after-restore"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate || orig.Duplicate {
		t.Fatalf("a send to the copy and to the original: duplicate %v, %v; want two stores", res.Duplicate, orig.Duplicate)
	}
}

func TestCheckpointRefusals(t *testing.T) {
	s := open(t, t.TempDir())
	exists := t.TempDir()
	if err := s.Checkpoint(exists); err == nil {
		t.Fatal("checkpoint into an existing directory succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Checkpoint(filepath.Join(t.TempDir(), "x")); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("checkpoint of a closed store: %v, want ErrClosed", err)
	}
}

// ResetEpoch gives a closed data set a new epoch and keeps its data; it
// refuses an open store, a missing directory and an empty database.
func TestResetEpoch(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var want []acked
	for i := range 20 {
		id := fmt.Sprint("m", i)
		res, err := s.Send(t.Context(), textReq(store.DirectConv("alice", "bob"), "alice", id))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, acked{conv: res.Message.Conv, seq: res.Message.Seq, body: id})
	}
	if _, err := s.Ack(t.Context(), "bob", "phone", 7); err != nil {
		t.Fatal(err)
	}
	epoch := s.Epoch()
	if _, _, err := pebblestore.ResetEpoch(dir, quiet); err == nil {
		t.Fatal("ResetEpoch of an open store succeeded")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	old, fresh, err := pebblestore.ResetEpoch(dir, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if old != epoch || fresh == epoch || len(fresh) != 32 {
		t.Fatalf("ResetEpoch = %q, %q; the store's epoch was %q", old, fresh, epoch)
	}
	s = open(t, dir)
	defer s.Close()
	if s.Epoch() != fresh {
		t.Fatalf("reopened with epoch %s, want %s", s.Epoch(), fresh)
	}
	checkHas(t, s, want)
	if c, err := s.Cursor(t.Context(), "bob", "phone"); err != nil || c != 7 {
		t.Fatalf("cursor %d, %v; want 7", c, err)
	}
	res, err := s.Send(t.Context(), textReq(store.DirectConv("alice", "bob"), "alice", "m3"))
	if err != nil || !res.Duplicate {
		t.Fatalf("resend after ResetEpoch: %+v, %v; want the dedup index kept", res, err)
	}

	missing := filepath.Join(t.TempDir(), "nothing")
	if _, _, err := pebblestore.ResetEpoch(missing, quiet); err == nil {
		t.Fatal("ResetEpoch of a missing directory succeeded")
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ResetEpoch created %s: %v", missing, err)
	}
	if _, _, err := pebblestore.ResetEpoch(t.TempDir(), quiet); err == nil {
		t.Fatal("ResetEpoch of an empty directory succeeded")
	}
}
