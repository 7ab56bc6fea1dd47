package main

// `pim convs`: the user's conversation list. Invariants:
//   - Without --since every entry is printed once by activity, newest first,
//     over as many pages as it takes; with --since V exactly the entries
//     changed after V are printed, oldest change first.
//   - After the output, every change up to the highest "version" printed
//     has been printed: a listing read over several pages is followed by a
//     catch-up of what changed meanwhile (such an entry is printed again, the
//     later line being the newer), so that version is always safe to pass
//     as the next --since.
//   - A page that says has_more but does not move the cursor is an error,
//     never a loop.

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// convPage is the page size asked for (the server caps it).
const convPage = 1000

func newConvsCmd() *cobra.Command {
	var (
		conn   connFlags
		since  uint64
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "convs [--since V] [--limit N] [flags]",
		Short: "List your conversations with unread counts and read positions",
		Long: "convs prints your conversation list, newest activity first: each conversation's\n" +
			"unread count, your read position, its last seq and message and, in 1:1\n" +
			"conversations, how far the peer has read (and received) your messages.\n\n" +
			"With --since V it prints only the conversations that changed after list version V,\n" +
			"oldest change first. The list version is printed at the end of the human output;\n" +
			"with --json, pass the highest \"version\" printed (or V again if nothing was).",
		Example: "  pim convs --token $T\n" +
			"  pim convs --token $T --json --limit 20\n" +
			"  pim convs --token $T --json --since 42",
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return usagef("--limit must not be negative")
			}
			r, err := conn.requests(cmd)
			if err != nil {
				return err
			}
			defer r.Close()
			fetch := func(req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
				ctx, cancel := r.bounded()
				defer cancel()
				return r.c.Conversations(ctx, req)
			}
			return printConvs(cmd.Context(), cmd.OutOrStdout(), fetch, since, limit, asJSON, time.Local)
		}),
	}
	conn.register(cmd.Flags())
	cmd.Flags().Uint64Var(&since, "since", 0, "print only the conversations changed after this list version (0: the whole list)")
	cmd.Flags().IntVar(&limit, "limit", 0, "print at most this many conversations (0: all)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per conversation")
	return cmd
}

// convFetcher reads one page of the list.
type convFetcher func(*pimv1.ConvListReq) (*pimv1.ConvListResp, error)

func printConvs(ctx context.Context, w io.Writer, fetch convFetcher, since uint64, limit int, asJSON bool, loc *time.Location) error {
	table := newConvTable(w, loc)
	emit := func(c *pimv1.Conversation) error {
		if asJSON {
			return writeJSONLine(w, convLineOf(c))
		}
		return table.add(c)
	}
	res, err := walkConvs(ctx, fetch, since, limit, emit)
	if err != nil {
		return err
	}
	if asJSON {
		return nil
	}
	if err := table.flush(); err != nil {
		return err
	}
	var note string
	switch {
	case table.rows == 0 && res.version == 0:
		_, err = fmt.Fprintln(w, "(no conversations)")
		return err
	case table.rows == 0 && since > 0:
		note = fmt.Sprintf("no changes since version %d", since)
	case table.rows == 0:
		note = "no conversations"
	case res.truncated:
		note = fmt.Sprintf("%d shown, more with a higher --limit", table.rows)
	}
	if note != "" {
		note += "; "
	}
	_, err = fmt.Fprintf(w, "(%slist version %d: `pim convs --since %d` prints what changes after this)\n", note, res.version, res.version)
	return err
}

// walkResult is the outcome of walkConvs.
type walkResult struct {
	version   uint64 // the list version to pass as --since next time
	truncated bool   // --limit left entries out
}

// walkConvs calls emit for the list (since == 0) or the changes after since,
// at most limit entries (0: all) before any catch-up.
func walkConvs(ctx context.Context, fetch convFetcher, since uint64, limit int, emit func(*pimv1.Conversation) error) (walkResult, error) {
	if since > 0 {
		return walkChanges(ctx, fetch, since, limit, emit)
	}
	req := &pimv1.ConvListReq{}
	var (
		res     walkResult
		printed int
		pages   int
	)
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("conversations: %w", err)
		}
		req.Limit = pageSize(limit, printed)
		resp, err := fetch(req)
		if err != nil {
			return res, failed("conversations", err)
		}
		pages++
		if pages == 1 {
			res.version = resp.Version
		}
		for i, c := range resp.Convs {
			if err := emit(c); err != nil {
				return res, fmt.Errorf("write output: %w", err)
			}
			printed++
			if limit > 0 && printed >= limit && (resp.HasMore || i+1 < len(resp.Convs)) {
				res.truncated = true
				return res, nil
			}
		}
		if !resp.HasMore {
			break
		}
		if len(resp.Convs) == 0 {
			return res, fmt.Errorf("conversations: the server said has_more with an empty page")
		}
		last := resp.Convs[len(resp.Convs)-1].Activity
		if last == 0 || (req.BeforeActivity > 0 && last >= req.BeforeActivity) {
			return res, fmt.Errorf("conversations: the page after activity %d did not move back (last activity %d)", req.BeforeActivity, last)
		}
		req.BeforeActivity = last
	}
	if pages == 1 {
		return res, nil // one page is one consistent read
	}
	// Entries that changed while the pages were read may have moved above
	// the cursor: print the changes since the first page.
	return walkChanges(ctx, fetch, res.version, 0, emit)
}

// walkChanges calls emit for the entries changed after since, oldest
// change first, at most limit (0: all).
func walkChanges(ctx context.Context, fetch convFetcher, since uint64, limit int, emit func(*pimv1.Conversation) error) (walkResult, error) {
	req := &pimv1.ConvListReq{SinceVersion: since}
	res := walkResult{version: since}
	printed := 0
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("conversations: %w", err)
		}
		req.Limit = pageSize(limit, printed)
		resp, err := fetch(req)
		if err != nil {
			return res, failed(fmt.Sprintf("conversations since version %d", req.SinceVersion), err)
		}
		for i, c := range resp.Convs {
			if err := emit(c); err != nil {
				return res, fmt.Errorf("write output: %w", err)
			}
			printed++
			if limit > 0 && printed >= limit && (resp.HasMore || i+1 < len(resp.Convs)) {
				// Every change up to this entry's version has been printed.
				res.version, res.truncated = max(res.version, c.Version), true
				return res, nil
			}
		}
		if !resp.HasMore {
			res.version = resp.Version
			return res, nil
		}
		if len(resp.Convs) == 0 {
			return res, fmt.Errorf("conversations: the server said has_more with an empty page")
		}
		last := resp.Convs[len(resp.Convs)-1].Version
		if last <= req.SinceVersion {
			return res, fmt.Errorf("conversations: the page after version %d did not move forward (last version %d)", req.SinceVersion, last)
		}
		// Every change up to last has been printed.
		res.version = last
		req.SinceVersion = last
	}
}

// pageSize is the limit of the next page when printed of limit (0: no
// limit) entries are out.
func pageSize(limit, printed int) uint32 {
	if limit > 0 {
		return uint32(min(limit-printed, convPage))
	}
	return convPage
}
