package main

// Error reporting. Invariants: an error a command's RunE returns is a
// command failure (exit 1) unless it is a usageError; every error cobra
// itself raises (unknown command or flag, bad arguments, missing required
// flags) is a usage error (exit 2); server errors are always shown with
// their message and code name.

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/errcode"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is a mistake in the command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErr(err error) error { return usageError{err} }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// runError marks an error as coming from a command's run, not from cobra.
type runError struct{ err error }

func (e runError) Error() string { return e.err.Error() }
func (e runError) Unwrap() error { return e.err }

// runE wraps a command's run function so its failures are told apart from
// cobra's usage errors.
func runE(f func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := f(cmd, args)
		var u usageError
		if err == nil || errors.As(err, &u) {
			return err
		}
		return runError{err}
	}
}

// failed describes a failure: "what: message (code NAME)" for a server
// error, "what: cause" otherwise.
func failed(what string, err error) error {
	var ce *errcode.Error
	if errors.As(err, &ce) {
		return &serverError{what: what, e: ce}
	}
	return &contextError{msg: what + ": " + strings.TrimPrefix(err.Error(), "client: "), err: err}
}

// contextError says what failed, keeping the cause in the chain.
type contextError struct {
	msg string
	err error
}

func (e *contextError) Error() string { return e.msg }
func (e *contextError) Unwrap() error { return e.err }

// serverError is a failure the server reported with a code.
type serverError struct {
	what string
	e    *errcode.Error
}

func (e *serverError) Error() string {
	return fmt.Sprintf("%s: %s (code %s)", e.what, e.e.Msg, api.CodeName(e.e.Code))
}
func (e *serverError) Unwrap() error { return e.e }

// report prints err for cmd and returns the exit status.
func report(w io.Writer, cmd *cobra.Command, err error) int {
	if err == nil {
		return exitOK
	}
	var r runError
	var u usageError
	if errors.As(err, &r) && !errors.As(err, &u) {
		fmt.Fprintf(w, "pim: %v\n", err)
		return exitFailure
	}
	path := "pim"
	if cmd != nil {
		path = cmd.CommandPath()
	}
	fmt.Fprintf(w, "pim: %v\nRun '%s --help' for usage.\n", err, path)
	return exitUsage
}
