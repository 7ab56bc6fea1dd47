package netem

import (
	"strings"
	"testing"
)

func TestLossScript(t *testing.T) {
	s := lossScript([]string{"tun0"}, 30)
	for _, want := range []string{
		"table inet pimnetem\ndelete table inet pimnetem\n",
		"type filter hook prerouting priority filter; policy accept;",
		`iifname "tun0" counter` + "\n",
		`iifname "tun0" numgen random mod 100 < 30 counter drop`,
	} {
		if !strings.Contains(s, want) {
			t.Fatalf("script lacks %q:\n%s", want, s)
		}
	}
	if s := lossScript([]string{"tun0"}, 100); strings.Contains(s, "numgen") || !strings.Contains(s, `iifname "tun0" counter drop`) {
		t.Fatalf("100%% loss:\n%s", s)
	}
	if s := lossScript([]string{"a", "b"}, 0); strings.Contains(s, "drop") || !strings.Contains(s, `iifname { "a", "b" } counter`) {
		t.Fatalf("0%% loss on two interfaces:\n%s", s)
	}
}

func TestParseLossStats(t *testing.T) {
	out := `table inet pimnetem {
	chain loss {
		type filter hook prerouting priority filter; policy accept;
		iifname "tun0" counter packets 1000 bytes 64000
		iifname "tun0" numgen random mod 100 < 30 counter packets 301 bytes 19264 drop
	}
}
`
	st, err := parseLossStats(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Seen != 1000 || st.Dropped != 301 {
		t.Fatalf("got %+v", st)
	}
	if r := st.Rate(); r < 0.3 || r > 0.302 {
		t.Fatalf("rate %v", r)
	}
	st, err = parseLossStats(strings.Replace(out, "\t\tiifname \"tun0\" numgen random mod 100 < 30 counter packets 301 bytes 19264 drop\n", "", 1))
	if err != nil || st.Seen != 1000 || st.Dropped != 0 {
		t.Fatalf("no drop rule: %+v %v", st, err)
	}
	if _, err := parseLossStats("table inet pimnetem {}"); err == nil {
		t.Fatal("no counters accepted")
	}
}
