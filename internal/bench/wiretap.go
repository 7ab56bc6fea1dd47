package bench

// A wire tap for `pim bench wire`: it sees the bytes a faultproxy forwards
// (faultproxy.Tap) and counts them per direction: bytes, chunks (reads: on
// loopback about one TCP segment each), and the units they carry: PIM
// frames (a 4-byte length and a protobuf Frame; by frame type) on plaintext
// TCP, TLS records (a 5-byte header; by content type) on TLS.
//
// Invariants:
//   - Each (connection, direction) stream is split into units in order,
//     whatever the chunking: a unit is counted once it is complete, a
//     partial one waits for the rest. A stream that does not parse (a
//     length past the maximum) stops being split, and its bytes are still
//     counted; bad reports it.
//   - Everything is under mu: the proxy calls the tap from one goroutine per
//     connection and direction; snap copies the totals.

import (
	"encoding/binary"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pim-project/pim/internal/wire"
	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// WireCount is what went one way.
type WireCount struct {
	Bytes  int64 `json:"bytes"`
	Chunks int64 `json:"segments"` // reads by the proxy: about one TCP segment each on loopback
	Units  int64 `json:"units"`    // frames (plaintext) or TLS records
}

func (c WireCount) sub(o WireCount) WireCount {
	return WireCount{c.Bytes - o.Bytes, c.Chunks - o.Chunks, c.Units - o.Units}
}

// unitKind is a unit's kind in one direction: a frame type ("send_req") or
// a TLS content type ("application_data").
type unitKind struct {
	up   bool
	kind string
}

// tapSnap is a copy of a tap's totals.
type tapSnap struct {
	up, down WireCount
	kinds    map[unitKind]WireCount // Units and Bytes per kind
}

func (s tapSnap) sub(o tapSnap) tapSnap {
	d := tapSnap{up: s.up.sub(o.up), down: s.down.sub(o.down), kinds: make(map[unitKind]WireCount)}
	for k, v := range s.kinds {
		if dv := v.sub(o.kinds[k]); dv.Units != 0 || dv.Bytes != 0 {
			d.kinds[k] = dv
		}
	}
	return d
}

type tapStream struct {
	buf    []byte
	broken bool
}

type wireTap struct {
	tls bool

	mu      sync.Mutex
	streams map[int]*[2]tapStream // by connection: [down, up]
	tot     tapSnap
	bad     int
}

func newWireTap(tls bool) *wireTap {
	return &wireTap{tls: tls, streams: make(map[int]*[2]tapStream), tot: tapSnap{kinds: make(map[unitKind]WireCount)}}
}

// tap is the faultproxy.Tap.
func (w *wireTap) tap(conn int, up bool, b []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := &w.tot.down
	dir := 0
	if up {
		c, dir = &w.tot.up, 1
	}
	c.Bytes += int64(len(b))
	c.Chunks++
	ss := w.streams[conn]
	if ss == nil {
		ss = new([2]tapStream)
		w.streams[conn] = ss
	}
	st := &ss[dir]
	if st.broken {
		return
	}
	st.buf = append(st.buf, b...)
	for {
		kind, n, ok := w.unit(st.buf)
		if n < 0 {
			st.broken, st.buf = true, nil
			w.bad++
			return
		}
		if !ok {
			break
		}
		c.Units++
		k := unitKind{up, kind}
		kc := w.tot.kinds[k]
		kc.Units++
		kc.Bytes += int64(n)
		w.tot.kinds[k] = kc
		st.buf = st.buf[n:]
	}
	if len(st.buf) == 0 {
		st.buf = nil // do not pin a big chunk
	}
}

// unit parses the first unit of b: its kind and length; ok false if it is
// not complete yet; n < 0 if b does not parse.
func (w *wireTap) unit(b []byte) (kind string, n int, ok bool) {
	if w.tls {
		if len(b) < 5 {
			return "", 0, false
		}
		l := int(binary.BigEndian.Uint16(b[3:5]))
		if l > 1<<14+256 {
			return "", -1, false
		}
		if len(b) < 5+l {
			return "", 0, false
		}
		return tlsContentType(b[0]), 5 + l, true
	}
	if len(b) < wire.HeaderLen {
		return "", 0, false
	}
	l := int(binary.BigEndian.Uint32(b))
	if l > wire.DefaultMaxFrame {
		return "", -1, false
	}
	if len(b) < wire.HeaderLen+l {
		return "", 0, false
	}
	_, num, _, err := ScanFrame(b[wire.HeaderLen : wire.HeaderLen+l])
	if err != nil {
		return "", -1, false
	}
	return frameKind(num), wire.HeaderLen + l, true
}

func (w *wireTap) snap() tapSnap {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.tot
	s.kinds = make(map[unitKind]WireCount, len(w.tot.kinds))
	for k, v := range w.tot.kinds {
		s.kinds[k] = v
	}
	return s
}

func (w *wireTap) broken() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bad
}

var frameFields = (&pimv1.Frame{}).ProtoReflect().Descriptor().Fields()

// frameKind names a Frame's body by its field ("send_req", "push", ...).
func frameKind(num protowire.Number) string {
	if num == 0 {
		return "empty"
	}
	if f := frameFields.ByNumber(protoreflect.FieldNumber(num)); f != nil {
		return string(f.Name())
	}
	return "unknown"
}

func tlsContentType(t byte) string {
	switch t {
	case 20:
		return "change_cipher_spec"
	case 21:
		return "alert"
	case 22:
		return "handshake"
	case 23:
		return "application_data"
	}
	return "unknown"
}
