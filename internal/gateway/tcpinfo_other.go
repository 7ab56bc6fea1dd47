//go:build !linux

// Elsewhere than Linux the accept path cannot see whether a client gave up
// while queued: every connection is served (see tcpinfo_linux.go).
package gateway

import "net"

func clientGone(net.Conn) bool { return false }
