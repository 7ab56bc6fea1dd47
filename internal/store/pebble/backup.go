// Backups and restores of a Pebble data set: Checkpoint copies the open
// store while it serves, ResetEpoch gives an offline copy an epoch of its own.
//
// Invariants of this file:
//   - A checkpoint holds every write whose call returned before Checkpoint
//     was called, whatever the Sync mode: the WAL is flushed and fsynced
//     first (pebble.WithFlushedWAL). It may hold later writes too; it is
//     one consistent state of the database (Pebble's own recovery on open),
//     never a torn one. Writes go on while it is taken.
//   - A checkpoint keeps the epoch of the store it was taken from. Serving
//     it as it is would let clients whose cursors are ahead of it drop new
//     messages as duplicates (the seqs after the checkpoint are reused), so
//     a restore must call ResetEpoch before any server opens the copy.
//   - ResetEpoch changes nothing but the !epoch key, durably, and only on a
//     data set that exists and holds a format version and an epoch; it
//     never creates one. Pebble's directory lock makes it fail on a store a
//     running server has open.
package pebblestore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/cockroachdb/pebble/v2"
)

// Checkpoint writes a consistent copy of the open store to dir, which must
// not exist (its parent is created if needed). Tables are hard-linked when
// dir is on the same file system as the store (cheap; they are copied
// otherwise), the WAL and manifest are copied. Writes continue meanwhile;
// a Close waits for the checkpoint to end. The copy keeps this store's
// epoch: see ResetEpoch.
func (s *Store) Checkpoint(dir string) error {
	if err := s.rlock(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if err := s.db.Checkpoint(dir, pebble.WithFlushedWAL()); err != nil {
		return fmt.Errorf("pebble store: checkpoint to %s: %w", dir, err)
	}
	return nil
}

// ResetEpoch gives the closed data set in dir (a restored backup or a copy
// of a data directory's store) a new random epoch and returns the old and
// the new one. Clients that connect with the old epoch are told to resync.
// log receives Pebble's messages (nil: slog.Default()).
func ResetEpoch(dir string, log *slog.Logger) (old, fresh string, err error) {
	if log == nil {
		log = slog.Default()
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return "", "", fmt.Errorf("pebble store: reset epoch: %w", err)
	}
	if !fi.IsDir() {
		return "", "", fmt.Errorf("pebble store: reset epoch: %s is not a directory", dir)
	}
	cache := pebble.NewCache(8 << 20)
	defer cache.Unref()
	popts := pebbleOptions(log.With("component", "pebble"), cache)
	popts.ErrorIfNotExists = true
	db, err := pebble.Open(dir, popts)
	if err != nil {
		return "", "", fmt.Errorf("pebble store: reset epoch: open %s: %w", dir, err)
	}
	old, fresh, err = replaceEpoch(db)
	if cerr := db.Close(); cerr != nil && err == nil {
		err = cerr
	}
	if err != nil {
		return "", "", fmt.Errorf("pebble store: reset epoch of %s: %w", dir, err)
	}
	return old, fresh, nil
}

// replaceEpoch replaces the epoch of an existing data set.
func replaceEpoch(db *pebble.DB) (old, fresh string, err error) {
	v, err := get(db, keyVersion)
	if err != nil {
		return "", "", err
	}
	e, err := get(db, keyEpoch)
	if err != nil {
		return "", "", err
	}
	switch {
	case v == nil || e == nil:
		return "", "", errors.New("not a PIM data set: no format version or epoch")
	case string(v) != formatVersion:
		return "", "", fmt.Errorf("unsupported data format %q (want %q)", v, formatVersion)
	}
	if fresh, err = newEpoch(); err != nil {
		return "", "", err
	}
	return string(e), fresh, writeMeta(db, fresh)
}
