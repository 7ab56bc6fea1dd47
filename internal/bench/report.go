package bench

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
)

// Schema is the version of the JSON reports (docs/benchmarks.md).
const Schema = 1

// Common is the part of every benchmark's JSON report that does not depend
// on the benchmark. Fields are documented in docs/benchmarks.md.
type Common struct {
	Bench     string   `json:"bench"`
	Schema    int      `json:"schema"`
	StartedAt string   `json:"started_at"`
	Args      []string `json:"args"`
	OK        bool     `json:"ok"`
	Failures  []string `json:"failures,omitempty"`
	Notes     []string `json:"notes,omitempty"`
	DurationS float64  `json:"duration_s"`

	Env     Env           `json:"env"`
	Server  ServerReport  `json:"server"`
	Loadgen LoadgenReport `json:"loadgen"`
	Machine MachineReport `json:"machine"`
}

// Env describes the machine and the build.
type Env struct {
	NProc        int        `json:"nproc"`
	CPUModel     string     `json:"cpu_model"`
	GoVersion    string     `json:"go_version"`
	Revision     string     `json:"revision,omitempty"`
	Modified     bool       `json:"modified,omitempty"`
	LoadAvgStart [3]float64 `json:"loadavg_start"`
	LoadAvgEnd   [3]float64 `json:"loadavg_end"`
}

// ServerReport is what was measured of the server process.
type ServerReport struct {
	Spawned           bool     `json:"spawned"`
	Addr              string   `json:"addr"`
	TLS               bool     `json:"tls"`
	Fsync             string   `json:"fsync,omitempty"`
	PID               int      `json:"pid,omitempty"`
	Args              []string `json:"args,omitempty"`
	PeakRSSBytes      int64    `json:"peak_rss_bytes"`
	PhasePeakRSSBytes int64    `json:"phase_peak_rss_bytes"`
	RSSStartBytes     int64    `json:"rss_start_bytes"`
	RSSEndBytes       int64    `json:"rss_end_bytes"`
	CPUSeconds        float64  `json:"cpu_seconds"`
	CPUPct            float64  `json:"cpu_pct"`
	Threads           int      `json:"threads,omitempty"`
	Measured          bool     `json:"measured"`
	// Source says where the server figures come from: "proc" (/proc/PID),
	// "metrics" (its /metrics endpoint) or "" (not measured).
	Source string `json:"source"`
}

// LoadgenReport is the load generator's own CPU over the measured phase.
type LoadgenReport struct {
	Procs      int     `json:"procs"`
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUPct     float64 `json:"cpu_pct"`
}

// MachineReport is the whole machine's CPU over the measured phase.
type MachineReport struct {
	BusyPct  float64 `json:"busy_pct"`
	OtherPct float64 `json:"other_pct"`
}

// NewCommon starts a report.
func NewCommon(bench string, args []string) Common {
	return Common{Bench: bench, Schema: Schema, StartedAt: time.Now().UTC().Format(time.RFC3339),
		Args: args, Env: ReadEnv()}
}

// ReadEnv describes this machine and binary.
func ReadEnv() Env {
	e := Env{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgStart: ReadLoadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				e.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				e.Revision = s.Value
			case "vcs.modified":
				e.Modified = s.Value == "true"
			}
		}
	}
	return e
}

// SetServer fills the server description from the target.
func (c *Common) SetServer(t *Target) {
	c.Server.Spawned = t.Spawned != nil
	c.Server.Addr = t.Addr
	c.Server.TLS = t.TLS != nil
	c.Server.Fsync = t.Fsync
	c.Server.PID = t.PID
	switch {
	case t.PID > 0:
		c.Server.Source = "proc"
	case t.HTTPBase != "":
		c.Server.Source = "metrics"
	}
	if t.Spawned != nil {
		c.Server.Args = t.Spawned.Args[1:]
	}
}

// SetUsage fills the CPU figures of the measured phase.
func (c *Common) SetUsage(u Usage, procs int) {
	c.DurationS = roundTo(u.Wall.Seconds(), 3)
	c.Server.Measured = u.ServerOK
	if u.ServerOK {
		c.Server.CPUSeconds = roundTo(u.Server.Seconds(), 3)
		c.Server.CPUPct = Pct(u.Server, u.Wall)
	}
	c.Loadgen = LoadgenReport{Procs: procs, CPUSeconds: roundTo(u.Loadgen.Seconds(), 3), CPUPct: Pct(u.Loadgen, u.Wall)}
	c.Machine.BusyPct = Pct(u.MachineBusy, u.Wall)
	other := u.MachineBusy - u.Loadgen
	if u.ServerOK {
		other -= u.Server
	}
	c.Machine.OtherPct = Pct(max(other, 0), u.Wall)
}

// Finish reads the server's peak RSS and thread count at the end of a run.
func (c *Common) Finish(t *Target, s *RSSSampler) {
	c.Env.LoadAvgEnd = ReadLoadAvg()
	c.Notes = append(c.Notes, t.Notes...)
	if t.PID > 0 {
		if st, err := ReadProcStatus(t.PID); err == nil {
			c.Server.PeakRSSBytes = st.PeakRSS
			c.Server.RSSEndBytes = st.RSS
			c.Server.Threads = st.Threads
		}
	} else if read := t.RSSReader(); read != nil {
		// From /metrics: no high-water mark; the samples' peak stands in.
		if rss, err := read(); err == nil {
			c.Server.RSSEndBytes = rss
		}
		if s != nil {
			c.Server.PeakRSSBytes = max(s.Peak(), c.Server.RSSEndBytes)
		}
	}
	if s != nil {
		c.Server.PhasePeakRSSBytes = s.Peak()
	}
	c.OK = len(c.Failures) == 0
}

// Fail records a reason the run does not pass.
func (c *Common) Fail(format string, args ...any) {
	c.Failures = append(c.Failures, fmt.Sprintf(format, args...))
}

// Row is one line of a human summary.
type Row struct{ Name, Value string }

// CommonRows are the summary lines every benchmark shares.
func (c *Common) CommonRows() []Row {
	rows := []Row{}
	srv := "not measured (no --server-pid, no --http for /metrics)"
	if c.Server.Measured {
		srv = fmt.Sprintf("%.2f s CPU (%.0f%% of a core), peak RSS %s (from %s)", c.Server.CPUSeconds, c.Server.CPUPct, MiB(c.Server.PeakRSSBytes), c.Server.Source)
	}
	rows = append(rows,
		Row{"server", srv},
		Row{"load generator", fmt.Sprintf("%.2f s CPU (%.0f%% of a core, %d process(es))", c.Loadgen.CPUSeconds, c.Loadgen.CPUPct, c.Loadgen.Procs)},
		Row{"machine", fmt.Sprintf("%.0f%% busy of %d00%%, others %.0f%%; load %.2f -> %.2f", c.Machine.BusyPct, c.Env.NProc, c.Machine.OtherPct, c.Env.LoadAvgStart[0], c.Env.LoadAvgEnd[0])},
	)
	verdict := "PASS"
	if !c.OK {
		verdict = "FAIL: " + strings.Join(c.Failures, "; ")
	}
	rows = append(rows, Row{"result", verdict})
	return rows
}

// MiB formats bytes as MiB.
func MiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// perUnit returns total microseconds of d per count (0 if count is 0).
func perUnit(d time.Duration, count int64) float64 {
	if count <= 0 {
		return 0
	}
	return roundTo(float64(d.Microseconds())/float64(count), 2)
}

// rate returns count per second of wall.
func rate(count int64, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return roundTo(float64(count)/wall.Seconds(), 1)
}

// Summarizer is a benchmark result that can print itself for people.
type Summarizer interface {
	Rows() []Row
	Passed() bool
}

// Passed reports whether the run passed its checks.
func (c *Common) Passed() bool { return c.OK }

// FormatRows renders rows as aligned "name  value" lines.
func FormatRows(title string, rows []Row) string {
	w := 0
	for _, r := range rows {
		w = max(w, len(r.Name))
	}
	var b strings.Builder
	b.WriteString(title + "\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-*s  %s\n", w, r.Name, r.Value)
	}
	return b.String()
}

func latRow(name string, l Latency) Row {
	return Row{name, fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms  (%d samples)", l.P50, l.P90, l.P99, l.P999, l.Max, l.Count)}
}
