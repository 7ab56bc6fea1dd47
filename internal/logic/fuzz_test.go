package logic

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/errcode"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// FuzzRequests decodes arbitrary bytes as each client request type and
// runs it through the business logic on a real store: nothing may panic,
// and every refusal must carry a protocol code other than INTERNAL (an
// INTERNAL code means an input reached a path that does not validate it).
func FuzzRequests(f *testing.F) {
	seeds := []proto.Message{
		&pimv1.SendReq{ClientMsgId: "a", ToUser: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hi")},
		&pimv1.SendReq{ClientMsgId: "b", Conv: "g:team", Type: pimv1.MessageType_MESSAGE_TYPE_BINARY, Body: []byte{0}},
		&pimv1.SyncReq{AfterUserSeq: 1, Limit: 10},
		&pimv1.HistoryReq{Conv: "d:alice:bob", BeforeSeq: 5, Limit: 2},
		&pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_CREATE, Group: "g:team", Users: []string{"bob"}},
		&pimv1.GroupReq{Op: pimv1.GroupOp_GROUP_OP_REMOVE, Group: "g:team", Users: []string{"alice"}},
	}
	for i, m := range seeds {
		b, _ := proto.Marshal(m)
		f.Add(byte(i%4), b)
	}
	s := newTestService(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, kind byte, data []byte) {
		var err error
		switch kind % 4 {
		case 0:
			req := &pimv1.SendReq{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = s.Send(ctx, "alice", "fuzz", req)
		case 1:
			req := &pimv1.SyncReq{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = s.Sync(ctx, "alice", "fuzz", req)
		case 2:
			req := &pimv1.HistoryReq{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = s.History(ctx, "alice", req)
		case 3:
			req := &pimv1.GroupReq{}
			if proto.Unmarshal(data, req) != nil {
				return
			}
			_, err = s.Group(ctx, "alice", "fuzz", req)
		}
		if err != nil && errcode.Code(err) == pimv1.ErrorCode_ERROR_CODE_INTERNAL {
			t.Fatalf("INTERNAL error for kind %d: %v", kind%4, err)
		}
	})
}
