// A fleet: the storm clients of one load process, their pacer and their
// report.
//
// Invariants of this file:
//   - Clients are paired within the fleet (global index i with i^1): every
//     message has its sender and its receiver in the same process, so the
//     fleet checks delivery on its own and only sums go to the parent.
//   - Goroutines: one run goroutine per client, the pacer while traffic is
//     on, and resend timers; close ends them all (ctx, then waits) before
//     the report reads what they owned.
//   - Counters read while running are atomics; everything else is read only
//     after close.
package storm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pim-project/pim/internal/bench"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// FleetConfig is a fleet's share of the storm (also a worker's job).
type FleetConfig struct {
	Addr         string        `json:"addr"`
	TLS          bool          `json:"tls"`
	TLSPin       string        `json:"tls_pin,omitempty"`
	TLSCA        string        `json:"tls_ca,omitempty"`
	Insecure     bool          `json:"insecure,omitempty"`
	Users        []string      `json:"users"`  // users of this fleet, global index First+i
	Tokens       []string      `json:"tokens"` // their tokens
	First        int           `json:"first"`  // global index of Users[0] (even)
	SourceIPs    []string      `json:"source_ips,omitempty"`
	Rate         float64       `json:"rate"` // messages per second of this fleet
	Size         int           `json:"size"`
	Concurrency  int           `json:"concurrency"` // initial dials at once
	BackoffBase  time.Duration `json:"backoff_base"`
	BackoffCap   time.Duration `json:"backoff_cap"`
	HealthyAfter time.Duration `json:"healthy_after"` // a connection up this long resets the failure count
	Backoff      string        `json:"backoff"`       // BackoffSDK or BackoffDouble
	DialTimeout  time.Duration `json:"dial_timeout"`
	Seed         uint64        `json:"seed"`
}

// Progress is a fleet's running count.
type Progress struct {
	Connected   int64 `json:"connected"`
	StormLost   int64 `json:"storm_lost"`
	Reconnected int64 `json:"reconnected"`
	CaughtUp    int64 `json:"caught_up"`
	Sent        int64 `json:"sent"`
	Acked       int64 `json:"acked"`
	Delivered   int64 `json:"delivered"`
	Expected    int64 `json:"expected"`
	Inflight    int64 `json:"inflight"`
	// TrafficOffs is how many "traffic off" the fleet had carried out (its
	// pacer stopped) when the counts were read, read before them: counts
	// stamped with the last "traffic off" a fleet was given see every
	// message it will ever send (the parent's final wait needs no less:
	// drained). Not summed by add.
	TrafficOffs int64 `json:"traffic_offs"`
}

// add sums the counts (TrafficOffs is per fleet: left alone).
func (p *Progress) add(o Progress) {
	p.Connected += o.Connected
	p.StormLost += o.StormLost
	p.Reconnected += o.Reconnected
	p.CaughtUp += o.CaughtUp
	p.Sent += o.Sent
	p.Acked += o.Acked
	p.Delivered += o.Delivered
	p.Expected += o.Expected
	p.Inflight += o.Inflight
}

// FleetReport is what a fleet measured (JSON from workers).
type FleetReport struct {
	Progress
	Clients     int              `json:"clients"`
	ReconnectMs []float64        `json:"reconnect_ms"`
	CatchUpMs   []float64        `json:"catch_up_ms"`
	WelcomesMs  []int64          `json:"welcomes_ms"` // Unix ms of every Welcome after the storm began
	Attempts    int64            `json:"attempts"`
	DialErrors  int64            `json:"dial_errors"`
	Refused     map[string]int64 `json:"refused"` // refusals by error code
	SendRefused int64            `json:"send_refused"`
	AckBeforeMs []float64        `json:"ack_before_ms"` // send (first attempt) to ack, acked before the storm
	AckStormMs  []float64        `json:"ack_storm_ms"`  // ... sent on a connection made after the storm began
	Lost        int64            `json:"lost"`          // acked, the receiver connected at the end, never delivered
	Undelivered int64            `json:"undelivered"`   // acked, the receiver not connected at the end
	Duplicated  int64            `json:"duplicated"`
	OutOfOrder  int64            `json:"out_of_order"`
	Errors      []string         `json:"errors,omitempty"`
}

type fleet struct {
	cfg     FleetConfig
	tls     *tls.Config
	clients []*client
	dialSem chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // client goroutines and resend timers

	stormAt     atomic.Int64 // Unix ns the storm began (0: not yet)
	closing     atomic.Bool
	trafficOffs atomic.Int64 // "traffic off" carried out: the pacer had stopped

	connected, stormLost, reconnected, caughtUp atomic.Int64
	sent, acked, delivered, sendRefused         atomic.Int64
	attempts, dialErrors                        atomic.Int64

	mu       sync.Mutex
	welcomes []int64
	ackPre   []float64
	ackStorm []float64
	refusals map[pimv1.ErrorCode]int64
	errs     []string

	pacerStop chan struct{}
	pacerDone chan struct{}
}

func newFleet(cfg FleetConfig, tlsCfg *tls.Config) (*fleet, error) {
	if len(cfg.Users)%2 != 0 || cfg.First%2 != 0 || len(cfg.Users) != len(cfg.Tokens) {
		return nil, errors.New("storm: a fleet holds whole pairs of users, each with a token")
	}
	if cfg.Backoff != BackoffSDK && cfg.Backoff != BackoffDouble {
		return nil, fmt.Errorf("storm: fleet backoff %q: want %q or %q", cfg.Backoff, BackoffSDK, BackoffDouble)
	}
	var ips []netip.Addr
	for _, s := range cfg.SourceIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		ips = append(ips, a)
	}
	f := &fleet{cfg: cfg, tls: tlsCfg, dialSem: make(chan struct{}, max(cfg.Concurrency, 1)),
		refusals: make(map[pimv1.ErrorCode]int64)}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	seed := rand.New(rand.NewPCG(cfg.Seed, uint64(cfg.First)))
	for i, u := range cfg.Users {
		bo := backoff{policy: cfg.Backoff, base: cfg.BackoffBase, cap: cfg.BackoffCap, healthyAfter: cfg.HealthyAfter,
			rnd: rand.New(rand.NewPCG(seed.Uint64(), seed.Uint64()))}
		cl := &client{f: f, idx: cfg.First + i, user: u, token: cfg.Tokens[i], chk: bench.NewChecker(0), bo: bo}
		if len(ips) > 0 {
			cl.ip = ips[(cfg.First+i)%len(ips)]
		}
		f.clients = append(f.clients, cl)
	}
	for i, cl := range f.clients {
		cl.peer = f.clients[i^1]
	}
	return f, nil
}

// start connects every client (and keeps them connected).
func (f *fleet) start() {
	for _, cl := range f.clients {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			cl.run(f.ctx)
		}()
	}
}

// progress reads the running counts. TrafficOffs is read first, so counts
// stamped with a "traffic off" were read after its pacer stopped.
func (f *fleet) progress() Progress {
	offs := f.trafficOffs.Load()
	acked := f.acked.Load()
	return Progress{Connected: f.connected.Load(), StormLost: f.stormLost.Load(), Reconnected: f.reconnected.Load(),
		CaughtUp: f.caughtUp.Load(), Sent: f.sent.Load(), Acked: acked, Delivered: f.delivered.Load(),
		Expected: 2 * acked, Inflight: f.sent.Load() - acked, TrafficOffs: offs}
}

// storm marks the moment the storm began (Unix ns).
func (f *fleet) storm(at int64) { f.stormAt.Store(at) }

// traffic starts or stops the pacer; "off" returns once it has stopped (no
// message is sent after), and counts it in trafficOffs.
func (f *fleet) traffic(on bool) {
	if on && f.pacerStop == nil && f.cfg.Rate > 0 {
		f.pacerStop, f.pacerDone = make(chan struct{}), make(chan struct{})
		go f.pace(f.pacerStop, f.pacerDone)
	}
	if !on {
		f.stopPacer()
		f.trafficOffs.Add(1)
	}
}

func (f *fleet) stopPacer() {
	if f.pacerStop != nil {
		close(f.pacerStop)
		<-f.pacerDone
		f.pacerStop = nil
	}
}

// pace issues Rate messages per second, round robin over the clients that
// are connected and have nothing in flight.
func (f *fleet) pace(stop, done chan struct{}) {
	defer close(done)
	start := time.Now()
	var issued int64
	rr := 0
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	n := len(f.clients)
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		due := int64(time.Since(start).Seconds()*f.cfg.Rate) - issued
		now := time.Now().UnixNano()
		for ; due > 0; due-- {
			issued++
			for tries := 0; tries < n; tries++ {
				cl := f.clients[rr]
				rr = (rr + 1) % n
				if cl.trySend(now) {
					break
				}
			}
		}
	}
}

// afterFunc runs fn after d on a goroutine the fleet waits for at close.
func (f *fleet) afterFunc(d time.Duration, fn func()) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			fn()
		case <-f.ctx.Done():
		}
	}()
}

func (f *fleet) welcome(at time.Time) {
	if s := f.stormAt.Load(); s == 0 || at.UnixNano() < s {
		return
	}
	f.mu.Lock()
	f.welcomes = append(f.welcomes, at.UnixMilli())
	f.mu.Unlock()
}

// ackLatency records the time from a message's first send (on a
// connection that began at conn) to its ack.
func (f *fleet) ackLatency(sent, conn, acked int64) {
	ms := float64(acked-sent) / 1e6
	f.mu.Lock()
	defer f.mu.Unlock()
	switch s := f.stormAt.Load(); {
	case s == 0 || acked < s:
		f.ackPre = append(f.ackPre, ms)
	case conn >= s:
		f.ackStorm = append(f.ackStorm, ms)
	} // first sent on a connection of before the storm, acked after: it
	// waited for a reconnect (the storm itself); not counted
}

func (f *fleet) refused(code pimv1.ErrorCode) {
	f.mu.Lock()
	f.refusals[code]++
	f.mu.Unlock()
}

func (f *fleet) firstErr(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) < 5 {
		f.errs = append(f.errs, err.Error())
	}
}

// close stops everything and waits for the fleet's goroutines.
func (f *fleet) close() {
	f.stopPacer()
	if !f.closing.Load() {
		for _, cl := range f.clients {
			cl.mu.Lock()
			cl.endConnected = cl.c != nil
			cl.mu.Unlock()
		}
	}
	f.closing.Store(true)
	f.cancel()
	f.wg.Wait()
}

// report sums up the fleet; call it after close.
func (f *fleet) report() FleetReport {
	r := FleetReport{Progress: f.progress(), Clients: len(f.clients), Attempts: f.attempts.Load(),
		DialErrors: f.dialErrors.Load(), SendRefused: f.sendRefused.Load(), Refused: map[string]int64{}}
	f.mu.Lock()
	r.WelcomesMs = append(r.WelcomesMs, f.welcomes...)
	r.AckBeforeMs = append(r.AckBeforeMs, f.ackPre...)
	r.AckStormMs = append(r.AckStormMs, f.ackStorm...)
	for c, n := range f.refusals {
		r.Refused[c.String()] = n
	}
	r.Errors = append(r.Errors, f.errs...)
	f.mu.Unlock()
	for _, cl := range f.clients {
		missing := int64(cl.chk.Lost(0, &cl.acked)) + int64(cl.chk.Lost(1, &cl.peer.acked))
		if cl.endConnected {
			r.Lost += missing // it was there to receive them: lost
		} else {
			r.Undelivered += missing // it never came back: not delivered, not lost
		}
		if cl.reconn {
			r.ReconnectMs = append(r.ReconnectMs, ms(cl.reconnAt.Sub(cl.lostAt)))
		}
		if cl.caughtUp {
			r.CatchUpMs = append(r.CatchUpMs, ms(cl.caughtAt.Sub(cl.lostAt)))
		}
		r.Duplicated += cl.chk.Duplicated
		r.OutOfOrder += cl.chk.OutOfOrder
		if cl.sendErr != "" && len(r.Errors) < 10 {
			r.Errors = append(r.Errors, cl.sendErr)
		}
	}
	sort.Float64s(r.ReconnectMs)
	sort.Float64s(r.CatchUpMs)
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
