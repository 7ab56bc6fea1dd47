package e2e

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/client"
	"github.com/pim-project/pim/internal/server"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Authorization and bad input: each is refused with its documented code,
// nothing is stored, and the server keeps serving everyone else.
func TestAuthorizationAndBadInput(t *testing.T) {
	srv := startServer(t, t.TempDir())
	alice := dial(t, srv, "alice", "phone")
	bob := dial(t, srv, "bob", "phone")
	g := group(t, bob, pimv1.GroupOp_GROUP_OP_CREATE, "g:private", "carol")
	send(t, bob, "carol", "", "b1", "secret")

	textReq := func(id, conv, to, body string) *pimv1.SendReq {
		return &pimv1.SendReq{ClientMsgId: id, Conv: conv, ToUser: to, Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte(body)}
	}
	requests := []struct {
		name string
		call func(c *client.Conn) error
		want pimv1.ErrorCode
	}{
		{"send to a group you are not in", func(c *client.Conn) error {
			_, err := c.Send(ctxT(t), textReq("x1", g.Group, "", "hi"))
			return err
		}, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN},
		{"forged sender: send into someone else's 1:1", func(c *client.Conn) error {
			_, err := c.Send(ctxT(t), textReq("x2", "d:bob:carol", "", "as bob"))
			return err
		}, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN},
		{"read another conversation's history", func(c *client.Conn) error {
			_, err := c.History(ctxT(t), &pimv1.HistoryReq{Conv: "d:bob:carol"})
			return err
		}, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN},
		{"read a group's history as a non-member", func(c *client.Conn) error {
			_, err := c.History(ctxT(t), &pimv1.HistoryReq{Conv: g.Group})
			return err
		}, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN},
		{"list a group's members as a non-member", func(c *client.Conn) error {
			_, err := c.Group(ctxT(t), &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_MEMBERS, Group: g.Group})
			return err
		}, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN},
		{"add yourself to a group you are not in", func(c *client.Conn) error {
			_, err := c.Group(ctxT(t), &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_ADD, Group: g.Group, Users: []string{"alice"}})
			return err
		}, pimv1.ErrorCode_ERROR_CODE_FORBIDDEN},
		{"send to a group that does not exist", func(c *client.Conn) error {
			_, err := c.Send(ctxT(t), textReq("x3", "g:nope", "", "hi"))
			return err
		}, pimv1.ErrorCode_ERROR_CODE_NOT_FOUND},
		{"both conv and to_user", func(c *client.Conn) error {
			_, err := c.Send(ctxT(t), textReq("x4", "d:alice:bob", "bob", "hi"))
			return err
		}, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"missing client_msg_id", func(c *client.Conn) error {
			_, err := c.Send(ctxT(t), textReq("", "", "bob", "hi"))
			return err
		}, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"invalid UTF-8 text", func(c *client.Conn) error {
			_, err := c.Send(ctxT(t), textReq("x5", "", "bob", "\xff\xfe"))
			return err
		}, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"system message type from a client", func(c *client.Conn) error {
			req := textReq("x6", "", "bob", "hi")
			req.Type = pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED
			_, err := c.Send(ctxT(t), req)
			return err
		}, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"body over 64 KiB", func(c *client.Conn) error {
			_, err := c.Send(ctxT(t), textReq("x7", "", "bob", string(bytes.Repeat([]byte("a"), 64<<10+1))))
			return err
		}, pimv1.ErrorCode_ERROR_CODE_TOO_LARGE},
		{"invalid conversation id", func(c *client.Conn) error {
			_, err := c.Send(ctxT(t), textReq("x8", "x:y", "", "hi"))
			return err
		}, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST},
	}
	for _, tc := range requests {
		t.Run(tc.name, func(t *testing.T) {
			if got := errCode(tc.call(alice)); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Syncing or acking with your own token only ever touches your own
	// timeline: alice syncing from 0 sees none of bob's and carol's events,
	// and her acks do not move bob's cursor.
	if evs := syncAll(t, alice, 0); len(evs) != 0 {
		t.Fatalf("alice's timeline has %d events of others", len(evs))
	}
	if err := alice.PushAck(1000); err != nil {
		t.Fatal(err)
	}
	if w := dial(t, srv, "bob", "phone2").Welcome(); w.AckedUserSeq != 0 || w.UserSeq != 2 {
		t.Fatalf("bob's new device welcome = %v", w)
	}
	// Nothing was stored by the refused requests.
	if h := history(t, bob, g.Group); len(h) != 1 {
		t.Fatalf("group history has %d messages, want only the creation", len(h))
	}
	if h := history(t, alice, "d:alice:bob"); len(h) != 0 {
		t.Fatalf("alice-bob history = %v", h)
	}
	// The connection survived every non-fatal error.
	send(t, alice, "bob", "", "still-here", "ok")
}

// Fatal input closes only the offending connection with its code.
func TestFatalInputClosesOnlyThatConnection(t *testing.T) {
	srv := startServer(t, t.TempDir())
	bystander := dial(t, srv, "carol", "phone")
	oversize := make([]byte, 4)
	binary.BigEndian.PutUint32(oversize, 2<<20)
	cases := []struct {
		name string
		opts client.Options
		raw  []byte
		want pimv1.ErrorCode
	}{
		{"oversize frame", clientOpts(t, srv, "alice", "d1"), append(oversize, 1, 2, 3), pimv1.ErrorCode_ERROR_CODE_FRAME_TOO_LARGE},
		{"malformed protobuf", clientOpts(t, srv, "alice", "d2"), []byte{0, 0, 0, 3, 0xff, 0xff, 0xff}, pimv1.ErrorCode_ERROR_CODE_MALFORMED},
		{"empty frame", clientOpts(t, srv, "alice", "d3"), []byte{0, 0, 0, 0}, pimv1.ErrorCode_ERROR_CODE_PROTOCOL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialOpts(t, srv, tc.opts)
			pending := make(chan error, 1)
			go func() { _, err := c.Ping(ctxT(t)); pending <- err }()
			if err := c.WriteRaw(tc.raw); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.Done():
			case <-time.After(waitFor):
				t.Fatal("connection not closed")
			}
			if got := errCode(c.Err()); got != tc.want {
				t.Fatalf("connection error %v (%v), want %v", got, c.Err(), tc.want)
			}
			<-pending
		})
	}
	hellos := []struct {
		name string
		opts client.Options
		want pimv1.ErrorCode
	}{
		{"bad token", client.Options{Token: "nope", Device: "d"}, pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
		{"expired token", client.Options{Token: expiredToken(t, srv), Device: "d"}, pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
		{"token signed by another key", client.Options{Token: foreignToken(t), Device: "d"}, pimv1.ErrorCode_ERROR_CODE_UNAUTHENTICATED},
		{"bad device id", client.Options{Token: token(t, srv, "alice"), Device: "no spaces"}, pimv1.ErrorCode_ERROR_CODE_BAD_REQUEST},
		{"unsupported version", client.Options{Token: token(t, srv, "alice"), Device: "d", ProtocolVersion: 99}, pimv1.ErrorCode_ERROR_CODE_UNSUPPORTED_VERSION},
	}
	for _, tc := range hellos {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Addr = srv.TCPAddr().String()
			c, err := client.Dial(ctxT(t), tc.opts)
			if err == nil {
				c.Close()
				t.Fatal("hello accepted")
			}
			if got := errCode(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
		})
	}
	// The bystander was not affected.
	if _, err := bystander.Ping(ctxT(t)); err != nil {
		t.Fatalf("bystander: %v", err)
	}
	send(t, bystander, "dave", "", "fine", "still serving")
}

func expiredToken(t *testing.T, srv *server.Server) string {
	t.Helper()
	k, err := auth.Load(srv.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := k.WithClock(func() time.Time { return time.Now().Add(-2 * time.Hour) }).Issue("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func foreignToken(t *testing.T) string {
	t.Helper()
	k, err := auth.LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := k.Issue("alice", time.Hour)
	return tok
}
