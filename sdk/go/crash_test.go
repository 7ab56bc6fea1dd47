// App crashes and server crashes, with real processes.
//
// Invariants checked: an app killed with SIGKILL while messages are in its
// outbox (never sent, or in flight) resumes them at the next start, and
// each is delivered exactly once, in order; a server killed with SIGKILL
// and restarted mid-stream loses, duplicates and reorders nothing.

package pim

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/faultproxy"
)

// appEnv carries an appConfig to a re-executed test binary that then runs
// as the "app" (see TestMain).
const appEnv = "PIM_SDK_TEST_APP"

// appConfig tells the app what to do.
type appConfig struct {
	Dir, Addr, Token, User, Device, Conv, Prefix string
	From, Count                                  int
	Window                                       int
}

func TestMain(m *testing.M) {
	if cfg := os.Getenv(appEnv); cfg != "" {
		os.Exit(runApp(cfg))
	}
	os.Exit(m.Run())
}

// runApp is the app: it resumes its outbox, sends Count messages, reports
// on stdout ("pending N", "queued I", "queued-all", "sent ID", "drained"),
// and once drained waits for stdin to close, then closes the client.
func runApp(raw string) int {
	var cfg appConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "app config:", err)
		return 2
	}
	tune := testTuning()
	tune.Window = cfg.Window
	ctx := context.Background()
	cl, err := Connect(ctx, Options{Servers: []string{cfg.Addr}, Token: cfg.Token, User: cfg.User,
		DeviceID: cfg.Device, DataDir: cfg.Dir, Tuning: tune})
	if err != nil {
		fmt.Fprintln(os.Stderr, "app connect:", err)
		return 1
	}
	go func() { // the app must consume its events
		for range cl.Events() {
		}
	}()
	pending, err := cl.Pending(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "app pending:", err)
		return 1
	}
	fmt.Printf("pending %d\n", len(pending))
	for i := cfg.From; i < cfg.From+cfg.Count; i++ {
		o, err := cl.Send(ctx, cfg.Conv, fmt.Sprintf("%s-%d", cfg.Prefix, i))
		if err != nil {
			fmt.Fprintln(os.Stderr, "app send:", err)
			return 1
		}
		pending = append(pending, o)
		fmt.Printf("queued %d\n", i)
	}
	fmt.Println("queued-all")
	for _, o := range pending {
		if err := o.Wait(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "app wait:", err)
			return 1
		}
		fmt.Printf("sent %s\n", o.ClientMsgID())
	}
	fmt.Println("drained")
	io.Copy(io.Discard, os.Stdin)
	if err := cl.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "app close:", err)
		return 1
	}
	return 0
}

// app is a running app process.
type app struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
}

func startApp(t *testing.T, cfg appConfig) *app {
	t.Helper()
	raw, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), appEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start app: %v", err)
	}
	a := &app{cmd: cmd, stdin: stdin, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() { // owns the process until it exits
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			a.lines <- sc.Text()
		}
		cmd.Wait()
		close(a.lines)
		close(a.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-a.done
	})
	return a
}

// expect reads the app's lines until one satisfies ok.
func (a *app) expect(t *testing.T, what string, ok func(line string) bool) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case l, open := <-a.lines:
			if !open {
				t.Fatalf("app exited before %s", what)
			}
			if ok(l) {
				return
			}
		case <-deadline:
			t.Fatalf("app: timed out waiting for %s", what)
		}
	}
}

func (a *app) kill() {
	a.cmd.Process.Kill()
	<-a.done
}

func TestAppKilledResumesOutbox(t *testing.T) {
	if testing.Short() {
		t.Skip("runs app processes")
	}
	srv := startServer(t)
	px := proxyTo(t, srv)
	b := newDevice(t, "bob", "phone", token(t, srv, "bob"), srv.TCPAddr().String())
	b.open()
	cfg := appConfig{Dir: t.TempDir(), Addr: px.Addr(), Token: token(t, srv, "alice"), User: "alice",
		Device: "phone", Conv: DirectConv("alice", "bob"), Prefix: "alice", Window: 2}

	// 1. The server is unreachable: ten messages queue up; the app is killed.
	px.SetRefuse(true)
	cfg.From, cfg.Count = 0, 10
	a := startApp(t, cfg)
	a.expect(t, "queued-all", func(l string) bool { return l == "queued-all" })
	a.kill()

	// 2. The server is reachable but slow: the app resumes the ten, queues
	// twenty more, and is killed while they are in flight.
	px.SetRefuse(false)
	px.SetLatency(40 * time.Millisecond)
	cfg.From, cfg.Count = 10, 20
	a = startApp(t, cfg)
	a.expect(t, "pending 10", func(l string) bool {
		if strings.HasPrefix(l, "pending ") && l != "pending 10" {
			t.Fatalf("app restarted with %q, want pending 10", l)
		}
		return l == "pending 10"
	})
	sent := 0
	a.expect(t, "three sent", func(l string) bool {
		if strings.HasPrefix(l, "sent ") {
			sent++
		}
		return sent >= 3
	})
	a.kill()

	// 3. The app restarts once more and drains its outbox.
	px.SetLatency(0)
	cfg.Count = 0
	a = startApp(t, cfg)
	a.expect(t, "drained", func(l string) bool { return l == "drained" })
	a.stdin.Close()
	<-a.done
	if code := a.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("app exit code %d", code)
	}

	b.rec.waitMessages(t, 30)
	b.rec.check(t, map[string]int{"alice": 30})
}

func TestServerKilledMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a server process")
	}
	bin := pimBinary(t)
	dir := t.TempDir()
	srv := startChild(t, bin, dir)
	keys, err := auth.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok := func(u string) string {
		s, err := keys.Issue(u, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	px, err := faultproxy.New(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	const n = 40
	conv := DirectConv("alice", "bob")
	devs := []*device{
		newDevice(t, "alice", "phone", tok("alice"), px.Addr()),
		newDevice(t, "bob", "phone", tok("bob"), px.Addr()),
		newDevice(t, "bob", "pc", tok("bob"), px.Addr()),
	}
	senders := make(map[string]int)
	for _, d := range devs {
		d.open()
		senders[d.user+"."+d.id] = n
	}
	var wg sync.WaitGroup
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(15 * time.Millisecond) // pacing, so the kills land mid-stream
			defer tick.Stop()
			var out []*Outgoing
			for i := range n {
				<-tick.C
				out = append(out, sendAll(t, d.cl, conv, d.user+"."+d.id, i, 1)...)
			}
			waitSent(t, out)
		}()
	}
	total := n * len(devs)
	for _, at := range []int{total / 4, total / 2} {
		devs[1].rec.waitMessages(t, at)
		srv.Kill()
		srv = startChild(t, bin, dir)
		px.SetTarget(srv.Addr)
		px.Cut()
	}
	wg.Wait()
	for _, d := range devs {
		d.rec.waitMessages(t, total)
		d.rec.check(t, senders)
	}
}
