package sim

import (
	"strings"
	"testing"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

func findDevice(w *world, name string) *device {
	for _, d := range w.devs {
		if d.name == name {
			return d
		}
	}
	return nil
}

func hasViolation(res Result, substr string) bool {
	for _, v := range res.Violations {
		if strings.Contains(v, substr) {
			return true
		}
	}
	return false
}

// TestSenderOrderNeedsServerGuard shows why the SDK asks the server for
// the order guard. A burst of pipelined sends meets a storage hiccup that
// refuses only the first with a retryable error. The documented server goes
// on and stores the next ones: the first, resent, lands after them. With
// the guard (the refusal is fatal: the connection ends, nothing behind it
// is processed) the order holds. Without pipelining (Window 1) it holds
// with either server.
func TestSenderOrderNeedsServerGuard(t *testing.T) {
	burst := func(w *world) {
		w.s.at(epoch0.Add(3*time.Second), func() {
			a1 := findDevice(w, "a1")
			w.srv.hiccup = 1
			for i := range 6 {
				a1.input(func(c *core.Core) {
					if _, err := c.Send(a1.local(), core.DirectConv("alice", "bob"), pimv1.MessageType_MESSAGE_TYPE_TEXT,
						[]byte{byte('a' + i)}); err != nil {
						t.Error(err)
					}
				})
			}
		})
	}
	yes, no := true, false
	for _, tc := range []struct {
		name      string
		guard     *bool
		window    int
		wantOrder bool
	}{
		{"documented server, pipelining", &no, 8, false},
		{"order guard, pipelining", &yes, 8, true},
		{"documented server, window 1", &no, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Run(Options{Seed: 1, Active: 5 * time.Second, quiet: true, script: burst,
				orderGuard: tc.guard, window: tc.window, Trace: true})
			broken := hasViolation(res, "sender order")
			if broken == tc.wantOrder {
				t.Fatalf("sender order broken=%v, want %v; violations: %v", broken, !tc.wantOrder, res.Violations)
			}
			for _, v := range res.Violations {
				if !strings.Contains(v, "sender order") && !strings.Contains(v, "invariant 4") {
					t.Errorf("unexpected violation: %s", v)
				}
			}
		})
	}
}

// TestCommandQuarantine: a command written on a connection whose data is
// delayed (bufferbloat) reaches the server after the client has given up
// on that connection. Retransmitted at once on a new connection, it is
// applied, then the next command, then the stale copy again: applied twice,
// out of order (the protocol has no dedup key for commands). The quarantine
// (no retransmission until longer than the delay after the last one)
// prevents it.
// commandQuarantineScript: at 2s, a1's connection stalls for 8s just as it
// adds x-1 to g:main and removes it again.
func commandQuarantineScript(w *world) {
	w.s.at(epoch0.Add(2*time.Second), func() {
		a1 := findDevice(w, "a1")
		for _, id := range sortedConnIDs(a1.conns) {
			a1.conns[id].spike = 8 * time.Second
		}
		a1.command(&pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_ADD, Group: "g:main", Users: []string{"x-1"}})
		a1.command(&pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_REMOVE, Group: "g:main", Users: []string{"x-1"}})
	})
}

func TestCommandQuarantine(t *testing.T) {
	script := commandQuarantineScript
	for _, tc := range []struct {
		name       string
		quarantine time.Duration
		wantTwice  bool
	}{
		{"no quarantine", time.Nanosecond, true},
		{"quarantine longer than the delay", 10 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Run(Options{Seed: 2, Active: 20 * time.Second, quiet: true, script: script,
				quarantine: tc.quarantine, Trace: true})
			twice := hasViolation(res, "applied twice")
			if twice != tc.wantTwice {
				t.Fatalf("applied twice=%v, want %v; violations %v", twice, tc.wantTwice, res.Violations)
			}
			if !tc.wantTwice && len(res.Violations) > 0 {
				t.Fatalf("violations: %v", res.Violations)
			}
		})
	}
}
