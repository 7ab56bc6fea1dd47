// Read-state calls: conversation list, receipts, delete-for-me, settings.

package client

import (
	"context"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Conversations reads a page of the user's conversation list.
func (c *Conn) Conversations(ctx context.Context, req *pimv1.ConvListReq) (*pimv1.ConvListResp, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_ConvListReq{ConvListReq: req}})
	if err != nil {
		return nil, err
	}
	if r := f.GetConvListResp(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "ConvListResp")
}

// Receipts reads who read one of the user's messages.
func (c *Conn) Receipts(ctx context.Context, req *pimv1.ReceiptsReq) (*pimv1.ReceiptsResp, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_ReceiptsReq{ReceiptsReq: req}})
	if err != nil {
		return nil, err
	}
	if r := f.GetReceiptsResp(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "ReceiptsResp")
}

// Hide deletes a message for the user only.
func (c *Conn) Hide(ctx context.Context, req *pimv1.HideReq) (*pimv1.HideResp, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_HideReq{HideReq: req}})
	if err != nil {
		return nil, err
	}
	if r := f.GetHideResp(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "HideResp")
}

// Settings reads (and, with a field set, changes) the user's settings.
func (c *Conn) Settings(ctx context.Context, req *pimv1.SettingsReq) (*pimv1.SettingsResp, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_SettingsReq{SettingsReq: req}})
	if err != nil {
		return nil, err
	}
	if r := f.GetSettingsResp(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "SettingsResp")
}
