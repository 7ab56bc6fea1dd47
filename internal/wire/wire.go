// Package wire encodes and decodes PIM frames on a byte stream.
//
// A frame on a stream (TCP, TLS) is a 4-byte big-endian length followed by that
// many bytes of a protobuf-encoded pimv1.Frame. On WebSocket a binary message
// holds one protobuf Frame with no length prefix (use Marshal/Unmarshal).
//
// Invariants:
//   - A length above the reader's maximum is rejected before any body byte is
//     read or any buffer of that size is allocated (ErrFrameTooLarge).
//   - A zero-length frame is legal on the wire and decodes to an empty Frame;
//     callers reject a frame with no body as a protocol error.
//   - Decoding never panics on arbitrary input (fuzzed in wire_fuzz_test.go).
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	pimv1 "github.com/pim-project/pim/proto/pim/v1"
)

// DefaultMaxFrame is the default largest frame body, in bytes, either side accepts.
const DefaultMaxFrame = 1 << 20

// HeaderLen is the length of the stream frame header.
const HeaderLen = 4

var (
	// ErrFrameTooLarge reports a frame whose announced length exceeds the maximum.
	ErrFrameTooLarge = errors.New("wire: frame too large")
	// ErrMalformed reports bytes that do not decode as a Frame.
	ErrMalformed = errors.New("wire: malformed frame")
)

var (
	marshalOpts   = proto.MarshalOptions{}
	unmarshalOpts = proto.UnmarshalOptions{DiscardUnknown: false}
)

// AppendFrame appends f, length-prefixed, to dst.
func AppendFrame(dst []byte, f *pimv1.Frame) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst, err := marshalOpts.MarshalAppend(dst, f)
	if err != nil {
		return dst[:start], fmt.Errorf("wire: marshal frame: %w", err)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-HeaderLen))
	return dst, nil
}

// Marshal encodes f without a length prefix (the WebSocket form).
func Marshal(f *pimv1.Frame) ([]byte, error) {
	b, err := marshalOpts.Marshal(f)
	if err != nil {
		return nil, fmt.Errorf("wire: marshal frame: %w", err)
	}
	return b, nil
}

// Unmarshal decodes one frame body (no length prefix) into f.
func Unmarshal(b []byte, f *pimv1.Frame) error {
	if err := unmarshalOpts.Unmarshal(b, f); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// Reader reads length-prefixed frames from a stream. It is not safe for
// concurrent use; one goroutine owns it.
type Reader struct {
	r   io.Reader
	max int
	hdr [HeaderLen]byte
	buf []byte
}

// NewReader returns a Reader that rejects frames larger than max bytes
// (DefaultMaxFrame if max <= 0).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxFrame
	}
	return &Reader{r: r, max: max}
}

// ReadFrame reads the next frame into f (which is reset first). It returns
// io.EOF on a clean end of stream between frames, ErrFrameTooLarge or
// ErrMalformed (wrapped) for bad input, or the underlying read error.
func (r *Reader) ReadFrame(f *pimv1.Frame) error {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("wire: truncated header: %w", err)
		}
		return err
	}
	n := binary.BigEndian.Uint32(r.hdr[:])
	if uint64(n) > uint64(r.max) {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, r.max)
	}
	body := r.body(int(n))
	if _, err := io.ReadFull(r.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("wire: truncated frame body: %w", err)
	}
	proto.Reset(f)
	return Unmarshal(body, f)
}

// body returns a scratch buffer of n bytes. Small buffers are kept for reuse;
// a large one is dropped after use so an idle connection holds little memory.
func (r *Reader) body(n int) []byte {
	const keep = 512
	if n <= keep {
		if r.buf == nil {
			r.buf = make([]byte, keep)
		}
		return r.buf[:n]
	}
	return make([]byte, n)
}
