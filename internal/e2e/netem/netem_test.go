// Package netem_test runs PIM over a real weak network: a `pim serve` child
// process in one network namespace, client device processes in another, and
// between them a router namespace that delays every packet and drops a share
// of them at random (internal/netem: nftables `numgen random` loss and a
// packet delayer of ours, since this kernel has no tc netem). It needs root,
// iproute2 and nftables, and skips without them.
//
//	go test ./internal/e2e/netem -run TestLossAndDelay -v
//	go test ./internal/e2e/netem -run TestLossDelayMatrix -netem.matrix -v -timeout 30m
package netem_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/netem"
)

var (
	matrixFlag = flag.Bool("netem.matrix", false, "run TestLossDelayMatrix: 0/10/30% loss at 200 ms and 1 s RTT (several minutes)")
	seedFlag   = flag.Uint64("netem.seed", 0, "seed of the clients' backoff jitter (0: from the clock; the test logs it)")
	nFlag      = flag.Int("netem.n", 20, "messages each device sends")
	everyFlag  = flag.Duration("netem.every", 250*time.Millisecond, "interval at which each device hands its messages to the client")
	clientFlag = flag.String("netem.client", "sdk", "the devices' client: sdk (the Go SDK, sdk/go) or lean (internal/client with the test's own retry logic)")
)

const serverPort = "7400"

// scenario is one run: three devices of two users in one 1:1 conversation,
// each sending n messages (alice/phone and alice/pc to bob, bob/phone to
// alice), over a network of the given round trip and loss.
type scenario struct {
	rtt      time.Duration
	loss     int // percent, each direction
	n        int
	every    time.Duration
	alice    string
	bob      string
	deadline time.Time
	seed     uint64
	// outage, if set, drops every packet from outageAt after the start of
	// sending for outageFor: connections die, devices reconnect and resend.
	outageAt, outageFor time.Duration
}

type devSpec struct{ user, device, to string }

func (s scenario) devices() []devSpec {
	return []devSpec{{s.alice, "phone", s.bob}, {s.alice, "pc", s.bob}, {s.bob, "phone", s.alice}}
}

// outcome is what the devices reported.
type outcome struct {
	sent       map[string]event   // client_msg_id -> its sent event
	recv       map[string][]event // device -> recv events in arrival order
	others     []string           // violations, errors, timeouts, helper failures
	done       map[string]event
	conns      map[string][]string // device -> connection ends and dial failures
	elapsed    time.Duration
	loss       netem.LossStats // summed over the phases (each SetLoss resets the counters)
	queueDrops uint64
}

// Every device sends N messages and receives all 3N of the conversation
// exactly once and in order, through 30% packet loss each way and a 1 s
// round trip, and a 20 s outage (100% loss) while messages are in flight:
// the devices' connections time out, they reconnect and resend with the
// same ids, and still nothing is lost, duplicated or reordered.
func TestLossAndDelay(t *testing.T) {
	// About 40-80 s of real time at 1 s RTT, and sensitive to CPU
	// starvation: .ci/run runs it on its own after the main suite
	// (PIM_NETEM=1). The budget is generous because a TCP connection at 30%
	// loss each way can spend a minute in retransmission backoff; it only
	// bounds a run that fails.
	if os.Getenv("PIM_NETEM") == "" {
		t.Skip("set PIM_NETEM=1 to run (root, nftables); .ci/run does")
	}
	env := setup(t, 5*time.Minute)
	s := env.scenario(t, "alice", "bob", time.Second, 30, *nFlag)
	s.outageAt, s.outageFor = 3*time.Second, 20*time.Second
	s.deadline = env.deadline.Add(-10 * time.Second)
	out := env.run(t, s)
	report(t, s, out)
	check(t, s, out, true)
}

// The figures of docs/weak-network.md: delivery success and send -> deliver
// latency at 0, 10 and 30% loss with 200 ms and 1 s round trips.
func TestLossDelayMatrix(t *testing.T) {
	if !*matrixFlag {
		t.Skip("run with -netem.matrix (takes several minutes)")
	}
	env := setup(t, 25*time.Minute)
	var rows []string
	for _, rtt := range []time.Duration{200 * time.Millisecond, time.Second} {
		for _, loss := range []int{0, 10, 30} {
			tag := fmt.Sprintf("r%dl%d", rtt.Milliseconds(), loss)
			s := env.scenario(t, "alice-"+tag, "bob-"+tag, rtt, loss, *nFlag)
			s.deadline = time.Now().Add(150 * time.Second)
			out := env.run(t, s)
			rows = append(rows, report(t, s, out))
			check(t, s, out, false)
		}
	}
	t.Logf("\n| RTT | loss each way | delivered | send->deliver p50 | p99 | send->ack p50 | p99 | resent sends | reconnects | duration |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n%s", strings.Join(rows, "\n"))
}

// env is a topology with a pim server running in its server namespace.
type env struct {
	topo     *netem.Topology
	addr     string
	keys     *auth.Keys
	self     string
	seed     uint64
	deadline time.Time
	ctx      context.Context
}

func setup(t *testing.T, budget time.Duration) *env {
	if err := netem.Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	if *clientFlag != "sdk" && *clientFlag != "lean" {
		t.Fatalf("-netem.client=%q: use sdk or lean", *clientFlag)
	}
	bin := buildPim(t)
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	t.Cleanup(cancel)
	deadline, _ := ctx.Deadline()
	topo := netem.Require(t) // removed at the end (registered before the processes, so after them)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("client %s; seed %d (replay the lean clients' jitter with -netem.seed=%d; the SDK's jitter and nft's random drops cannot be replayed)", *clientFlag, seed, seed)
	dir := t.TempDir()
	srv := startServer(t, ctx, topo.Server, bin, dir)
	keys, err := auth.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &env{topo: topo, addr: srv, keys: keys, self: self, seed: seed, deadline: deadline, ctx: ctx}
}

func (e *env) scenario(t *testing.T, alice, bob string, rtt time.Duration, loss, n int) scenario {
	e.seed++
	return scenario{rtt: rtt, loss: loss, n: n, every: *everyFlag, alice: alice, bob: bob, seed: e.seed}
}

// buildPim builds cmd/pim into a temporary directory.
func buildPim(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pim")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/pim-project/pim/cmd/pim").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startServer runs `pim serve` in ns and returns its TCP address once it
// listens. It is stopped (SIGTERM, then SIGKILL) at the end of the test.
func startServer(t *testing.T, ctx context.Context, ns netem.Namespace, bin, dir string) string {
	t.Helper()
	addr := netem.ServerIP + ":" + serverPort
	cmd := ns.Command(context.Background(), bin, "serve", "--tcp", addr, "--http", "", "--allow-plaintext", "--data", dir, "--log-level", "warn")
	cmd.SysProcAttr = netem.ChildAttr()
	var stderr syncBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pim serve: %v", err)
	}
	exited := make(chan struct{})
	banner := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		got := ""
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && f[0] == "tcp:" {
				got = f[1]
			}
			if len(f) >= 2 && f[0] == "get" && f[1] == "a" {
				break
			}
		}
		banner <- got
		io.Copy(io.Discard, stdout)
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("pim serve stderr:\n%s", stderr.String())
		}
	})
	select {
	case got := <-banner:
		if got != addr {
			t.Fatalf("pim serve printed tcp address %q, want %s; stderr:\n%s", got, addr, stderr.String())
		}
	case <-ctx.Done():
		t.Fatalf("pim serve printed no banner: %v; stderr:\n%s", ctx.Err(), stderr.String())
	}
	return addr
}

// run sets the network, starts one device process per device in the client
// namespace, lets them send once all are connected, and collects their reports.
func (e *env) run(t *testing.T, s scenario) outcome {
	t.Helper()
	e.topo.SetRTT(s.rtt)
	if err := e.topo.SetLoss(e.ctx, s.loss); err != nil {
		t.Fatal(err)
	}
	t.Logf("scenario: RTT %v, %d%% loss each way, %d messages from each of 3 devices (one every %v), device seeds from %d", s.rtt, s.loss, s.n, s.every, s.seed*16)
	if s.outageFor > 0 {
		t.Logf("outage: 100%% loss from %v after the start for %v", s.outageAt, s.outageFor)
	}
	specs := s.devices()
	type line struct {
		dev string
		ev  event
	}
	lines := make(chan line, 1024)
	type proc struct {
		name   string
		cmd    *exec.Cmd
		stdin  io.WriteCloser
		stderr *syncBuffer
		exited chan error
	}
	var procs []*proc
	killAll := func() {
		for _, p := range procs {
			p.cmd.Process.Kill() // a process already waited for ignores it
		}
	}
	t.Cleanup(killAll) // if the test ends early
	ctx, cancel := context.WithDeadline(e.ctx, s.deadline.Add(5*time.Second))
	defer cancel()
	var readers sync.WaitGroup
	for i, d := range specs {
		tok, err := e.keys.Issue(d.user, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		name := d.user + "/" + d.device
		cmd := e.topo.Client.Command(context.Background(), e.self, "-test.run=^TestHelperClient$")
		cmd.Env = append(os.Environ(), helperEnv(helperConfig{
			client: *clientFlag, addr: e.addr, token: tok, user: d.user, device: d.device, to: d.to,
			n: s.n, expect: s.n * len(specs), every: s.every, seed: s.seed*16 + uint64(i), deadline: s.deadline,
		})...)
		cmd.SysProcAttr = netem.ChildAttr()
		p := &proc{name: name, cmd: cmd, stderr: &syncBuffer{}, exited: make(chan error, 1)}
		cmd.Stderr = p.stderr
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start device %s: %v", name, err)
		}
		procs = append(procs, p)
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				l, ok := strings.CutPrefix(sc.Text(), eventPrefix)
				if !ok {
					continue
				}
				var ev event
				if err := json.Unmarshal([]byte(l), &ev); err != nil {
					ev = event{K: "error", Msg: fmt.Sprintf("bad report line %q: %v", l, err)}
				}
				lines <- line{name, ev}
			}
			io.Copy(io.Discard, stdout)
			p.exited <- cmd.Wait()
		}()
	}
	stopWatch := context.AfterFunc(ctx, killAll) // devices past their deadline
	defer stopWatch()
	go func() { readers.Wait(); close(lines) }()

	out := outcome{sent: map[string]event{}, recv: map[string][]event{}, done: map[string]event{}, conns: map[string][]string{}}
	ready := 0
	var start time.Time
	var outageDone chan error
	var phases netem.LossStats // counters of the phases before the last
	for l := range lines {
		switch l.ev.K {
		case "ready":
			if ready++; ready == len(procs) {
				start = time.Now()
				for _, p := range procs {
					io.WriteString(p.stdin, "go\n")
				}
				if s.outageFor > 0 {
					outageDone = make(chan error, 1)
					go func() { outageDone <- e.outage(ctx, s, &phases) }()
				}
			}
		case "sent":
			out.sent[l.ev.ID] = l.ev
		case "recv":
			out.recv[l.dev] = append(out.recv[l.dev], l.ev)
		case "done":
			out.done[l.dev] = l.ev
		case "conn":
			out.conns[l.dev] = append(out.conns[l.dev], l.ev.Msg)
		default: // violation, error, timeout
			out.others = append(out.others, fmt.Sprintf("%s: %s: %s", l.dev, l.ev.K, l.ev.Msg))
		}
	}
	if !start.IsZero() {
		out.elapsed = time.Since(start)
	}
	for _, p := range procs {
		if err := <-p.exited; err != nil {
			out.others = append(out.others, fmt.Sprintf("%s: process: %v; stderr:\n%s", p.name, err, p.stderr.String()))
		}
	}
	if outageDone != nil {
		if err := <-outageDone; err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if out.loss, err = e.topo.LossStats(e.ctx); err != nil {
		t.Fatal(err)
	}
	out.loss.Seen += phases.Seen
	out.loss.Dropped += phases.Dropped
	out.queueDrops = e.topo.Delayer().Dropped()
	return out
}

// outage drops every packet for s.outageFor from s.outageAt on, then restores
// s.loss, adding the counters of the phases it ends to phases.
func (e *env) outage(ctx context.Context, s scenario, phases *netem.LossStats) error {
	setLoss := func(pct int) error {
		st, err := e.topo.LossStats(ctx)
		if err != nil {
			return err
		}
		phases.Seen += st.Seen
		phases.Dropped += st.Dropped
		return e.topo.SetLoss(ctx, pct)
	}
	for _, step := range []struct {
		wait time.Duration
		loss int
	}{{s.outageAt, 100}, {s.outageFor, s.loss}} {
		select {
		case <-time.After(step.wait):
		case <-ctx.Done():
			return nil
		}
		if err := setLoss(step.loss); err != nil {
			return err
		}
	}
	return nil
}

// check fails the test unless every device received the conversation's
// messages in order (seq 1, 2, 3, ... with no gap or repeat), each message
// once, at the seq its sender's ack named, each sender's messages in the
// order it sent them. With complete, it also requires every message to have
// been sent and received by every device.
func check(t *testing.T, s scenario, out outcome, complete bool) {
	t.Helper()
	for _, o := range out.others {
		if complete || !strings.Contains(o, ": timeout: ") {
			t.Errorf("%s", o)
		}
	}
	total := s.n * len(s.devices())
	for _, d := range s.devices() {
		name := d.user + "/" + d.device
		evs := out.recv[name]
		ids := map[string]bool{}
		lastCSeq := map[string]uint64{}
		for i, ev := range evs {
			if ev.Seq != uint64(i+1) {
				t.Errorf("%s: message %d of the conversation has seq %d: out of order, gap or repeat", name, i+1, ev.Seq)
				break
			}
			if ids[ev.ID] {
				t.Errorf("%s: %s delivered twice", name, ev.ID)
			}
			ids[ev.ID] = true
			if ev.CSeq <= lastCSeq[ev.Sender] {
				t.Errorf("%s: %s (client seq %d) after client seq %d of the same sender", name, ev.ID, ev.CSeq, lastCSeq[ev.Sender])
			}
			lastCSeq[ev.Sender] = ev.CSeq
			if sent, ok := out.sent[ev.ID]; ok && sent.Seq != ev.Seq {
				t.Errorf("%s: %s at seq %d, its ack said %d", name, ev.ID, ev.Seq, sent.Seq)
			}
		}
		if complete && len(evs) != total {
			t.Errorf("%s received %d messages, want %d", name, len(evs), total)
		}
		if complete {
			if _, ok := out.done[name]; !ok {
				t.Errorf("%s did not finish", name)
			}
		}
	}
	if complete && len(out.sent) != total {
		t.Errorf("%d messages acknowledged, want %d", len(out.sent), total)
	}
	if s.loss > 0 && out.loss.Dropped == 0 {
		t.Errorf("the router dropped no packet at %d%% loss (%d seen)", s.loss, out.loss.Seen)
	}
}

// report logs the figures of a run and returns them as a table row.
func report(t *testing.T, s scenario, out outcome) string {
	t.Helper()
	sender := map[string]string{} // id -> user/device
	for _, d := range s.devices() {
		for i := range s.n {
			sender[fmt.Sprintf("%s.%s.%03d", d.user, d.device, i)] = d.user + "/" + d.device
		}
	}
	var lat, ackLat []time.Duration
	delivered := 0
	for dev, evs := range out.recv {
		for _, ev := range evs {
			if sender[ev.ID] == dev {
				continue // a device's own message coming back is no delivery
			}
			delivered++
			if sent, ok := out.sent[ev.ID]; ok {
				lat = append(lat, time.Duration(ev.T-sent.T0))
			}
		}
	}
	resent := 0
	for _, sent := range out.sent {
		ackLat = append(ackLat, time.Duration(sent.T-sent.T0))
		if sent.Attempts > 1 {
			resent++
		}
	}
	reconnects, dialFails := 0, 0
	for dev, cs := range out.conns {
		for _, c := range cs {
			if strings.HasPrefix(c, "dial: ") {
				dialFails++
			} else {
				reconnects++
			}
		}
		if len(cs) > 0 {
			t.Logf("%s connection events: %s", dev, strings.Join(cs, "; "))
		}
	}
	expected := s.n * len(s.devices()) * (len(s.devices()) - 1)
	success := 100 * float64(delivered) / float64(expected)
	p50, p99 := pct(lat, 50), pct(lat, 99)
	a50, a99 := pct(ackLat, 50), pct(ackLat, 99)
	t.Logf("RTT %v, %d%% loss: delivered %d/%d (%.1f%%) in %v; send->deliver p50 %v p99 %v; send->ack p50 %v p99 %v; %d/%d sends resent; %d connections lost, %d dials failed; router saw %d packets, dropped %d (%.1f%%), queue drops %d",
		s.rtt, s.loss, delivered, expected, success, out.elapsed.Round(time.Millisecond), ms(p50), ms(p99), ms(a50), ms(a99),
		resent, len(out.sent), reconnects, dialFails, out.loss.Seen, out.loss.Dropped, 100*out.loss.Rate(), out.queueDrops)
	return fmt.Sprintf("| %v | %d%% | %.1f%% (%d/%d) | %v | %v | %v | %v | %d/%d | %d (+%d failed dials) | %v |",
		s.rtt, s.loss, success, delivered, expected, ms(p50), ms(p99), ms(a50), ms(a99), resent, len(out.sent), reconnects, dialFails, out.elapsed.Round(time.Second))
}

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

// pct is the p-th percentile (nearest rank) of ds, 0 if empty.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(math.Ceil(float64(p) / 100 * float64(len(s))))
	return s[max(rank, 1)-1]
}

// syncBuffer is a bytes.Buffer safe for a writer process and a reader test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
