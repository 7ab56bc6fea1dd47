// Restores: a backup archive (backup.go) becomes a data directory again,
// with an epoch of its own.
//
// Invariants of this file:
//   - Restore writes only into an empty (or absent) data directory, and
//     only the entries a backup has: the manifest (read, not written),
//     token.key, admin.key, the self-signed TLS pair, and store/ with what
//     is under it. An entry whose name is absolute, has a ".." (or ".")
//     element, or is a link or a device is refused before anything of it
//     is written: an archive cannot write outside the directory.
//   - The data directory never holds a restored store with the epoch of the
//     backup: the archive is extracted into DATA/.restore-*, verified whole
//     (the gzip checksum, the entries a restore needs), given a new epoch,
//     and only then moved into place (keys first, store last). On any error
//     the staging directory is removed and the data directory is left as
//     it was found.
//   - Clients that connect with the old epoch are told to resync (Welcome
//     carries the new one; their cursor is ignored), so none of them takes
//     the messages stored after the restore for ones it has already seen.
package server

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pim-project/pim/internal/auth"
	pebblestore "github.com/pim-project/pim/internal/store/pebble"
)

// restoreTmpPrefix names the staging directory inside the data directory.
const restoreTmpPrefix = ".restore-"

// ErrUnsafeEntry is in the chain of a restore error caused by an archive
// entry that would be written outside the data directory or is not a plain
// file or directory.
var ErrUnsafeEntry = errors.New("unsafe archive entry")

// RestoreResult reports a restore.
type RestoreResult struct {
	Manifest BackupManifest
	// OldEpoch is the epoch of the backed-up node, NewEpoch the restored
	// data's.
	OldEpoch, NewEpoch string
}

// Restore extracts the backup archive r into dataDir, which must be empty
// or absent, and gives the restored store a new epoch. log receives the
// store's messages (nil: slog.Default()).
func Restore(r io.Reader, dataDir string, log *slog.Logger) (res RestoreResult, err error) {
	created, err := prepareEmpty(dataDir)
	if err != nil {
		return RestoreResult{}, err
	}
	stage, err := os.MkdirTemp(dataDir, restoreTmpPrefix)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	defer func() {
		_ = os.RemoveAll(stage)
		if err != nil && created {
			_ = os.Remove(dataDir) // only if still empty
		}
	}()
	m, err := readArchive(r, stage)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	old, fresh, err := pebblestore.ResetEpoch(filepath.Join(stage, storeDir), log)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore: %w", err)
	}
	if err := moveInto(stage, dataDir, m.Files); err != nil {
		return RestoreResult{}, err
	}
	return RestoreResult{Manifest: m, OldEpoch: old, NewEpoch: fresh}, nil
}

// VerifyBackup reads a whole backup archive without writing anything and
// returns its manifest. An error means Restore would refuse it (a short or
// corrupt download, a missing key, an unsafe entry); it does not open the
// store, which Restore does.
func VerifyBackup(r io.Reader) (BackupManifest, error) {
	m, err := walkArchive(r, func(string, *tar.Header, io.Reader) error { return nil })
	if err != nil {
		return BackupManifest{}, fmt.Errorf("verify backup: %w", err)
	}
	return m, nil
}

// ResetEpoch gives the store of the stopped data directory dataDir (a copy
// made by hand, a file-system snapshot) a new epoch, and returns the old and
// the new one. It fails while a server has the directory open.
func ResetEpoch(dataDir string, log *slog.Logger) (old, fresh string, err error) {
	return pebblestore.ResetEpoch(filepath.Join(dataDir, storeDir), log)
}

// prepareEmpty creates dataDir (reporting so) or checks that it is empty.
func prepareEmpty(dataDir string) (created bool, err error) {
	entries, err := os.ReadDir(dataDir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return false, fmt.Errorf("restore: create data dir: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("restore: %w", err)
	case len(entries) > 0:
		return false, fmt.Errorf("restore: refusing to restore into %s: it is not empty (it holds %s): restore into a new directory",
			dataDir, entries[0].Name())
	}
	return false, nil
}

// readArchive extracts the archive into stage and returns its manifest.
func readArchive(r io.Reader, stage string) (BackupManifest, error) {
	return walkArchive(r, func(name string, h *tar.Header, body io.Reader) error {
		return extract(stage, name, h, body)
	})
}

// walkArchive checks every entry of the archive and hands each one (but
// the manifest) to f. It reads the gzip stream to its end, so that a
// truncated or corrupt archive is an error.
func walkArchive(r io.Reader, f func(name string, h *tar.Header, body io.Reader) error) (BackupManifest, error) {
	m, err := walkEntries(r, f)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, gzip.ErrChecksum) || errors.Is(err, tar.ErrHeader) {
		err = fmt.Errorf("the archive is truncated or corrupt: %w", err)
	}
	return m, err
}

func walkEntries(r io.Reader, f func(name string, h *tar.Header, body io.Reader) error) (BackupManifest, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return BackupManifest{}, fmt.Errorf("not a PIM backup (gzip): %w", err)
	}
	tr := tar.NewReader(gz)
	m, err := readManifest(tr)
	if err != nil {
		return BackupManifest{}, err
	}
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return BackupManifest{}, fmt.Errorf("read archive: %w", err)
		}
		name, err := entryName(h, m.Files)
		if err != nil {
			return BackupManifest{}, err
		}
		if err := f(name, h, tr); err != nil {
			return BackupManifest{}, err
		}
		seen[strings.SplitN(name, "/", 2)[0]] = true
	}
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return BackupManifest{}, fmt.Errorf("read archive: %w", err)
	}
	if err := gz.Close(); err != nil {
		return BackupManifest{}, fmt.Errorf("read archive: %w", err)
	}
	for _, need := range append([]string{storeDir}, m.Files...) {
		if !seen[need] {
			return BackupManifest{}, fmt.Errorf("incomplete backup: no %s", need)
		}
	}
	return m, nil
}

// readManifest reads the first entry, which must be the manifest.
func readManifest(tr *tar.Reader) (BackupManifest, error) {
	h, err := tr.Next()
	if err != nil {
		return BackupManifest{}, fmt.Errorf("not a PIM backup: %w", err)
	}
	if h.Name != BackupManifestFile || h.Typeflag != tar.TypeReg {
		return BackupManifest{}, fmt.Errorf("not a PIM backup: the first entry is %q, not %s", h.Name, BackupManifestFile)
	}
	var m BackupManifest
	if err := json.NewDecoder(io.LimitReader(tr, 1<<20)).Decode(&m); err != nil {
		return BackupManifest{}, fmt.Errorf("not a PIM backup: %s: %w", BackupManifestFile, err)
	}
	if m.Format != BackupFormat {
		return BackupManifest{}, fmt.Errorf("backup format %d, this pim reads %d", m.Format, BackupFormat)
	}
	for _, need := range []string{auth.TokenKeyFile, auth.AdminKeyFile} {
		if !slices.Contains(m.Files, need) {
			return BackupManifest{}, fmt.Errorf("incomplete backup: the manifest lists no %s", need)
		}
	}
	for _, name := range m.Files {
		if !slices.Contains(keyFiles(), name) {
			return BackupManifest{}, fmt.Errorf("%w: the manifest lists %q, not a file of a data directory", ErrUnsafeEntry, name)
		}
	}
	return m, nil
}

// entryName checks an entry and returns its cleaned name (no trailing
// slash). Only store/ and the listed key files are accepted.
func entryName(h *tar.Header, files []string) (string, error) {
	name := strings.TrimSuffix(h.Name, "/")
	if !localName(name) {
		return "", fmt.Errorf("%w: %q is outside the data directory (path traversal)", ErrUnsafeEntry, h.Name)
	}
	if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeDir {
		return "", fmt.Errorf("%w: %q is not a plain file or directory (%s)", ErrUnsafeEntry, h.Name, typeName(h.Typeflag))
	}
	switch {
	case name == storeDir && h.Typeflag == tar.TypeDir, strings.HasPrefix(name, storeDir+"/"):
		return name, nil
	case slices.Contains(files, name) && h.Typeflag == tar.TypeReg:
		return name, nil
	}
	return "", fmt.Errorf("%w: %q is not part of a PIM data directory", ErrUnsafeEntry, h.Name)
}

// typeName names a tar entry type for errors.
func typeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "a symbolic link"
	case tar.TypeLink:
		return "a hard link"
	case tar.TypeChar, tar.TypeBlock:
		return "a device"
	case tar.TypeFifo:
		return "a FIFO"
	}
	return fmt.Sprintf("entry type %q", t)
}

// localName reports whether name is a relative slash-separated path whose
// every element is a plain name (no "", "." or "..").
func localName(name string) bool {
	if name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, "\\") || !filepath.IsLocal(filepath.FromSlash(name)) {
		return false
	}
	for _, el := range strings.Split(name, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}

// extract writes one checked entry under stage. Files are created
// exclusively (an archive naming one twice is refused), private, and synced.
func extract(stage, name string, h *tar.Header, body io.Reader) error {
	p := filepath.Join(stage, filepath.FromSlash(name))
	if h.Typeflag == tar.TypeDir {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return fmt.Errorf("extract %s: %w", name, err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("extract %s: %w", name, err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("extract %s: %w", name, err)
	}
	_, err = io.Copy(f, body)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("extract %s: %w", name, err)
	}
	return nil
}

// moveInto moves the key files, then the store, from stage into the empty
// dataDir, and syncs dataDir. If a move fails, what was moved is removed.
func moveInto(stage, dataDir string, files []string) error {
	names := append(slices.Clone(files), storeDir)
	for i, name := range names {
		if err := os.Rename(filepath.Join(stage, name), filepath.Join(dataDir, name)); err != nil {
			for _, moved := range names[:i] {
				_ = os.RemoveAll(filepath.Join(dataDir, moved))
			}
			return fmt.Errorf("restore: move %s into place: %w", name, err)
		}
	}
	d, err := os.Open(dataDir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("restore: sync %s: %w", dataDir, err)
	}
	return nil
}
