package main

// `pim receipts`: who read one of your messages. Invariants: every page of
// readers is read (after the last reader of the previous page) and printed
// as one answer; a page that says has_more without moving on is an error,
// never a loop; a refusal says what would make the request allowed.

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// readersPage is the page size asked for (the server caps it).
const readersPage = 1000

func newReceiptsCmd() *cobra.Command {
	var (
		conn   connFlags
		conv   string
		seq    uint64
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "receipts --conv C --seq S [flags]",
		Short: "Show who read one of your messages",
		Long: "receipts prints how many members read message --seq of --conv, and who. Only the\n" +
			"message's sender may ask, and only with read receipts on (pim settings); readers\n" +
			"who had read receipts off when they read are not counted.",
		Example: "  pim receipts --token $T --conv team --seq 12\n" +
			"  pim receipts --token $T --conv d:alice:bob --seq 3 --json",
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
			fetch := func(req *pimv1.ReceiptsReq) (*pimv1.ReceiptsResp, error) {
				ctx, cancel := r.bounded()
				defer cancel()
				return r.c.Receipts(ctx, req)
			}
			out, err := allReceipts(fetch, api.ConvID(conv), seq)
			if err != nil {
				return err
			}
			return formatReceipts(cmd.OutOrStdout(), out, asJSON)
		}),
	}
	conn.register(cmd.Flags())
	cmd.Flags().StringVar(&conv, "conv", "", "the conversation (d:a:b, g:x, or a bare group id)")
	cmd.Flags().Uint64Var(&seq, "seq", 0, "the message's seq")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object (conv, seq, read_count, readers)")
	return cmd
}

// allReceipts reads every page of readers of conv/seq.
func allReceipts(fetch func(*pimv1.ReceiptsReq) (*pimv1.ReceiptsResp, error), conv string, seq uint64) (api.Receipts, error) {
	out := api.Receipts{Conv: conv, Seq: seq, Readers: []string{}}
	req := &pimv1.ReceiptsReq{Conv: conv, Seq: seq, Limit: readersPage}
	for {
		resp, err := fetch(req)
		if err != nil {
			return out, receiptsFailed(conv, seq, err)
		}
		out.Conv, out.ReadCount = resp.Conv, resp.ReadCount
		out.Readers = append(out.Readers, resp.Readers...)
		if !resp.HasMore {
			return out, nil
		}
		if len(resp.Readers) == 0 || resp.Readers[len(resp.Readers)-1] <= req.AfterUser {
			return out, fmt.Errorf("receipts of %s #%d: the page after %q did not move on", conv, seq, req.AfterUser)
		}
		req.AfterUser = resp.Readers[len(resp.Readers)-1]
	}
}

// receiptsFailed describes a refused receipts request, with what to do.
func receiptsFailed(conv string, seq uint64, err error) error {
	what := fmt.Sprintf("receipts of %s #%d", conv, seq)
	var ce *errcode.Error
	if errors.As(err, &ce) && ce.Code == pimv1.ErrorCode_ERROR_CODE_FORBIDDEN {
		return fmt.Errorf("%w; ask as the message's sender, with read receipts on (`pim settings --read-receipts on`); "+
			"in a group the owner can let every member see them (`pim group settings --group G --receipts-visible on`); "+
			"or use the admin key over HTTP: GET /v1/conversations/%s/messages/%d/receipts", failed(what, err), conv, seq)
	}
	return failed(what, err)
}
