// Worker protocol tests, without a server: the parent's final wait fed with
// progress reports (no process), and a worker's stamps on its reports
// (RunWorker over pipes, a fleet of no clients). No sleeps: every step waits
// on a message or is synchronous.
package storm

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
)

// cmdLog is a worker's stdin seen from the parent: the commands written.
type cmdLog struct {
	mu    sync.Mutex
	lines []string
}

func (c *cmdLog) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lines = append(c.lines, strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")...)
	return len(b), nil
}
func (c *cmdLog) Close() error { return nil }

func fakeWorker() (*worker, *cmdLog) {
	log := &cmdLog{}
	return &worker{stdin: log, report: make(chan FleetReport, 1), exited: make(chan struct{})}, log
}

func progressMsg(p Progress) workerMsg { return workerMsg{Event: "progress", Progress: p} }

// TestDrainedNeedsCountsAfterTrafficOff: the parent's final wait must not
// pass on a worker's report read before the worker stopped its traffic, even
// one showing nothing in flight (bursty sends, quick acks): that let finish
// close the fleets with acks in flight ("3 messages never acknowledged",
// delivered 6 above expected).
func TestDrainedNeedsCountsAfterTrafficOff(t *testing.T) {
	w, log := fakeWorker()
	// A local fleet beside it (no clients): traffic off is synchronous there.
	lf, err := newFleet(FleetConfig{Rate: 100, Backoff: BackoffSDK}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.close()
	fleets := []fleetHandle{localFleet{lf}, w}
	for _, f := range fleets {
		if err := f.traffic(true); err != nil {
			t.Fatal(err)
		}
	}
	// The worker's last report while its traffic is on: between two bursts,
	// every message acked and delivered.
	w.handle(progressMsg(Progress{Connected: 4, Sent: 10, Acked: 10, Expected: 20, Delivered: 20}))

	for _, f := range fleets {
		if err := f.traffic(false); err != nil {
			t.Fatal(err)
		}
	}
	if got := log.lines; len(got) != 2 || got[0] != "traffic on" || got[1] != "traffic off" {
		t.Fatalf("commands written: %q", got)
	}
	if drained(fleets) {
		t.Fatal("drained on a report read while the worker's traffic was on")
	}
	// Its pacer had sent 3 more before it stopped: stamped, but in flight.
	w.handle(progressMsg(Progress{Connected: 4, Sent: 13, Acked: 10, Inflight: 3, Expected: 20, Delivered: 26, TrafficOffs: 1}))
	if drained(fleets) {
		t.Fatal("drained with 3 messages in flight")
	}
	// Acked; a delivery still due.
	w.handle(progressMsg(Progress{Connected: 4, Sent: 13, Acked: 13, Expected: 26, Delivered: 25, TrafficOffs: 1}))
	if drained(fleets) {
		t.Fatal("drained with a delivery due")
	}
	w.handle(progressMsg(Progress{Connected: 4, Sent: 13, Acked: 13, Expected: 26, Delivered: 26, TrafficOffs: 1}))
	if !drained(fleets) {
		t.Fatal("not drained: everything acked and delivered after traffic off")
	}

	// Traffic on and off again: a report stamped with the first "off" is as
	// stale as an unstamped one.
	for _, f := range fleets {
		_ = f.traffic(true)
		_ = f.traffic(false)
	}
	if drained(fleets) {
		t.Fatal("drained on a report stamped with an earlier traffic off")
	}
	w.handle(progressMsg(Progress{Connected: 4, Sent: 20, Acked: 20, Expected: 40, Delivered: 40, TrafficOffs: 2}))
	if !drained(fleets) {
		t.Fatal("not drained after the second traffic off")
	}
}

// TestWorkerStampsTrafficOff: a worker reports, once "traffic off" is
// carried out, counts stamped with it (without waiting for its ticker); its
// report after "finish" keeps the stamp.
func TestWorkerStampsTrafficOff(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- RunWorker(context.Background(), inR, outW) }()
	defer func() {
		inW.Close() // the worker ends
		outR.Close()
		if err := <-errc; err != nil {
			t.Errorf("RunWorker: %v", err)
		}
	}()
	job, _ := json.Marshal(FleetConfig{Rate: 100, Backoff: BackoffSDK})
	write := func(s string) {
		t.Helper()
		if _, err := io.WriteString(inW, s+"\n"); err != nil {
			t.Fatal(err)
		}
	}
	dec := json.NewDecoder(bufio.NewReader(outR))
	next := func() workerMsg {
		t.Helper()
		var m workerMsg
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	write(string(job))
	write("traffic on")
	write("traffic off")
	for {
		m := next()
		if m.Event != "progress" {
			t.Fatalf("before finish: %+v", m)
		}
		if m.TrafficOffs > 1 {
			t.Fatalf("stamped %d traffic offs, given 1", m.TrafficOffs)
		}
		if m.TrafficOffs == 1 {
			break
		}
	}
	write("finish")
	for {
		m := next()
		if m.Event == "report" {
			if m.Report == nil || m.Report.TrafficOffs != 1 {
				t.Fatalf("report: %+v", m.Report)
			}
			return
		}
	}
}
