package bench

import (
	"os"
	"testing"
	"time"
)

func TestParseProcStat(t *testing.T) {
	// Real lines, and command names that contain spaces and parentheses.
	rest := " S 1 4609 4609 0 -1 4194560 1497 0 0 0 5521 312 0 0 20 0 7 0 183450 1330876416 3708 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	cases := []struct {
		name    string
		in      string
		want    ProcStat
		wantErr bool
	}{
		{"plain", "4609 (pim)" + rest, ProcStat{UTime: 55210 * time.Millisecond, STime: 3120 * time.Millisecond, Threads: 7}, false},
		{"spaces in name", "4609 (my pim server)" + rest, ProcStat{UTime: 55210 * time.Millisecond, STime: 3120 * time.Millisecond, Threads: 7}, false},
		{"parens in name", "4609 (a) (b))" + rest, ProcStat{UTime: 55210 * time.Millisecond, STime: 3120 * time.Millisecond, Threads: 7}, false},
		{"no name", "4609 pim S 1 2 3", ProcStat{}, true},
		{"truncated", "4609 (pim) S 1 2 3 4 5 6 7 8 9 10 11 12", ProcStat{}, true},
		{"garbage number", "4609 (pim) S 1 4609 4609 0 -1 4194560 1497 0 0 0 x 312 0 0 20 0 7 0", ProcStat{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseProcStat([]byte(c.in))
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
			if got.CPU() != c.want.UTime+c.want.STime {
				t.Errorf("CPU() = %v", got.CPU())
			}
		})
	}
}

func TestParseProcStatus(t *testing.T) {
	full := "Name:\tpim\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1330876 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   14832 kB\nThreads:\t7\n"
	cases := []struct {
		name    string
		in      string
		want    ProcStatus
		wantErr bool
	}{
		{"full", full, ProcStatus{RSS: 14832 << 10, PeakRSS: 20480 << 10, Threads: 7}, false},
		{"no HWM", "VmRSS:\t 100 kB\n", ProcStatus{RSS: 100 << 10}, false},
		{"kernel thread", "Name:\tkthreadd\nThreads:\t1\n", ProcStatus{}, true},
		{"bad number", "VmRSS:\t lots kB\n", ProcStatus{}, true},
		{"bad unit", "VmRSS:\t 100 MB\n", ProcStatus{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseProcStatus([]byte(c.in))
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestParseMachineCPU(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    MachineCPU
		wantErr bool
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice
		{"ten fields", "cpu  100 5 50 800 20 1 2 3 40 0\ncpu0 1 2 3 4\n",
			MachineCPU{Busy: 161 * clockTick, Total: 981 * clockTick}, false},
		{"old kernel", "cpu 10 0 10 80\n", MachineCPU{Busy: 20 * clockTick, Total: 100 * clockTick}, false},
		{"not cpu", "intr 1 2 3 4 5\n", MachineCPU{}, true},
		{"garbage", "cpu 1 2 x 4\n", MachineCPU{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseMachineCPU([]byte(c.in))
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, c.wantErr)
			}
			if got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestParseLoadAvg(t *testing.T) {
	got, err := ParseLoadAvg([]byte("3.04 2.67 2.18 9/131 8589\n"))
	if err != nil || got != [3]float64{3.04, 2.67, 2.18} {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := ParseLoadAvg([]byte("1.0")); err == nil {
		t.Fatal("want an error for a short line")
	}
}

func TestReadSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	st, err := ReadProcStat(0)
	if err != nil || st.Threads < 1 {
		t.Fatalf("ReadProcStat(self) = %+v, %v", st, err)
	}
	ss, err := ReadProcStatus(os.Getpid())
	if err != nil || ss.RSS <= 0 || ss.PeakRSS < ss.RSS {
		t.Fatalf("ReadProcStatus(self) = %+v, %v", ss, err)
	}
	m, err := ReadMachineCPU()
	if err != nil || m.Total <= 0 || m.Busy > m.Total {
		t.Fatalf("ReadMachineCPU = %+v, %v", m, err)
	}
}

func TestStableValue(t *testing.T) {
	cases := []struct {
		name    string
		in      []int64
		k       int
		tol     float64
		want    int64
		settled bool
	}{
		{"empty", nil, 3, 0.01, 0, false},
		{"settles", []int64{100, 200, 150, 300, 301, 300, 299}, 3, 0.01, 300, true},
		{"settles at end", []int64{10, 20, 30, 40, 40, 40}, 3, 0, 40, true},
		{"never settles: median", []int64{10, 50, 20, 40, 30}, 3, 0.01, 30, false},
		{"k=1", []int64{7, 8}, 1, 0, 7, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := StableValue(c.in, c.k, c.tol)
			if got != c.want || ok != c.settled {
				t.Errorf("StableValue(%v) = %d, %v; want %d, %v", c.in, got, ok, c.want, c.settled)
			}
		})
	}
}

func TestParseSchedstat(t *testing.T) {
	cases := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"1296024687 1164779913 1092\n", 1296024687, false},
		{"0 0 0", 0, false},
		{"", 0, true},
		{"x 1 2", 0, true},
		{"-5 1 2", 0, true},
	}
	for _, c := range cases {
		got, err := ParseSchedstat([]byte(c.in))
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("ParseSchedstat(%q) = %v, %v; want %v, err %v", c.in, got, err, c.want, c.wantErr)
		}
	}
	if _, err := os.Stat("/proc/self/task"); err == nil {
		if d, err := ReadTasksCPU(0); err != nil || d <= 0 {
			t.Errorf("ReadTasksCPU(self) = %v, %v", d, err)
		}
	}
}

func TestPickCPU(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name string
		a, b Snapshot
		want time.Duration
	}{
		{"precise", Snapshot{Server: 100 * ms, ServerNs: 101 * ms}, Snapshot{Server: 110 * ms, ServerNs: 114 * ms}, 13 * ms},
		{"no schedstat", Snapshot{Server: 100 * ms}, Snapshot{Server: 130 * ms}, 30 * ms},
		{"thread exited: ns went back", Snapshot{Server: 100 * ms, ServerNs: 500 * ms}, Snapshot{Server: 900 * ms, ServerNs: 400 * ms}, 800 * ms},
		{"thread exited: ns far below ticks", Snapshot{Server: 0, ServerNs: 1}, Snapshot{Server: 2000 * ms, ServerNs: 1000 * ms}, 2000 * ms},
	}
	for _, c := range cases {
		if got := pickCPU(c.a.Server, c.b.Server, c.a.ServerNs, c.b.ServerNs); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
