package wire

import (
	"bytes"
	"testing"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// FuzzReadFrame feeds arbitrary bytes to the stream decoder: it must never
// panic, never accept a frame above the limit, and whatever it accepts must
// re-encode and decode to an equal frame.
func FuzzReadFrame(f *testing.F) {
	seed, _ := AppendFrame(nil, &pimv1.Frame{RequestId: 1, Body: &pimv1.Frame_Hello{Hello: &pimv1.Hello{Token: "x", DeviceId: "d"}}})
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), 4096)
		for i := 0; i < 8; i++ {
			fr := &pimv1.Frame{}
			if err := r.ReadFrame(fr); err != nil {
				return
			}
			b, err := AppendFrame(nil, fr)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if err := NewReader(bytes.NewReader(b), 1<<20).ReadFrame(&pimv1.Frame{}); err != nil {
				t.Fatalf("decode of re-encoded frame: %v", err)
			}
		}
	})
}
