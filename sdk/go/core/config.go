// Configuration of a Core and its defaults.
//
// Invariants of this file:
//   - Every duration and count has a default (the article's figures where it
//     gives one); withDefaults fills zero values, so Config{} plus User,
//     DeviceID, Token and Servers is a working configuration.
//   - Config is copied into the Core at New; later changes by the caller have
//     no effect (tokens and servers change through SetToken and SetServers).

package core

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// ProtocolVersion is the wire protocol version the core speaks by default.
const ProtocolVersion = 1

// Defaults for Config's zero values.
const (
	DefaultWindow            = 32
	DefaultSendTimeout       = 10 * time.Second
	DefaultMaxAttempts       = 5
	DefaultMaxSendAge        = 3 * time.Minute
	DefaultRequestTimeout    = 15 * time.Second
	DefaultConnectTimeout    = 15 * time.Second
	DefaultDeadAfterTimeouts = 3
	DefaultSyncLimit         = 256
	DefaultAckEvery          = 64
	DefaultAckDelay          = 500 * time.Millisecond
	DefaultCommandQuarantine = 5 * time.Second
	DefaultRetryAfter        = time.Second
	DefaultClockSamples      = 8
	DefaultConvListLimit     = 100

	DefaultBackoffBase    = time.Second
	DefaultBackoffCap     = 2 * time.Minute
	DefaultHealthyAfter   = 30 * time.Second
	DefaultReResolveAfter = 4

	// Smart heartbeat (R23): WeChat's figures.
	DefaultHeartbeatMin       = 3*time.Minute + 30*time.Second
	DefaultHeartbeatMax       = 10 * time.Minute
	DefaultHeartbeatStep      = time.Minute
	DefaultHeartbeatSuccesses = 2
	DefaultPongTimeout        = 20 * time.Second
	DefaultProbeTimeout       = 10 * time.Second
)

// idBytes is the number of random bytes in a generated id.
const idBytes = 16

// Limits the server enforces (docs/protocol.md); Send refuses bigger input
// at once instead of failing later.
const (
	MaxBody  = 64 << 10
	maxIDLen = 64
)

// Config configures a Core.
type Config struct {
	// User is the user the token belongs to. It names 1:1 conversations
	// (SendTo) and recognises this device's own messages in the timeline; a
	// Welcome for another user stops the core.
	User string
	// DeviceID names this device (1-64 of A-Z a-z 0-9 . _ @ -).
	DeviceID string
	// Token is sent in Hello; SetToken replaces it.
	Token string
	// Servers are the gateway addresses to dial, in order of preference
	// (usually from the LBS); SetServers replaces them. The core picks which
	// one to dial next (Dial.Addr).
	Servers []string
	// ProtocolVersion announced in Hello (0: ProtocolVersion).
	ProtocolVersion uint32

	// Rand is the only source of randomness (client_msg_ids, group ids,
	// backoff jitter). Nil: a generator seeded from crypto/rand. Tests inject
	// a seeded one for determinism. It must never replay a sequence it gave
	// a previous run of the app (seed it afresh at every start): a repeated
	// client_msg_id would be deduplicated into an old message by the server.
	Rand *rand.Rand

	// Window is the most sends in flight per conversation (pipelining).
	// Sender order under transient server errors needs the server to stop
	// processing a connection's sends after refusing one with a retryable
	// error (see the package documentation); against a server that does
	// not, use 1.
	Window int
	// SendTimeout: a send unanswered this long is sent again (same id).
	SendTimeout time.Duration
	// MaxAttempts and MaxSendAge are a message's retry budget: it fails when
	// it needs another transmission after MaxAttempts, or has waited
	// MaxSendAge since it was queued (or retried by RetryFailed).
	MaxAttempts int
	MaxSendAge  time.Duration
	// RequestTimeout bounds sync and command requests.
	RequestTimeout time.Duration
	// ConnectTimeout bounds dialing plus the Hello/Welcome handshake.
	ConnectTimeout time.Duration
	// DeadAfterTimeouts consecutive request timeouts with nothing received
	// in between declare the connection dead.
	DeadAfterTimeouts int
	// SyncLimit is the page size of SyncReq.
	SyncLimit uint32
	// AckEvery and AckDelay batch PushAcks: an ack is sent once AckEvery
	// events are unacknowledged, or AckDelay after the first of them.
	AckEvery int
	AckDelay time.Duration
	// CommandQuarantine: a command is not transmitted again sooner than this
	// after its previous transmission (see Command for why).
	CommandQuarantine time.Duration
	// ClockSamples is how many recent clock samples are kept; the one with
	// the smallest round trip wins.
	ClockSamples int
	// ConvList keeps the local conversation list (convlist.go): loaded
	// once, synced on every connection with ConvListReq, kept current from
	// the timeline. Off, the core sends no ConvListReq and keeps no list.
	ConvList bool
	// ConvListLimit is the page size of ConvListReq.
	ConvListLimit uint32

	Backoff   BackoffConfig
	Heartbeat HeartbeatConfig
}

// BackoffConfig configures reconnection.
type BackoffConfig struct {
	// Base and Cap of the exponential backoff; each delay is drawn uniformly
	// from [0, min(Cap, Base*2^failures)) ("full jitter").
	Base time.Duration
	Cap  time.Duration
	// HealthyAfter: a connection up this long resets the failure count.
	HealthyAfter time.Duration
	// ReResolveAfter consecutive failures ask the driver to re-resolve the
	// server list through the LBS (Ready.ReResolve).
	ReResolveAfter int
}

// HeartbeatConfig configures the smart heartbeat (R23).
type HeartbeatConfig struct {
	// Min is the foreground interval and the starting point of learning.
	Min time.Duration
	// Max bounds the learned interval.
	Max time.Duration
	// Step is how much the background interval grows after Successes
	// consecutive successful heartbeats at the current interval.
	Step      time.Duration
	Successes int
	// PongTimeout: a heartbeat with no Pong this long declares the
	// connection dead (and counts as a failure for learning).
	PongTimeout time.Duration
	// ProbeTimeout bounds the ping sent to probe the connection after a
	// network change or on coming to the foreground.
	ProbeTimeout time.Duration
}

func (c Config) withDefaults() Config {
	setD := func(p *time.Duration, d time.Duration) {
		if *p <= 0 {
			*p = d
		}
	}
	setI := func(p *int, d int) {
		if *p <= 0 {
			*p = d
		}
	}
	if c.ProtocolVersion == 0 {
		c.ProtocolVersion = ProtocolVersion
	}
	setI(&c.Window, DefaultWindow)
	setD(&c.SendTimeout, DefaultSendTimeout)
	setI(&c.MaxAttempts, DefaultMaxAttempts)
	setD(&c.MaxSendAge, DefaultMaxSendAge)
	setD(&c.RequestTimeout, DefaultRequestTimeout)
	setD(&c.ConnectTimeout, DefaultConnectTimeout)
	setI(&c.DeadAfterTimeouts, DefaultDeadAfterTimeouts)
	if c.SyncLimit == 0 {
		c.SyncLimit = DefaultSyncLimit
	}
	setI(&c.AckEvery, DefaultAckEvery)
	setD(&c.AckDelay, DefaultAckDelay)
	if c.CommandQuarantine == 0 {
		c.CommandQuarantine = DefaultCommandQuarantine
	}
	setI(&c.ClockSamples, DefaultClockSamples)
	if c.ConvListLimit == 0 {
		c.ConvListLimit = DefaultConvListLimit
	}
	b := &c.Backoff
	setD(&b.Base, DefaultBackoffBase)
	setD(&b.Cap, DefaultBackoffCap)
	setD(&b.HealthyAfter, DefaultHealthyAfter)
	setI(&b.ReResolveAfter, DefaultReResolveAfter)
	h := &c.Heartbeat
	setD(&h.Min, DefaultHeartbeatMin)
	setD(&h.Max, DefaultHeartbeatMax)
	setD(&h.Step, DefaultHeartbeatStep)
	setI(&h.Successes, DefaultHeartbeatSuccesses)
	setD(&h.PongTimeout, DefaultPongTimeout)
	setD(&h.ProbeTimeout, DefaultProbeTimeout)
	if h.Max < h.Min {
		h.Max = h.Min
	}
	if b.Cap < b.Base {
		b.Cap = b.Base
	}
	c.Servers = append([]string(nil), c.Servers...)
	return c
}

func (c Config) validate() error {
	if !validID(c.User) {
		return fmt.Errorf("core: invalid User %q", c.User)
	}
	if !validID(c.DeviceID) {
		return fmt.Errorf("core: invalid DeviceID %q", c.DeviceID)
	}
	if len(c.Servers) == 0 {
		return errors.New("core: no Servers")
	}
	return nil
}

// validID reports whether s is a valid user, device or group-suffix id:
// 1-64 characters of [A-Za-z0-9._@-] (the server's rule).
func validID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '-', c == '@':
		default:
			return false
		}
	}
	return true
}

// DirectConv returns the id of the 1:1 conversation of users a and b
// ("d:<a>:<b>", sorted), the conversation SendReq.to_user addresses.
func DirectConv(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return "d:" + a + ":" + b
}

// ValidConv reports whether conv is a well-formed conversation id.
func ValidConv(conv string) bool {
	if len(conv) > 2 && conv[:2] == "g:" {
		return validID(conv[2:])
	}
	if len(conv) < 2 || conv[:2] != "d:" {
		return false
	}
	rest := conv[2:]
	for i := 0; i < len(rest); i++ {
		if rest[i] == ':' {
			a, b := rest[:i], rest[i+1:]
			return validID(a) && validID(b) && a <= b
		}
	}
	return false
}
