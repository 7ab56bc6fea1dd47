package main

// One-shot request commands (read, convs, receipts, hide, settings): one
// connection that only makes requests. Invariants: pushed events are
// discarded and never acknowledged, so a one-shot command never moves its
// device's cursor past events nobody printed; each request is bounded by
// --timeout on its own (a command that pages makes several).

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/client"
)

// requester makes the requests of one one-shot command.
type requester struct {
	c    *client.Conn
	conn *connFlags
	ctx  context.Context
}

// requests validates the connection flags and connects; the caller closes
// the requester.
func (f *connFlags) requests(cmd *cobra.Command) (*requester, error) {
	c, err := f.connect(cmd.Context(), cmd.ErrOrStderr(), func(o *client.Options) { o.DiscardPushes = true })
	if err != nil {
		return nil, err
	}
	return &requester{c: c, conn: f, ctx: cmd.Context()}, nil
}

// bounded returns the context of one request.
func (r *requester) bounded() (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.ctx, r.conn.timeout)
}

func (r *requester) Close() error { return r.c.Close() }
