package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/client"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func newGroupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "group (create|add|remove|members|settings)",
		Short: "Create groups and manage their members",
		Args:  cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("missing group command: create, add, remove, members or settings")
			}
			return usagef("unknown group command %q: want create, add, remove, members or settings", args[0])
		},
	}
	cmd.AddCommand(
		newGroupOpCmd(pimv1.GroupOp_GROUP_OP_CREATE, "create [--group G] [USER...]",
			"Create a group with you as owner and USERs as members", "created", false),
		newGroupOpCmd(pimv1.GroupOp_GROUP_OP_ADD, "add --group G USER...",
			"Add users to a group (any member may)", "added to", true),
		newGroupOpCmd(pimv1.GroupOp_GROUP_OP_REMOVE, "remove --group G USER...",
			"Remove users from a group (the owner removes anyone, a member only themselves)", "removed from", true),
		newGroupOpCmd(pimv1.GroupOp_GROUP_OP_MEMBERS, "members --group G",
			"List a group's members (user, role, join seq)", "", true),
		newGroupSettingsCmd(),
	)
	return cmd
}

// newGroupOpCmd builds one group subcommand. verb is how human output
// introduces the result ("" prints a member listing).
func newGroupOpCmd(op pimv1.GroupOp, use, short, verb string, needGroup bool) *cobra.Command {
	var (
		conn   connFlags
		group  string
		asJSON bool
	)
	args := cobra.MinimumNArgs(1)
	switch op {
	case pimv1.GroupOp_GROUP_OP_CREATE:
		args = cobra.ArbitraryArgs
	case pimv1.GroupOp_GROUP_OP_MEMBERS:
		args = cobra.NoArgs
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  args,
		RunE: runE(func(cmd *cobra.Command, users []string) error {
			if needGroup && group == "" {
				return usagef("--group is required")
			}
			c, err := conn.connect(cmd.Context(), cmd.ErrOrStderr(), func(o *client.Options) { o.DiscardPushes = true })
			if err != nil {
				return err
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), conn.timeout)
			defer cancel()
			resp, err := c.Group(ctx, &pimv1.GroupReq{Op: op, Group: api.GroupID(group), Users: users})
			if err != nil {
				return failed(groupWhat(op, group), err)
			}
			return formatGroup(cmd.OutOrStdout(), resp, verb, asJSON)
		}),
	}
	conn.register(cmd.Flags())
	gdoc := "the group (\"g:x\" or \"x\")"
	if !needGroup {
		gdoc = "the new group's id (\"g:x\" or \"x\"; default: the server picks one)"
	}
	cmd.Flags().StringVar(&group, "group", "", gdoc)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object (group, seq, members)")
	return cmd
}

func groupWhat(op pimv1.GroupOp, group string) string {
	g := api.GroupID(group)
	switch op {
	case pimv1.GroupOp_GROUP_OP_CREATE:
		if g == "" {
			return "create group"
		}
		return "create group " + g
	case pimv1.GroupOp_GROUP_OP_ADD:
		return "add to " + g
	case pimv1.GroupOp_GROUP_OP_REMOVE:
		return "remove from " + g
	}
	return "list members of " + g
}
