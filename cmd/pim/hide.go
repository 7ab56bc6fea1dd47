package main

// `pim hide`: delete a message for yourself ("delete for me"). Hiding is
// idempotent: running it twice, or late, changes nothing and answers alike.
// Only the user's own view changes: the other members still see the message.

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/api"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// hiddenView is the JSON answer of pim hide, as POST .../hide answers.
type hiddenView struct {
	Conv   string `json:"conv"`
	Seq    uint64 `json:"seq"`
	Hidden bool   `json:"hidden"`
}

func newHideCmd() *cobra.Command {
	var (
		conn   connFlags
		conv   string
		seq    uint64
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "hide --conv C --seq S [flags]",
		Short: "Delete a message for yourself (your devices stop showing it; others still do)",
		Example: "  pim hide --token $T --conv d:alice:bob --seq 3\n" +
			"  pim hide --token $T --conv team --seq 40 --json",
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if conv == "" || seq == 0 {
				return usagef("--conv and a positive --seq are required")
			}
			r, err := conn.requests(cmd)
			if err != nil {
				return err
			}
			defer r.Close()
			ctx, cancel := r.bounded()
			defer cancel()
			resp, err := r.c.Hide(ctx, &pimv1.HideReq{Conv: api.ConvID(conv), Seq: seq})
			if err != nil {
				return failed(fmt.Sprintf("hide %s #%d", api.ConvID(conv), seq), err)
			}
			if asJSON {
				return writeJSONLine(cmd.OutOrStdout(), hiddenView{Conv: resp.Conv, Seq: resp.Seq, Hidden: true})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s #%d hidden for you (your other devices are told; other members still see it)\n", resp.Conv, resp.Seq)
			return err
		}),
	}
	conn.register(cmd.Flags())
	cmd.Flags().StringVar(&conv, "conv", "", "the conversation (d:a:b, g:x, or a bare group id)")
	cmd.Flags().Uint64Var(&seq, "seq", 0, "the message's seq")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object")
	return cmd
}
