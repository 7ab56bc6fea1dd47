package main

import (
	"bufio"
	"encoding/json"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// fakeConn is the server side of one connection of a scripted fake server.
type fakeConn struct {
	t *testing.T
	c net.Conn
	r *wire.Reader
}

func (fc *fakeConn) send(f *pimv1.Frame) {
	b, _ := wire.AppendFrame(nil, f)
	if _, err := fc.c.Write(b); err != nil {
		fc.t.Errorf("server write: %v", err)
	}
}

// next returns the next frame that is not a Ping (pings are answered).
func (fc *fakeConn) next() *pimv1.Frame {
	for {
		f := new(pimv1.Frame)
		fc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := fc.r.ReadFrame(f); err != nil {
			fc.t.Errorf("server read: %v", err)
			return f
		}
		if f.GetPing() != nil {
			fc.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{}}})
			continue
		}
		return f
	}
}

func (fc *fakeConn) welcome(hello *pimv1.Frame, w *pimv1.Welcome) {
	fc.send(&pimv1.Frame{RequestId: hello.RequestId, Body: &pimv1.Frame_Welcome{Welcome: w}})
}

func (fc *fakeConn) push(seqs ...uint64) {
	var evs []*pimv1.Event
	for _, s := range seqs {
		evs = append(evs, &pimv1.Event{UserSeq: s, Kind: &pimv1.Event_Message{Message: &pimv1.Message{
			Conv: "d:alice:bob", Seq: s, Sender: "bob", SenderDevice: "phone",
			Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("m" + strconv.FormatUint(s, 10)),
		}}})
	}
	fc.send(&pimv1.Frame{Body: &pimv1.Frame_Push{Push: &pimv1.Push{Events: evs}}})
}

// expectAck reads PushAcks until one acknowledges seq.
func (fc *fakeConn) expectAck(seq uint64) {
	fc.t.Helper()
	for {
		f := fc.next()
		a := f.GetPushAck()
		if a == nil {
			fc.t.Errorf("server got %v, want PushAck %d", f, seq)
			return
		}
		if a.UserSeq == seq {
			return
		}
		if a.UserSeq > seq {
			fc.t.Errorf("PushAck %d, want %d", a.UserSeq, seq)
			return
		}
	}
}

// scriptedServer runs script for each connection in turn.
func scriptedServer(t *testing.T, scripts ...func(fc *fakeConn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, script := range scripts {
			c, err := ln.Accept()
			if err != nil {
				t.Errorf("accept: %v", err)
				return
			}
			script(&fakeConn{t: t, c: c, r: wire.NewReader(bufio.NewReader(c), 0)})
		}
	}()
	return ln.Addr().String()
}

func userSeqs(t *testing.T, out string) []uint64 {
	t.Helper()
	var seqs []uint64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v struct {
			UserSeq uint64 `json:"user_seq"`
			Body    string `json:"body"`
		}
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if v.Body != "m"+strconv.FormatUint(v.UserSeq, 10) {
			t.Errorf("line %q has the wrong body", line)
		}
		seqs = append(seqs, v.UserSeq)
	}
	return seqs
}

func TestTailResumesAfterGoAway(t *testing.T) {
	conn2Done := make(chan struct{})
	addr := scriptedServer(t,
		func(fc *fakeConn) {
			hello := fc.next().GetHello()
			if hello.GetLastUserSeq() != 0 || hello.GetEpoch() != "" || hello.GetDeviceId() != "laptop" || hello.GetToken() != "T" {
				t.Errorf("first hello %v", hello)
			}
			fc.welcome(&pimv1.Frame{RequestId: 1}, &pimv1.Welcome{Epoch: "e1", HeartbeatMs: 60000, UserSeq: 3})
			fc.push(1, 2)
			fc.expectAck(2)
			fc.send(&pimv1.Frame{Body: &pimv1.Frame_GoAway{GoAway: &pimv1.GoAway{RetryAfterMs: 100, Reason: "test drain"}}})
			fc.push(3) // still delivered before the close
			fc.expectAck(3)
			fc.c.Close()
		},
		func(fc *fakeConn) {
			f := fc.next()
			hello := f.GetHello()
			if hello.GetLastUserSeq() != 3 || hello.GetEpoch() != "e1" {
				t.Errorf("resume hello %v", hello)
			}
			fc.welcome(f, &pimv1.Welcome{Epoch: "e1", HeartbeatMs: 60000, AckedUserSeq: 3, UserSeq: 5, PushFromUserSeq: 3})
			fc.push(3, 4) // 3 again: printed once only
			fc.push(5)
			fc.expectAck(5)
			close(conn2Done)
			// Then silence: tail exits when idle.
			fc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
			fc.r.ReadFrame(new(pimv1.Frame)) // until tail closes
			fc.c.Close()
		},
	)
	start := time.Now()
	code, out, errOut := runCLI(t, "tail", "--server", addr, "--token", "T", "--device", "laptop", "--json", "--exit-when-idle", "500ms")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	<-conn2Done
	got := userSeqs(t, out)
	if len(got) != 5 || got[0] != 1 || got[4] != 5 {
		t.Errorf("printed user seqs %v, want 1..5", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] != got[i-1]+1 {
			t.Errorf("printed user seqs %v, want 1..5 once each", got)
		}
	}
	if !strings.Contains(errOut, "going away (test drain)") {
		t.Errorf("stderr %q", errOut)
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Errorf("exited after %v, before the idle time", d)
	}
}

func TestTailReconnectsAfterLossAndReacks(t *testing.T) {
	addr := scriptedServer(t,
		func(fc *fakeConn) {
			f := fc.next()
			fc.welcome(f, &pimv1.Welcome{Epoch: "e1", HeartbeatMs: 60000, UserSeq: 2})
			fc.push(1, 2)
			fc.expectAck(2)
			fc.c.Close() // lost, no GoAway
		},
		func(fc *fakeConn) {
			f := fc.next()
			if h := f.GetHello(); h.GetLastUserSeq() != 2 {
				t.Errorf("resume hello %v", h)
			}
			// The server says the ack never arrived: tail acks again.
			fc.welcome(f, &pimv1.Welcome{Epoch: "e1", HeartbeatMs: 60000, AckedUserSeq: 0, UserSeq: 2, PushFromUserSeq: 2})
			fc.expectAck(2)
			fc.r.ReadFrame(new(pimv1.Frame))
			fc.c.Close()
		},
	)
	code, out, errOut := runCLI(t, "tail", "--server", addr, "--token", "T", "--json", "--exit-when-idle", "1s")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if got := userSeqs(t, out); len(got) != 2 {
		t.Errorf("printed %v", got)
	}
	if !strings.Contains(errOut, "connection lost") {
		t.Errorf("stderr %q", errOut)
	}
}

func TestTailEpochChangeStartsOver(t *testing.T) {
	addr := scriptedServer(t,
		func(fc *fakeConn) {
			f := fc.next()
			fc.welcome(f, &pimv1.Welcome{Epoch: "e1", HeartbeatMs: 60000, UserSeq: 2})
			fc.push(1, 2)
			fc.expectAck(2)
			fc.send(&pimv1.Frame{Body: &pimv1.Frame_GoAway{GoAway: &pimv1.GoAway{RetryAfterMs: 10}}})
			fc.c.Close()
		},
		func(fc *fakeConn) {
			f := fc.next()
			// Restored data: a new epoch; the client's cursor is void.
			fc.welcome(f, &pimv1.Welcome{Epoch: "e2", HeartbeatMs: 60000, UserSeq: 1, PushFromUserSeq: 0})
			fc.push(1)
			fc.expectAck(1)
			fc.r.ReadFrame(new(pimv1.Frame))
			fc.c.Close()
		},
	)
	code, out, errOut := runCLI(t, "tail", "--server", addr, "--token", "T", "--json", "--exit-when-idle", "500ms")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if got := userSeqs(t, out); len(got) != 3 || got[2] != 1 {
		t.Errorf("printed %v, want 1 2 1", got)
	}
	if !strings.Contains(errOut, "epoch changed") {
		t.Errorf("stderr %q", errOut)
	}
}

func TestTailPermanentError(t *testing.T) {
	addr := scriptedServer(t, func(fc *fakeConn) {
		f := fc.next()
		fc.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Error{Error: &pimv1.Error{
			Code: pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED, Message: "token expired", Fatal: true,
		}}})
		fc.c.Close()
	})
	code, out, errOut := runCLI(t, "tail", "--server", addr, "--token", "T")
	want := "pim: connect to " + addr + ": token expired (code UNAUTHENTICATED)\n"
	if code != exitFailure || out != "" || errOut != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1 and %q", code, out, errOut, want)
	}
}

func TestSendAgainstFakeServer(t *testing.T) {
	handshake := func(fc *fakeConn) *pimv1.SendReq {
		f := fc.next()
		fc.welcome(f, &pimv1.Welcome{Epoch: "e1"})
		f = fc.next()
		req := f.GetSendReq()
		if req.GetConv() != "g:team" || string(req.GetBody()) != "hello world" || req.GetType() != pimv1.MessageType_MESSAGE_TYPE_TEXT {
			t.Errorf("send req %v", req)
		}
		fc.c.SetReadDeadline(time.Time{})
		return req
	}
	reply := func(fc *fakeConn, f *pimv1.Frame) {
		fc.send(f)
		fc.r.ReadFrame(new(pimv1.Frame)) // until the CLI closes
		fc.c.Close()
	}
	addr := scriptedServer(t,
		func(fc *fakeConn) {
			handshake(fc)
			reply(fc, &pimv1.Frame{RequestId: 2, Body: &pimv1.Frame_Error{Error: &pimv1.Error{
				Code: pimv1.ErrorCode_ERROR_CODE_FORBIDDEN, Message: "not a member of g:team",
			}}})
		},
		func(fc *fakeConn) {
			req := handshake(fc)
			if req.ClientMsgId != "m1" {
				t.Errorf("client_msg_id %q", req.ClientMsgId)
			}
			reply(fc, &pimv1.Frame{RequestId: 2, Body: &pimv1.Frame_SendAck{SendAck: &pimv1.SendAck{
				ClientMsgId: req.ClientMsgId, Conv: "g:team", Seq: 9, MsgId: "x9", ServerTime: 5, Duplicate: true,
			}}})
		},
	)
	code, out, errOut := runCLI(t, "send", "--server", addr, "--token", "T", "--group", "team", "hello", "world")
	if code != exitFailure || out != "" || errOut != "pim: send: not a member of g:team (code FORBIDDEN)\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "send", "--server", addr, "--token", "T", "--group", "g:team", "--client-msg-id", "m1", "--json", "hello world")
	want := `{"conv":"g:team","seq":9,"msg_id":"x9","server_time":5,"client_msg_id":"m1","duplicate":true}` + "\n"
	if code != exitOK || out != want || errOut != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestClosedBeforeWelcomeHintsAtTLS(t *testing.T) {
	// Like a TLS server given plaintext: it reads, then hangs up (with or
	// without a reset, depending on timing).
	addr := scriptedServer(t, func(fc *fakeConn) {
		fc.c.Read(make([]byte, 1))
		fc.c.Close()
	})
	code, _, errOut := runCLI(t, "send", "--server", addr, "--token", "T", "--to", "bob", "hi")
	if code != exitFailure || !strings.Contains(errOut, "ended before Welcome") || !strings.Contains(errOut, "try --tls") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}
