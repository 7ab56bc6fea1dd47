package main

// `pim send`: one message. Without --data it is one request on one
// connection (send_sdk.go has the --data path, through the SDK's durable
// outbox). Invariant: a bad flag combination is a usage error before
// anything is dialled or opened.

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
	data        string // the SDK's local store: send through its outbox
}

func newSendCmd() *cobra.Command {
	var f sendFlags
	cmd := &cobra.Command{
		Use:   "send (--to USER | --group G) [flags] TEXT...",
		Short: "Send a text message and print its ack",
		Long: "send sends TEXT (the arguments joined by spaces) to a user or a group and prints\n" +
			"the server's ack. Sending again with the same --client-msg-id stores nothing new\n" +
			"and prints the original ack (marked duplicate).\n\n" +
			"Without --data it is one-shot: one connection, one request; if that fails, nothing\n" +
			"is kept. With --data DIR the message first goes to the durable outbox of the Go\n" +
			"SDK in DIR (one DIR per user and --device), then send waits up to --timeout for the\n" +
			"server's ack, reconnecting as needed. Use it on unreliable networks and in scripts\n" +
			"that must neither lose nor duplicate a message: if the time runs out, send exits 1\n" +
			"and the message waits in DIR; the next pim send, pim chat or pim tail with the\n" +
			"same --data (and --device) sends it, with the same client_msg_id, so the server\n" +
			"stores it once. pim send --data DIR without TEXT just sends what waits there.\n" +
			"Messages an earlier run left are sent first (in order within a conversation) and\n" +
			"reported on stderr; stdout has the ack of this run's message, as without --data.\n" +
			"Run again with the same --client-msg-id, it sends the message once in all.",
		Example: "  pim send --token $T --to bob 'hello bob'\n" +
			"  pim send --token $T --group team --client-msg-id m1 --json 'hi all'\n" +
			"  pim send --token $T --device ci --data ./pim-ci --client-msg-id build-42 --to bob 'build 42 is green'\n" +
			"  pim send --token $T --device ci --data ./pim-ci      # send what an earlier run left",
		Args: func(cmd *cobra.Command, args []string) error {
			if f.data != "" {
				return nil // without TEXT: send what waits in the outbox
			}
			return cobra.MinimumNArgs(1)(cmd, args)
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if f.data != "" {
				return runSendSDK(cmd.Context(), &f, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
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
	cmd.Flags().StringVar(&f.data, "data", "", "send through the SDK's durable outbox in this directory (one per user and device): nothing lost or duplicated across runs")
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
