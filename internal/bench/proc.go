package bench

// Reading processes and the machine from /proc (Linux). The parsers are pure
// functions of the file contents; the readers add the file I/O.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of the CPU times in /proc (USER_HZ). It is 100 on
// every Linux architecture Go supports (the kernel's ABI fixes it for
// userspace independently of CONFIG_HZ).
const clockTick = 10 * time.Millisecond

// ProcStat is what the benchmarks use of /proc/PID/stat.
type ProcStat struct {
	UTime, STime time.Duration // user and system CPU time
	Threads      int
}

// CPU is user plus system time.
func (s ProcStat) CPU() time.Duration { return s.UTime + s.STime }

// ParseProcStat parses the contents of /proc/PID/stat. The command name (field
// 2) is in parentheses and may contain spaces and parentheses itself, so the
// fields are counted from the last ')'.
func ParseProcStat(b []byte) (ProcStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ProcStat{}, errors.New("proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): field k is f[k-3].
	const utime, stime, threads = 14 - 3, 15 - 3, 20 - 3
	if len(f) <= threads {
		return ProcStat{}, fmt.Errorf("proc stat: %d fields after the command name, want > %d", len(f), threads)
	}
	u, err1 := strconv.ParseUint(f[utime], 10, 64)
	s, err2 := strconv.ParseUint(f[stime], 10, 64)
	n, err3 := strconv.Atoi(f[threads])
	if err := errors.Join(err1, err2, err3); err != nil {
		return ProcStat{}, fmt.Errorf("proc stat: %w", err)
	}
	return ProcStat{UTime: time.Duration(u) * clockTick, STime: time.Duration(s) * clockTick, Threads: n}, nil
}

// ProcStatus is what the benchmarks use of /proc/PID/status.
type ProcStatus struct {
	RSS     int64 // VmRSS, bytes
	PeakRSS int64 // VmHWM (the high-water mark of RSS), bytes
	Threads int
}

// ParseProcStatus parses the contents of /proc/PID/status.
func ParseProcStatus(b []byte) (ProcStatus, error) {
	var st ProcStatus
	var haveRSS bool
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "VmRSS", "VmHWM":
			num, unit, _ := strings.Cut(v, " ")
			n, err := strconv.ParseInt(num, 10, 64)
			if err != nil || (unit != "kB" && unit != "") {
				return ProcStatus{}, fmt.Errorf("proc status: bad %s %q", k, v)
			}
			if unit == "kB" {
				n *= 1024
			}
			if k == "VmRSS" {
				st.RSS, haveRSS = n, true
			} else {
				st.PeakRSS = n
			}
		case "Threads":
			n, err := strconv.Atoi(v)
			if err != nil {
				return ProcStatus{}, fmt.Errorf("proc status: bad Threads %q", v)
			}
			st.Threads = n
		}
	}
	if !haveRSS {
		return ProcStatus{}, errors.New("proc status: no VmRSS (a kernel thread, or a zombie?)")
	}
	return st, nil
}

// MachineCPU is the first line of /proc/stat: CPU time of all cores.
type MachineCPU struct {
	Busy, Total time.Duration
}

// ParseMachineCPU parses the aggregate "cpu" line of /proc/stat. Busy is
// everything but idle and iowait; guest time is already part of user time.
func ParseMachineCPU(b []byte) (MachineCPU, error) {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 5 || f[0] != "cpu" {
		return MachineCPU{}, fmt.Errorf("proc stat: first line %q is not the cpu total", line)
	}
	var total, idle uint64
	for i, s := range f[1:] {
		if i >= 8 { // guest and guest_nice are included in user and nice
			break
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return MachineCPU{}, fmt.Errorf("proc stat: %w", err)
		}
		total += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	return MachineCPU{Busy: time.Duration(total-idle) * clockTick, Total: time.Duration(total) * clockTick}, nil
}

// ParseLoadAvg returns the three load averages of /proc/loadavg.
func ParseLoadAvg(b []byte) ([3]float64, error) {
	var la [3]float64
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return la, fmt.Errorf("loadavg: %q", b)
	}
	for i := range la {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return la, fmt.Errorf("loadavg: %w", err)
		}
		la[i] = v
	}
	return la, nil
}

// procPath names a file of process pid (0: this process).
func procPath(pid int, name string) string {
	if pid == 0 {
		return "/proc/self/" + name
	}
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}

// ReadProcStat reads /proc/PID/stat (pid 0: this process).
func ReadProcStat(pid int) (ProcStat, error) {
	b, err := os.ReadFile(procPath(pid, "stat"))
	if err != nil {
		return ProcStat{}, err
	}
	return ParseProcStat(b)
}

// ReadProcStatus reads /proc/PID/status (pid 0: this process).
func ReadProcStatus(pid int) (ProcStatus, error) {
	b, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return ProcStatus{}, err
	}
	return ParseProcStatus(b)
}

// ReadMachineCPU reads the machine's CPU totals from /proc/stat.
func ReadMachineCPU() (MachineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	return ParseMachineCPU(b)
}

// ReadLoadAvg reads /proc/loadavg.
func ReadLoadAvg() [3]float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return [3]float64{}
	}
	la, _ := ParseLoadAvg(b)
	return la
}

// StableValue returns the first value of samples at which the last k samples
// are all within tol (a fraction) of each other, and true; or, if they never
// settle, the median of the samples and false. It is how a memory reading is
// taken once the garbage collector has settled.
func StableValue(samples []int64, k int, tol float64) (int64, bool) {
	if len(samples) == 0 {
		return 0, false
	}
	k = max(k, 1)
	for end := k; end <= len(samples); end++ {
		w := samples[end-k : end]
		lo, hi := w[0], w[0]
		for _, v := range w {
			lo, hi = min(lo, v), max(hi, v)
		}
		if float64(hi-lo) <= tol*float64(max(hi, 1)) {
			return w[len(w)-1], true
		}
	}
	s := append([]int64(nil), samples...)
	for i := 1; i < len(s); i++ { // tiny insertion sort: a handful of samples
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2], false
}

// ParseSchedstat returns the time on CPU (the first field, nanoseconds) of a
// /proc/PID/task/TID/schedstat line.
func ParseSchedstat(b []byte) (time.Duration, error) {
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, errors.New("schedstat: empty")
	}
	v, err := strconv.ParseUint(f[0], 10, 63)
	if err != nil {
		return 0, fmt.Errorf("schedstat: %w", err)
	}
	return time.Duration(v), nil
}

// ReadTasksCPU sums the nanosecond CPU time of the live threads of pid (0:
// this process) from their schedstat files. Unlike /proc/PID/stat (10 ms
// ticks) it resolves short phases, but it misses threads that have exited.
func ReadTasksCPU(pid int) (time.Duration, error) {
	dir := procPath(pid, "task")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	n := 0
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name() + "/schedstat")
		if err != nil {
			continue // the thread just exited
		}
		d, err := ParseSchedstat(b)
		if err != nil {
			return 0, err
		}
		sum += d
		n++
	}
	if n == 0 {
		return 0, errors.New("schedstat: no thread readable")
	}
	return sum, nil
}
