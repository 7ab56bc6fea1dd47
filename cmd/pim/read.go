package main

// `pim read`: mark a conversation read up to a seq. The position only moves
// forward, so running it twice, or late, changes nothing.

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/client"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func newReadCmd() *cobra.Command {
	var (
		conn   connFlags
		conv   string
		seq    uint64
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "read --conv C --seq S [flags]",
		Short: "Mark a conversation read up to a seq (other devices and a 1:1 peer are told)",
		Example: "  pim read --token $T --conv d:alice:bob --seq 12\n" +
			"  pim read --token $T --conv team --seq 40 --json",
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if conv == "" || seq == 0 {
				return usagef("--conv and a positive --seq are required")
			}
			c, err := conn.connect(cmd.Context(), cmd.ErrOrStderr(), func(o *client.Options) { o.DiscardPushes = true })
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), conn.timeout)
			defer cancel()
			resp, err := c.Read(ctx, &pimv1.ReadReq{Conv: api.ConvID(conv), Seq: seq})
			if err != nil {
				return failed("read", err)
			}
			if asJSON {
				return writeJSONLine(cmd.OutOrStdout(), struct {
					Conv    string `json:"conv"`
					ReadSeq uint64 `json:"read_seq"`
				}{resp.Conv, resp.ReadSeq})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s read up to #%d\n", resp.Conv, resp.ReadSeq)
			return err
		}),
	}
	conn.register(cmd.Flags())
	cmd.Flags().StringVar(&conv, "conv", "", "the conversation (d:a:b, g:x, or a bare group id)")
	cmd.Flags().Uint64Var(&seq, "seq", 0, "read up to and including this seq")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the read position as one JSON object")
	return cmd
}
