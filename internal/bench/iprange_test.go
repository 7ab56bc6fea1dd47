package bench

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParseSourceIPs(t *testing.T) {
	ips := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	cases := []struct {
		in      string
		want    []netip.Addr
		wantErr bool
	}{
		{"", nil, false},
		{" , ", nil, false},
		{"127.0.0.2", ips("127.0.0.2"), false},
		{"127.0.0.2-127.0.0.4", ips("127.0.0.2", "127.0.0.3", "127.0.0.4"), false},
		{"127.0.0.2-4", ips("127.0.0.2", "127.0.0.3", "127.0.0.4"), false},
		{"127.0.0.254-127.0.1.1", ips("127.0.0.254", "127.0.0.255", "127.0.1.0", "127.0.1.1"), false},
		{"127.0.0.5-5", ips("127.0.0.5"), false},
		{"127.0.0.2,127.0.0.9-10, 127.0.0.2", ips("127.0.0.2", "127.0.0.9", "127.0.0.10"), false},
		{"127.0.1.0/30", ips("127.0.1.0", "127.0.1.1", "127.0.1.2", "127.0.1.3"), false},
		{"127.0.1.1/30", ips("127.0.1.0", "127.0.1.1", "127.0.1.2", "127.0.1.3"), false},
		{"::1", ips("::1"), false},
		{"::ffff:127.0.0.1", ips("127.0.0.1"), false},
		{"fd00::1-fd00::3", ips("fd00::1", "fd00::2", "fd00::3"), false},
		{"127.0.0.4-2", nil, true},
		{"127.0.0.2-256", nil, true},
		{"127.0.0.2-x", nil, true},
		{"127.0.0.2-::1", nil, true},
		{"fd00::1-5", nil, true},
		{"localhost", nil, true},
		{"10.0.0.0/8", nil, true},
		{"127.0.0.0/33", nil, true},
	}
	for _, c := range cases {
		got, err := ParseSourceIPs(c.in)
		if (err != nil) != c.wantErr {
			t.Errorf("%q: err = %v, wantErr %v", c.in, err, c.wantErr)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%q: got %v, want %v", c.in, got, c.want)
		}
	}
	// The example: 59 addresses.
	got, err := ParseSourceIPs("127.0.0.2-127.0.0.60")
	if err != nil || len(got) != 59 || got[0] != netip.MustParseAddr("127.0.0.2") || got[58] != netip.MustParseAddr("127.0.0.60") {
		t.Errorf("127.0.0.2-127.0.0.60: %d addresses, %v", len(got), err)
	}
}
