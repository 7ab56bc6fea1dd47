//go:build linux

// The kernel's view of an accepted TCP connection, to skip connections
// whose client gave up while they waited in the accept queue (a client that
// timed out has closed its end: the server's socket is in CLOSE_WAIT, or
// CLOSE after a reset). Serving them would spend a TLS handshake, a Hello
// and a session on nobody: during a reconnect storm they are many.
//
// Invariants of this file: it only reads socket state (getsockopt
// TCP_INFO); any failure reports the connection alive.
package gateway

import (
	"net"

	"golang.org/x/sys/unix"
)

// Linux TCP states (include/net/tcp_states.h).
const (
	tcpClose     = 7
	tcpCloseWait = 8
)

// clientGone reports whether c's client has closed (or reset) the
// connection already.
func clientGone(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	_ = rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			gone = info.State == tcpCloseWait || info.State == tcpClose
		}
	})
	return gone
}
