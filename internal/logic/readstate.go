// Read state: conversation lists, receipts, delete-for-me and settings.
//
// Invariants:
//   - Every call acts for the authenticated user only: a user reads their
//     own list and settings, hides messages for themselves, and reads the
//     receipts of messages they sent (admins use the Admin* calls).
//   - Writes (Hide, Settings, delivered receipts) are idempotent, so a
//     client may replay them (offline commands).
package logic

import (
	"context"
	"slices"

	"github.com/pim-project/pim/internal/errcode"
	"github.com/pim-project/pim/internal/store"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Page sizes of the conversation list and of receipt readers.
const (
	DefaultConvPage    = 100
	MaxConvPage        = 1000
	DefaultReadersPage = 100
	MaxReadersPage     = 1000
)

// Conversations answers a ConvListReq for user.
func (s *Service) Conversations(ctx context.Context, user string, req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
	limit := clamp(int(req.Limit), DefaultConvPage, MaxConvPage)
	convs, more, version, err := s.st.Conversations(ctx, user, store.ConvQuery{
		SinceVersion: req.SinceVersion, BeforeActivity: req.BeforeActivity, Limit: limit})
	if err != nil {
		return nil, storeErr(err, "read conversations")
	}
	s.m.convEntries.Add(float64(len(convs)))
	return &pimv1.ConvListResp{Convs: convs, HasMore: more, Version: version}, nil
}

// Receipts answers a ReceiptsReq from user: the message's sender may ask
// (and any member, in a group whose settings make receipts visible), only
// with read receipts on.
func (s *Service) Receipts(ctx context.Context, user string, req *pimv1.ReceiptsReq) (*pimv1.ReceiptsResp, error) {
	if err := store.ValidateConv(req.Conv); err != nil {
		return nil, errcode.New(badRequest, "%v", err)
	}
	if _, err := s.member(ctx, req.Conv, user); err != nil {
		return nil, err
	}
	msgs, _, err := s.st.History(ctx, req.Conv, req.Seq, req.Seq+1, 1)
	if err != nil {
		return nil, storeErr(err, "read message")
	}
	if req.Seq == 0 || len(msgs) == 0 {
		return nil, errcode.New(pimv1.ErrorCode_ERROR_CODE_NOT_FOUND, "no message %s/%d", req.Conv, req.Seq)
	}
	if msgs[0].Sender != user {
		visible := false
		if store.IsGroup(req.Conv) {
			gs, err := s.st.GroupSettings(ctx, req.Conv)
			if err != nil {
				return nil, storeErr(err, "read group settings")
			}
			visible = gs.ReceiptsVisible
		}
		if !visible {
			return nil, errcode.New(forbidden, "only the sender of %s/%d may read its receipts (the group's owner can make them visible to members)", req.Conv, req.Seq)
		}
	}
	on, err := s.st.ReadReceipts(ctx, user)
	if err != nil {
		return nil, storeErr(err, "read settings")
	}
	if !on {
		return nil, errcode.New(forbidden, "read receipts are off for you: turn them on to see others'")
	}
	return s.AdminReceipts(ctx, req)
}

// AdminReceipts answers a ReceiptsReq without the sender check (the HTTP
// API's admin callers).
func (s *Service) AdminReceipts(ctx context.Context, req *pimv1.ReceiptsReq) (*pimv1.ReceiptsResp, error) {
	if err := store.ValidateConv(req.Conv); err != nil {
		return nil, errcode.New(badRequest, "%v", err)
	}
	if req.AfterUser != "" && !store.ValidID(req.AfterUser) {
		return nil, errcode.New(badRequest, "invalid after_user %q", req.AfterUser)
	}
	limit := clamp(int(req.Limit), DefaultReadersPage, MaxReadersPage)
	n, readers, more, err := s.st.Receipts(ctx, req.Conv, req.Seq, req.AfterUser, limit)
	if err != nil {
		return nil, storeErr(err, "read receipts")
	}
	return &pimv1.ReceiptsResp{Conv: req.Conv, Seq: req.Seq, ReadCount: uint32(n), Readers: readers, HasMore: more}, nil
}

// Hide deletes req.Conv/req.Seq for user only and tells their devices.
func (s *Service) Hide(ctx context.Context, user, device string, req *pimv1.HideReq) (*pimv1.HideResp, error) {
	if err := store.ValidateConv(req.Conv); err != nil {
		return nil, errcode.New(badRequest, "%v", err)
	}
	res, err := s.st.Hide(ctx, user, device, req.Conv, req.Seq)
	if err != nil {
		return nil, storeErr(err, "hide")
	}
	s.publish(res)
	return &pimv1.HideResp{Conv: req.Conv, Seq: req.Seq}, nil
}

// Settings reads and, if req sets a field, changes user's settings.
func (s *Service) Settings(ctx context.Context, user string, req *pimv1.SettingsReq) (*pimv1.SettingsResp, error) {
	if req.ReadReceipts != nil {
		if err := s.st.SetReadReceipts(ctx, user, req.GetReadReceipts()); err != nil {
			return nil, storeErr(err, "write settings")
		}
	}
	on, err := s.st.ReadReceipts(ctx, user)
	if err != nil {
		return nil, storeErr(err, "read settings")
	}
	return &pimv1.SettingsResp{ReadReceipts: on}, nil
}

// delivered turns an acknowledged timeline position into delivered
// receipts for the peers of user's 1:1 conversations. A failure only delays
// them to the next ack.
func (s *Service) delivered(ctx context.Context, user string, upTo uint64) {
	res, err := s.st.MarkDelivered(ctx, user, upTo)
	if err != nil {
		s.log.Debug("delivered receipts", "user", user, "err", err)
		return
	}
	s.publish(res)
}

// withoutHidden drops the messages user hid from msgs (ascending).
func (s *Service) withoutHidden(ctx context.Context, user, conv string, msgs []*pimv1.Message) ([]*pimv1.Message, error) {
	if len(msgs) == 0 {
		return msgs, nil
	}
	hidden, err := s.st.HiddenIn(ctx, user, conv, msgs[0].Seq, msgs[len(msgs)-1].Seq+1)
	if err != nil || len(hidden) == 0 {
		return msgs, err
	}
	return slices.DeleteFunc(msgs, func(m *pimv1.Message) bool {
		_, found := slices.BinarySearch(hidden, m.Seq)
		return found
	}), nil
}
