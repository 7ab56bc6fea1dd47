package main

// group_settings.go: `pim group settings`, the group's options (the owner
// changes them; any member reads them).

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/client"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func newGroupSettingsCmd() *cobra.Command {
	var (
		conn    connFlags
		group   string
		visible string
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "settings --group G [--receipts-visible on|off]",
		Short: "Show or change a group's settings (the owner changes them)",
		Args:  cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if group == "" {
				return usagef("--group is required")
			}
			req := &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_SETTINGS, Group: api.GroupID(group)}
			switch visible {
			case "":
			case "on", "off":
				on := visible == "on"
				req.ReceiptsVisible = &on
			default:
				return usagef("--receipts-visible must be on or off, got %q", visible)
			}
			c, err := conn.connect(cmd.Context(), cmd.ErrOrStderr(), func(o *client.Options) { o.DiscardPushes = true })
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), conn.timeout)
			defer cancel()
			resp, err := c.Group(ctx, req)
			if err != nil {
				return failed("group settings of "+req.Group, err)
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{
					"group": resp.Group, "receipts_visible": resp.ReceiptsVisible})
			}
			state := "off"
			if resp.ReceiptsVisible {
				state = "on"
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "%s: read receipts visible to every member: %s\n", resp.Group, state)
			return err
		}),
	}
	conn.register(cmd.Flags())
	cmd.Flags().StringVar(&group, "group", "", "the group (\"g:x\" or \"x\")")
	cmd.Flags().StringVar(&visible, "receipts-visible", "", "on: every member may read who read each message; off: only its sender (the default)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the settings as one JSON object")
	return cmd
}
