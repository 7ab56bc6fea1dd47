// Command pim is PIM's one binary: the server (pim serve), the command-line
// client (token, send, tail, group, read, convs, receipts, hide, settings, chat)
// and the operator's tools (backup, restore, bench).
//
// Exit status: 0 on success, 1 when the command failed ("pim: <what
// happened>: <server message> (code NAME)" on stderr), 2 on a usage error
// (with a hint to --help).
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	return report(stderr, cmd, err)
}

// newRootCmd builds the command tree. serve comes from newServeCmd (serve.go).
func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "pim",
		Short: "PIM instant-messaging server and client",
		Long: "pim runs the PIM server (pim serve) and talks to it: mint tokens, send messages,\n" +
			"follow a device's message stream, manage groups, and read and change the read state\n" +
			"(conversation list, read marks, receipts, delete-for-me, settings).",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	root.AddCommand(newServeCmd(), newTokenCmd(), newSendCmd(), newTailCmd(), newGroupCmd(), newReadCmd(),
		newConvsCmd(), newReceiptsCmd(), newHideCmd(), newSettingsCmd(), newChatCmd(), newBenchCmd(),
		newBackupCmd(), newRestoreCmd())
	return root
}
