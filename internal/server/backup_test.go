// Tests of backup.go and restore.go: the endpoint's refusals, a backup
// restored into a new directory, and archives Restore must refuse (path
// traversal, links, short or foreign archives, a non-empty directory).
package server

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/auth"
)

func TestBackupEndpointRefusals(t *testing.T) {
	srv := startTest(t, Config{})
	url := "http://" + srv.HTTPAddr().String() + "/v1/admin/backup"
	tok, err := srv.Keys().Issue("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, auth string
		status       int
	}{
		{"GET", "", http.StatusUnauthorized},
		{"GET", tok, http.StatusUnauthorized}, // a user's token is not the admin key
		{"POST", srv.Keys().AdminKey(), http.StatusMethodNotAllowed},
	} {
		if r, body := do(t, c.method, url, c.auth); r.StatusCode != c.status {
			t.Errorf("%s with %q: %s %s, want %d", c.method, c.auth, r.Status, body, c.status)
		}
	}
	// One backup at a time: while one holds the lock, another gets 409.
	srv.backup.mu.Lock()
	r, body := do(t, "GET", url, srv.Keys().AdminKey())
	srv.backup.mu.Unlock()
	if r.StatusCode != http.StatusConflict || !strings.Contains(string(body), "already running") {
		t.Fatalf("concurrent backup: %s %s, want 409", r.Status, body)
	}
}

// getBackup fetches a backup of srv over HTTP.
func getBackup(t *testing.T, srv *Server) []byte {
	t.Helper()
	r, body := do(t, "GET", "http://"+srv.HTTPAddr().String()+"/v1/admin/backup", srv.Keys().AdminKey())
	if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "application/gzip" || r.Header.Get("X-Pim-Epoch") != srv.Epoch() {
		t.Fatalf("backup: %s %v", r.Status, r.Header)
	}
	return body
}

// A backup restores into a new directory with the keys, a new epoch and no
// leftovers; the checkpoint is gone from the source's data directory.
func TestBackupRestore(t *testing.T) {
	srv := startTest(t, Config{TLSSelfSigned: true})
	var buf bytes.Buffer
	if _, err := srv.Backup(t.Context(), &buf); err != nil {
		t.Fatal(err)
	}
	archive := buf.Bytes()
	m, err := VerifyBackup(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	if m.Epoch != srv.Epoch() || m.Format != BackupFormat ||
		strings.Join(m.Files, ",") != "token.key,admin.key,tls-cert.pem,tls-key.pem" {
		t.Fatalf("manifest %+v", m)
	}
	if left, _ := filepath.Glob(filepath.Join(srv.DataDir(), ".backup-*")); len(left) != 0 {
		t.Fatalf("checkpoints left in the data dir: %v", left)
	}

	dir := filepath.Join(t.TempDir(), "restored")
	res, err := Restore(bytes.NewReader(archive), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.OldEpoch != srv.Epoch() || res.NewEpoch == res.OldEpoch || res.NewEpoch == "" {
		t.Fatalf("restore: %+v, source epoch %s", res, srv.Epoch())
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "admin.key,store,tls-cert.pem,tls-key.pem,token.key" {
		t.Fatalf("restored dir holds %v", names)
	}
	for _, k := range m.Files {
		a, _ := os.ReadFile(filepath.Join(srv.DataDir(), k))
		b, _ := os.ReadFile(filepath.Join(dir, k))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s not restored as it was", k)
		}
	}
	if _, err := Restore(bytes.NewReader(archive), dir, nil); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into a non-empty dir: %v", err)
	}
	old, fresh, err := ResetEpoch(dir, nil)
	if err != nil || old != res.NewEpoch || fresh == old {
		t.Fatalf("ResetEpoch = %s, %s, %v; want a change from %s", old, fresh, err, res.NewEpoch)
	}
}

// entry is one tar entry of a crafted archive.
type entry struct {
	name string
	typ  byte
	body string
	link string
}

// craft builds a gzipped tar with a valid manifest first, then entries.
func craft(t *testing.T, entries ...entry) []byte {
	t.Helper()
	m, _ := json.Marshal(BackupManifest{Format: BackupFormat, Epoch: "e", Files: []string{auth.TokenKeyFile, auth.AdminKeyFile}})
	all := append([]entry{{name: BackupManifestFile, typ: tar.TypeReg, body: string(m)}}, entries...)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range all {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o600, Size: int64(len(e.body)), Linkname: e.link}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Archives that would write outside the data directory, or are not whole
// backups, are refused with a clear error, and nothing is left behind:
// neither outside the directory nor in it.
func TestRestoreRefusesUnsafeAndIncompleteArchives(t *testing.T) {
	keys := []entry{{name: "token.key", typ: tar.TypeReg, body: "k"}, {name: "admin.key", typ: tar.TypeReg, body: "a"}}
	withKeys := func(es ...entry) []entry { return append(append([]entry(nil), keys...), es...) }
	good := getBackup(t, startTest(t, Config{}))
	for _, c := range []struct {
		name    string
		archive []byte
		unsafe  bool
		msg     string
		// verifies: VerifyBackup, which does not open the store, accepts it.
		verifies bool
	}{
		{"dotdot", craft(t, withKeys(entry{name: "../escaped", typ: tar.TypeReg, body: "x"})...), true, `"../escaped" is outside the data directory (path traversal)`, false},
		{"dotdot inside store", craft(t, withKeys(entry{name: "store/../../escaped", typ: tar.TypeReg, body: "x"})...), true, "path traversal", false},
		{"absolute", craft(t, withKeys(entry{name: "/tmp/escaped", typ: tar.TypeReg, body: "x"})...), true, "path traversal", false},
		{"symlink", craft(t, withKeys(entry{name: "store", typ: tar.TypeSymlink, link: "/etc"})...), true, "not a plain file or directory", false},
		{"hard link", craft(t, withKeys(entry{name: "store/x", typ: tar.TypeLink, link: "../../escaped"})...), true, "not a plain file or directory", false},
		{"stranger", craft(t, withKeys(entry{name: "notes.txt", typ: tar.TypeReg, body: "x"})...), true, "not part of a PIM data directory", false},
		{"no store", craft(t, keys...), false, "incomplete backup: no store", false},
		{"no keys", craft(t, entry{name: "store/", typ: tar.TypeDir}), false, "incomplete backup: no token.key", false},
		{"not gzip", []byte("hello"), false, "not a PIM backup", false},
		{"truncated", good[:len(good)/2], false, "the archive is truncated or corrupt", false},
		{"store not a database", craft(t, withKeys(entry{name: "store/", typ: tar.TypeDir})...), false, "reset epoch", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "data", "restored")
			_, err := Restore(bytes.NewReader(c.archive), dir, nil)
			if err == nil || !strings.Contains(err.Error(), c.msg) || errors.Is(err, ErrUnsafeEntry) != c.unsafe {
				t.Fatalf("Restore: %v; want an error with %q (unsafe %v)", err, c.msg, c.unsafe)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the data dir was left behind: %v", err)
			}
			if _, err := os.Stat(filepath.Join(parent, "escaped")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("an entry was written outside the data dir")
			}
			if _, err := VerifyBackup(bytes.NewReader(c.archive)); (err == nil) != c.verifies ||
				(err != nil && !strings.Contains(err.Error(), c.msg)) {
				t.Fatalf("VerifyBackup: %v; want %q", err, c.msg)
			}
		})
	}
	// An empty existing directory stays, empty.
	dir := t.TempDir()
	if _, err := Restore(bytes.NewReader(craft(t, keys...)), dir, nil); err == nil {
		t.Fatal("restore of an incomplete backup succeeded")
	}
	if es, err := os.ReadDir(dir); err != nil || len(es) != 0 {
		t.Fatalf("the empty data dir now holds %v (%v)", es, err)
	}
}
