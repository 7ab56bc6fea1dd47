// Connect's options and how they become a core.Config, TLS configurations
// and endpoints.
//
// Invariants of this file:
//   - Options are validated and copied at Connect; later changes by the
//     caller have no effect.
//   - Every server address the core handles is canonical (tcp://, tls://,
//     ws://, wss://), so one address always means one transport and one
//     TLS mode, whether it came from Options, the LBS or a GoAway.
//   - TLS is never silently weakened: verification is skipped only with
//     TLSOptions.Insecure, or replaced by a certificate pin.

package pim

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/pim-project/pim/internal/tlsutil"
	"github.com/pim-project/pim/sdk/go/core"
	"github.com/pim-project/pim/sdk/go/internal/transport"
)

// Options configures Connect.
type Options struct {
	// Servers are gateway addresses in order of preference:
	// "host:port" (TCP; TLS if TLS is enabled; WebSocket at /ws with
	// WebSocket), "tcp://host:port", "tls://host:port", "ws://host:port/ws"
	// or "wss://host:port/ws". Needed unless LBSURL is set.
	Servers []string
	// LBSURL is the base URL of the location service (GET {LBSURL}/v1/lbs).
	// The answer is cached in the store and used when the LBS cannot be
	// reached; it is refreshed when it expires and after repeated
	// connection failures. Servers, if also set, are the fallback when the
	// LBS was never reached.
	LBSURL string
	// Token authenticates the user (SetToken replaces it).
	Token string
	// User is the token's user. Empty: read from the token's subject
	// (without verifying it: the server does).
	User string
	// DeviceID names this device (1-64 of A-Z a-z 0-9 . _ @ -). Each
	// device of a user has its own cursor and outbox.
	DeviceID string
	// DataDir holds the local store (created if missing). One Client at a
	// time per data dir; it belongs to one (User, DeviceID).
	DataDir string
	// TLS configures TLS for the gateways (and an https LBS).
	TLS TLSOptions
	// WebSocket makes bare host:port addresses mean ws(s)://host:port/ws,
	// and prefers WebSocket endpoints in LBS answers.
	WebSocket bool
	// Logger receives the driver's logs (nil: discarded).
	Logger *slog.Logger
	// HTTPClient is used for the LBS (nil: one with the TLS options).
	HTTPClient *http.Client
	// Tuning overrides the core's defaults (zero fields keep them).
	Tuning Tuning
	// NoConvList turns the local conversation list off: no ConvListReq is
	// sent and Conversations stays empty (e.g. a bot that only sends).
	NoConvList bool
}

// TLSOptions configures TLS. Any field set enables TLS for bare addresses.
type TLSOptions struct {
	// Enable TLS with verification against the system roots (or CAFile).
	Enable bool
	// PinSHA256 pins the server's leaf certificate by its SHA-256
	// fingerprint (hex, with or without colons); a self-signed server then
	// works. With CAFile as well, the chain must also verify.
	PinSHA256 string
	// CAFile is a PEM file of the CAs to trust instead of the system roots.
	CAFile string
	// Insecure skips verification altogether (tests only).
	Insecure bool
	// Config, if set, is used as is (cloned; ServerName filled per server)
	// and the fields above are ignored.
	Config *tls.Config
}

func (t TLSOptions) enabled() bool {
	return t.Enable || t.PinSHA256 != "" || t.CAFile != "" || t.Insecure || t.Config != nil
}

// forHost returns the TLS configuration for a server named host.
func (t TLSOptions) forHost(host string) (*tls.Config, error) {
	if t.Config != nil {
		c := t.Config.Clone()
		if c.ServerName == "" {
			c.ServerName = host
		}
		return c, nil
	}
	c, err := tlsutil.ClientConfig(host, t.PinSHA256, t.Insecure, t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("pim: TLS configuration: %w", err)
	}
	return c, nil
}

// Tuning are the core's parameters (see core.Config for each; zero keeps
// the default) and the driver's own.
type Tuning struct {
	// Window is the most sends in flight per conversation.
	Window int
	// SendTimeout: an unanswered send is sent again (same id) after it.
	SendTimeout time.Duration
	// MaxAttempts and MaxSendAge are a message's retry budget (5 attempts
	// or 3 minutes by default); then it is Failed until RetryFailed.
	MaxAttempts int
	MaxSendAge  time.Duration
	// RequestTimeout bounds sync and command requests.
	RequestTimeout time.Duration
	// ConnectTimeout bounds dialing plus the handshake.
	ConnectTimeout time.Duration
	// DeadAfterTimeouts consecutive request timeouts declare the
	// connection dead.
	DeadAfterTimeouts int
	SyncLimit         uint32
	AckEvery          int
	AckDelay          time.Duration
	CommandQuarantine time.Duration
	ClockSamples      int
	// ConvListPage is the page size of conversation-list requests (0: 100).
	ConvListPage uint32
	Backoff      BackoffConfig
	Heartbeat    HeartbeatConfig

	// WriteTimeout bounds one write on a connection (0: 10 s); a write that
	// cannot complete in time ends the connection.
	WriteTimeout time.Duration
}

func (o *Options) coreConfig(servers []string) core.Config {
	t := o.Tuning
	return core.Config{
		User: o.User, DeviceID: o.DeviceID, Token: o.Token, Servers: servers,
		Window: t.Window, SendTimeout: t.SendTimeout, MaxAttempts: t.MaxAttempts, MaxSendAge: t.MaxSendAge,
		RequestTimeout: t.RequestTimeout, ConnectTimeout: t.ConnectTimeout, DeadAfterTimeouts: t.DeadAfterTimeouts,
		SyncLimit: t.SyncLimit, AckEvery: t.AckEvery, AckDelay: t.AckDelay,
		CommandQuarantine: t.CommandQuarantine, ClockSamples: t.ClockSamples,
		ConvList: !o.NoConvList, ConvListLimit: t.ConvListPage,
		Backoff: t.Backoff, Heartbeat: t.Heartbeat,
	}
}

// check validates o and fills what can be derived.
func (o *Options) check() error {
	if o.DeviceID == "" {
		return errors.New("pim: Options.DeviceID is required")
	}
	if o.DataDir == "" {
		return errors.New("pim: Options.DataDir is required (the outbox and cursor live there)")
	}
	if o.Token == "" {
		return errors.New("pim: Options.Token is required")
	}
	if len(o.Servers) == 0 && o.LBSURL == "" {
		return errors.New("pim: Options.Servers or Options.LBSURL is required")
	}
	if o.User == "" {
		u, err := tokenSubject(o.Token)
		if err != nil {
			return fmt.Errorf("pim: Options.User is empty and %w", err)
		}
		o.User = u
	}
	if o.Tuning.WriteTimeout <= 0 {
		o.Tuning.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Servers = append([]string(nil), o.Servers...)
	for i, s := range o.Servers {
		ep, err := o.endpoint(s)
		if err != nil {
			return fmt.Errorf("pim: Options.Servers: %w", err)
		}
		o.Servers[i] = ep.String()
	}
	return nil
}

// endpoint parses a server address with o's defaults.
func (o *Options) endpoint(addr string) (transport.Endpoint, error) {
	return transport.Parse(addr, o.TLS.enabled(), o.WebSocket)
}

// tokenSubject reads the "sub" claim of a JWT without verifying it.
func tokenSubject(tok string) (string, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", errors.New("the token is not a JWT to read the user from")
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("the token's claims do not decode: %w", err)
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Sub == "" {
		return "", errors.New("the token has no subject to read the user from")
	}
	return claims.Sub, nil
}
