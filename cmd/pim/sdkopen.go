package main

// Opening the Go SDK for send --data and tail --data. Invariant: the
// options are pim chat's (chatFlags.sdkOptions), so one DIR works alike
// with chat, send and tail; an error says which DIR and what to do.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	pim "github.com/pim-project/pim/sdk/go"
)

// openSDK validates the connection flags and opens the SDK on dir; it
// connects in the background.
func openSDK(ctx context.Context, conn *connFlags, dir string, stderr io.Writer) (*pim.Client, pim.Options, error) {
	opts, err := (&chatFlags{conn: *conn, data: dir}).sdkOptions(stderr, os.Getenv)
	if err != nil {
		return nil, pim.Options{}, err
	}
	cl, err := pim.Connect(ctx, opts)
	switch {
	case errors.Is(err, pim.ErrDataDirInUse):
		return nil, opts, fmt.Errorf("open %s: another pim chat, send or tail has it open: let it end, or use another --data", dir)
	case err != nil:
		return nil, opts, sdkFailed("open "+dir, err)
	}
	return cl, opts, nil
}

// closeSDK closes cl, keeping the first error of the run.
func closeSDK(cl *pim.Client, dir string, err *error) {
	if cerr := cl.Close(); cerr != nil && *err == nil {
		*err = sdkFailed("close "+dir, cerr)
	}
}

// sdkFailed describes a failure of an SDK call: "what: cause", the cause
// without the SDK's "pim: " prefix (the CLI adds its own), kept in the
// chain.
func sdkFailed(what string, err error) error {
	return &contextError{msg: what + ": " + errText(err), err: err}
}
