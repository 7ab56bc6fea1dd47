// The simulated network: one netConn per connection, behaving like a TCP
// stream through NATs and flaky radios.
//
// Invariants of this file:
//   - Frames are marshaled when sent and unmarshaled when delivered, so no
//     memory is shared between client and server.
//   - Each direction is in order (a frame is never delivered before one sent
//     earlier in the same direction): loss is a stall, not a hole, as on
//     TCP. What breaks a connection is a reset (both ends learn of it, in
//     flight data is lost), a blackhole (nothing more gets through and
//     nobody is told: a dead radio, an expired NAT mapping), or an orderly
//     close (data sent before it is still delivered, then the peer learns).
//   - A NAT mapping expires when the connection has been idle longer than
//     its network's NAT timeout: the next frame either way finds it gone and
//     the connection becomes a blackhole.
//   - Frames of an old connection may still reach the server after a newer
//     connection's frames (a latency spike, or data flushed by a close):
//     reordering across reconnects. Duplicated frames (as a replaying proxy
//     would produce) are injected with a small probability, never for Hello.

package sim

import (
	"time"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
	"github.com/pim-project/pim/sdk/go/core"
)

type netConn struct {
	w       *world
	id      core.ConnID
	dev     *device
	gw      *gateway
	sess    *session
	network string

	clientOpen bool // the client has not closed it
	serverOpen bool // the server has not closed it
	dead       bool // reset: nothing more is delivered either way
	black      bool // blackholed: frames silently lost

	c2sLast, s2cLast time.Time
	lastActivity     time.Time
	spike            time.Duration // extra client-to-server latency
}

func (nc *netConn) now() time.Time { return nc.w.s.now }

// natCheck expires the NAT mapping of an idle connection.
func (nc *netConn) natCheck() {
	if nat := nc.w.natTimeout[nc.network]; nat > 0 && nc.now().Sub(nc.lastActivity) > nat {
		if !nc.black {
			nc.w.logf("NAT mapping of %s conn %d expired", nc.dev.name, nc.id)
		}
		nc.black = true
	}
}

// fromClient sends a frame from the device to the server.
func (nc *netConn) fromClient(f *pimv1.Frame) {
	if !nc.clientOpen || nc.dead {
		return
	}
	nc.natCheck()
	if nc.black {
		return
	}
	nc.lastActivity = nc.now()
	b, err := proto.Marshal(f)
	if err != nil {
		nc.w.violation("marshal: %v", err)
		return
	}
	nc.sendC2S(b)
	if f.GetHello() == nil && nc.w.chance(nc.w.p.dup) {
		nc.sendC2S(b)
	}
}

func (nc *netConn) sendC2S(b []byte) {
	t := nc.now().Add(nc.w.latency() + nc.spike)
	if t.Before(nc.c2sLast) {
		t = nc.c2sLast
	}
	nc.c2sLast = t
	nc.w.s.at(t, func() {
		if nc.dead || nc.black || !nc.serverOpen || nc.sess == nil {
			return
		}
		f := new(pimv1.Frame)
		if err := proto.Unmarshal(b, f); err != nil {
			nc.w.violation("unmarshal: %v", err)
			return
		}
		nc.sess.onFrame(f)
	})
}

// fromServer sends a frame from the server to the device.
func (nc *netConn) fromServer(f *pimv1.Frame) {
	if !nc.serverOpen || nc.dead {
		return
	}
	nc.natCheck()
	if nc.black {
		return
	}
	nc.lastActivity = nc.now()
	b, err := proto.Marshal(f)
	if err != nil {
		nc.w.violation("marshal: %v", err)
		return
	}
	nc.sendS2C(b)
	if nc.w.chance(nc.w.p.dup) {
		nc.sendS2C(b)
	}
}

func (nc *netConn) sendS2C(b []byte) {
	t := nc.now().Add(nc.w.latency())
	if t.Before(nc.s2cLast) {
		t = nc.s2cLast
	}
	nc.s2cLast = t
	nc.w.s.at(t, func() {
		if nc.dead || nc.black || !nc.clientOpen {
			return
		}
		f := new(pimv1.Frame)
		if err := proto.Unmarshal(b, f); err != nil {
			nc.w.violation("unmarshal: %v", err)
			return
		}
		nc.dev.receive(nc, f)
	})
}

// closeFromClient is the device closing the connection: data it sent is
// still delivered, then the server sees the end.
func (nc *netConn) closeFromClient() {
	if !nc.clientOpen {
		return
	}
	nc.clientOpen = false
	t := nc.now().Add(nc.w.latency())
	if t.Before(nc.c2sLast) {
		t = nc.c2sLast
	}
	nc.w.s.at(t, func() {
		if nc.sess != nil && nc.sess.state != sessClosing {
			nc.sess.ended()
		}
	})
}

// closeFromServer is the server closing the connection: data it sent is
// still delivered, then the device sees the end (unless the path is dead).
func (nc *netConn) closeFromServer() {
	if !nc.serverOpen {
		return
	}
	nc.serverOpen = false
	t := nc.now().Add(nc.w.latency())
	if t.Before(nc.s2cLast) {
		t = nc.s2cLast
	}
	nc.w.s.at(t, func() {
		nc.natCheck()
		if nc.clientOpen && !nc.dead && !nc.black {
			nc.dev.connDown(nc, "closed by server")
		}
	})
}

// reset breaks the connection: in-flight data is lost both ways; the device
// is told (RST) or not (a dead path).
func (nc *netConn) reset(notify bool) {
	if nc.dead {
		return
	}
	nc.dead = true
	nc.serverOpen = false
	if nc.sess != nil && nc.sess.state != sessClosing {
		nc.sess.ended()
	}
	if notify && !nc.black {
		nc.w.s.after(nc.w.latency(), func() {
			if nc.clientOpen {
				nc.dev.connDown(nc, "connection reset")
			}
		})
	}
}

// blackhole silences the connection for good without telling anyone.
func (nc *netConn) blackhole() { nc.black = true }
