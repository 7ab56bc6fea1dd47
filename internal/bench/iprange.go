package bench

import (
	"fmt"
	"net/netip"
	"strings"
)

// maxSourceIPs bounds a --source-ips list.
const maxSourceIPs = 1 << 16

// ParseSourceIPs parses a list of local addresses to spread connections over:
// comma-separated items, each an address ("127.0.0.2"), a range
// ("127.0.0.2-127.0.0.60", or "127.0.0.2-60" for the last byte of an IPv4
// address) or a prefix ("127.0.1.0/26", every address in it). Order is kept,
// duplicates are dropped. An empty string means none (let the kernel choose).
func ParseSourceIPs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	seen := make(map[netip.Addr]bool)
	add := func(a netip.Addr) error {
		if seen[a] {
			return nil
		}
		if len(out) >= maxSourceIPs {
			return fmt.Errorf("source IPs: more than %d addresses", maxSourceIPs)
		}
		seen[a] = true
		out = append(out, a)
		return nil
	}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		switch {
		case strings.Contains(item, "/"):
			p, err := netip.ParsePrefix(item)
			if err != nil {
				return nil, fmt.Errorf("source IPs: %q: %v", item, err)
			}
			p = p.Masked()
			if p.Addr().BitLen()-p.Bits() > 16 {
				return nil, fmt.Errorf("source IPs: %q has more than %d addresses", item, maxSourceIPs)
			}
			for a := p.Addr(); p.Contains(a); a = a.Next() {
				if err := add(a); err != nil {
					return nil, err
				}
			}
		case strings.Contains(item, "-"):
			first, last, err := parseRange(item)
			if err != nil {
				return nil, err
			}
			for a := first; ; a = a.Next() {
				if err := add(a); err != nil {
					return nil, err
				}
				if a == last {
					break
				}
			}
		default:
			a, err := netip.ParseAddr(item)
			if err != nil {
				return nil, fmt.Errorf("source IPs: %q: %v", item, err)
			}
			if err := add(a.Unmap()); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// parseRange parses "A-B" or, for IPv4, "A-n" (n the last byte of B).
func parseRange(item string) (netip.Addr, netip.Addr, error) {
	lo, hi, _ := strings.Cut(item, "-")
	first, err := netip.ParseAddr(strings.TrimSpace(lo))
	if err != nil {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("source IPs: %q: %v", item, err)
	}
	first = first.Unmap()
	hi = strings.TrimSpace(hi)
	last, err := netip.ParseAddr(hi)
	if err != nil {
		// "127.0.0.2-60": the last byte only.
		var n int
		if _, serr := fmt.Sscanf(hi, "%d", &n); serr != nil || !first.Is4() || n < 0 || n > 255 || fmt.Sprint(n) != hi {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("source IPs: %q: bad end of range %q", item, hi)
		}
		b := first.As4()
		b[3] = byte(n)
		last = netip.AddrFrom4(b)
	}
	last = last.Unmap()
	if first.BitLen() != last.BitLen() {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("source IPs: %q mixes IPv4 and IPv6", item)
	}
	if last.Less(first) {
		return netip.Addr{}, netip.Addr{}, fmt.Errorf("source IPs: %q ends before it starts", item)
	}
	return first, last, nil
}
