package logic

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// fuzzRequests are the client requests the fuzzer decodes and runs, by kind.
var fuzzRequests = []struct {
	decode func([]byte) (proto.Message, bool)
	run    func(context.Context, *Service, proto.Message) error
}{
	{req[*pimv1.SendReq], func(ctx context.Context, s *Service, m proto.Message) error {
		_, err := s.Send(ctx, "alice", "fuzz", m.(*pimv1.SendReq))
		return err
	}},
	{req[*pimv1.SyncReq], func(ctx context.Context, s *Service, m proto.Message) error {
		_, err := s.Sync(ctx, "alice", "fuzz", m.(*pimv1.SyncReq))
		return err
	}},
	{req[*pimv1.HistoryReq], func(ctx context.Context, s *Service, m proto.Message) error {
		_, err := s.History(ctx, "alice", m.(*pimv1.HistoryReq))
		return err
	}},
	{req[*pimv1.GroupReq], func(ctx context.Context, s *Service, m proto.Message) error {
		_, err := s.Group(ctx, "alice", "fuzz", m.(*pimv1.GroupReq))
		return err
	}},
	{req[*pimv1.ReadReq], func(ctx context.Context, s *Service, m proto.Message) error {
		_, err := s.Read(ctx, "alice", "fuzz", m.(*pimv1.ReadReq))
		return err
	}},
	{req[*pimv1.HideReq], func(ctx context.Context, s *Service, m proto.Message) error {
		_, err := s.Hide(ctx, "alice", "fuzz", m.(*pimv1.HideReq))
		return err
	}},
	{req[*pimv1.ConvListReq], func(ctx context.Context, s *Service, m proto.Message) error {
		_, err := s.Conversations(ctx, "alice", m.(*pimv1.ConvListReq))
		return err
	}},
	{req[*pimv1.ReceiptsReq], func(ctx context.Context, s *Service, m proto.Message) error {
		_, err := s.Receipts(ctx, "alice", m.(*pimv1.ReceiptsReq))
		return err
	}},
	{req[*pimv1.SettingsReq], func(ctx context.Context, s *Service, m proto.Message) error {
		_, err := s.Settings(ctx, "alice", m.(*pimv1.SettingsReq))
		return err
	}},
}

// req decodes data as a T.
func req[T proto.Message](data []byte) (proto.Message, bool) {
	var zero T
	m := zero.ProtoReflect().New().Interface()
	return m, proto.Unmarshal(data, m) == nil
}

// FuzzRequests decodes arbitrary bytes as each client request type and
// runs it through the business logic on a real store: nothing may panic,
// and every refusal must carry a protocol code other than INTERNAL (an
// INTERNAL code means an input reached a path that does not validate it).
func FuzzRequests(f *testing.F) {
	visible := true
	seeds := []struct {
		kind byte
		m    proto.Message
	}{
		{0, &pimv1.SendReq{ClientMsgId: "a", ToUser: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi")}},
		{0, &pimv1.SendReq{ClientMsgId: "b", Conv: "g:team", Type: pimv1.MessageType_MESSAGE_TYPE_BINARY, Body: []byte{0}}},
		{1, &pimv1.SyncReq{AfterUserSeq: 1, Limit: 10}},
		{2, &pimv1.HistoryReq{Conv: "d:alice:bob", BeforeSeq: 5, Limit: 2}},
		{3, &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_CREATE, Group: "g:team", Users: []string{"bob"}}},
		{3, &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_REMOVE, Group: "g:team", Users: []string{"alice"}}},
		{3, &pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_SETTINGS, Group: "g:team", ReceiptsVisible: &visible}},
		{4, &pimv1.ReadReq{Conv: "d:alice:bob", Seq: 1}},
		{5, &pimv1.HideReq{Conv: "d:alice:bob", Seq: 1}},
		{6, &pimv1.ConvListReq{SinceVersion: 1, Limit: 5}},
		{7, &pimv1.ReceiptsReq{Conv: "g:team", Seq: 2, AfterUser: "bob", Limit: 3}},
		{8, &pimv1.SettingsReq{ReadReceipts: &visible}},
	}
	for _, sd := range seeds {
		b, _ := proto.Marshal(sd.m)
		f.Add(sd.kind, b)
	}
	s := newTestService(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, kind byte, data []byte) {
		k := int(kind) % len(fuzzRequests)
		m, ok := fuzzRequests[k].decode(data)
		if !ok {
			return
		}
		if err := fuzzRequests[k].run(ctx, s, m); err != nil && errcode.Code(err) == pimv1.ErrorCode_ERROR_CODE_INTERNAL {
			t.Fatalf("INTERNAL error for %T: %v", m, err)
		}
	})
}
