package main

// Connection flags shared by every client command. Invariants: TLS is on
// whenever any TLS flag is given or the URL is wss://; skipping verification
// is only ever the explicit --insecure-skip-verify; a plaintext connection to
// a non-loopback host always warns; a bad flag combination is a usage error
// before anything is dialled.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/store"
	"github.com/pim-project/pim/internal/tlsutil"
)

const (
	defaultServer = "127.0.0.1:7400"
	defaultPort   = "7400"
	defaultDevice = "cli"
	tokenEnv      = "PIM_TOKEN"
)

type connFlags struct {
	server   string
	token    string
	device   string
	tls      bool
	pin      string
	ca       string
	insecure bool
	timeout  time.Duration
}

func (f *connFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.server, "server", defaultServer, "server: TCP host:port, or a ws:// or wss:// URL for WebSocket (path /ws by default)")
	fs.StringVar(&f.token, "token", "", "token (default $"+tokenEnv+"; mint one with pim token)")
	fs.StringVar(&f.device, "device", defaultDevice, "this client's device id")
	fs.BoolVar(&f.tls, "tls", false, "use TLS (verified against the system roots unless --tls-pin or --tls-ca)")
	fs.StringVar(&f.pin, "tls-pin", "", "trust only a server certificate with this SHA-256 fingerprint (hex); implies --tls")
	fs.StringVar(&f.ca, "tls-ca", "", "verify the server against the CA certificates in this PEM file; implies --tls")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "use TLS without verifying the server at all (testing only); implies --tls")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "time limit for connecting (and, for send and group, for the answer)")
}

// target is where and how to connect, resolved from the flags.
type target struct {
	addr      string // host:port, or the WebSocket URL
	host      string
	websocket bool
	useTLS    bool
}

// resolveTarget parses --server and the TLS flags.
func (f *connFlags) resolveTarget() (target, error) {
	s := strings.TrimSpace(f.server)
	anyTLSFlag := f.tls || f.pin != "" || f.ca != "" || f.insecure
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Host == "" {
			return target{}, usagef("--server %q is not a valid URL", f.server)
		}
		switch u.Scheme {
		case "ws":
			if anyTLSFlag {
				return target{}, usagef("TLS flags need a wss:// URL, not ws://")
			}
		case "wss":
		default:
			return target{}, usagef("--server %q: use host:port for TCP, or a ws:// or wss:// URL", f.server)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/ws"
		}
		return target{addr: u.String(), host: u.Hostname(), websocket: true, useTLS: u.Scheme == "wss"}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		// A bare host (or [v6] address): the default port.
		host, port = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), defaultPort
	}
	if host == "" {
		return target{}, usagef("--server %q has no host", f.server)
	}
	return target{addr: net.JoinHostPort(host, port), host: host, useTLS: anyTLSFlag}, nil
}

// options validates the flags and returns the client options. Warnings go
// to stderr. getenv reads the environment (os.Getenv in the program).
func (f *connFlags) options(stderr io.Writer, getenv func(string) string) (client.Options, error) {
	tok := f.token
	if tok == "" {
		tok = strings.TrimSpace(getenv(tokenEnv))
	}
	if tok == "" {
		return client.Options{}, usagef("no token: pass --token or set %s (mint one with `pim token --data DIR --user NAME`)", tokenEnv)
	}
	if !store.ValidID(f.device) {
		return client.Options{}, usagef("invalid --device %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", f.device)
	}
	if f.insecure && (f.pin != "" || f.ca != "") {
		return client.Options{}, usagef("--insecure-skip-verify cannot be combined with --tls-pin or --tls-ca")
	}
	if f.pin != "" {
		if _, err := tlsutil.NormalizePin(f.pin); err != nil {
			return client.Options{}, usagef("--tls-pin: want the server's SHA-256 fingerprint, 64 hex digits (pim serve prints it)")
		}
	}
	if f.timeout <= 0 {
		return client.Options{}, usagef("--timeout must be positive")
	}
	t, err := f.resolveTarget()
	if err != nil {
		return client.Options{}, err
	}
	opts := client.Options{Addr: t.addr, WebSocket: t.websocket, Token: tok, Device: f.device}
	if t.useTLS {
		cfg, err := tlsutil.ClientConfig(t.host, f.pin, f.insecure, f.ca)
		if err != nil {
			return client.Options{}, fmt.Errorf("TLS setup: %w", err)
		}
		opts.TLS = cfg
		if f.insecure {
			fmt.Fprintf(stderr, "pim: warning: --insecure-skip-verify: the server's identity is not checked\n")
		}
	} else if !tlsutil.IsLoopback(t.addr) {
		fmt.Fprintf(stderr, "pim: warning: plaintext connection to %s: the token and messages travel unencrypted (use --tls)\n", t.host)
	}
	return opts, nil
}

// dial connects with opts under the --timeout.
func (f *connFlags) dial(ctx context.Context, opts client.Options) (*client.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	c, err := client.Dial(ctx, opts)
	if err != nil {
		err = failed("connect to "+opts.Addr, err)
		if opts.TLS == nil && errors.Is(err, client.ErrNoWelcome) {
			err = fmt.Errorf("%w (does the server use TLS? try --tls or --tls-pin)", err)
		}
		return nil, err
	}
	return c, nil
}

// connect validates the flags and dials.
func (f *connFlags) connect(ctx context.Context, stderr io.Writer, tune func(*client.Options)) (*client.Conn, error) {
	opts, err := f.options(stderr, os.Getenv)
	if err != nil {
		return nil, err
	}
	if tune != nil {
		tune(&opts)
	}
	return f.dial(ctx, opts)
}
