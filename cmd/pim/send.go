package main

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/client"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

type sendFlags struct {
	conn        connFlags
	to          string
	group       string
	clientMsgID string
	asJSON      bool
}

func newSendCmd() *cobra.Command {
	var f sendFlags
	cmd := &cobra.Command{
		Use:   "send (--to USER | --group G) [flags] TEXT...",
		Short: "Send a text message and print its ack",
		Long: "send sends TEXT (the arguments joined by spaces) to a user or a group and prints\n" +
			"the server's ack. Sending again with the same --client-msg-id stores nothing new\n" +
			"and prints the original ack (marked duplicate).",
		Example: "  pim send --token $T --to bob 'hello bob'\n" +
			"  pim send --token $T --group team --client-msg-id m1 --json 'hi all'",
		Args: cobra.MinimumNArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			req, err := f.request(args)
			if err != nil {
				return err
			}
			c, err := f.conn.connect(cmd.Context(), cmd.ErrOrStderr(), func(o *client.Options) { o.DiscardPushes = true })
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), f.conn.timeout)
			defer cancel()
			ack, err := c.Send(ctx, req)
			if err != nil {
				return failed("send", err)
			}
			return formatAck(cmd.OutOrStdout(), ack, f.asJSON)
		}),
	}
	f.conn.register(cmd.Flags())
	cmd.Flags().StringVar(&f.to, "to", "", "send to this user (the 1:1 conversation)")
	cmd.Flags().StringVar(&f.group, "group", "", "send to this group (\"g:x\" or \"x\")")
	cmd.Flags().StringVar(&f.clientMsgID, "client-msg-id", "", "the message's client id, for idempotent resends (default random)")
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "print the ack as one JSON object")
	return cmd
}

// request validates the send flags and builds the SendReq.
func (f *sendFlags) request(args []string) (*pimv1.SendReq, error) {
	if (f.to == "") == (f.group == "") {
		return nil, usagef("give exactly one of --to USER and --group G")
	}
	text := strings.Join(args, " ")
	if text == "" {
		return nil, usagef("nothing to send: TEXT is empty")
	}
	id := f.clientMsgID
	if id == "" {
		id = api.RandomClientMsgID()
	}
	req := &pimv1.SendReq{
		ClientMsgId: id, ToUser: f.to, Type: pimv1.MessageType_MESSAGE_TYPE_TEXT,
		Body: []byte(text), ClientTime: time.Now().UnixMilli(),
	}
	if f.group != "" {
		req.Conv = api.GroupID(f.group)
	}
	return req, nil
}
