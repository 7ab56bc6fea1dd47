// Transport tests over real sockets: plaintext TCP, TLS 1.3 and WebSocket,
// including their orderly ends (GoAway, fatal errors) and the idle cost of a
// connection.
//
// Invariant: every test ends its gateway through Shutdown and checks that it
// returns nil (all sessions and goroutines ended).
package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// serveTCP runs g.ServeTCP on a loopback listener; the returned channel
// yields ServeTCP's result.
func serveTCP(t *testing.T, g *Gateway) (addr string, served <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	go func() { ch <- g.ServeTCP(ln) }()
	return ln.Addr().String(), ch
}

func shutdown(t *testing.T, g *Gateway) <-chan error {
	ch := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), failsafe)
		defer cancel()
		ch <- g.Shutdown(ctx)
	}()
	return ch
}

func TestTCP(t *testing.T) {
	g, l, _ := newTestGateway(t, nil)
	addr, served := serveTCP(t, g)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, conn)
	c.login("alice", "d1")
	id := c.request(&pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
		ClientMsgId: "1", ToUser: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi")}}})
	var pushed []*pimv1.Event
	if f := c.recvNonPush(&pushed); f.GetSendAck() == nil || f.RequestId != id {
		t.Fatalf("got %v", f)
	}
	for len(pushed) < 1 {
		pushed = append(pushed, c.events(1)...)
	}
	checkSeqs(t, pushed, 1, 1)
	if g.Sessions() != 1 {
		t.Fatalf("Sessions() = %d", g.Sessions())
	}
	_ = l

	// A fatal error on another connection does not disturb this one.
	bad, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	bc := newClient(t, bad)
	bc.login("dave", "d1")
	if err := bc.writeRaw([]byte{0, 0, 0, 2, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	fs := bc.closed() // the Error, then an orderly end of stream
	if len(fs) != 1 || errOf(t, fs[0]).Code != pimv1.ErrorCode_ERROR_CODE_MALFORMED || !errors.Is(bc.err, io.EOF) {
		t.Fatalf("got %v then %v", fs, bc.err)
	}
	bad.Close()
	c.ping(nil)

	// Shutdown: GoAway, then end of stream; the client closes and Shutdown returns.
	shut := shutdown(t, g)
	fs = c.closed()
	if len(fs) != 1 || fs[0].GetGoAway() == nil || !errors.Is(c.err, io.EOF) {
		t.Fatalf("got %v then %v", fs, c.err)
	}
	conn.Close()
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("ServeTCP = %v", err)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func testCert(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pim-test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:   time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestTLS(t *testing.T) {
	cert, pool := testCert(t)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	g, _, _ := newTestGateway(t, func(c *Config) { c.TLS = serverTLS })
	addr, served := serveTCP(t, g)
	if serverTLS.MinVersion != tls.VersionTLS12 {
		t.Fatal("the caller's tls.Config was modified")
	}

	old, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12})
	if err == nil {
		old.Close()
		t.Fatal("TLS 1.2 handshake accepted")
	}

	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("negotiated %x, want TLS 1.3", v)
	}
	c := newClient(t, conn)
	c.login("alice", "d1")
	c.ping(nil)

	shut := shutdown(t, g)
	fs := c.closed()
	if len(fs) != 1 || fs[0].GetGoAway() == nil || !errors.Is(c.err, io.EOF) {
		t.Fatalf("got %v then %v", fs, c.err)
	}
	conn.Close()
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("ServeTCP = %v", err)
	}
}

// wsClient is a minimal WebSocket client of the protocol.
type wsClient struct {
	t   *testing.T
	c   *websocket.Conn
	ctx context.Context
	rid uint64
}

func dialWS(t *testing.T, url string) *wsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failsafe)
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(64 << 20)
	t.Cleanup(func() { c.CloseNow() })
	return &wsClient{t: t, c: c, ctx: ctx}
}

func (w *wsClient) request(f *pimv1.Frame) uint64 {
	w.t.Helper()
	w.rid++
	f.RequestId = w.rid
	b, err := wire.Marshal(f)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.c.Write(w.ctx, websocket.MessageBinary, b); err != nil {
		w.t.Fatal(err)
	}
	return w.rid
}

func (w *wsClient) recv() (*pimv1.Frame, error) {
	typ, b, err := w.c.Read(w.ctx)
	if err != nil {
		return nil, err
	}
	if typ != websocket.MessageBinary {
		w.t.Fatalf("server sent a %v message", typ)
	}
	f := new(pimv1.Frame)
	if err := wire.Unmarshal(b, f); err != nil {
		w.t.Fatal(err)
	}
	return f, nil
}

func (w *wsClient) mustRecv() *pimv1.Frame {
	w.t.Helper()
	f, err := w.recv()
	if err != nil {
		w.t.Fatal(err)
	}
	return f
}

func TestWebSocket(t *testing.T) {
	g, l, _ := newTestGateway(t, func(c *Config) { c.MaxFrame = 4096 })
	srv := httptest.NewServer(g.WebSocketHandler())
	defer srv.Close()

	w := dialWS(t, srv.URL)
	id := w.request(hello("alice", "d1"))
	if f := w.mustRecv(); f.GetWelcome() == nil || f.RequestId != id {
		t.Fatalf("got %v", f)
	}
	l.deliver("alice", "hello")
	if f := w.mustRecv(); len(f.GetPush().GetEvents()) != 1 || f.GetPush().Events[0].UserSeq != 1 {
		t.Fatalf("got %v", f)
	}
	id = w.request(&pimv1.Frame{Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{ClientTime: 5}}})
	if f := w.mustRecv(); f.GetPong().GetClientTime() != 5 || f.RequestId != id {
		t.Fatalf("got %v", f)
	}

	// Oversize message: FRAME_TOO_LARGE, then the close.
	big := dialWS(t, srv.URL)
	big.request(hello("bob", "d1"))
	big.mustRecv()
	if err := big.c.Write(big.ctx, websocket.MessageBinary, make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	if f := big.mustRecv(); f.GetError().GetCode() != pimv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE || !f.GetError().Fatal {
		t.Fatalf("got %v", f)
	}
	if _, err := big.recv(); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("want close 1008, got %v", err)
	}

	// Text message: PROTOCOL.
	text := dialWS(t, srv.URL)
	if err := text.c.Write(text.ctx, websocket.MessageText, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if f := text.mustRecv(); f.GetError().GetCode() != pimv1.ErrorCode_ERROR_CODE_PROTOCOL {
		t.Fatalf("got %v", f)
	}
	if _, err := text.recv(); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Fatalf("want close 1008, got %v", err)
	}

	// Shutdown: GoAway, then a going-away close; new upgrades get 503.
	shut := shutdown(t, g)
	f := w.mustRecv()
	if f.GetGoAway() == nil {
		t.Fatalf("got %v", f)
	}
	if _, err := w.recv(); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("want close 1001, got %v", err)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("upgrade after shutdown: %s", resp.Status)
	}
}

// TestIdleConnectionMemory measures what an idle, logged-in plaintext TCP
// connection costs the server (heap and stacks, both ends are in this
// process so the client's share is included), and its goroutines.
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("measurement; skipped in -short and -race")
	}
	g, _, _ := newTestGateway(t, nil)
	addr, _ := serveTCP(t, g)
	const n = 2000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		b, _ := wire.AppendFrame(nil, hello("user"+string(rune('a'+i%26))+"x", "d1"))
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		f := new(pimv1.Frame)
		if err := wire.NewReader(c, 0).ReadFrame(f); err != nil || f.GetWelcome() == nil {
			t.Fatalf("no Welcome: %v %v", f, err)
		}
	}
	for i := 0; i < 4; i++ { // each GC halves stacks that use under a quarter
		runtime.GC()
	}
	runtime.ReadMemStats(&after)
	gs := float64(runtime.NumGoroutine()-g0) / n
	heap := float64(after.HeapInuse-before.HeapInuse) / n
	stack := float64(after.StackInuse-before.StackInuse) / n
	t.Logf("idle TCP connection: %.0f B heap + %.0f B stack = %.0f B, %.2f goroutines", heap, stack, heap+stack, gs)
	if gs > 1.1 {
		t.Errorf("%.2f goroutines per idle connection", gs)
	}
}
