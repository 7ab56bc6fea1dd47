package client

import (
	"context"
	"strings"
	"testing"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// The dial context bounds only the dial: cancelling it afterwards (as a
// caller's deferred cancel does) leaves the connection working.
func TestDialContextEndsWithDial(t *testing.T) {
	transports(t, func(t *testing.T, s *fakeServer) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ch := make(chan *Conn, 1)
		go func() {
			c, err := Dial(ctx, Options{Addr: s.addr, WebSocket: strings.HasPrefix(s.addr, "ws"), Token: "t", Device: "d"})
			if err != nil {
				t.Error(err)
			}
			ch <- c
		}()
		p := s.accept(t)
		hello := p.expect()
		p.send(&pimv1.Frame{RequestId: hello.RequestId, Body: &pimv1.Frame_Welcome{Welcome: testWelcome}})
		c := <-ch
		if c == nil {
			t.FailNow()
		}
		defer c.Close()
		cancel()
		time.Sleep(50 * time.Millisecond)
		go func() {
			f := p.expect()
			p.send(&pimv1.Frame{RequestId: f.RequestId, Body: &pimv1.Frame_Pong{Pong: &pimv1.Pong{ServerTime: 1}}})
		}()
		if _, err := c.Ping(context.Background()); err != nil {
			t.Fatalf("Ping after the dial context ended: %v", err)
		}
	})
}
