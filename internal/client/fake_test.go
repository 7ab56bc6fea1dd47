package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// peer is the server side of one test connection.
type peer struct {
	t     *testing.T
	read  func() (*pimv1.Frame, error)
	raw   func(n int) ([]byte, error) // reads n raw bytes (stream only)
	wmu   sync.Mutex
	write func(*pimv1.Frame) error
	close func()
}

// expect reads the next frame; a failure fails the test (any goroutine may
// call it) and yields an empty frame.
func (p *peer) expect() *pimv1.Frame {
	p.t.Helper()
	f, err := p.read()
	if err != nil {
		p.t.Errorf("server: read: %v", err)
		return &pimv1.Frame{}
	}
	return f
}

func (p *peer) send(f *pimv1.Frame) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.write(f); err != nil {
		p.t.Errorf("server: write: %v", err)
	}
}

// fakeServer accepts test connections on loopback, over TCP (optionally TLS)
// or WebSocket, and hands each to the test as a peer.
type fakeServer struct {
	addr  string
	peers chan *peer
}

func newTCPServer(t *testing.T, cfg *tls.Config) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	s := &fakeServer{addr: ln.Addr().String(), peers: make(chan *peer, 4)}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			br := bufio.NewReader(c)
			r := wire.NewReader(br, 0)
			s.peers <- &peer{
				t: t,
				read: func() (*pimv1.Frame, error) {
					f := new(pimv1.Frame)
					return f, r.ReadFrame(f)
				},
				raw: func(n int) ([]byte, error) {
					b := make([]byte, n)
					_, err := io.ReadFull(br, b)
					return b, err
				},
				write: func(f *pimv1.Frame) error {
					b, err := wire.AppendFrame(nil, f)
					if err != nil {
						return err
					}
					_, err = c.Write(b)
					return err
				},
				close: func() { c.Close() },
			}
		}
	}()
	return s
}

func newWSServer(t *testing.T) *fakeServer { return newWSServerTLS(t, nil) }

// newWSServerTLS serves wss:// with cfg (ws:// if nil).
func newWSServerTLS(t *testing.T, cfg *tls.Config) *fakeServer {
	t.Helper()
	s := &fakeServer{peers: make(chan *peer, 4)}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			http.NotFound(w, r)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(func() {
			cancel()
			c.CloseNow()
		})
		s.peers <- &peer{
			t: t,
			read: func() (*pimv1.Frame, error) {
				_, b, err := c.Read(ctx)
				if err != nil {
					return nil, err
				}
				f := new(pimv1.Frame)
				return f, wire.Unmarshal(b, f)
			},
			write: func(f *pimv1.Frame) error {
				b, err := wire.Marshal(f)
				if err != nil {
					return err
				}
				return c.Write(ctx, websocket.MessageBinary, b)
			},
			close: func() {
				c.Close(websocket.StatusNormalClosure, "bye")
				cancel()
			},
		}
		// Keep the handler (and so the connection) alive until it is closed.
		<-ctx.Done()
	}))
	if cfg != nil {
		hs.TLS = cfg
		hs.StartTLS()
	} else {
		hs.Start()
	}
	t.Cleanup(hs.Close)
	s.addr = "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
	return s
}

func (s *fakeServer) accept(t *testing.T) *peer {
	t.Helper()
	select {
	case p := <-s.peers:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("server: no connection")
		return nil
	}
}

var testWelcome = &pimv1.Welcome{
	ProtocolVersion: 1, ServerTime: 1700000000000, HeartbeatMs: 30000, AckedUserSeq: 3,
	UserSeq: 9, PushFromUserSeq: 3, Session: "s1", Epoch: "ep1", User: "alice", MaxFrameBytes: 1 << 20,
}

// dial connects a Conn to s, answering its Hello with Welcome, and returns
// both ends and the Hello frame the server saw.
func dial(t *testing.T, s *fakeServer, opts Options) (*Conn, *peer, *pimv1.Frame) {
	t.Helper()
	opts.Addr = s.addr
	opts.WebSocket = strings.HasPrefix(s.addr, "ws")
	if opts.Token == "" {
		opts.Token, opts.Device = "tok", "dev"
	}
	type dialed struct {
		c   *Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := Dial(context.Background(), opts)
		ch <- dialed{c, err}
	}()
	p := s.accept(t)
	hello := p.expect()
	p.send(&pimv1.Frame{RequestId: hello.RequestId, Body: &pimv1.Frame_Welcome{Welcome: testWelcome}})
	d := <-ch
	if d.err != nil {
		t.Fatalf("Dial: %v", d.err)
	}
	t.Cleanup(func() { d.c.Close() })
	return d.c, p, hello
}
