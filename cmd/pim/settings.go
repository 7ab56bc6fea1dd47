package main

// `pim settings`: read, and with a flag change, the user's settings.
// Invariant: only a flag given on the command line is sent; without one the
// command only reads, so it never changes a setting by default.

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// settingsView is the JSON answer of pim settings, as GET /v1/settings answers.
type settingsView struct {
	ReadReceipts bool `json:"read_receipts"`
}

func newSettingsCmd() *cobra.Command {
	var (
		conn         connFlags
		readReceipts string
		asJSON       bool
	)
	cmd := &cobra.Command{
		Use:   "settings [--read-receipts on|off] [flags]",
		Short: "Show or change your settings (read receipts)",
		Long: "settings prints your settings; --read-receipts changes them first. With read\n" +
			"receipts off you neither send them (your reads are not reported to others) nor\n" +
			"see them (no peer read positions, no read counts, pim receipts is refused).",
		Example: "  pim settings --token $T\n  pim settings --token $T --read-receipts off --json",
		Args:    cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			req := &pimv1.SettingsReq{}
			if cmd.Flags().Changed("read-receipts") {
				on, err := parseOnOff(readReceipts)
				if err != nil {
					return usagef("--read-receipts: %v", err)
				}
				req.ReadReceipts = &on
			}
			r, err := conn.requests(cmd)
			if err != nil {
				return err
			}
			defer r.Close()
			ctx, cancel := r.bounded()
			defer cancel()
			resp, err := r.c.Settings(ctx, req)
			if err != nil {
				return failed("settings", err)
			}
			if asJSON {
				return writeJSONLine(cmd.OutOrStdout(), settingsView{ReadReceipts: resp.ReadReceipts})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "read receipts: %s\n", onOff(resp.ReadReceipts))
			return err
		}),
	}
	conn.register(cmd.Flags())
	cmd.Flags().StringVar(&readReceipts, "read-receipts", "", "turn read receipts on or off (on|off)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the settings as one JSON object")
	return cmd
}

func parseOnOff(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "on", "true", "yes":
		return true, nil
	case "off", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("want on or off, not %q", s)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
