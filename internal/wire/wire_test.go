package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

func TestRoundTrip(t *testing.T) {
	frames := []*pimv1.Frame{
		{RequestId: 1, Body: &pimv1.Frame_Hello{Hello: &pimv1.Hello{Token: "t", DeviceId: "d", ProtocolVersion: 1}}},
		{RequestId: 2, Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{ClientMsgId: "c1", ToUser: "bob", Body: bytes.Repeat([]byte("x"), 4000)}}},
		{Body: &pimv1.Frame_Push{Push: &pimv1.Push{Events: []*pimv1.Event{{UserSeq: 7}}}}},
		{},
	}
	var buf []byte
	for _, f := range frames {
		var err error
		if buf, err = AppendFrame(buf, f); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(bytes.NewReader(buf), 0)
	for i, want := range frames {
		got := &pimv1.Frame{}
		if err := r.ReadFrame(got); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("frame %d: got %v want %v", i, got, want)
		}
	}
	if err := r.ReadFrame(&pimv1.Frame{}); err != io.EOF {
		t.Fatalf("after last frame: got %v, want io.EOF", err)
	}
}

func TestReadErrors(t *testing.T) {
	big := make([]byte, 4)
	binary.BigEndian.PutUint32(big, 1<<30)
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"too large", big, ErrFrameTooLarge},
		{"malformed", []byte{0, 0, 0, 2, 0xff, 0xff}, ErrMalformed},
		{"truncated body", []byte{0, 0, 0, 5, 1}, io.ErrUnexpectedEOF},
		{"truncated header", []byte{0, 0}, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := NewReader(bytes.NewReader(tc.in), 1024).ReadFrame(&pimv1.Frame{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func BenchmarkAppendFrame(b *testing.B) {
	f := &pimv1.Frame{RequestId: 9, Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
		ClientMsgId: "0123456789abcdef", ToUser: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT,
		Body: bytes.Repeat([]byte("x"), 128), ClientTime: 1700000000000}}}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = AppendFrame(buf[:0], f)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkReadFrame(b *testing.B) {
	f := &pimv1.Frame{RequestId: 9, Body: &pimv1.Frame_SendReq{SendReq: &pimv1.SendReq{
		ClientMsgId: "0123456789abcdef", ToUser: "bob", Type: pimv1.MessageType_MESSAGE_TYPE_TEXT,
		Body: bytes.Repeat([]byte("x"), 128), ClientTime: 1700000000000}}}
	one, _ := AppendFrame(nil, f)
	rd := bytes.NewReader(one)
	r := NewReader(rd, 0)
	got := &pimv1.Frame{}
	b.ReportAllocs()
	b.SetBytes(int64(len(one)))
	for b.Loop() {
		rd.Reset(one)
		if err := r.ReadFrame(got); err != nil {
			b.Fatal(err)
		}
	}
}
