// FuzzSession feeds arbitrary bytes, after a valid Hello, into a session over
// net.Pipe with the fake logic.
//
// Invariants checked: no panic in any session goroutine (the gateway's panic
// hook fails the test), the session answers or ends on any input, and it has
// ended (with all its goroutines) once the client closes; the pushed events
// it sent are in strictly increasing user-seq order (an ack beyond the
// stream lets it skip ahead, so gaps are legal here; gap-freedom is tested
// in push_test.go).
package gateway

import (
	"testing"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func FuzzSession(f *testing.F) {
	frame := func(fr *pimv1.Frame) []byte {
		b, err := protoAppend(fr)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(frame(&pimv1.Frame{RequestId: 1, Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{ClientTime: 1}}}))
	f.Add(append(frame(&pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: 2}}}),
		frame(&pimv1.Frame{RequestId: 2, Body: &pimv1.Frame_SyncReq{SyncReq: &pimv1.SyncReq{AfterUserSeq: 1}}})...))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, data []byte) {
		g, l, _ := newTestGateway(t, func(c *Config) { c.MaxFrame = 4096; c.PushWindow = 4 })
		for i := 0; i < 6; i++ {
			l.appendEvent("alice", "bob", "backlog")
		}
		c, done := pipeSession(t, g)
		c.login("alice", "d1")
		// The write returns when the server has read everything, or fails
		// when it closed the connection first (a fatal error).
		_ = c.writeRaw(data)
		c.conn.Close()
		waitDone(t, done)
		var last uint64
		for f := range c.in {
			for _, ev := range f.GetPush().GetEvents() {
				if ev.UserSeq <= last {
					t.Fatalf("push stream out of order: %d after %d", ev.UserSeq, last)
				}
				last = ev.UserSeq
			}
		}
	})
}
