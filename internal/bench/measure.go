package bench

import (
	"context"
	"sync"
	"time"
)

// Meter takes CPU snapshots of the server, the load generator (this process
// and its worker processes) and the whole machine, so that a measured phase
// is the difference of two snapshots.
type Meter struct {
	ServerPID int          // 0: unknown (then ServerCPU, if set)
	Workers   func() []int // PIDs of load worker processes (may be nil)
	// ServerCPU reads the server's CPU time another way (its /metrics)
	// when its PID is unknown.
	ServerCPU func() (time.Duration, bool)
}

// NewMeter returns the meter of a target: its process when its PID is
// known, else its /metrics (process_cpu_seconds_total) when it has an HTTP
// address.
func NewMeter(t *Target) *Meter {
	m := &Meter{ServerPID: t.PID}
	if t.PID <= 0 && t.HTTPBase != "" {
		m.ServerCPU = func() (time.Duration, bool) {
			v, ok := t.Metrics(context.Background(), "process_cpu_seconds_total")["process_cpu_seconds_total"]
			return time.Duration(v * float64(time.Second)), ok
		}
	}
	return m
}

// Snapshot is the state of the CPU counters at one instant.
type Snapshot struct {
	At        time.Time
	Server    time.Duration // from /proc/PID/stat (10 ms ticks, exited threads included)
	ServerNs  time.Duration // from the threads' schedstat (ns, live threads only; 0: unreadable)
	ServerOK  bool
	Loadgen   time.Duration
	LoadgenNs time.Duration // 0: unreadable
	Machine   MachineCPU
}

// Snap reads the counters now.
func (m *Meter) Snap() Snapshot {
	s := Snapshot{At: time.Now()}
	if m.ServerPID > 0 {
		if st, err := ReadProcStat(m.ServerPID); err == nil {
			s.Server, s.ServerOK = st.CPU(), true
		}
		if ns, err := ReadTasksCPU(m.ServerPID); err == nil {
			s.ServerNs = ns
		}
	} else if m.ServerCPU != nil {
		s.Server, s.ServerOK = m.ServerCPU()
	}
	pids := []int{0}
	if m.Workers != nil {
		pids = append(pids, m.Workers()...)
	}
	nsOK := true
	for _, pid := range pids {
		if st, err := ReadProcStat(pid); err == nil {
			s.Loadgen += st.CPU()
		}
		ns, err := ReadTasksCPU(pid)
		nsOK = nsOK && err == nil
		s.LoadgenNs += ns
	}
	if !nsOK {
		s.LoadgenNs = 0
	}
	s.Machine, _ = ReadMachineCPU()
	return s
}

// Usage is the CPU spent between two snapshots.
type Usage struct {
	Wall        time.Duration
	Server      time.Duration
	ServerOK    bool
	Loadgen     time.Duration
	MachineBusy time.Duration // all cores, everyone's
}

// UsageBetween returns the CPU spent from a to b.
func UsageBetween(a, b Snapshot) Usage {
	return Usage{
		Wall:        b.At.Sub(a.At),
		Server:      pickCPU(a.Server, b.Server, a.ServerNs, b.ServerNs),
		ServerOK:    a.ServerOK && b.ServerOK,
		Loadgen:     pickCPU(a.Loadgen, b.Loadgen, a.LoadgenNs, b.LoadgenNs),
		MachineBusy: max(b.Machine.Busy-a.Machine.Busy, 0),
	}
}

// Pct returns d as a percentage of one core over wall (100 = one core busy).
func Pct(d, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return roundTo(100*d.Seconds()/wall.Seconds(), 1)
}

// RSSSampler samples the RSS of a process periodically and keeps the peak
// since the last ResetPeak.
type RSSSampler struct {
	read   func() (int64, error)
	mu     sync.Mutex
	last   int64
	peak   int64
	cancel context.CancelFunc
	done   chan struct{}
}

// StartRSSSampler samples the RSS that read returns every interval until Stop.
func StartRSSSampler(read func() (int64, error), interval time.Duration) *RSSSampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &RSSSampler{read: read, cancel: cancel, done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *RSSSampler) sample() {
	rss, err := s.read()
	if err != nil {
		return
	}
	s.mu.Lock()
	s.last = rss
	s.peak = max(s.peak, rss)
	s.mu.Unlock()
}

// Last is the latest sample.
func (s *RSSSampler) Last() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Peak is the largest sample since the start or the last ResetPeak.
func (s *RSSSampler) Peak() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// ResetPeak starts a new peak from the latest sample.
func (s *RSSSampler) ResetPeak() {
	s.sample()
	s.mu.Lock()
	s.peak = s.last
	s.mu.Unlock()
}

// Stop ends the sampling.
func (s *RSSSampler) Stop() {
	s.cancel()
	<-s.done
}

// StableRSS reads the RSS every interval for at least minWait and at most
// maxWait, and returns the value once three readings in a row agree within
// 1% (the garbage collector and the scavenger have settled), or the median.
func StableRSS(ctx context.Context, read func() (int64, error), minWait, maxWait, interval time.Duration) (int64, bool) {
	start := time.Now()
	var samples []int64
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if rss, err := read(); err == nil {
			samples = append(samples, rss)
		}
		el := time.Since(start)
		if el >= minWait {
			if v, ok := StableValue(samples[max(0, len(samples)-3):], 3, 0.01); ok {
				return v, true
			}
		}
		if el >= maxWait {
			return StableValue(samples, 3, 0.01)
		}
		select {
		case <-ctx.Done():
			return StableValue(samples, 3, 0.01)
		case <-t.C:
		}
	}
}

// pickCPU is a process's CPU time between two snapshots: the nanosecond
// schedstat sum when it is consistent with the tick counters (no thread that
// ran in between has exited: its time would be missing), else the ticks.
func pickCPU(ticksA, ticksB, nsA, nsB time.Duration) time.Duration {
	ticks := max(ticksB-ticksA, 0)
	if nsA == 0 || nsB == 0 {
		return ticks
	}
	ns := nsB - nsA
	// The tick counters are off by up to a tick per thread and per read.
	if ns < 0 || ns < ticks-50*time.Millisecond || ns > ticks+50*time.Millisecond+ticks/10 {
		return ticks
	}
	return ns
}
