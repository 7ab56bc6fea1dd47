package main

import (
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/store"
)

func newTokenCmd() *cobra.Command {
	var (
		dir  string
		user string
		ttl  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "token --user NAME [--data DIR] [--ttl 24h]",
		Short: "Print a signed token for a user",
		Long: "token signs a token for --user with the key in the server's data directory\n" +
			"(run `pim serve --data DIR` once first to create it). Clients present it in Hello.",
		Example: "  pim token --data ./pim-data --user alice --ttl 24h",
		Args:    cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if !store.ValidID(user) {
				return usagef("invalid --user %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", user)
			}
			if ttl <= 0 {
				return usagef("--ttl must be positive, got %v", ttl)
			}
			keys, err := auth.Load(dir)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("no keys in %s: run `pim serve --data %s` once first", dir, dir)
				}
				return failed("read keys", err)
			}
			tok, err := keys.Issue(user, ttl)
			if err != nil {
				return failed("issue token", err)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), tok)
			return err
		}),
	}
	cmd.Flags().StringVar(&dir, "data", "./pim-data", "the server's data directory")
	cmd.Flags().StringVar(&user, "user", "", "the user the token is for (required)")
	cmd.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	cmd.MarkFlagRequired("user")
	return cmd
}
