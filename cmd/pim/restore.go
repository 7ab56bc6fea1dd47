package main

// `pim restore`: a backup archive becomes a data directory (--from), or a
// data directory copied by hand gets a new epoch (--in-place). Invariants:
// --from writes only into an empty or absent --data (server.Restore); both
// ways leave the data with an epoch it never had before, so clients whose
// cursors belong to the old data resync instead of dropping new messages as
// ones they have seen; the old and new epochs are always printed.

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/server"
)

func newRestoreCmd() *cobra.Command {
	var (
		from    string
		dir     string
		inPlace bool
	)
	cmd := &cobra.Command{
		Use:   "restore (--from FILE | --in-place) --data DIR",
		Short: "Restore a backup into a new data directory, with a new epoch (or give a copied one a new epoch)",
		Long: "restore --from FILE extracts a backup taken with `pim backup` into --data, which must be empty\n" +
			"or absent, and gives the restored data a new epoch. restore --in-place gives the data\n" +
			"directory --data (copied by hand or from a snapshot, with its server stopped) a new epoch.\n\n" +
			"Clients that connect with the old epoch are told to resync: they drop their cursor and local\n" +
			"timeline and load it again. Without that, a client that saw messages stored after the backup\n" +
			"would take the new messages (which reuse those seqs) for ones it already has, and drop them.",
		Example: "  pim restore --from pim-backup.tar.gz --data ./pim-data-restored\n" +
			"  pim restore --in-place --data ./pim-data-copy",
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if (from == "") == !inPlace {
				return usagef("give exactly one of --from FILE and --in-place")
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			if inPlace {
				return restoreInPlace(cmd.OutOrStdout(), dir, log)
			}
			return restoreFrom(cmd, from, dir, log)
		}),
	}
	cmd.Flags().StringVar(&from, "from", "", "the backup archive (from `pim backup`); - reads standard input")
	cmd.Flags().StringVar(&dir, "data", "", "the data directory to restore into (required)")
	cmd.Flags().BoolVar(&inPlace, "in-place", false, "give the data directory --data a new epoch (a copy made by hand; its server stopped)")
	cmd.MarkFlagRequired("data")
	return cmd
}

func restoreFrom(cmd *cobra.Command, from, dir string, log *slog.Logger) error {
	var r io.Reader = cmd.InOrStdin()
	if from != "-" {
		f, err := os.Open(from)
		if err != nil {
			return failed("restore", err)
		}
		defer f.Close()
		r = f
	}
	res, err := server.Restore(r, dir, log)
	if err != nil {
		return failed("restore "+from, err)
	}
	out := cmd.OutOrStdout()
	m := res.Manifest
	fmt.Fprintf(out, "restored %s into %s (a backup of epoch %s, taken %s on node %s)\n",
		from, dir, m.Epoch, m.Created.Format("2006-01-02T15:04:05Z07:00"), m.Node)
	printEpochChange(out, res.OldEpoch, res.NewEpoch)
	fmt.Fprintf(out, "the keys were restored too: tokens issued before the backup stay valid\n")
	fmt.Fprintf(out, "start it: pim serve --data %s\n", dir)
	return nil
}

func restoreInPlace(out io.Writer, dir string, log *slog.Logger) error {
	old, fresh, err := server.ResetEpoch(dir, log)
	if err != nil {
		return failed("new epoch for "+dir+" (is its server stopped? is it a data directory, with store/ in it?)", err)
	}
	printEpochChange(out, old, fresh)
	return nil
}

func printEpochChange(out io.Writer, old, fresh string) {
	fmt.Fprintf(out, "epoch: %s -> %s\n", old, fresh)
	fmt.Fprintf(out, "clients that last synced with epoch %s will be told to resync (they drop their cursor and\n"+
		"local timeline and load it again), so none of them drops new messages as already seen\n", old)
}
