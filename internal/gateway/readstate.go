// Requests of the read state: conversation lists, receipts, delete-for-me
// and settings. Writes among them (hide, settings) pass the same admission
// as sends; reads do not.
package gateway

import (
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// onReadState answers the read-state requests; ok is false for any other
// frame.
func (s *session) onReadState(id uint64, f *pimv1.Frame) (how endHow, closed, ok bool) {
	l := s.g.cfg.Logic
	var (
		op   string
		resp *pimv1.Frame
		err  error
	)
	switch b := f.Body.(type) {
	case *pimv1.Frame_ConvListReq:
		op = "conversations"
		var r *pimv1.ConvListResp
		if r, err = l.Conversations(s.ctx, s.user, b.ConvListReq); r != nil {
			resp = &pimv1.Frame{Body: &pimv1.Frame_ConvListResp{ConvListResp: r}}
		}
	case *pimv1.Frame_ReceiptsReq:
		op = "receipts"
		var r *pimv1.ReceiptsResp
		if r, err = l.Receipts(s.ctx, s.user, b.ReceiptsReq); r != nil {
			resp = &pimv1.Frame{Body: &pimv1.Frame_ReceiptsResp{ReceiptsResp: r}}
		}
	case *pimv1.Frame_HideReq, *pimv1.Frame_SettingsReq:
		begin, d := s.admitPipeline()
		if !d.OK {
			how, closed = s.refuseRequest(id, d)
			return how, closed, true
		}
		op, resp, err = s.readStateWrite(f)
		s.endSend(begin)
	default:
		return 0, false, false
	}
	if err == nil && resp == nil {
		err = errNilResult
	}
	if err != nil {
		how, closed = s.replyErr(id, op, err)
		return how, closed, true
	}
	resp.RequestId = id
	how, closed = s.reply(resp)
	return how, closed, true
}

func (s *session) readStateWrite(f *pimv1.Frame) (string, *pimv1.Frame, error) {
	l := s.g.cfg.Logic
	switch b := f.Body.(type) {
	case *pimv1.Frame_HideReq:
		r, err := l.Hide(s.ctx, s.user, s.device, b.HideReq)
		if r == nil {
			return "hide", nil, err
		}
		return "hide", &pimv1.Frame{Body: &pimv1.Frame_HideResp{HideResp: r}}, err
	case *pimv1.Frame_SettingsReq:
		r, err := l.Settings(s.ctx, s.user, b.SettingsReq)
		if r == nil {
			return "settings", nil, err
		}
		return "settings", &pimv1.Frame{Body: &pimv1.Frame_SettingsResp{SettingsResp: r}}, err
	}
	return "", nil, errNilResult
}
