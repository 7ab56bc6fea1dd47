package tlsutil

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// IsLoopback reports whether addr names a loopback host: a loopback IP
// address (127.0.0.0/8, ::1) or "localhost". addr may be "host:port", a bare
// host, a bracketed IPv6 address, or a URL such as ws://host:port/ws. It is
// the plaintext policy's test: anything it rejects needs TLS.
func IsLoopback(addr string) bool {
	host := addr
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return false
		}
		host = u.Hostname()
	} else if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
