// Admission control in the gateway: refusals at accept (plaintext Error
// frame, TLS reset, WebSocket 429/503), on Hello and on sends, load
// shedding, and coalesced reads.
//
// Invariants: limits are set so that no decision depends on how fast the
// test runs (rates of one per hours); the coalescing tests run in a
// synctest bubble so "both sessions are waiting" is observed, not slept for.
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// slow is a rate that never refills during a test.
const slow = 1.0 / 3600 / 24

func withAdmission(ac admission.Config) func(*Config) {
	return func(c *Config) {
		ac.Rand = rand.New(rand.NewPCG(9, 9))
		c.Admission = admission.New(ac, time.Now())
	}
}

// readRefusal reads what a refused plaintext connection gets: one frame,
// then the end of the stream.
func readRefusal(t *testing.T, conn net.Conn) *pimv1.Error {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(failsafe))
	rd := wire.NewReader(conn, 1<<20)
	var f pimv1.Frame
	if err := rd.ReadFrame(&f); err != nil {
		t.Fatalf("no refusal frame: %v", err)
	}
	e := errOf(t, &f)
	if err := rd.ReadFrame(&f); !errors.Is(err, io.EOF) {
		t.Fatalf("after the refusal: %v, %v; want EOF", &f, err)
	}
	return e
}

func TestAcceptRateRefusesWithErrorFrame(t *testing.T) {
	g, l, reg := newTestGateway(t, withAdmission(admission.Config{Accept: admission.Limit{Rate: slow, Burst: 2}}))
	addr, _ := serveTCP(t, g)
	for _, u := range []string{"alice", "bob"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		newClient(t, conn).login(u, "d1")
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The client's Hello is still sent (it does not know yet); it is ignored.
	if b, err := wire.AppendFrame(nil, hello("carol", "d1")); err == nil {
		conn.Write(b)
	}
	e := readRefusal(t, conn)
	if e.Code != pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED || !e.Fatal || e.RetryAfterMs == 0 {
		t.Fatalf("refusal %v", e)
	}
	if n := g.Sessions(); n != 2 {
		t.Fatalf("%d sessions, want the 2 admitted", n)
	}
	if v := metricValue(t, reg, "pim_admission_refused_total", "reason", admission.ReasonAcceptRate); v != 1 {
		t.Fatalf("refused metric %v", v)
	}
	if v := metricValue(t, reg, "pim_accepted_connections_total", "", ""); v != 2 {
		t.Fatalf("accepted metric %v", v)
	}
	if n := l.sessionCalls.Load(); n != 2 {
		t.Fatalf("Logic.Session called %d times: the refused connection cost a read", n)
	}
}

func TestMaxConnsRefuses(t *testing.T) {
	g, _, reg := newTestGateway(t, withAdmission(admission.Config{MaxConns: 1}))
	addr, _ := serveTCP(t, g)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	first := newClient(t, conn)
	first.login("alice", "d1")
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	e := readRefusal(t, c2)
	if e.Code != pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED || e.RetryAfterMs < 5000 || e.RetryAfterMs >= 35000 {
		t.Fatalf("refusal %v", e)
	}
	if v := metricValue(t, reg, "pim_admission_refused_total", "reason", admission.ReasonMaxConns); v != 1 {
		t.Fatalf("refused metric %v", v)
	}
	// Existing sessions keep working.
	first.ping(nil)
}

func TestAcceptRateResetsTLSBeforeHandshake(t *testing.T) {
	cert, pool := testCert(t)
	g, _, reg := newTestGateway(t, func(c *Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		withAdmission(admission.Config{Accept: admission.Limit{Rate: slow, Burst: 1}})(c)
	})
	addr, _ := serveTCP(t, g)
	dial := func() (*tls.Conn, error) {
		d := &net.Dialer{Timeout: failsafe}
		conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{RootCAs: pool})
		return conn, err
	}
	ok, err := dial()
	if err != nil {
		t.Fatalf("first TLS connection: %v", err)
	}
	newClient(t, ok).login("alice", "d1")
	if c, err := dial(); err == nil {
		c.Close()
		t.Fatal("TLS handshake completed over the accept rate")
	}
	if v := metricValue(t, reg, "pim_admission_refused_total", "reason", admission.ReasonAcceptRate); v != 1 {
		t.Fatalf("refused metric %v", v)
	}
}

// At a rate it can pace, a TLS listener accepts at that rate instead of
// refusing: every client gets in, none is reset.
func TestAcceptRatePacesTLS(t *testing.T) {
	cert, pool := testCert(t)
	g, _, reg := newTestGateway(t, func(c *Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		withAdmission(admission.Config{Accept: admission.Limit{Rate: 50, Burst: 1}})(c)
	})
	addr, _ := serveTCP(t, g)
	done := make(chan error, 5)
	for i := 0; i < 5; i++ {
		go func() {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: failsafe}, "tcp", addr, &tls.Config{RootCAs: pool})
			if err == nil {
				err = conn.Handshake()
				conn.Close()
			}
			done <- err
		}()
	}
	for i := 0; i < 5; i++ {
		if err := <-done; err != nil {
			t.Fatalf("paced TLS connection: %v", err)
		}
	}
	if v := metricValue(t, reg, "pim_admission_refused_total", "reason", admission.ReasonAcceptRate); v != 0 {
		t.Fatalf("%v refused while pacing", v)
	}
	if v := metricValue(t, reg, "pim_accepted_connections_total", "", ""); v != 5 {
		t.Fatalf("accepted %v", v)
	}
}

func TestWebSocketRefusedBeforeUpgrade(t *testing.T) {
	g, _, _ := newTestGateway(t, withAdmission(admission.Config{Accept: admission.Limit{Rate: slow, Burst: 1}}))
	srv := httptest.NewServer(g.WebSocketHandler())
	defer srv.Close()
	upgrade := func() *http.Response {
		req, _ := http.NewRequest("GET", srv.URL, nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := upgrade(); r.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("first upgrade: %s", r.Status)
	}
	r := upgrade()
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" || r.Header.Get("X-Retry-After-Ms") == "" {
		t.Fatalf("second upgrade: %s %v", r.Status, r.Header)
	}
	// The upgraded connection was not read by anyone: Shutdown aborts it at
	// the end of the test (no Hello within HelloTimeout is the client's fault).
}

func TestLoginLimits(t *testing.T) {
	g, _, reg := newTestGateway(t, withAdmission(admission.Config{
		UserLogin: admission.Limit{Rate: slow, Burst: 1}, IPLogin: admission.Limit{Rate: slow, Burst: 2}}))
	a, _ := pipeSession(t, g)
	a.login("alice", "phone")
	// Alice again (another device): over her login rate.
	a2, done := pipeSession(t, g)
	id := a2.request(hello("alice", "laptop"))
	f := a2.recv()
	e := errOf(t, f)
	if f.RequestId != id || e.Code != pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED || !e.Fatal || e.RetryAfterMs == 0 {
		t.Fatalf("second login of alice: %v", f)
	}
	waitDone(t, done)
	// Bob from the same "IP" (every pipe is "pipe"): the third Hello from it
	// (alice's refused one took an IP token: checks widest first).
	b, done := pipeSession(t, g)
	b.request(hello("bob", "phone"))
	if e := errOf(t, b.recv()); e.Code != pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED || !e.Fatal {
		t.Fatalf("third login from the IP: %v", e)
	}
	waitDone(t, done)
	if v := metricValue(t, reg, "pim_admission_refused_total", "reason", admission.ReasonUserLogin); v != 1 {
		t.Fatalf("user_login_rate refusals %v", v)
	}
	if v := metricValue(t, reg, "pim_admission_refused_total", "reason", admission.ReasonIPLogin); v != 1 {
		t.Fatalf("ip_login_rate refusals %v", v)
	}
	a.ping(nil) // the admitted session is untouched
}

func sendReq(cmid, to, body string) *pimv1.Frame {
	return &pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
		ClientMsgId: cmid, ToUser: to, Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte(body)}}}
}

func TestSendLimitsStoreNothing(t *testing.T) {
	g, l, _ := newTestGateway(t, withAdmission(admission.Config{UserSend: admission.Limit{Rate: slow, Burst: 2}}))
	c, done := pipeSession(t, g)
	c.login("alice", "d1")
	for i := 1; i <= 3; i++ {
		id := c.request(sendReq(fmt.Sprint(i), "bob", "hi"))
		f := c.recvNonPush(nil)
		if f.RequestId != id {
			t.Fatalf("answer to %d: %v", id, f)
		}
		if i <= 2 {
			if f.GetSendAck() == nil {
				t.Fatalf("send %d: %v", i, f)
			}
			continue
		}
		// Fatal: the connection ends so that no send pipelined behind the
		// refused one is stored before it (sender order).
		e := errOf(t, f)
		if e.Code != pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED || !e.Fatal || e.RetryAfterMs == 0 {
			t.Fatalf("send over the limit: %v", e)
		}
	}
	waitDone(t, done)
	if n := len(l.sendLog()); n != 2 {
		t.Fatalf("%d sends reached logic, want 2", n)
	}
}

func TestSheddingRefusesSendsThenLogins(t *testing.T) {
	shed := admission.ShedConfig{MaxInflight: 1, Target: -1, Interval: 200 * time.Millisecond}
	g, l, _ := newTestGateway(t, withAdmission(admission.Config{Shed: &shed}))
	started, release := make(chan struct{}), make(chan struct{})
	l.sendHook = func(ctx context.Context, user string, _ *pimv1.SendReq) error {
		if user == "alice" {
			close(started)
			<-release
		}
		return nil
	}
	a, _ := pipeSession(t, g)
	a.login("alice", "d1")
	b, bDone := pipeSession(t, g)
	b.login("bob", "d1")
	aid := a.request(sendReq("1", "bob", "slow"))
	<-started // alice's send fills the pipeline
	id := b.request(sendReq("1", "alice", "shed me"))
	f := b.recvNonPush(nil)
	e := errOf(t, f)
	if f.RequestId != id || e.Code != pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !e.Fatal ||
		e.RetryAfterMs < 200 || e.RetryAfterMs >= 1000 {
		t.Fatalf("shed send: %v", f)
	}
	waitDone(t, bDone) // a refused send ends the connection (sender order)
	// A new login is refused while the pipeline is full.
	c, done := pipeSession(t, g)
	c.request(hello("carol", "d1"))
	if e := errOf(t, c.recv()); e.Code != pimv1.ErrorCode_ERROR_CODE_UNAVAILABLE || !e.Fatal {
		t.Fatalf("login while shedding: %v", e)
	}
	waitDone(t, done)
	close(release)
	if f := a.recvNonPush(nil); f.GetSendAck() == nil || f.RequestId != aid {
		t.Fatalf("alice's send: %v", f)
	}
	// The pipeline is free again: bob's retry, on a new connection, goes through.
	b, _ = pipeSession(t, g)
	b.login("bob", "d1")
	id = b.request(sendReq("1", "alice", "retry"))
	if f := b.recvNonPush(nil); f.GetSendAck() == nil || f.RequestId != id {
		t.Fatalf("bob's retry: %v", f)
	}
	if got := l.sendLog(); len(got) != 2 || got[1].user != "bob" {
		t.Fatalf("sends stored: %v", got)
	}
}

func TestTimelineReadsCoalesced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, l, reg := newTestGateway(t, nil)
		for i := 0; i < 5; i++ {
			l.appendEvent("alice", "bob", "backlog")
		}
		release := make(chan struct{})
		l.timelineHook = func() { <-release }
		// Two devices of alice reconnect at once, both with an empty cursor:
		// the same backlog read.
		a, _ := pipeSession(t, g)
		a.login("alice", "phone")
		b, _ := pipeSession(t, g)
		b.login("alice", "laptop")
		synctest.Wait() // both pumps wait: one in Logic.Timeline, one on it
		close(release)
		checkSeqs(t, a.events(5), 1, 5)
		checkSeqs(t, b.events(5), 1, 5)
		if n := l.timelineCalls.Load(); n != 1 {
			t.Fatalf("%d timeline reads, want 1 shared", n)
		}
		if v := metricValue(t, reg, "pim_coalesced_reads_total", "op", opTimeline); v != 1 {
			t.Fatalf("coalesced metric %v", v)
		}
	})
}

// A shared read that found nothing is read again alone, so a stale shared
// answer never stalls a stream.
func TestSharedEmptyTimelineReadIsRedone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, l, _ := newTestGateway(t, nil)
		release := make(chan struct{})
		calls := 0
		l.timelineHook = func() {
			calls++ // pumps of one user: serialized by the coalescer here
			if calls == 1 {
				<-release
			}
		}
		a, _ := pipeSession(t, g)
		a.login("alice", "phone") // empty timeline: nothing to read
		// A notification of seq 2 (1 unknown to the cache): the phone's pump
		// reads the store from 0, finds nothing yet, and is held there.
		l.bus.Publish("alice", &pimv1.Event{UserSeq: 2})
		synctest.Wait()
		// Now the events exist; the laptop's backlog read joins the held one.
		l.appendEvent("alice", "bob", "one")
		l.appendEvent("alice", "bob", "two")
		b, _ := pipeSession(t, g)
		b.login("alice", "laptop")
		synctest.Wait()
		close(release)
		checkSeqs(t, b.events(2), 1, 2)
		if n := l.timelineCalls.Load(); n != 2 {
			t.Fatalf("%d timeline reads, want 2 (the held one, the laptop's again alone)", n)
		}
		_ = a
	})
}

func TestCoalescerSharesOneCall(t *testing.T) {
	c := newCoalescer[int]()
	started, release := make(chan struct{}), make(chan struct{})
	first := make(chan int, 1)
	go func() {
		v, _, _ := c.do("k", func() (int, error) { close(started); <-release; return 1, nil })
		first <- v
	}()
	<-started
	joined := make(chan bool, 1)
	go func() {
		v, err, shared := c.do("k", func() (int, error) { return 2, nil })
		joined <- shared && v == 1 && err == nil
	}()
	// Another key is independent.
	if v, _, shared := c.do("other", func() (int, error) { return 3, nil }); v != 3 || shared {
		t.Fatal("other key shared")
	}
	close(release)
	if <-first != 1 {
		t.Fatal("first caller")
	}
	// The joiner either shared the call or (if it came after it ended) made
	// its own: both are correct; with the call held until release, it shared.
	_ = <-joined
	if !strings.Contains(errCoalescedPanic.Error(), "panicked") {
		t.Fatal("error text")
	}
}

// A push stream waiting for a catch-up slot still answers requests at once.
func TestAnswersDoNotWaitForCatchupSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, l, _ := newTestGateway(t, func(c *Config) { c.CatchupConcurrency = 1 })
		for _, u := range []string{"alice", "bob"} {
			for i := 0; i < 3; i++ {
				l.appendEvent(u, "carol", "backlog")
			}
		}
		release := make(chan struct{})
		l.timelineHook = func() { <-release }
		a, _ := pipeSession(t, g)
		a.login("alice", "d1") // alice's backlog read holds the only slot
		synctest.Wait()
		b, _ := pipeSession(t, g)
		b.login("bob", "d1") // bob's pump waits for the slot
		synctest.Wait()
		var pushed []*pimv1.Event
		b.ping(&pushed) // answered while the slot is still taken
		if len(pushed) != 0 {
			t.Fatalf("bob got events before the slot was free: %v", seqs(pushed))
		}
		close(release)
		checkSeqs(t, a.events(3), 1, 3)
		checkSeqs(t, b.events(3), 1, 3)
	})
}
