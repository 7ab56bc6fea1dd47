package client

// Requests. Invariant: a request is registered as pending before its frame
// is written, so its answer can never arrive unmatched; a request that is
// abandoned (context done) is unregistered and its late answer dropped.

import (
	"context"
	"fmt"
	"time"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// Call sends f as a request with a fresh request_id (overwriting f's) and
// waits for the frame that answers it. A server Error for it is returned as
// an *errcode.Error. Use it for requests the typed methods do not cover.
func (c *Conn) Call(ctx context.Context, f *pimv1.Frame) (*pimv1.Frame, error) {
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()

	f.RequestId = id
	if err := c.write(ctx, f); err != nil {
		c.forget(id)
		return nil, err
	}
	select {
	case r := <-ch:
		return r.f, r.err
	case <-ctx.Done():
		c.forget(id)
		return nil, ctx.Err()
	}
}

func (c *Conn) forget(id uint64) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// Read marks a conversation read up to a seq and returns the read position.
func (c *Conn) Read(ctx context.Context, req *pimv1.ReadReq) (*pimv1.ReadResp, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_ReadReq{ReadReq: req}})
	if err != nil {
		return nil, err
	}
	if r := f.GetReadResp(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "ReadResp")
}

// Send sends a message and returns its SendAck.
func (c *Conn) Send(ctx context.Context, req *pimv1.SendReq) (*pimv1.SendAck, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_SendReq{SendReq: req}})
	if err != nil {
		return nil, err
	}
	if r := f.GetSendAck(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "SendAck")
}

// Sync pulls a page of the timeline (and acknowledges req.AfterUserSeq).
func (c *Conn) Sync(ctx context.Context, req *pimv1.SyncReq) (*pimv1.SyncResp, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_SyncReq{SyncReq: req}})
	if err != nil {
		return nil, err
	}
	if r := f.GetSyncResp(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "SyncResp")
}

// History reads a page of a conversation.
func (c *Conn) History(ctx context.Context, req *pimv1.HistoryReq) (*pimv1.HistoryResp, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_HistoryReq{HistoryReq: req}})
	if err != nil {
		return nil, err
	}
	if r := f.GetHistoryResp(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "HistoryResp")
}

// Group carries out a group operation.
func (c *Conn) Group(ctx context.Context, req *pimv1.GroupReq) (*pimv1.GroupResp, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_GroupReq{GroupReq: req}})
	if err != nil {
		return nil, err
	}
	if r := f.GetGroupResp(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "GroupResp")
}

// Ping sends a Ping carrying the local clock and returns the Pong.
func (c *Conn) Ping(ctx context.Context) (*pimv1.Pong, error) {
	f, err := c.Call(ctx, &pimv1.Frame{Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{ClientTime: time.Now().UnixMilli()}}})
	if err != nil {
		return nil, err
	}
	if r := f.GetPong(); r != nil {
		return r, nil
	}
	return nil, unexpected(f, "Pong")
}

// PushAck acknowledges every pushed event up to userSeq for this device. It
// has no response; it returns once the frame is written.
func (c *Conn) PushAck(userSeq uint64) error {
	return c.WriteFrame(&pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: userSeq}}})
}

// WriteFrame writes f as it is (request_id included, nothing awaited). A
// response the server sends to it is dropped unless it is a fatal Error.
func (c *Conn) WriteFrame(f *pimv1.Frame) error {
	return c.write(context.Background(), f)
}

// WriteRaw writes b to the connection as it is: raw stream bytes on TCP, or
// one binary message on WebSocket. For tests of malformed input.
func (c *Conn) WriteRaw(b []byte) error {
	return c.writeBytes(context.Background(), b)
}

func (c *Conn) write(ctx context.Context, f *pimv1.Frame) error {
	b, err := c.t.encode(f)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return c.writeBytes(ctx, b)
}

// writeBytes writes one encoded frame. A failed write ends the connection: the
// frame may be half written, so the stream cannot be trusted any more.
func (c *Conn) writeBytes(ctx context.Context, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err // nothing written, the connection stays up
	}
	if err := c.t.write(ctx, b); err != nil {
		c.fail(fmt.Errorf("client: write: %w", err))
		if ctx.Err() != nil {
			return fmt.Errorf("client: write interrupted, connection closed: %w", ctx.Err())
		}
		return c.Err()
	}
	return nil
}

func unexpected(f *pimv1.Frame, want string) error {
	return fmt.Errorf("client: expected %s in response, got %s", want, bodyName(f))
}
