package client

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/tlsutil"
	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func transports(t *testing.T, f func(t *testing.T, s *fakeServer)) {
	t.Run("tcp", func(t *testing.T) { f(t, newTCPServer(t, nil)) })
	t.Run("websocket", func(t *testing.T) { f(t, newWSServer(t)) })
}

func ev(seq uint64, text string) *pimv1.Event {
	return &pimv1.Event{UserSeq: seq, Kind: &pimv1.Event_Message{Message: &pimv1.Message{
		Conv: "d:alice:bob", Seq: seq, Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte(text),
	}}}
}

func push(evs ...*pimv1.Event) *pimv1.Frame {
	return &pimv1.Frame{Body: &pimv1.Frame_Push{Push: &pimv1.Push{Events: evs}}}
}

func TestSession(t *testing.T) {
	transports(t, func(t *testing.T, s *fakeServer) {
		c, p, hello := dial(t, s, Options{Token: "tok", Device: "phone", LastUserSeq: 7, Epoch: "ep0"})

		h := hello.GetHello()
		if hello.RequestId == 0 || h == nil || h.Token != "tok" || h.DeviceId != "phone" || h.ProtocolVersion != 1 ||
			h.LastUserSeq != 7 || h.Epoch != "ep0" || h.ClientTime == 0 {
			t.Fatalf("hello = %v", hello)
		}
		if w := c.Welcome(); w.GetSession() != "s1" || w.GetUser() != "alice" {
			t.Fatalf("welcome = %v", w)
		}

		// A request and its response.
		go func() {
			f := p.expect()
			req := f.GetSendReq()
			p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_SendAck{SendAck: &pimv1.SendAck{
				ClientMsgId: req.ClientMsgId, Conv: "d:alice:bob", Seq: 4, MsgId: "m4",
			}}})
		}()
		ack, err := c.Send(context.Background(), &pimv1.SendReq{ClientMsgId: "c1", ToUser: "bob", Body: []byte("hi")})
		if err != nil || ack.Seq != 4 || ack.ClientMsgId != "c1" {
			t.Fatalf("Send = %v, %v", ack, err)
		}

		// Ping/Pong.
		go func() {
			f := p.expect()
			p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{
				ServerTime: 5, ClientTime: f.GetPing().GetClientTime(),
			}}})
		}()
		pong, err := c.Ping(context.Background())
		if err != nil || pong.ServerTime != 5 || pong.ClientTime == 0 {
			t.Fatalf("Ping = %v, %v", pong, err)
		}

		// Pushes arrive in order across frames; PushAck reaches the server.
		p.send(push(ev(4, "a"), ev(5, "b")))
		p.send(push(ev(6, "c")))
		for want := uint64(4); want <= 6; want++ {
			select {
			case e := <-c.Pushes():
				if e.UserSeq != want {
					t.Fatalf("push user_seq %d, want %d", e.UserSeq, want)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no push %d", want)
			}
		}
		if err := c.PushAck(6); err != nil {
			t.Fatal(err)
		}
		if f := p.expect(); f.GetPushAck().GetUserSeq() != 6 || f.RequestId != 0 {
			t.Fatalf("server got %v, want PushAck 6", f)
		}

		// GoAway, then events still queued, then the server's close.
		p.send(&pimv1.Frame{Body: &pimv1.Frame_GoAway{GoAway: &pimv1.GoAway{RetryAfterMs: 1500, Reason: "drain"}}})
		select {
		case g := <-c.GoAway():
			if g.RetryAfterMs != 1500 {
				t.Fatalf("goaway = %v", g)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no GoAway")
		}
		p.send(push(ev(7, "d")))
		time.Sleep(50 * time.Millisecond) // let the push reach the client before the close
		p.close()
		var got []uint64
		for e := range c.Pushes() {
			got = append(got, e.UserSeq)
		}
		if len(got) != 1 || got[0] != 7 {
			t.Fatalf("events after GoAway: %v, want [7]", got)
		}
		<-c.Done()
		if !errors.Is(c.Err(), ErrServerClosed) {
			t.Fatalf("Err = %v, want ErrServerClosed", c.Err())
		}
		if _, err := c.Ping(context.Background()); !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Ping after close: %v", err)
		}
	})
}

func TestHelloErrorIsServerError(t *testing.T) {
	for _, echo := range []bool{true, false} {
		s := newTCPServer(t, nil)
		go func() {
			p := s.accept(t)
			f := p.expect()
			id := uint64(0)
			if echo {
				id = f.RequestId
			}
			p.send(&pimv1.Frame{RequestId: id, Body: &pimv1.Frame_Error{Error: &pimv1.Error{
				Code: pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, Message: "token expired", Fatal: true,
			}}})
			p.close()
		}()
		c, err := Dial(context.Background(), Options{Addr: s.addr, Token: "x", Device: "d"})
		if c != nil {
			t.Fatal("Dial returned a Conn")
		}
		ce, ok := err.(*errcode.Error)
		if !ok || ce.Code != pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED || ce.Msg != "token expired" {
			t.Fatalf("echo=%v: err = %#v, want *errcode.Error UNAUTHENTICATED", echo, err)
		}
	}
}

func TestDialFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Nothing listens: a dial error, not a panic or a hang.
	s := newTCPServer(t, nil)
	addr := s.addr
	if _, err := Dial(ctx, Options{Addr: "127.0.0.1:1"}); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	// A Welcome-less answer.
	go func() {
		p := s.accept(t)
		f := p.expect()
		p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{}}})
	}()
	if _, err := Dial(ctx, Options{Addr: addr}); err == nil || !strings.Contains(err.Error(), "expected Welcome") {
		t.Fatalf("err = %v", err)
	}
	// A server that never answers: the context bounds the handshake.
	go func() { <-s.peers }()
	short, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	if _, err := Dial(short, Options{Addr: addr}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline", err)
	}
	for _, a := range []string{"127.0.0.1:7480", "http://x/ws", "ws://"} {
		if _, err := Dial(ctx, Options{Addr: a, WebSocket: true}); err == nil || !strings.Contains(err.Error(), "URL") {
			t.Errorf("WebSocket addr %q: err = %v", a, err)
		}
	}
}

func TestPipelinedResponsesOutOfOrder(t *testing.T) {
	transports(t, func(t *testing.T, s *fakeServer) {
		c, p, _ := dial(t, s, Options{})
		const n = 5
		go func() {
			var reqs []*pimv1.Frame
			for range n {
				reqs = append(reqs, p.expect())
			}
			for i := n - 1; i >= 0; i-- {
				f := reqs[i]
				p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_SendAck{SendAck: &pimv1.SendAck{
					ClientMsgId: f.GetSendReq().GetClientMsgId(),
				}}})
			}
		}()
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := string(rune('a' + i))
				ack, err := c.Send(context.Background(), &pimv1.SendReq{ClientMsgId: id})
				if err != nil || ack.ClientMsgId != id {
					t.Errorf("Send %s = %v, %v", id, ack, err)
				}
			}()
		}
		wg.Wait()
	})
}

func TestRequestErrorKeepsConnection(t *testing.T) {
	c, p, _ := dial(t, newTCPServer(t, nil), Options{})
	go func() {
		f := p.expect()
		p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Error{Error: &pimv1.Error{
			Code: pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED, Message: "slow down", RetryAfterMs: 250,
		}}})
		// An unsolicited non-fatal error is ignored.
		p.send(&pimv1.Frame{Body: &pimv1.Frame_Error{Error: &pimv1.Error{Code: pimv1.ErrorCode_ERROR_CODE_INTERNAL}}})
		f = p.expect()
		p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_GroupResp{GroupResp: &pimv1.GroupResp{Group: "g:x"}}})
	}()
	_, err := c.Send(context.Background(), &pimv1.SendReq{ClientMsgId: "1"})
	var ce *errcode.Error
	if !errors.As(err, &ce) || ce.Code != pimv1.ErrorCode_ERROR_CODE_RATE_LIMITED || ce.Msg != "slow down" || ce.RetryAfter != 250 {
		t.Fatalf("err = %#v", err)
	}
	resp, err := c.Group(context.Background(), &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_MEMBERS, Group: "g:x"})
	if err != nil || resp.Group != "g:x" {
		t.Fatalf("Group = %v, %v", resp, err)
	}
	if c.Err() != nil {
		t.Fatalf("connection ended: %v", c.Err())
	}
}

func TestUnexpectedResponseType(t *testing.T) {
	c, p, _ := dial(t, newTCPServer(t, nil), Options{})
	go func() {
		f := p.expect()
		p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{}}})
	}()
	if _, err := c.History(context.Background(), &pimv1.HistoryReq{Conv: "g:x"}); err == nil ||
		!strings.Contains(err.Error(), "expected HistoryResp") || !strings.Contains(err.Error(), "Pong") {
		t.Fatalf("err = %v", err)
	}
}

func TestFatalErrorFailsAllPending(t *testing.T) {
	transports(t, func(t *testing.T, s *fakeServer) {
		c, p, _ := dial(t, s, Options{})
		go func() {
			p.expect()
			p.expect()
			p.send(&pimv1.Frame{Body: &pimv1.Frame_Error{Error: &pimv1.Error{
				Code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL, Message: "bad state", Fatal: true,
			}}})
		}()
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := c.Sync(context.Background(), &pimv1.SyncReq{})
				if errcode.Code(err) != pimv1.ErrorCode_ERROR_CODE_PROTOCOL {
					t.Errorf("err = %v, want PROTOCOL", err)
				}
			}()
		}
		wg.Wait()
		<-c.Done()
		if errcode.Code(c.Err()) != pimv1.ErrorCode_ERROR_CODE_PROTOCOL {
			t.Fatalf("Err = %v", c.Err())
		}
		if _, ok := <-c.Pushes(); ok {
			t.Fatal("Pushes not closed")
		}
	})
}

func TestConnectionLossFailsPending(t *testing.T) {
	c, p, _ := dial(t, newTCPServer(t, nil), Options{})
	go func() {
		p.expect()
		p.close()
	}()
	_, err := c.Sync(context.Background(), &pimv1.SyncReq{})
	if !errors.Is(err, ErrServerClosed) {
		t.Fatalf("err = %v, want ErrServerClosed", err)
	}
}

func TestTruncatedFrameIsConnectionLoss(t *testing.T) {
	s := newTCPServer(t, nil)
	c, p, _ := dial(t, s, Options{MaxFrame: 64})
	// A frame above the client's limit ends the connection.
	p.send(&pimv1.Frame{Body: &pimv1.Frame_GoAway{GoAway: &pimv1.GoAway{Reason: strings.Repeat("x", 100)}}})
	<-c.Done()
	if !errors.Is(c.Err(), wire.ErrFrameTooLarge) {
		t.Fatalf("Err = %v, want ErrFrameTooLarge", c.Err())
	}
}

func TestContextCancelLeavesConnectionUsable(t *testing.T) {
	c, p, _ := dial(t, newTCPServer(t, nil), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan *pimv1.Frame, 1)
	go func() { first <- p.expect() }()
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	if _, err := c.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	// An already cancelled context writes nothing and keeps the connection.
	if _, err := c.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want Canceled", err)
	}
	// The late answer to the abandoned request is dropped; the next works.
	f := <-first
	p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{ServerTime: 1}}})
	go func() {
		f := p.expect()
		p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{ServerTime: 2}}})
	}()
	pong, err := c.Ping(context.Background())
	if err != nil || pong.ServerTime != 2 {
		t.Fatalf("Ping = %v, %v", pong, err)
	}
}

func TestWriteRawAndWriteFrame(t *testing.T) {
	c, p, _ := dial(t, newTCPServer(t, nil), Options{})
	if err := c.WriteRaw([]byte{0, 0, 0, 3, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	if b, err := p.raw(7); err != nil || b[3] != 3 || b[6] != 0xff {
		t.Fatalf("server read %x, %v", b, err)
	}
	if err := c.WriteFrame(&pimv1.Frame{RequestId: 99, Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{}}}); err != nil {
		t.Fatal(err)
	}
	if f := p.expect(); f.RequestId != 99 || f.GetPing() == nil {
		t.Fatalf("server read %v", f)
	}
	// The response to a frame nobody waits for is dropped quietly.
	p.send(&pimv1.Frame{RequestId: 99, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{}}})
	// A frame that does not encode (invalid UTF-8 in a string) fails alone.
	if _, err := c.Send(context.Background(), &pimv1.SendReq{ClientMsgId: "\xff"}); err == nil {
		t.Fatal("invalid frame sent")
	}
	if c.Err() != nil {
		t.Fatalf("connection ended: %v", c.Err())
	}
}

func TestNoHelloAndCall(t *testing.T) {
	transports(t, func(t *testing.T, s *fakeServer) {
		ch := make(chan *Conn, 1)
		go func() {
			c, err := Dial(context.Background(), Options{Addr: s.addr, WebSocket: strings.HasPrefix(s.addr, "ws"), NoHello: true})
			if err != nil {
				t.Error(err)
			}
			ch <- c
		}()
		p := s.accept(t)
		c := <-ch
		if c == nil {
			t.FailNow()
		}
		defer c.Close()
		if c.Welcome() != nil {
			t.Fatal("Welcome without Hello")
		}
		go func() {
			f := p.expect()
			p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Error{Error: &pimv1.Error{
				Code: pimv1.ErrorCode_ERROR_CODE_PROTOCOL, Message: "Hello first", Fatal: true,
			}}})
		}()
		_, err := c.Call(context.Background(), &pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{}}})
		if ce := errcode.From(err); ce.Code != pimv1.ErrorCode_ERROR_CODE_PROTOCOL || ce.Msg != "Hello first" {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestDiscardPushes(t *testing.T) {
	c, p, _ := dial(t, newTCPServer(t, nil), Options{DiscardPushes: true})
	p.send(push(ev(1, "x")))
	p.close()
	if _, ok := <-c.Pushes(); ok {
		t.Fatal("an event was delivered")
	}
}

func TestTLSWithPin(t *testing.T) {
	srvCfg, fp, err := tlsutil.SelfSigned(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newTCPServer(t, srvCfg)
	cliCfg, err := tlsutil.ClientConfig("127.0.0.1", fp, false, "")
	if err != nil {
		t.Fatal(err)
	}
	c, _, hello := dial(t, s, Options{TLS: cliCfg})
	if hello.GetHello().GetToken() != "tok" || c.Welcome() == nil {
		t.Fatal("no handshake over TLS")
	}
	// The wrong pin fails the dial.
	bad, _ := tlsutil.ClientConfig("127.0.0.1", strings.Repeat("00", 32), false, "")
	go func() {
		p := s.accept(t)
		p.read() // the handshake fails on the server side too
	}()
	if _, err := Dial(context.Background(), Options{Addr: s.addr, TLS: bad}); !errors.Is(err, tlsutil.ErrPinMismatch) {
		t.Fatalf("err = %v, want pin mismatch", err)
	}
}

func TestWSSWithPin(t *testing.T) {
	srvCfg, fp, err := tlsutil.SelfSigned(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := newWSServerTLS(t, srvCfg)
	if !strings.HasPrefix(s.addr, "wss://") {
		t.Fatalf("addr %s", s.addr)
	}
	cliCfg, err := tlsutil.ClientConfig("127.0.0.1", fp, false, "")
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := dial(t, s, Options{TLS: cliCfg})
	if c.Welcome() == nil {
		t.Fatal("no Welcome over wss")
	}
	if _, err := Dial(context.Background(), Options{Addr: strings.Replace(s.addr, "wss:", "ws:", 1), WebSocket: true, TLS: cliCfg}); err == nil {
		t.Fatal("TLS config with ws:// accepted")
	}
}

func TestCloseEndsEverything(t *testing.T) {
	transports(t, func(t *testing.T, s *fakeServer) {
		before := runtime.NumGoroutine()
		c, p, _ := dial(t, s, Options{})
		p.send(push(ev(1, "unread"))) // queued, never consumed
		go p.read()                   // the server sees the request, never answers
		errc := make(chan error, 1)
		go func() {
			_, err := c.Sync(context.Background(), &pimv1.SyncReq{})
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatalf("pending request: %v, want ErrClosed", err)
		}
		if !errors.Is(c.Err(), ErrClosed) {
			t.Fatalf("Err = %v", c.Err())
		}
		for range c.Pushes() {
		}
		c.Close() // idempotent
		p.close()
		// The Conn's goroutines are gone (the fake server's may linger briefly).
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before+2 {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
	})
}

func TestConnectionEndsBeforeWelcome(t *testing.T) {
	s := newTCPServer(t, nil)
	go func() {
		p := s.accept(t)
		p.read()
		p.close()
	}()
	_, err := Dial(context.Background(), Options{Addr: s.addr, Token: "t", Device: "d"})
	if !errors.Is(err, ErrNoWelcome) || !errors.Is(err, ErrServerClosed) || strings.Count(err.Error(), "client:") != 1 {
		t.Fatalf("err = %v", err)
	}
}
