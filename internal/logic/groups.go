package logic

import (
	"context"
	"slices"

	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Group carries out a GroupReq for (user, device). Policy: any member may add
// members; the owner may remove anyone; other members may remove only
// themselves (leave); only the owner changes the settings. Membership changes are messages in the group's
// conversation, delivered through timelines like any other.
func (s *Service) Group(ctx context.Context, user, device string, req *pimv1.GroupReq) (*pimv1.GroupResp, error) {
	if req.Op != pimv1.GroupOp_GROUP_OP_MEMBERS && req.Op != pimv1.GroupOp_GROUP_OP_SETTINGS {
		if err := validUsers(req.Users); err != nil {
			return nil, err
		}
	}
	if len(req.ClientReqId) > MaxClientMsgID {
		return nil, errcode.New(badRequest, "client_req_id must be at most %d bytes", MaxClientMsgID)
	}
	switch req.Op {
	case pimv1.GroupOp_GROUP_OP_CREATE:
		return s.createGroup(ctx, user, device, req)
	case pimv1.GroupOp_GROUP_OP_ADD:
		return s.changeGroup(ctx, user, device, req, s.st.AddMembers)
	case pimv1.GroupOp_GROUP_OP_REMOVE:
		if err := s.mayRemove(ctx, user, req); err != nil {
			return nil, err
		}
		return s.changeGroup(ctx, user, device, req, s.st.RemoveMembers)
	case pimv1.GroupOp_GROUP_OP_MEMBERS:
		if err := validGroup(req.Group); err != nil {
			return nil, err
		}
		if _, err := s.member(ctx, req.Group, user); err != nil {
			return nil, err
		}
		return s.groupResp(ctx, req.Group, 0)
	case pimv1.GroupOp_GROUP_OP_SETTINGS:
		return s.groupSettings(ctx, user, req)
	}
	return nil, errcode.New(badRequest, "unknown group op %v", req.Op)
}

// groupSettings changes the settings req sets; the owner only.
func (s *Service) groupSettings(ctx context.Context, user string, req *pimv1.GroupReq) (*pimv1.GroupResp, error) {
	if err := validGroup(req.Group); err != nil {
		return nil, err
	}
	mem, err := s.member(ctx, req.Group, user)
	if err != nil {
		return nil, err
	}
	if mem.Role != "owner" {
		return nil, errcode.New(forbidden, "only the group owner can change its settings")
	}
	if req.ReceiptsVisible != nil {
		if err := s.st.SetGroupSettings(ctx, req.Group, store.GroupSettings{ReceiptsVisible: req.GetReceiptsVisible()}); err != nil {
			return nil, storeErr(err, "write group settings")
		}
	}
	return s.groupResp(ctx, req.Group, 0)
}

func (s *Service) createGroup(ctx context.Context, user, device string, req *pimv1.GroupReq) (*pimv1.GroupResp, error) {
	group := req.Group
	if group == "" {
		group = "g:" + s.ids.groupID()
	} else if err := validGroup(group); err != nil {
		return nil, err
	}
	users := withoutDup(append([]string{user}, req.Users...))
	if len(users) > s.maxGrp {
		return nil, errcode.New(pimv1.ErrorCode_ERROR_CODE_GROUP_TOO_LARGE,
			"%d members exceed the maximum group size %d", len(users), s.maxGrp)
	}
	now := s.now()
	res, err := s.st.CreateGroup(ctx, store.GroupChange{
		Group: group, Actor: user, Device: device, Users: users[1:], ClientMsgID: req.ClientReqId,
		MsgID: s.ids.next(now), ServerTime: now.UnixMilli(), MaxMembers: s.maxGrp,
	})
	if err != nil {
		return nil, storeErr(err, "create group")
	}
	s.publish(res)
	return s.groupResp(ctx, group, res.Message.GetSeq())
}

type changeFunc func(context.Context, store.GroupChange) (store.Result, error)

func (s *Service) changeGroup(ctx context.Context, user, device string, req *pimv1.GroupReq, change changeFunc) (*pimv1.GroupResp, error) {
	if err := validGroup(req.Group); err != nil {
		return nil, err
	}
	if len(req.Users) == 0 {
		return nil, errcode.New(badRequest, "no users given")
	}
	now := s.now()
	res, err := change(ctx, store.GroupChange{
		Group: req.Group, Actor: user, Device: device, Users: withoutDup(req.Users), ClientMsgID: req.ClientReqId,
		MsgID: s.ids.next(now), ServerTime: now.UnixMilli(), MaxMembers: s.maxGrp,
	})
	if err != nil {
		return nil, storeErr(err, "change group")
	}
	s.publish(res)
	// A user who just left can no longer list the members.
	if _, ok, _ := s.st.Membership(ctx, req.Group, user); !ok {
		return &pimv1.GroupResp{Group: req.Group, Seq: res.Message.GetSeq()}, nil
	}
	return s.groupResp(ctx, req.Group, res.Message.GetSeq())
}

func (s *Service) mayRemove(ctx context.Context, user string, req *pimv1.GroupReq) error {
	if err := validGroup(req.Group); err != nil {
		return err
	}
	mem, ok, err := s.st.Membership(ctx, req.Group, user)
	if err != nil {
		return storeErr(err, "read membership")
	}
	// A non-member is refused by the store, atomically, unless this is the
	// retry of a change it already made (e.g. leaving): let the store decide.
	if !ok || mem.Role == "owner" {
		return nil
	}
	for _, u := range req.Users {
		if u != user {
			return errcode.New(forbidden, "only the group owner can remove other members")
		}
	}
	return nil
}

func (s *Service) groupResp(ctx context.Context, group string, seq uint64) (*pimv1.GroupResp, error) {
	ms, err := s.st.Members(ctx, group)
	if err != nil {
		return nil, storeErr(err, "list members")
	}
	gs, err := s.st.GroupSettings(ctx, group)
	if err != nil {
		return nil, storeErr(err, "read group settings")
	}
	resp := &pimv1.GroupResp{Group: group, Seq: seq, Members: make([]*pimv1.Member, len(ms)), ReceiptsVisible: gs.ReceiptsVisible}
	for i, m := range ms {
		resp.Members[i] = &pimv1.Member{User: m.User, JoinSeq: m.JoinSeq, Role: m.Role}
	}
	return resp, nil
}

func validGroup(g string) error {
	if !store.IsGroup(g) || !store.ValidID(g[2:]) {
		return errcode.New(badRequest, "invalid group id %q: want g:<1-64 characters of A-Z a-z 0-9 . _ @ ->", g)
	}
	return nil
}

func validUsers(users []string) error {
	if len(users) > 10000 {
		return errcode.New(badRequest, "too many users in one request (%d)", len(users))
	}
	for _, u := range users {
		if !store.ValidID(u) {
			return errcode.New(badRequest, "invalid user id %q", u)
		}
	}
	return nil
}

func withoutDup(users []string) []string {
	out := make([]string, 0, len(users))
	for _, u := range users {
		if !slices.Contains(out, u) {
			out = append(out, u)
		}
	}
	return out
}
