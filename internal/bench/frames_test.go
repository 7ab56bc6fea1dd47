package bench

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// decodeOne reads the single length-prefixed frame in b with the generated code.
func decodeOne(t *testing.T, b []byte) *pimv1.Frame {
	t.Helper()
	r := wire.NewReader(bytes.NewReader(b), 0)
	f := new(pimv1.Frame)
	if err := r.ReadFrame(f); err != nil {
		t.Fatalf("generated decoder rejects the frame: %v", err)
	}
	return f
}

func TestEncodersMatchGeneratedCode(t *testing.T) {
	cases := []struct {
		name string
		got  []byte
		want *pimv1.Frame
	}{
		{"send to user", AppendSendFrame([]byte("prefix"), 7, &SendFields{ClientMsgID: "m1", ToUser: "bob", Type: 1, Body: []byte("hello"), ClientTime: 1700000000000})[6:],
			&pimv1.Frame{RequestId: 7, Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{ClientMsgId: "m1", ToUser: "bob",
				Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("hello"), ClientTime: 1700000000000}}}},
		{"send to conv, big body", AppendSendFrame(nil, 1<<40, &SendFields{ClientMsgID: "m2", Conv: "g:x", Type: 2, Body: bytes.Repeat([]byte{0xff}, 70000)}),
			&pimv1.Frame{RequestId: 1 << 40, Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{ClientMsgId: "m2", Conv: "g:x",
				Type: pimv1.MessageType_MESSAGE_TYPE_BINARY, Body: bytes.Repeat([]byte{0xff}, 70000)}}}},
		{"push ack", AppendPushAckFrame(nil, 123456), &pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{UserSeq: 123456}}}},
		{"push ack 0", AppendPushAckFrame(nil, 0), &pimv1.Frame{Body: &pimv1.Frame_PushAck{PushAck: &pimv1.PushAck{}}}},
		{"ping", AppendPingFrame(nil, 9, 42), &pimv1.Frame{RequestId: 9, Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{ClientTime: 42}}}},
		{"ping 0", AppendPingFrame(nil, 9, 0), &pimv1.Frame{RequestId: 9, Body: &pimv1.Frame_Ping{Ping: &pimv1.Ping{}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := decodeOne(t, c.got)
			if !proto.Equal(got, c.want) {
				t.Errorf("decoded %v, want %v", got, c.want)
			}
			// Byte for byte what the generated code produces (deterministic for these messages).
			want, err := wire.AppendFrame(nil, c.want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c.got, want) {
				t.Errorf("encoding differs from the generated code:\n got %x\nwant %x", c.got, want)
			}
		})
	}
}

func TestScanFrameAndPush(t *testing.T) {
	evs := []*pimv1.Event{
		{UserSeq: 5, Kind: &pimv1.Event_Message{Message: &pimv1.Message{Conv: "d:a:b", Seq: 3, MsgId: "x", Sender: "a",
			SenderDevice: "d", ClientMsgId: "m1", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT, Body: []byte("pb1 1 2 3 xx"),
			ClientTime: 1, ServerTime: 2, ClientSeq: 9, Members: []string{"q"}}}},
		{UserSeq: 6},
		{UserSeq: 7, Kind: &pimv1.Event_Message{Message: &pimv1.Message{Conv: "g:x", Seq: 1 << 33, Type: pimv1.MessageType_MESSAGE_TYPE_MEMBERS_ADDED}}},
	}
	f := &pimv1.Frame{RequestId: 0, Body: &pimv1.Frame_Push{Push: &pimv1.Push{Events: evs}}}
	b, err := proto.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	id, kind, body, err := ScanFrame(b)
	if err != nil || id != 0 || kind != fPush {
		t.Fatalf("ScanFrame = %d, %d, %v", id, kind, err)
	}
	var got []PushEvent
	if err := ScanPush(body, func(e *PushEvent) {
		c := *e
		c.Conv, c.Sender, c.Body = bytes.Clone(e.Conv), bytes.Clone(e.Sender), bytes.Clone(e.Body)
		got = append(got, c)
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(evs) {
		t.Fatalf("%d events, want %d", len(got), len(evs))
	}
	for i, e := range evs {
		m := e.GetMessage()
		g := got[i]
		if g.UserSeq != e.UserSeq || string(g.Conv) != m.GetConv() || g.Seq != m.GetSeq() || string(g.Sender) != m.GetSender() ||
			g.Type != int32(m.GetType()) || !bytes.Equal(g.Body, m.GetBody()) {
			t.Errorf("event %d: got %+v, want %v", i, g, e)
		}
	}

	ack := &pimv1.Frame{RequestId: 77, Body: &pimv1.Frame_SendAck{SendAck: &pimv1.SendAck{Seq: 4}}}
	b, _ = proto.Marshal(ack)
	if id, kind, _, err := ScanFrame(b); err != nil || id != 77 || kind != fSendAck {
		t.Errorf("SendAck: %d %d %v", id, kind, err)
	}
	for _, bad := range [][]byte{{0x08}, {0x7a, 0x05, 0x01}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		if _, _, _, err := ScanFrame(bad); err == nil {
			t.Errorf("ScanFrame(%x): no error", bad)
		}
	}
	if err := ScanPush([]byte{0x0a, 0x05, 0x08}, func(*PushEvent) {}); err == nil {
		t.Error("ScanPush of a truncated event: no error")
	}
	if err := ScanPush([]byte{0x0a, 0x02, 0x12, 0x05}, func(*PushEvent) {}); err == nil {
		t.Error("ScanPush of a truncated message: no error")
	}
}

func TestBody(t *testing.T) {
	cases := []struct {
		sender int
		n      uint64
		t      int64
		size   int
	}{
		{0, 0, 0, 0},
		{3, 12345, 1700000000123456789, 128},
		{999, 1 << 40, 1, 16},
	}
	for _, c := range cases {
		b := AppendBody([]byte("zz"), c.sender, c.n, c.t, c.size)[2:]
		if len(b) < c.size {
			t.Errorf("%+v: %d bytes, want >= %d", c, len(b), c.size)
		}
		if c.size > 40 && len(b) != c.size {
			t.Errorf("%+v: %d bytes, want exactly %d", c, len(b), c.size)
		}
		s, n, ts, ok := ParseBody(b)
		if !ok || s != c.sender || n != c.n || ts != c.t {
			t.Errorf("%+v: parsed %d %d %d %v", c, s, n, ts, ok)
		}
	}
	for _, bad := range []string{"", "pb1 ", "pb1 1 2 ", "pb1 1 2 3", "hello world", "pb1 a 2 3 ", "pb1 1  3 ", "pb1 99999999999999999999 1 1 "} {
		if _, _, _, ok := ParseBody([]byte(bad)); ok {
			t.Errorf("ParseBody(%q) accepted", bad)
		}
	}
	if got := string(ClientMsgID([]byte("x"), 42)); got != "xm42" {
		t.Errorf("ClientMsgID = %q", got)
	}
}
