// Online backups: GET /v1/admin/backup streams a consistent copy of the
// running node's data directory as a gzipped tar, while it keeps serving.
//
// The archive, in this order:
//
//	pim-backup.json      the manifest (BackupManifest): format, epoch, time, node
//	token.key, admin.key the keys: restored tokens stay valid, the admin key works
//	tls-cert.pem, tls-key.pem   the self-signed certificate, if the data dir has one
//	store/...            a Pebble checkpoint of the store
//
// Invariants of this file:
//   - The endpoint needs the admin key: the archive holds the token signing
//     key, with which anyone can act as any user.
//   - The store part is one consistent state that holds every write
//     acknowledged before the request arrived (pebblestore.Checkpoint);
//     writes go on meanwhile. It keeps the node's epoch: Restore gives it a
//     new one.
//   - At most one backup runs at a time (a second request gets 409). The
//     checkpoint lives in DATA/.backup-* (hard links to the store's tables,
//     so it costs little space until compactions replace them) only while
//     the archive is written; one left over by a crash is removed by the
//     next backup.
//   - A backup that fails once the response has started aborts the
//     connection, so the client sees a broken transfer, never a short
//     archive that ends cleanly.
package server

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sync"
	"time"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/tlsutil"
)

// Archive layout.
const (
	// BackupManifestFile is the first entry of a backup archive.
	BackupManifestFile = "pim-backup.json"
	// BackupFormat is the archive format version this build writes and reads.
	BackupFormat = 1
	// storeDir is the store's directory inside the data directory.
	storeDir = "store"
	// backupTmpPrefix names the checkpoint directories in the data directory.
	backupTmpPrefix = ".backup-"
)

// BackupManifest describes a backup archive.
type BackupManifest struct {
	Format  int       `json:"format"`
	Epoch   string    `json:"epoch"`   // the epoch of the node backed up (a restore gets a new one)
	Created time.Time `json:"created"` // when the checkpoint was taken
	Node    string    `json:"node"`
	Files   []string  `json:"files"` // the data directory's files besides store/
}

// errBackupRunning: another backup of this node is being written.
var errBackupRunning = errors.New("a backup is already running")

// keyFiles are the data directory's files a restore needs besides the store,
// the first two mandatory.
func keyFiles() []string {
	return []string{auth.TokenKeyFile, auth.AdminKeyFile, tlsutil.SelfSignedCertFile, tlsutil.SelfSignedKeyFile}
}

// backupState serializes backups.
type backupState struct {
	mu sync.Mutex
}

// snapshot is a checkpoint being archived; close releases it.
type snapshot struct {
	dir      string // DATA/.backup-XXXX, holding store/
	dataDir  string
	manifest BackupManifest
	log      *slog.Logger
	unlock   func()
}

func (s *Server) backupHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			writeErr(w, http.StatusMethodNotAllowed, "BAD_REQUEST", "method "+r.Method+" not allowed on /v1/admin/backup (allowed: GET)")
			return
		}
		if !s.requireAdmin(w, r) {
			return
		}
		snap, err := s.checkpoint()
		switch {
		case errors.Is(err, errBackupRunning):
			writeErr(w, http.StatusConflict, "UNAVAILABLE", "a backup of this node is already running; retry when it ends")
			return
		case err != nil:
			s.log.Error("backup: checkpoint failed", "err", err)
			writeErr(w, http.StatusInternalServerError, "INTERNAL", "backup failed: "+err.Error())
			return
		}
		defer snap.close()
		s.log.Info("backup started", "remote", r.RemoteAddr, "epoch", snap.manifest.Epoch)
		h := w.Header()
		h.Set("Content-Type", "application/gzip")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Pim-Epoch", snap.manifest.Epoch)
		h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="pim-backup-%s.tar.gz"`,
			snap.manifest.Created.Format("20060102T150405Z")))
		w.WriteHeader(http.StatusOK)
		n, err := snap.writeTo(r.Context(), w)
		if err != nil {
			s.log.Warn("backup: writing the archive failed", "remote", r.RemoteAddr, "bytes", n, "err", err)
			panic(http.ErrAbortHandler) // the client must not take a short archive for a whole one
		}
		s.log.Info("backup done", "remote", r.RemoteAddr, "epoch", snap.manifest.Epoch, "bytes", n)
	})
}

// Backup writes a backup archive of the running node to w (what GET
// /v1/admin/backup serves) and returns its manifest.
func (s *Server) Backup(ctx context.Context, w io.Writer) (BackupManifest, error) {
	snap, err := s.checkpoint()
	if err != nil {
		return BackupManifest{}, err
	}
	defer snap.close()
	_, err = snap.writeTo(ctx, w)
	return snap.manifest, err
}

// checkpoint takes the backup lock and a checkpoint of the store.
func (s *Server) checkpoint() (_ *snapshot, err error) {
	if !s.backup.mu.TryLock() {
		return nil, errBackupRunning
	}
	defer func() {
		if err != nil {
			s.backup.mu.Unlock()
		}
	}()
	s.removeStaleCheckpoints()
	dir, err := os.MkdirTemp(s.cfg.DataDir, backupTmpPrefix)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	created := time.Now().UTC()
	if err := s.st.Checkpoint(filepath.Join(dir, storeDir)); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("backup: %w", err)
	}
	m := BackupManifest{Format: BackupFormat, Epoch: s.st.Epoch(), Created: created, Node: s.nodeID}
	for _, name := range keyFiles() {
		if _, err := os.Stat(filepath.Join(s.cfg.DataDir, name)); err == nil {
			m.Files = append(m.Files, name)
		}
	}
	return &snapshot{dir: dir, dataDir: s.cfg.DataDir, manifest: m, log: s.log, unlock: s.backup.mu.Unlock}, nil
}

// removeStaleCheckpoints removes checkpoints a crashed backup left behind.
// The caller holds the backup lock, so none of them is in use.
func (s *Server) removeStaleCheckpoints() {
	old, err := filepath.Glob(filepath.Join(s.cfg.DataDir, backupTmpPrefix+"*"))
	if err != nil {
		return
	}
	for _, d := range old {
		s.log.Warn("backup: removing a checkpoint left over by an earlier backup", "dir", d)
		if err := os.RemoveAll(d); err != nil {
			s.log.Error("backup: cannot remove an old checkpoint", "dir", d, "err", err)
		}
	}
}

func (sn *snapshot) close() {
	if err := os.RemoveAll(sn.dir); err != nil {
		sn.log.Error("backup: cannot remove the checkpoint", "dir", sn.dir, "err", err)
	}
	sn.unlock()
}

// writeTo writes the archive to w and returns the bytes written.
func (sn *snapshot) writeTo(ctx context.Context, w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	gz, err := gzip.NewWriterLevel(cw, gzip.BestSpeed) // tables are compressed already
	if err != nil {
		return 0, err
	}
	tw := tar.NewWriter(gz)
	if err := sn.writeEntries(ctx, tw); err != nil {
		return cw.n, err
	}
	if err := tw.Close(); err != nil {
		return cw.n, fmt.Errorf("backup: %w", err)
	}
	if err := gz.Close(); err != nil {
		return cw.n, fmt.Errorf("backup: %w", err)
	}
	return cw.n, nil
}

func (sn *snapshot) writeEntries(ctx context.Context, tw *tar.Writer) error {
	mb, err := json.MarshalIndent(sn.manifest, "", "  ")
	if err != nil {
		return fmt.Errorf("backup: manifest: %w", err)
	}
	if err := writeBytes(tw, BackupManifestFile, append(mb, '\n'), sn.manifest.Created); err != nil {
		return err
	}
	for _, name := range sn.manifest.Files {
		if err := writeFile(tw, name, filepath.Join(sn.dataDir, name)); err != nil {
			return err
		}
	}
	root := filepath.Join(sn.dir, storeDir)
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		rel, err := filepath.Rel(sn.dir, p)
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		name := filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			info, err := d.Info()
			if err != nil {
				return fmt.Errorf("backup: %w", err)
			}
			return writeHeader(tw, &tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o700, ModTime: info.ModTime()})
		case d.Type().IsRegular():
			return writeFile(tw, name, p)
		}
		return fmt.Errorf("backup: %s is neither a file nor a directory", p)
	})
}

func writeHeader(tw *tar.Writer, h *tar.Header) error {
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("backup: %s: %w", h.Name, err)
	}
	return nil
}

func writeBytes(tw *tar.Writer, name string, b []byte, mtime time.Time) error {
	if err := writeHeader(tw, &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600, Size: int64(len(b)), ModTime: mtime}); err != nil {
		return err
	}
	if _, err := tw.Write(b); err != nil {
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	return nil
}

// writeFile archives the regular file at p as name. The checkpoint's files
// do not change once it is taken, nor do the keys while the node runs.
func writeFile(tw *tar.Writer, name, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	h := &tar.Header{Typeflag: tar.TypeReg, Name: path.Clean(name), Mode: 0o600, Size: info.Size(), ModTime: info.ModTime()}
	if err := writeHeader(tw, h); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("backup: %s: %w", name, err)
	}
	return nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
