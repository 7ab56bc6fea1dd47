// Package lbs is PIM's location service (the article's LBS): it tells an
// authenticated client which gateway endpoints to connect to, ranked, and
// for how long the answer holds (R16, R18).
//
// A Registry says which nodes exist, how loaded they are and whether they
// are healthy or draining; on one node it is Local, the cluster work will
// provide one over the membership of the cluster. The Balancer ranks healthy,
// non-draining nodes by load (in steps of LoadStep, so that nodes about as
// loaded are equals), picks randomly among equals, and caps how many clients
// it sends to one node per second with a token bucket per node: a node whose
// bucket is empty goes behind the others, and when every node's is empty the
// answer carries a retry_after hint (a place in the virtual queue of refused
// clients, jittered; see admission.Spreader) so that the clients come back at
// the rate the nodes take them.
//
// Invariants of this file:
//   - A node is put first in an answer only with a token from its bucket:
//     over any interval of length d, at most burst + d*rate answers put one
//     node first (admission.Bucket's bound).
//   - Among nodes of the same load step, with tokens, every order is
//     equally likely.
//   - Unhealthy nodes are never listed; draining nodes only when no other
//     node is healthy (with a retry_after).
//   - An answer with no capacity left anywhere always has retry_after > 0.
//   - Decisions take the clock and randomness given in Config, so tests are
//     exact.
package lbs

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/pim-project/pim/internal/admission"
)

// Defaults.
const (
	DefaultTTL      = 10 * time.Minute
	DefaultLoadStep = 0.05
)

// Transports of an endpoint.
const (
	TransportTCP = "tcp"
	TransportWS  = "ws"
)

// Endpoint is one way to reach a node's gateway.
type Endpoint struct {
	Transport string `json:"transport"` // "tcp" (length-prefixed frames) or "ws" (WebSocket)
	Address   string `json:"address"`   // host:port for tcp; a ws:// or wss:// URL for ws
	TLS       bool   `json:"tls"`
}

// Node is a gateway node as the Registry sees it.
type Node struct {
	ID        string
	Endpoints []Endpoint
	// Load is how full the node is, 0 (idle) to 1 (at its connection limit).
	Load     float64
	Healthy  bool
	Draining bool
}

// Registry lists the nodes. Nodes may be called concurrently and often: it
// must be cheap (a cluster implementation returns a cached view).
type Registry interface {
	Nodes() []Node
}

// Local is the Registry of a one-node deployment: this node.
type Local struct {
	ID        string
	Endpoints []Endpoint
	// Load and Draining report the node's state (nil: 0 and false).
	Load     func() float64
	Draining func() bool
}

// Nodes implements Registry.
func (l *Local) Nodes() []Node {
	n := Node{ID: l.ID, Endpoints: l.Endpoints, Healthy: true}
	if l.Load != nil {
		n.Load = l.Load()
	}
	if l.Draining != nil {
		n.Draining = l.Draining()
	}
	return []Node{n}
}

// Config configures a Balancer.
type Config struct {
	Registry Registry
	// PerNode caps the clients sent to one node (put first in an answer)
	// per second; Rate <= 0: no cap.
	PerNode admission.Limit
	// TTL is how long a client may keep using an answer (0: DefaultTTL).
	TTL time.Duration
	// LoadStep is the load difference below which nodes are equals
	// (0: DefaultLoadStep).
	LoadStep float64
	// Now is the clock (nil: time.Now); Rand the randomness (nil: random).
	Now  func() time.Time
	Rand *rand.Rand
}

// Ranked is an endpoint in an answer.
type Ranked struct {
	Node string `json:"node"`
	Endpoint
}

// Answer is the body of GET /v1/lbs.
type Answer struct {
	// Endpoints, best first: every endpoint of the first node, then of the
	// next one, ...
	Endpoints []Ranked `json:"endpoints"`
	// TTLMs: how long the answer may be cached, in milliseconds.
	TTLMs int64 `json:"ttl_ms"`
	// RetryAfterMs, when set, asks the client to wait that long before
	// connecting (every node is at its cap or draining).
	RetryAfterMs uint32 `json:"retry_after_ms,omitempty"`
}

// ErrNoNodes means no healthy node is known.
var ErrNoNodes = errors.New("lbs: no healthy gateway node")

// Balancer answers location requests. It is safe for concurrent use.
type Balancer struct {
	cfg     Config
	perNode *admission.Keyed // per-node buckets, keyed by node ID

	mu     sync.Mutex
	rnd    *rand.Rand
	spread *admission.Spreader
}

// New returns a Balancer.
func New(cfg Config) *Balancer {
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.LoadStep <= 0 {
		cfg.LoadStep = DefaultLoadStep
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	rnd := cfg.Rand
	if rnd == nil {
		rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	b := &Balancer{cfg: cfg, rnd: rnd,
		perNode: admission.NewKeyed(cfg.PerNode, 0, cfg.Now())}
	b.spread = admission.NewSpreader(cfg.PerNode.Rate, 0, 0, rand.New(rand.NewPCG(rnd.Uint64(), rnd.Uint64())))
	return b
}

// Resolve answers one location request now.
func (b *Balancer) Resolve() (Answer, error) {
	now := b.cfg.Now()
	ans := Answer{TTLMs: b.cfg.TTL.Milliseconds()}
	nodes := b.rank(b.cfg.Registry.Nodes())
	if len(nodes) == 0 {
		return ans, ErrNoNodes
	}
	draining := nodes[0].Draining // ranked: draining nodes only if no other
	first, wait := -1, time.Duration(-1)
	if !draining {
		for i, n := range nodes {
			ok, w := b.perNode.Allow(n.ID, now)
			if ok {
				first = i
				break
			}
			if wait < 0 || w < wait {
				wait = w
			}
		}
	}
	if first > 0 {
		// The first node with capacity leads; the others keep their rank.
		n := nodes[first]
		copy(nodes[1:first+1], nodes[:first])
		nodes[0] = n
	}
	if first < 0 {
		ans.RetryAfterMs = admission.Millis(b.spread.Refused(now, max(wait, 0)))
	}
	for _, n := range nodes {
		for _, e := range n.Endpoints {
			ans.Endpoints = append(ans.Endpoints, Ranked{Node: n.ID, Endpoint: e})
		}
	}
	return ans, nil
}

// Alternatives returns the addresses of transport's endpoints on the
// healthy, non-draining nodes other than self, best first (for GoAway.servers).
// On one node it is empty.
func (b *Balancer) Alternatives(self, transport string) []string {
	var out []string
	for _, n := range b.rank(b.cfg.Registry.Nodes()) {
		if n.ID == self || n.Draining {
			continue
		}
		for _, e := range n.Endpoints {
			if e.Transport == transport {
				out = append(out, e.Address)
			}
		}
	}
	return out
}

// rank keeps the healthy nodes (the draining ones only if nothing else is
// healthy) and orders them by load step, shuffled among equals.
func (b *Balancer) rank(all []Node) []Node {
	nodes := make([]Node, 0, len(all))
	for _, n := range all {
		if n.Healthy && !n.Draining {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		for _, n := range all {
			if n.Healthy {
				nodes = append(nodes, n)
			}
		}
	}
	b.mu.Lock()
	b.rnd.Shuffle(len(nodes), func(i, j int) { nodes[i], nodes[j] = nodes[j], nodes[i] })
	b.mu.Unlock()
	step := func(n Node) int { return int(max(n.Load, 0) / b.cfg.LoadStep) }
	slices.SortStableFunc(nodes, func(x, y Node) int { return step(x) - step(y) })
	return nodes
}
