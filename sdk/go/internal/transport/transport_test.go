// Tests of Parse (canonical addresses round-trip) and of the stream
// transport (frames written in batches arrive in order).

package transport

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func TestParse(t *testing.T) {
	cases := []struct {
		in      string
		tls, ws bool
		want    string
		kind    Kind
		wantTLS bool
		host    string
	}{
		{"h:1", false, false, "tcp://h:1", TCP, false, "h"},
		{"h:1", true, false, "tls://h:1", TCP, true, "h"},
		{"h:1", false, true, "ws://h:1/ws", WebSocket, false, "h"},
		{"h:1", true, true, "wss://h:1/ws", WebSocket, true, "h"},
		{"tcp://h:1", true, true, "tcp://h:1", TCP, false, "h"},
		{"TLS://[::1]:7", false, false, "tls://[::1]:7", TCP, true, "::1"},
		{"wss://h:2", false, false, "wss://h:2/ws", WebSocket, true, "h"},
		{"ws://h:2/custom", false, false, "ws://h:2/custom", WebSocket, false, "h"},
	}
	for _, c := range cases {
		ep, err := Parse(c.in, c.tls, c.ws)
		if err != nil || ep.String() != c.want || ep.Kind != c.kind || ep.TLS != c.wantTLS || ep.Host() != c.host {
			t.Errorf("Parse(%q, %v, %v) = %+v (%s, host %s), %v; want %s", c.in, c.tls, c.ws, ep, ep, ep.Host(), err, c.want)
			continue
		}
		if again, err := Parse(ep.String(), !c.tls, !c.ws); err != nil || again != ep {
			t.Errorf("Parse(String()) of %q = %+v, %v", c.in, again, err)
		}
	}
	for _, bad := range []string{"", "nohost", "udp://h:1", "tcp://h", "ws://"} {
		if _, err := Parse(bad, false, false); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestStreamRoundTrip(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []*pimv1.Frame, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := wire.NewReader(c, 0)
		var fs []*pimv1.Frame
		for i := 0; i < 3; i++ {
			f := new(pimv1.Frame)
			if r.ReadFrame(f) != nil {
				break
			}
			fs = append(fs, f)
		}
		got <- fs
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, Endpoint{Kind: TCP, Addr: ln.Addr().String()}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := []*pimv1.Frame{
		{RequestId: 1, Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{ClientTime: 7}}},
		{RequestId: 2, Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: 3}}},
		{RequestId: 3, Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{ClientTime: 9}}},
	}
	if err := c.WriteFrames(want[:2]); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFrames(want[2:]); err != nil {
		t.Fatal(err)
	}
	fs := <-got
	if len(fs) != 3 {
		t.Fatalf("server read %d frames", len(fs))
	}
	for i := range want {
		if !proto.Equal(fs[i], want[i]) {
			t.Fatalf("frame %d: %v, want %v", i, fs[i], want[i])
		}
	}
	c.Close()
	if err := c.ReadFrame(new(pimv1.Frame)); err == nil {
		t.Fatal("read after Close succeeded")
	}
}
