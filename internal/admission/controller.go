// The admission policy of a gateway: which limit applies where, in which
// order, and what a refused client is told.
//
// Invariants of this file:
//   - Checks run cheapest and widest first; a refusal stops the checks, so a
//     refused event consumes no token from the limits checked after it (it
//     may have consumed one from a limit checked before it: that only ever
//     makes the node stricter, never looser).
//   - Every refusal carries a retry_after > 0 drawn by a Spreader (global
//     rates: a place in the virtual queue of refused clients plus jitter), or
//     with full jitter on the wait (per-key limits, shedding, a full node),
//     so refused clients never come back in lockstep.
//   - A zero Config admits everything: every limit is off.
package admission

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Reasons a Decision refuses, also the label of the refusal metric.
const (
	ReasonMaxConns   = "max_conns"
	ReasonAcceptRate = "accept_rate"
	ReasonLoginRate  = "login_rate"
	ReasonIPLogin    = "ip_login_rate"
	ReasonUserLogin  = "user_login_rate"
	ReasonIPSend     = "ip_send_rate"
	ReasonUserSend   = "user_send_rate"
	ReasonOverload   = "overload"
)

// Reasons lists every refusal reason.
var Reasons = []string{ReasonMaxConns, ReasonAcceptRate, ReasonLoginRate, ReasonIPLogin,
	ReasonUserLogin, ReasonIPSend, ReasonUserSend, ReasonOverload}

// Config configures a Controller. Zero values switch a limit off.
type Config struct {
	// MaxConns bounds open connections (including those in their handshake).
	MaxConns int
	// Accept limits new connections, all sources together, at accept.
	Accept Limit
	// Login limits Hellos, all users together.
	Login Limit
	// IPLogin and UserLogin limit Hellos per source IP and per user.
	IPLogin, UserLogin Limit
	// IPSend and UserSend limit sends per source IP and per user.
	IPSend, UserSend Limit
	// MaxKeys bounds the entries of each per-key limiter (0: DefaultMaxKeys).
	MaxKeys int
	// Shed configures load shedding on the send pipeline; nil: off.
	Shed *ShedConfig
	// SpreadMax caps the queue position of a retry_after hint of a global
	// rate limit (0: DefaultSpreadMax); SpreadMin is its jitter width
	// (0: DefaultSpreadMin).
	SpreadMin, SpreadMax time.Duration
	// Rand seeds the hints' randomness (nil: random). Tests inject one.
	Rand *rand.Rand
}

// Decision is the answer to an admission question.
type Decision struct {
	OK         bool
	Reason     string        // why not (one of the Reason* constants)
	RetryAfter time.Duration // when refused: when to come back (> 0)
}

var admit = Decision{OK: true}

// The retry_after of a connection refused because the node is full.
const (
	maxConnsRetryBase   = 5 * time.Second
	maxConnsRetrySpread = 30 * time.Second
)

// Controller applies a Config. It is safe for concurrent use.
type Controller struct {
	cfg                              Config
	accept, login                    *Bucket
	ipLogin, userLogin, ipSend, user *Keyed
	acceptSpread, loginSpread        *Spreader
	shed                             *Shedder

	mu  sync.Mutex
	rnd *rand.Rand // for per-key and shedding jitter
}

// New returns a Controller whose clocks start at origin.
func New(cfg Config, origin time.Time) *Controller {
	rnd := cfg.Rand
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	// Each spreader gets its own generator, derived from rnd (deterministic
	// when rnd is seeded).
	sub := func() *rand.Rand { return rand.New(rand.NewPCG(rnd.Uint64(), rnd.Uint64())) }
	c := &Controller{
		cfg:          cfg,
		accept:       NewBucket(cfg.Accept, origin),
		login:        NewBucket(cfg.Login, origin),
		ipLogin:      NewKeyed(cfg.IPLogin, cfg.MaxKeys, origin),
		userLogin:    NewKeyed(cfg.UserLogin, cfg.MaxKeys, origin),
		ipSend:       NewKeyed(cfg.IPSend, cfg.MaxKeys, origin),
		user:         NewKeyed(cfg.UserSend, cfg.MaxKeys, origin),
		acceptSpread: NewSpreader(cfg.Accept.Rate, cfg.SpreadMin, cfg.SpreadMax, sub()),
		loginSpread:  NewSpreader(cfg.Login.Rate, cfg.SpreadMin, cfg.SpreadMax, sub()),
		rnd:          sub(),
	}
	if cfg.Shed != nil {
		c.shed = NewShedder(*cfg.Shed)
	}
	return c
}

// Config returns the configuration in effect.
func (c *Controller) Config() Config { return c.cfg }

// Accept decides on a new connection at now, open being the connections
// already open. It runs before anything is read or handshaken: the node's
// connection limit, the pipeline (a node shedding load takes no new
// sessions: existing ones first), then the rate.
func (c *Controller) Accept(now time.Time, open int) Decision {
	if c.cfg.MaxConns > 0 && open >= c.cfg.MaxConns {
		// Full: no rate says when a slot frees (sessions leave slowly), so
		// come back much later, spread wide: uniform in [5s, 35s).
		c.mu.Lock()
		defer c.mu.Unlock()
		return Decision{Reason: ReasonMaxConns, RetryAfter: Jitter(c.rnd, maxConnsRetryBase, maxConnsRetrySpread)}
	}
	if c.shed != nil && !c.shed.LoginAllowed(now) {
		return Decision{Reason: ReasonOverload, RetryAfter: c.shedRetry()}
	}
	if ok, wait := c.accept.Allow(now); !ok {
		return Decision{Reason: ReasonAcceptRate, RetryAfter: c.acceptSpread.Refused(now, wait)}
	}
	return admit
}

// AcceptWait is Accept for a listener that paces instead of refusing over
// the rate (TLS, where a refusal before the handshake cannot carry a
// retry_after): when only the rate says no, it returns wait > 0, the time
// until a token exists (at most one token interval), and no refusal is
// recorded; the caller waits, leaving the clients in the kernel's accept
// queue, and asks again. Any other refusal is returned as by Accept.
//
// While the pipeline sheds load it also returns a wait (holdWhileShedding):
// the clients wait in the accept queue until the node takes new sessions
// again, rather than being reset without a hint and backing off blindly.
func (c *Controller) AcceptWait(now time.Time, open int) (wait time.Duration, d Decision) {
	if c.cfg.MaxConns > 0 && open >= c.cfg.MaxConns {
		return 0, c.Accept(now, open)
	}
	if c.shed != nil && !c.shed.LoginAllowed(now) {
		return holdWhileShedding, Decision{Reason: ReasonOverload}
	}
	if ok, w := c.accept.Allow(now); !ok {
		return w, Decision{Reason: ReasonAcceptRate}
	}
	return 0, admit
}

// holdWhileShedding is how often a paced listener asks again while the
// pipeline sheds load.
const holdWhileShedding = 50 * time.Millisecond

// LoginSource decides on a Hello from ip at now, before its token is
// verified: the global login rate, the pipeline's state and the IP's rate.
func (c *Controller) LoginSource(now time.Time, ip string) Decision {
	if ok, wait := c.login.Allow(now); !ok {
		return Decision{Reason: ReasonLoginRate, RetryAfter: c.loginSpread.Refused(now, wait)}
	}
	if c.shed != nil && !c.shed.LoginAllowed(now) {
		return Decision{Reason: ReasonOverload, RetryAfter: c.shedRetry()}
	}
	return c.keyed(c.ipLogin, ip, now, ReasonIPLogin)
}

// LoginUser decides on a Hello of user (its token verified) at now.
func (c *Controller) LoginUser(now time.Time, user string) Decision {
	return c.keyed(c.userLogin, user, now, ReasonUserLogin)
}

// Send decides on a send by user from ip at now: per-IP and per-user rates.
// The pipeline's own check is BeginSend.
func (c *Controller) Send(now time.Time, user, ip string) Decision {
	if d := c.keyed(c.ipSend, ip, now, ReasonIPSend); !d.OK {
		return d
	}
	return c.keyed(c.user, user, now, ReasonUserSend)
}

// BeginSend admits a send into the pipeline at now; when it returns OK the
// caller must call EndSend(now, later) once the send completed.
func (c *Controller) BeginSend(now time.Time) Decision {
	if c.shed == nil || c.shed.Begin(now) {
		return admit
	}
	return Decision{Reason: ReasonOverload, RetryAfter: c.shedRetry()}
}

// BeginPipelinedSend admits a send pipelined behind sends of the same
// connection still in flight (Shedder.BeginPipelined); false: the caller
// waits for its own sends, then asks BeginSend. End it with EndSend.
func (c *Controller) BeginPipelinedSend(now time.Time) bool {
	return c.shed == nil || c.shed.BeginPipelined(now)
}

// EndSend ends a send admitted by BeginSend or BeginPipelinedSend at begin.
func (c *Controller) EndSend(begin, end time.Time) {
	if c.shed != nil {
		c.shed.End(begin, end)
	}
}

// Pipeline returns the sends in flight and whether the pipeline sheds.
func (c *Controller) Pipeline(now time.Time) (inflight int, shedding bool) {
	if c.shed == nil {
		return 0, false
	}
	return c.shed.State(now)
}

func (c *Controller) keyed(k *Keyed, key string, now time.Time, reason string) Decision {
	ok, wait := k.Allow(key, now)
	if ok {
		return admit
	}
	// Full jitter on the wait: uniform in [wait, 2*wait), at least 1 ms wide.
	c.mu.Lock()
	defer c.mu.Unlock()
	return Decision{Reason: reason, RetryAfter: Jitter(c.rnd, wait, max(wait, time.Millisecond))}
}

// shedRetry is the hint of a shed request: uniform in [Interval, 5*Interval).
func (c *Controller) shedRetry() time.Duration {
	iv := c.shed.Config().Interval
	c.mu.Lock()
	defer c.mu.Unlock()
	return Jitter(c.rnd, iv, 4*iv)
}
