package e2e

// Backup and restore end to end: a running server is backed up over GET
// /v1/admin/backup, takes more messages, and the backup is restored into a
// new directory (server.Restore, what `pim restore` runs) and served. The
// messages acknowledged before the backup are there, those after it are
// not, tokens minted before still work, and the epoch is new: a device
// whose cursor is past the restored head (it saw the messages after the
// backup) is told to resync, so the new messages, which reuse those user
// seqs, reach it instead of being dropped as already seen. Checked with the
// lean client (the protocol: Welcome ignores the old epoch's cursor) and
// with the SDK (a ResyncEvent, then the new message).

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/server"
	pim "github.com/pim-project/pim/sdk/go"
)

// takeBackup fetches a backup of srv over HTTP with the admin key into a file.
func takeBackup(t *testing.T, srv *server.Server) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctxT(t), http.MethodGet, "http://"+srv.HTTPAddr().String()+"/v1/admin/backup", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+srv.Keys().AdminKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("backup: %s", resp.Status)
	}
	path := filepath.Join(t.TempDir(), "backup.tar.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		t.Fatalf("backup transfer: %v", err)
	}
	return path
}

// restoreBackup restores the archive at path into a new data directory and
// starts a server on it.
func restoreBackup(t *testing.T, path, oldEpoch string) (*server.Server, server.RestoreResult) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := filepath.Join(t.TempDir(), "restored")
	res, err := server.Restore(f, dir, nil)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if res.OldEpoch != oldEpoch || res.NewEpoch == oldEpoch {
		t.Fatalf("restore: epochs %s -> %s, the source's was %s", res.OldEpoch, res.NewEpoch, oldEpoch)
	}
	srv := startServer(t, dir)
	if srv.Epoch() != res.NewEpoch {
		t.Fatalf("restored server has epoch %s, restore said %s", srv.Epoch(), res.NewEpoch)
	}
	return srv, res
}

func TestBackupRestoreResyncsClients(t *testing.T) {
	srv := startServer(t, t.TempDir())
	aliceTok, bobTok := token(t, srv, "alice"), token(t, srv, "bob")
	alice := dialOpts(t, srv, client.Options{Token: aliceTok, Device: "phone"})
	bob := dialOpts(t, srv, client.Options{Token: bobTok, Device: "laptop"})
	conv := "d:alice:bob"
	for _, id := range ids(5, "before") {
		send(t, alice, "bob", "", id, id)
	}
	recv(t, bob, 5)

	backup := takeBackup(t, srv)

	for _, id := range ids(3, "after") {
		send(t, alice, "bob", "", id, id)
	}
	seen := recv(t, bob, 3)
	bobLast := seen[len(seen)-1].UserSeq // 8: past what the backup holds

	srv2, res := restoreBackup(t, backup, srv.Epoch())
	// The tokens minted by the backed-up node work: the signing key came along.
	alice2 := dialOpts(t, srv2, client.Options{Token: aliceTok, Device: "phone"})
	msgs := history(t, alice2, conv)
	if len(msgs) != 5 || string(msgs[4].Body) != "before-0004" {
		t.Fatalf("restored history has %d messages (%v), want the 5 sent before the backup", len(msgs), msgs)
	}

	// bob's laptop comes back with the old epoch and its cursor at 8: the
	// restored node ignores that cursor and announces its epoch.
	bob2 := dialOpts(t, srv2, client.Options{Token: bobTok, Device: "laptop", Epoch: res.OldEpoch, LastUserSeq: bobLast})
	w := bob2.Welcome()
	if w.Epoch == res.OldEpoch || w.Epoch != res.NewEpoch || w.UserSeq != 5 || w.PushFromUserSeq > 5 {
		t.Fatalf("Welcome: epoch %s, user seq %d, push from %d; want epoch %s, head 5, push from <= 5 (not the client's %d)",
			w.Epoch, w.UserSeq, w.PushFromUserSeq, res.NewEpoch, bobLast)
	}
	// The next message reuses user seq 6, which bob saw before: it is pushed.
	send(t, alice2, "bob", "", "after-restore", "after-restore")
	evs := recv(t, bob2, int(6-w.PushFromUserSeq))
	last := evs[len(evs)-1]
	if text(last) != "after-restore" || last.UserSeq != 6 || last.UserSeq > bobLast {
		t.Fatalf("pushed %q at user seq %d; want after-restore at 6 (<= the old cursor %d)", text(last), last.UserSeq, bobLast)
	}
}

// waitSDKEvent reads cl's events until ok accepts one, and returns it.
func waitSDKEvent(t *testing.T, cl *pim.Client, what string, ok func(pim.Event) bool) pim.Event {
	t.Helper()
	timeout := time.After(waitFor)
	for {
		select {
		case ev, open := <-cl.Events():
			if !open {
				t.Fatalf("events ended waiting for %s: %v", what, cl.Err())
			}
			if ok(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s", what)
		}
	}
}

// messageEvent accepts the MessageEvent with body.
func messageEvent(body string) func(pim.Event) bool {
	return func(ev pim.Event) bool {
		m, ok := ev.(pim.MessageEvent)
		return ok && string(m.Message.GetBody()) == body
	}
}

// The SDK, whose local store has delivered everything up to user seq 5,
// reconnects to the restored node (which holds 3): it gets a ResyncEvent and
// then the message stored after the restore at user seq 4.
func TestBackupRestoreSDKResyncs(t *testing.T) {
	srv := startServer(t, t.TempDir())
	aliceTok, bobTok := token(t, srv, "alice"), token(t, srv, "bob")
	alice := dialOpts(t, srv, client.Options{Token: aliceTok, Device: "phone"})
	bobDir := t.TempDir()
	connect := func(s *server.Server) *pim.Client {
		cl, err := pim.Connect(ctxT(t), pim.Options{Servers: []string{"tcp://" + s.TCPAddr().String()},
			Token: bobTok, User: "bob", DeviceID: "tablet", DataDir: bobDir})
		if err != nil {
			t.Fatalf("sdk connect: %v", err)
		}
		return cl
	}
	bob := connect(srv)
	for _, id := range ids(3, "before") {
		send(t, alice, "bob", "", id, id)
	}
	waitSDKEvent(t, bob, "before-0002", messageEvent("before-0002"))
	backup := takeBackup(t, srv)
	for _, id := range ids(2, "after") {
		send(t, alice, "bob", "", id, id)
	}
	if m := waitSDKEvent(t, bob, "after-0001", messageEvent("after-0001")).(pim.MessageEvent); m.UserSeq != 5 {
		t.Fatalf("after-0001 at user seq %d, want 5", m.UserSeq)
	}
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}

	srv2, res := restoreBackup(t, backup, srv.Epoch())
	bob = connect(srv2)
	defer bob.Close()
	ev := waitSDKEvent(t, bob, "ResyncEvent", func(ev pim.Event) bool { _, ok := ev.(pim.ResyncEvent); return ok })
	if r := ev.(pim.ResyncEvent); r.OldEpoch != res.OldEpoch || r.NewEpoch != res.NewEpoch {
		t.Fatalf("resync %+v, want %s -> %s", r, res.OldEpoch, res.NewEpoch)
	}
	alice2 := dialOpts(t, srv2, client.Options{Token: aliceTok, Device: "phone"})
	send(t, alice2, "bob", "", "after-restore", "after-restore")
	m := waitSDKEvent(t, bob, "after-restore", messageEvent("after-restore")).(pim.MessageEvent)
	if m.UserSeq != 4 || m.Message.GetSeq() != 4 {
		t.Fatalf("after-restore at user seq %d (conv seq %d), want 4: the seq the SDK had delivered before", m.UserSeq, m.Message.GetSeq())
	}
}
