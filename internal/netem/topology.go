package netem

// The topology: three namespaces in a line, server side A, router M, client
// side B:
//
//	A: pa0 10.200.1.1/24 ──veth── ma0 10.200.1.2/24  M  10.200.2.2/24 mb0 ──veth── pb0 10.200.2.1/24 :B
//	                                        │
//	                                      tun0 (the packet delayer)
//
// A routes 10.200.2.0/24 via M, B routes 10.200.1.0/24 via M, and M forwards
// between them. Policy routing in M sends every packet that enters on ma0 or
// mb0 to tun0, where the packet delayer reads it, holds it for the one-way
// delay and writes it back; it then re-enters M on tun0 and takes the main
// table to the other veth. The loss rule drops packets as they re-enter on
// tun0: every packet, either direction, crosses that point exactly once,
// after the kernel has split TCP segmentation-offload bursts into real
// packets. So a TCP connection from B to A sees a round trip of twice the
// one-way delay and independent loss of the given rate in each direction.
//
// Invariants: only addresses of 10.200.1.0/24 and 10.200.2.0/24 are used,
// only on interfaces made here, only inside the topology's own namespaces
// (nothing is made in or changes the host's namespace: the veths are created
// inside them); the namespaces' names are pimtest-<random>-{a,m,b}; Close
// removes all three (and so every interface in them) and may be called more
// than once; a failed New removes what it had made.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"
)

// Fixed addresses inside a topology (they exist only in its namespaces, so
// any number of topologies can coexist).
const (
	ServerIP       = "10.200.1.1" // A's address: servers listen here
	RouterServerIP = "10.200.1.2"
	RouterClientIP = "10.200.2.2"
	ClientIP       = "10.200.2.1" // B's address
)

// Interface names inside the namespaces.
const (
	ifServer       = "pa0" // in A
	ifRouterServer = "ma0" // in M, A's peer
	ifRouterClient = "mb0" // in M, B's peer
	ifClient       = "pb0" // in B
	ifDelay        = "tun0"
	delayTable     = "100"
)

// Topology is a server namespace and a client namespace joined through a
// router namespace that delays and drops packets.
type Topology struct {
	Name   string    // pimtest-<random>
	Server Namespace // A: servers listen on ServerIP
	Router Namespace // M: the packet delayer and the loss rules
	Client Namespace // B: clients dial ServerIP

	delay *PacketDelay
	made  []Namespace
}

// New makes the namespaces, links, addresses, routes and the packet delayer
// (no delay, no loss yet). An error wraps ErrUnsupported if this machine
// cannot make network namespaces at all.
func New(ctx context.Context) (t *Topology, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	name := "pimtest-" + hex.EncodeToString(rnd[:])
	t = &Topology{Name: name, Server: Namespace(name + "-a"), Router: Namespace(name + "-m"), Client: Namespace(name + "-b")}
	defer func() {
		if err != nil {
			t.Close()
			t = nil
		}
	}()
	for i, ns := range []Namespace{t.Server, t.Router, t.Client} {
		if err := run(ctx, nil, "ip", "netns", "add", string(ns)); err != nil {
			if i == 0 {
				return t, fmt.Errorf("%w: %v", ErrUnsupported, err)
			}
			return t, err
		}
		t.made = append(t.made, ns)
		if err := ns.IP(ctx, "link", "set", "lo", "up"); err != nil {
			return t, err
		}
		// IPv6 off (its chatter would go through the delayer too); not fatal
		// on a kernel without IPv6.
		ns.WriteSysctl("net/ipv6/conf/all/disable_ipv6", "1")
		ns.WriteSysctl("net/ipv6/conf/default/disable_ipv6", "1")
	}
	// The router forwards, and must accept packets from tun0 whose source
	// lies behind another interface (no reverse-path filter).
	for _, kv := range [][2]string{
		{"net/ipv4/ip_forward", "1"},
		{"net/ipv4/conf/all/rp_filter", "0"},
		{"net/ipv4/conf/default/rp_filter", "0"},
		{"net/ipv4/conf/all/send_redirects", "0"},
		{"net/ipv4/conf/default/send_redirects", "0"},
	} {
		if err := t.Router.WriteSysctl(kv[0], kv[1]); err != nil {
			return t, err
		}
	}
	steps := []struct {
		ns   Namespace
		args []string
	}{
		{t.Server, []string{"link", "add", ifServer, "type", "veth", "peer", "name", ifRouterServer, "netns", string(t.Router)}},
		{t.Client, []string{"link", "add", ifClient, "type", "veth", "peer", "name", ifRouterClient, "netns", string(t.Router)}},
		{t.Server, []string{"addr", "add", ServerIP + "/24", "dev", ifServer}},
		{t.Router, []string{"addr", "add", RouterServerIP + "/24", "dev", ifRouterServer}},
		{t.Router, []string{"addr", "add", RouterClientIP + "/24", "dev", ifRouterClient}},
		{t.Client, []string{"addr", "add", ClientIP + "/24", "dev", ifClient}},
		{t.Server, []string{"link", "set", ifServer, "up"}},
		{t.Router, []string{"link", "set", ifRouterServer, "up"}},
		{t.Router, []string{"link", "set", ifRouterClient, "up"}},
		{t.Client, []string{"link", "set", ifClient, "up"}},
		{t.Server, []string{"route", "add", "10.200.2.0/24", "via", RouterServerIP}},
		{t.Client, []string{"route", "add", "10.200.1.0/24", "via", RouterClientIP}},
	}
	for _, s := range steps {
		if err := s.ns.IP(ctx, s.args...); err != nil {
			return t, err
		}
	}
	var dev *os.File
	if err := t.Router.Do(func() (err error) {
		dev, err = openTUN(ifDelay)
		return err
	}); err != nil {
		return t, err
	}
	t.delay = NewPacketDelay(dev, 0)
	if err := t.Router.WriteSysctl("net/ipv4/conf/"+ifDelay+"/rp_filter", "0"); err != nil {
		return t, err
	}
	for _, args := range [][]string{
		{"link", "set", ifDelay, "up"},
		{"route", "add", "default", "dev", ifDelay, "table", delayTable},
		{"rule", "add", "iif", ifRouterServer, "lookup", delayTable},
		{"rule", "add", "iif", ifRouterClient, "lookup", delayTable},
	} {
		if err := t.Router.IP(ctx, args...); err != nil {
			return t, err
		}
	}
	return t, t.SetLoss(ctx, 0)
}

// SetRTT sets the round-trip time the topology adds (half of it each way)
// for packets from now on.
func (t *Topology) SetRTT(rtt time.Duration) { t.delay.SetDelay(rtt / 2) }

// SetLoss makes the router drop percent% of the packets in each direction,
// chosen independently per packet, and resets the loss counters.
func (t *Topology) SetLoss(ctx context.Context, percent int) error {
	return t.Router.SetLoss(ctx, percent, ifDelay)
}

// LossStats reads the loss counters (both directions) since the last SetLoss.
func (t *Topology) LossStats(ctx context.Context) (LossStats, error) {
	return t.Router.LossStats(ctx)
}

// Delayer is the packet delayer, for its counters.
func (t *Topology) Delayer() *PacketDelay { return t.delay }

// Close stops the delayer and removes the namespaces (with every interface
// in them). Processes still running in a namespace keep it alive unnamed:
// stop them first.
func (t *Topology) Close() error {
	var errs []error
	if t.delay != nil {
		errs = append(errs, t.delay.Close())
		t.delay = nil
	}
	for i := len(t.made) - 1; i >= 0; i-- {
		if err := run(context.Background(), nil, "ip", "netns", "del", string(t.made[i])); err != nil {
			errs = append(errs, err)
		}
	}
	t.made = nil
	return errors.Join(errs...)
}
