package logic

import (
	"context"
	"strings"
	"testing"

	"github.com/pim-project/pim/internal/bus/local"
	"github.com/pim-project/pim/internal/errcode"
	pebblestore "github.com/pim-project/pim/internal/store/pebble"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func newTestService(t testing.TB) *Service {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return New(Config{Store: st, Bus: local.New(), MaxBody: 1024, MaxGroupSize: 4})
}

func TestSendValidation(t *testing.T) {
	s := newTestService(t)
	ctx := context.Background()
	text := pimv1.MessageType_MESSAGE_TYPE_TEXT
	tests := []struct {
		name string
		req  *pimv1.SendReq
		want pimv1.ErrorCode
	}{
		{"ok", &pimv1.SendReq{ClientMsgId: "1", ToUser: "bob", Type: text, Body: []byte("hi")}, 0},
		{"to self", &pimv1.SendReq{ClientMsgId: "2", ToUser: "alice", Type: text, Body: []byte("note")}, 0},
		{"binary", &pimv1.SendReq{ClientMsgId: "3", ToUser: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_BINARY, Body: []byte{0xff}}, 0},
		{"no target", &pimv1.SendReq{ClientMsgId: "4", Type: text, Body: []byte("x")}, badRequest},
		{"bad user id", &pimv1.SendReq{ClientMsgId: "5", ToUser: "b b", Type: text, Body: []byte("x")}, badRequest},
		{"long client id", &pimv1.SendReq{ClientMsgId: strings.Repeat("x", 65), ToUser: "bob", Type: text, Body: []byte("x")}, badRequest},
		{"empty body", &pimv1.SendReq{ClientMsgId: "6", ToUser: "bob", Type: text}, badRequest},
		{"body too large", &pimv1.SendReq{ClientMsgId: "7", ToUser: "bob", Type: text, Body: make([]byte, 1025)}, pimv1.ErrorCode_ERROR_CODE_TOO_LARGE},
		{"unspecified type", &pimv1.SendReq{ClientMsgId: "8", ToUser: "bob", Body: []byte("x")}, badRequest},
		{"other pair's conv", &pimv1.SendReq{ClientMsgId: "9", Conv: "d:bob:carol", Type: text, Body: []byte("x")}, forbidden},
		{"unsorted direct conv", &pimv1.SendReq{ClientMsgId: "10", Conv: "d:bob:alice", Type: text, Body: []byte("x")}, badRequest},
		{"unknown group", &pimv1.SendReq{ClientMsgId: "11", Conv: "g:none", Type: text, Body: []byte("x")}, pimv1.ErrorCode_ERROR_CODE_NOT_FOUND},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Send(ctx, "alice", "d", tc.req)
			if got := errcode.Code(err); got != tc.want {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

func TestGroupPolicy(t *testing.T) {
	s := newTestService(t)
	ctx := context.Background()
	op := func(user string, o pimv1.GroupOp, g string, users ...string) (*pimv1.GroupResp, pimv1.ErrorCode) {
		r, err := s.Group(ctx, user, "d", &pimv1.GroupReq{Op: o, Group: g, Users: users})
		return r, errcode.Code(err)
	}
	g, code := op("alice", pimv1.GroupOp_GROUP_OP_CREATE, "", "bob")
	if code != 0 || !strings.HasPrefix(g.Group, "g:") || len(g.Members) != 2 {
		t.Fatalf("create = %v, %v", g, code)
	}
	steps := []struct {
		user  string
		op    pimv1.GroupOp
		users []string
		want  pimv1.ErrorCode
	}{
		{"bob", pimv1.GroupOp_GROUP_OP_ADD, []string{"carol", "dave"}, 0},
		{"bob", pimv1.GroupOp_GROUP_OP_ADD, []string{"erin"}, pimv1.ErrorCode_ERROR_CODE_GROUP_TOO_LARGE},
		{"bob", pimv1.GroupOp_GROUP_OP_REMOVE, []string{"carol"}, forbidden},
		{"erin", pimv1.GroupOp_GROUP_OP_MEMBERS, nil, forbidden},
		{"carol", pimv1.GroupOp_GROUP_OP_REMOVE, []string{"carol"}, 0},
		{"alice", pimv1.GroupOp_GROUP_OP_REMOVE, []string{"dave"}, 0},
		{"alice", pimv1.GroupOp_GROUP_OP_ADD, []string{"bad id"}, badRequest},
		{"alice", pimv1.GroupOp_GROUP_OP_UNSPECIFIED, nil, badRequest},
	}
	for i, st := range steps {
		if _, code := op(st.user, st.op, g.Group, st.users...); code != st.want {
			t.Fatalf("step %d (%s %v %v): got %v, want %v", i, st.user, st.op, st.users, code, st.want)
		}
	}
	m, _ := op("alice", pimv1.GroupOp_GROUP_OP_MEMBERS, g.Group)
	if len(m.Members) != 2 || m.Members[0].User != "alice" || m.Members[1].User != "bob" {
		t.Fatalf("members = %v", m.Members)
	}
}

func TestReadOnlyMovesForward(t *testing.T) {
	s := newTestService(t)
	ctx := context.Background()
	for i := range 3 {
		if _, err := s.Send(ctx, "bob", "phone", &pimv1.SendReq{ClientMsgId: string(rune('a' + i)), ToUser: "alice",
			Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi")}); err != nil {
			t.Fatal(err)
		}
	}
	conv := "d:alice:bob"
	for _, st := range []struct{ seq, want uint64 }{{2, 2}, {1, 2}, {9, 3}, {0, 3}} {
		resp, err := s.Read(ctx, "alice", "pc", &pimv1.ReadReq{Conv: conv, Seq: st.seq})
		if err != nil || resp.ReadSeq != st.want {
			t.Fatalf("Read(%d) = %v, %v; want %d", st.seq, resp, err, st.want)
		}
	}
	if _, err := s.Read(ctx, "carol", "pc", &pimv1.ReadReq{Conv: conv, Seq: 1}); errcode.Code(err) != forbidden {
		t.Fatalf("outsider read: %v", err)
	}
	if _, err := s.Read(ctx, "alice", "pc", &pimv1.ReadReq{Conv: "nope", Seq: 1}); errcode.Code(err) != badRequest {
		t.Fatalf("bad conv: %v", err)
	}
}
