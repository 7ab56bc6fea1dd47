package main

// Tests of `pim serve`'s admission, drain and shutdown flags: the
// configuration they produce, and the refusals at start.

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/server"
)

func TestServeFlagsRefusedAtStart(t *testing.T) {
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"serve", "--drain-window", "60s"}, "--shutdown-timeout (45s) must exceed --drain-window (1m0s)"},
		{[]string{"serve", "--shutdown-timeout", "30s"}, "must exceed --drain-window"},
		{[]string{"serve", "--accept-rate", "-1"}, "must not be negative"},
		{[]string{"serve", "--max-conns", "-3"}, "must not be negative"},
	} {
		code, _, stderr := runCLI(t, append(c.args, "--data", t.TempDir(), "--tcp", "127.0.0.1:0", "--http", "")...)
		if code != exitUsage || !strings.Contains(stderr, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want usage error with %q", c.args, code, stderr, c.msg)
		}
	}
}

func TestAdmissionFlagsConfig(t *testing.T) {
	parse := func(args ...string) server.Config {
		t.Helper()
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		var a admissionFlags
		a.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		var cfg server.Config
		if err := a.apply(&cfg); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	def := parse()
	a := def.Admission
	if a.MaxConns != defaultMaxConns() || a.Accept != (admission.Limit{Rate: 10000, Burst: 1000}) || !a.Login.Unlimited() ||
		a.UserLogin != (admission.Limit{Rate: 5, Burst: 20}) || !a.IPLogin.Unlimited() || !a.IPSend.Unlimited() ||
		a.UserSend != (admission.Limit{Rate: 2000, Burst: 4000}) {
		t.Fatalf("defaults: %+v", a)
	}
	if a.Shed == nil || a.Shed.MaxInflight != 4096 || a.Shed.Target != 500*time.Millisecond || a.Shed.Interval != time.Second {
		t.Fatalf("shedding defaults: %+v", a.Shed)
	}
	if def.LBS != a.Accept || def.LBSTTL != 10*time.Minute {
		t.Fatalf("LBS defaults: %+v %v", def.LBS, def.LBSTTL)
	}
	c := parse("--accept-rate", "1000", "--login-rate", "500", "--lbs-rate", "-1", "--shed-target", "0", "--max-inflight", "0")
	if c.Admission.Accept != (admission.Limit{Rate: 1000, Burst: 100}) || c.Admission.Login != (admission.Limit{Rate: 500, Burst: 50}) ||
		!c.LBS.Unlimited() || c.Admission.Shed != nil {
		t.Fatalf("custom: %+v, LBS %+v", c.Admission, c.LBS)
	}
	off := parse("--admission=false", "--accept-rate", "5")
	if off.Admission.MaxConns != 0 || !off.Admission.Accept.Unlimited() || off.Admission.Shed != nil || !off.LBS.Unlimited() {
		t.Fatalf("--admission=false: %+v", off.Admission)
	}
}
