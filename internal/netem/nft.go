package netem

// Random packet loss with nftables (this kernel has no tc netem). Invariants:
// the rules live in one table of our own (inet pimnetem) in the namespace, so
// nothing else's rules are touched; each change replaces the whole table in
// one nft transaction (no moment with half the rules), which also resets the
// counters; the counters count every packet the rules saw and every packet
// they dropped, so a test can show the loss was real.

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

const nftTable = "pimnetem"

// lossScript is the nft script that makes the namespace drop percent% of the
// packets received on each of ifaces (chosen independently per packet by the
// kernel's random numbers: `numgen random mod 100 < percent drop`), counting
// the packets seen and dropped.
func lossScript(ifaces []string, percent int) string {
	var b strings.Builder
	// "table" first makes sure the table exists, so that the delete succeeds.
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", nftTable, nftTable)
	fmt.Fprintf(&b, "table inet %s {\n\tchain loss {\n\t\ttype filter hook prerouting priority filter; policy accept;\n", nftTable)
	set := quoteSet(ifaces)
	fmt.Fprintf(&b, "\t\tiifname %s counter\n", set)
	switch {
	case percent >= 100: // numgen's values are 0-99: "< 100" is refused
		fmt.Fprintf(&b, "\t\tiifname %s counter drop\n", set)
	case percent > 0:
		fmt.Fprintf(&b, "\t\tiifname %s numgen random mod 100 < %d counter drop\n", set, percent)
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

func quoteSet(ifaces []string) string {
	q := make([]string, len(ifaces))
	for i, s := range ifaces {
		q[i] = strconv.Quote(s)
	}
	if len(q) == 1 {
		return q[0]
	}
	return "{ " + strings.Join(q, ", ") + " }"
}

// SetLoss makes the namespace drop percent% (0-100) of the packets it
// receives on the interfaces ifaces, replacing any loss set before and
// resetting the counters.
func (ns Namespace) SetLoss(ctx context.Context, percent int, ifaces ...string) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("netem: loss %d%% out of range", percent)
	}
	if len(ifaces) == 0 {
		return fmt.Errorf("netem: loss on no interface")
	}
	return run(ctx, []byte(lossScript(ifaces, percent)), "ip", "netns", "exec", string(ns), "nft", "-f", "-")
}

// LossStats are the loss rules' counters since the last SetLoss.
type LossStats struct {
	Seen, Dropped uint64 // packets
}

// Rate is the fraction of seen packets dropped.
func (s LossStats) Rate() float64 {
	if s.Seen == 0 {
		return 0
	}
	return float64(s.Dropped) / float64(s.Seen)
}

// LossStats reads the counters of the rules SetLoss installed.
func (ns Namespace) LossStats(ctx context.Context) (LossStats, error) {
	out, err := output(ctx, "ip", "netns", "exec", string(ns), "nft", "list", "chain", "inet", nftTable, "loss")
	if err != nil {
		return LossStats{}, err
	}
	return parseLossStats(string(out))
}

var counterRE = regexp.MustCompile(`counter packets (\d+) bytes \d+`)

// parseLossStats reads `nft list chain` output of lossScript's chain: the
// first counter is every packet seen, the second (absent at 0%) the dropped.
func parseLossStats(s string) (LossStats, error) {
	m := counterRE.FindAllStringSubmatch(s, -1)
	if len(m) == 0 || len(m) > 2 {
		return LossStats{}, fmt.Errorf("netem: %d counters in the loss chain, want 1 or 2:\n%s", len(m), s)
	}
	var st LossStats
	var err error
	if st.Seen, err = strconv.ParseUint(m[0][1], 10, 64); err != nil {
		return st, err
	}
	if len(m) == 2 {
		if st.Dropped, err = strconv.ParseUint(m[1][1], 10, 64); err != nil {
			return st, err
		}
	}
	return st, nil
}
