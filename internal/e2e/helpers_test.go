package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/server"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// waitFor bounds every wait in these tests; a healthy run needs a tiny fraction of it.
const waitFor = 20 * time.Second

func startServer(t *testing.T, dir string) *server.Server {
	t.Helper()
	srv, err := server.Start(server.Config{DataDir: dir, TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { stopServer(t, srv) })
	return srv
}

func stopServer(t *testing.T, srv *server.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

func token(t *testing.T, srv *server.Server, user string) string {
	t.Helper()
	tok, err := srv.Keys().Issue(user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// dial connects (user, device) over TCP and closes the connection at the end of the test.
func dial(t *testing.T, srv *server.Server, user, device string) *client.Conn {
	t.Helper()
	return dialOpts(t, srv, client.Options{Token: token(t, srv, user), Device: device})
}

func dialOpts(t *testing.T, srv *server.Server, o client.Options) *client.Conn {
	t.Helper()
	if o.Addr == "" {
		o.Addr = srv.TCPAddr().String()
	}
	c, err := client.Dial(ctxT(t), o)
	if err != nil {
		t.Fatalf("dial %s: %v", o.Device, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recv reads n pushed events from c, acking each, or fails the test.
func recv(t *testing.T, c *client.Conn, n int) []*pimv1.Event {
	t.Helper()
	var out []*pimv1.Event
	timeout := time.After(waitFor)
	for len(out) < n {
		select {
		case ev, ok := <-c.Pushes():
			if !ok {
				t.Fatalf("push stream ended after %d of %d events: %v", len(out), n, c.Err())
			}
			out = append(out, ev)
			if err := c.PushAck(ev.UserSeq); err != nil {
				t.Fatalf("push ack: %v", err)
			}
		case <-timeout:
			t.Fatalf("got %d of %d pushed events", len(out), n)
		}
	}
	return out
}

// atHead checks that the user has no message after last: a device that has
// received up to last has seen every message. (Delivered receipts, which
// the peer's acks append, may follow.)
func atHead(t *testing.T, c *client.Conn, last uint64) {
	t.Helper()
	resp, err := c.Sync(ctxT(t), &pimv1.SyncReq{AfterUserSeq: last, Limit: 100})
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	for _, ev := range resp.Events {
		if ev.GetReceipt() == nil {
			t.Fatalf("expected no message after user seq %d, head is %d with %v", last, resp.UserSeq, ev)
		}
	}
}

func text(ev *pimv1.Event) string { return string(ev.GetMessage().GetBody()) }

func send(t *testing.T, c *client.Conn, to, conv, id, body string) *pimv1.SendAck {
	t.Helper()
	ack, err := c.Send(ctxT(t), &pimv1.SendReq{ClientMsgId: id, ToUser: to, Conv: conv,
		Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte(body), ClientTime: time.Now().UnixMilli()})
	if err != nil {
		t.Fatalf("send %s: %v", id, err)
	}
	return ack
}

// history reads all of conv visible to c, oldest first.
func history(t *testing.T, c *client.Conn, conv string) []*pimv1.Message {
	t.Helper()
	var all []*pimv1.Message
	before := uint64(0)
	for {
		resp, err := c.History(ctxT(t), &pimv1.HistoryReq{Conv: conv, BeforeSeq: before, Limit: 100})
		if err != nil {
			t.Fatalf("history %s: %v", conv, err)
		}
		all = append(resp.Messages, all...)
		if !resp.HasMore || len(resp.Messages) == 0 {
			return all
		}
		before = resp.Messages[0].Seq
	}
}

// syncAll pulls a device's whole timeline after `after` with SyncReq pages.
func syncAll(t *testing.T, c *client.Conn, after uint64) []*pimv1.Event {
	t.Helper()
	var all []*pimv1.Event
	for {
		resp, err := c.Sync(ctxT(t), &pimv1.SyncReq{AfterUserSeq: after, Limit: 100})
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		all = append(all, resp.Events...)
		if len(resp.Events) > 0 {
			after = resp.Events[len(resp.Events)-1].UserSeq
		}
		if !resp.HasMore {
			return all
		}
	}
}

// checkGapFree checks that events have user seqs from, from+1, ...
func checkGapFree(t *testing.T, evs []*pimv1.Event, from uint64) {
	t.Helper()
	for i, ev := range evs {
		if want := from + uint64(i); ev.UserSeq != want {
			t.Fatalf("event %d has user_seq %d, want %d", i, ev.UserSeq, want)
		}
	}
}

func ids(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return out
}

// startUnmanaged starts a server the test stops itself (to restart on the same dir).
func startUnmanaged(dir string) (*server.Server, error) {
	return server.Start(server.Config{DataDir: dir, TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"})
}

func clientOpts(t *testing.T, srv *server.Server, user, device string) client.Options {
	return client.Options{Token: token(t, srv, user), Device: device}
}

// errCode is the protocol error code carried by err (UNSPECIFIED for nil).
func errCode(err error) pimv1.ErrorCode { return errcode.Code(err) }
