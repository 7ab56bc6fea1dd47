// TLS with certificate pinning, over TCP and WebSocket.
//
// Invariants checked: a pinned self-signed server is reached over tls://
// and wss://, and messages flow between the two transports; a wrong pin
// never connects (the handshake fails; the client keeps retrying and
// reports why).

package pim

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/server"
)

func TestPinnedTLSOverTCPAndWebSocket(t *testing.T) {
	srv, err := server.Start(server.Config{DataDir: t.TempDir(), TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		TLSSelfSigned: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the clients' cleanups
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		srv.Shutdown(ctx)
	})
	pin := srv.Fingerprint()
	connect := func(user, server string, opts TLSOptions, ws bool) (*Client, *recorder) {
		cl, err := Connect(ctxT(t), Options{Servers: []string{server}, Token: token(t, srv, user), User: user,
			DeviceID: "d", DataDir: t.TempDir(), TLS: opts, WebSocket: ws, Tuning: testTuning()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		rec := newRecorder(user)
		rec.attach(cl)
		return cl, rec
	}
	a, ar := connect("alice", srv.TCPAddr().String(), TLSOptions{PinSHA256: pin}, false) // tls:// implied
	b, br := connect("bob", srv.HTTPAddr().String(), TLSOptions{PinSHA256: pin}, true)   // wss://host/ws implied
	if _, err := a.SendTo(ctxT(t), "bob", "alice-0"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SendTo(ctxT(t), "alice", "bob-0"); err != nil {
		t.Fatal(err)
	}
	ar.waitMessages(t, 2)
	br.waitMessages(t, 2)
	ar.check(t, map[string]int{"alice": 1, "bob": 1})
	br.check(t, map[string]int{"alice": 1, "bob": 1})
	if _, bound, ok := a.ClockOffset(); !ok || bound > time.Second {
		t.Errorf("clock offset: ok=%v bound=%v", ok, bound)
	}
	if d := time.Until(b.ServerNow()); d > time.Second || d < -time.Second {
		t.Errorf("ServerNow is %v away from the local clock of the same machine", d)
	}

	wrong := strings.Repeat("00", 32)
	_, wr := connect("carol", "tls://"+srv.TCPAddr().String(), TLSOptions{PinSHA256: wrong}, false)
	wr.wait(t, "a failed dial", func(r *recorder) bool { return r.lastErr != nil })
	wr.mu.Lock()
	why, connects := wr.lastErr, wr.connects
	wr.mu.Unlock()
	if connects != 0 || !strings.Contains(why.Error(), "pin") {
		t.Fatalf("wrong pin: %d connects, last error %v", connects, why)
	}
}
