package bench

// Hand-written encoders and scanners for the frames on the hot path of a
// benchmark (SendReq, PushAck, Ping out; SendAck and Push in), so that the
// load generator does not spend the shared CPU on reflection and garbage.
// They produce and accept exactly the proto3 encoding of proto/pim/v1
// (checked against the generated code in frames_test.go); anything else is
// decoded with the generated code.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/pim-project/pim/internal/wire"
)

// Field numbers of pim.v1.Frame's body.
const (
	fRequestID = 1
	fHello     = 10
	fWelcome   = 11
	fError     = 12
	fSendReq   = 13
	fSendAck   = 14
	fPush      = 15
	fPushAck   = 16
	fPing      = 21
	fPong      = 22
	fGoAway    = 23
)

var errShort = errors.New("bench: truncated protobuf")

// SendFields is a SendReq.
type SendFields struct {
	ClientMsgID string
	Conv        string
	ToUser      string
	Type        int32
	Body        []byte
	ClientTime  int64
}

// AppendSendFrame appends a length-prefixed Frame{request_id, send_req}.
func AppendSendFrame(dst []byte, reqID uint64, s *SendFields) []byte {
	inner := 0
	str := func(n int) int { return 1 + protowire.SizeBytes(n) }
	if s.ClientMsgID != "" {
		inner += str(len(s.ClientMsgID))
	}
	if s.Conv != "" {
		inner += str(len(s.Conv))
	}
	if s.ToUser != "" {
		inner += str(len(s.ToUser))
	}
	if s.Type != 0 {
		inner += 1 + protowire.SizeVarint(uint64(s.Type))
	}
	if len(s.Body) > 0 {
		inner += str(len(s.Body))
	}
	if s.ClientTime != 0 {
		inner += 1 + protowire.SizeVarint(uint64(s.ClientTime))
	}
	dst, at := beginFrame(dst, reqID)
	dst = protowire.AppendTag(dst, fSendReq, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(inner))
	if s.ClientMsgID != "" {
		dst = protowire.AppendTag(dst, 1, protowire.BytesType)
		dst = protowire.AppendString(dst, s.ClientMsgID)
	}
	if s.Conv != "" {
		dst = protowire.AppendTag(dst, 2, protowire.BytesType)
		dst = protowire.AppendString(dst, s.Conv)
	}
	if s.ToUser != "" {
		dst = protowire.AppendTag(dst, 3, protowire.BytesType)
		dst = protowire.AppendString(dst, s.ToUser)
	}
	if s.Type != 0 {
		dst = protowire.AppendTag(dst, 4, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(s.Type))
	}
	if len(s.Body) > 0 {
		dst = protowire.AppendTag(dst, 5, protowire.BytesType)
		dst = protowire.AppendBytes(dst, s.Body)
	}
	if s.ClientTime != 0 {
		dst = protowire.AppendTag(dst, 6, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(s.ClientTime))
	}
	return endFrame(dst, at)
}

// AppendPushAckFrame appends a length-prefixed Frame{push_ack{user_seq}}.
func AppendPushAckFrame(dst []byte, userSeq uint64) []byte {
	dst, at := beginFrame(dst, 0)
	dst = protowire.AppendTag(dst, fPushAck, protowire.BytesType)
	if userSeq == 0 {
		dst = protowire.AppendVarint(dst, 0)
	} else {
		dst = protowire.AppendVarint(dst, uint64(1+protowire.SizeVarint(userSeq)))
		dst = protowire.AppendTag(dst, 1, protowire.VarintType)
		dst = protowire.AppendVarint(dst, userSeq)
	}
	return endFrame(dst, at)
}

// AppendPingFrame appends a length-prefixed Frame{request_id, ping{client_time}}.
func AppendPingFrame(dst []byte, reqID uint64, clientTime int64) []byte {
	dst, at := beginFrame(dst, reqID)
	dst = protowire.AppendTag(dst, fPing, protowire.BytesType)
	if clientTime == 0 {
		dst = protowire.AppendVarint(dst, 0)
	} else {
		dst = protowire.AppendVarint(dst, uint64(1+protowire.SizeVarint(uint64(clientTime))))
		dst = protowire.AppendTag(dst, 1, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(clientTime))
	}
	return endFrame(dst, at)
}

// beginFrame reserves the length prefix and writes the request id.
func beginFrame(dst []byte, reqID uint64) ([]byte, int) {
	at := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	if reqID != 0 {
		dst = protowire.AppendTag(dst, fRequestID, protowire.VarintType)
		dst = protowire.AppendVarint(dst, reqID)
	}
	return dst, at
}

func endFrame(dst []byte, at int) []byte {
	binary.BigEndian.PutUint32(dst[at:], uint32(len(dst)-at-wire.HeaderLen))
	return dst
}

// ScanFrame reads a Frame's envelope: the request id, the field number of the
// body (0 for none) and the body's bytes (aliasing b).
func ScanFrame(b []byte) (reqID uint64, kind protowire.Number, body []byte, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, 0, nil, errShort
		}
		b = b[n:]
		switch {
		case num == fRequestID && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, 0, nil, errShort
			}
			reqID, b = v, b[n:]
		case typ == protowire.BytesType && num >= fHello:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, 0, nil, errShort
			}
			kind, body, b = num, v, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return 0, 0, nil, errShort
			}
			b = b[n:]
		}
	}
	return reqID, kind, body, nil
}

// PushEvent is the part of a pushed Event a benchmark looks at. The slices
// alias the frame being scanned.
type PushEvent struct {
	UserSeq uint64
	// Message is set when the event is a message (the fields below are
	// its); other events (read-syncs, receipts, ...) carry only UserSeq.
	Message bool
	Conv    []byte
	Seq     uint64
	Sender  []byte
	Type    int32
	Body    []byte
}

// ScanPush calls fn for each Event of a Push body, in order.
func ScanPush(b []byte, fn func(*PushEvent)) error {
	var ev PushEvent
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errShort
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return errShort
			}
			b = b[n:]
			continue
		}
		evb, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return errShort
		}
		b = b[n:]
		ev = PushEvent{}
		if err := scanEvent(evb, &ev); err != nil {
			return err
		}
		fn(&ev)
	}
	return nil
}

func scanEvent(b []byte, ev *PushEvent) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errShort
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errShort
			}
			ev.UserSeq, b = v, b[n:]
		case num == 2 && typ == protowire.BytesType:
			m, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errShort
			}
			b = b[n:]
			ev.Message = true
			if err := scanMessage(m, ev); err != nil {
				return err
			}
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return errShort
			}
			b = b[n:]
		}
	}
	return nil
}

func scanMessage(b []byte, ev *PushEvent) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errShort
		}
		b = b[n:]
		switch typ {
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errShort
			}
			b = b[n:]
			switch num {
			case 2:
				ev.Seq = v
			case 7:
				ev.Type = int32(v)
			}
		case protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errShort
			}
			b = b[n:]
			switch num {
			case 1:
				ev.Conv = v
			case 4:
				ev.Sender = v
			case 8:
				ev.Body = v
			}
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return errShort
			}
			b = b[n:]
		}
	}
	return nil
}

// Benchmark message bodies: "pb1 <sender> <n> <unix nanos> " padded with 'x'
// to the requested size. They are valid UTF-8 (sent as TEXT), carry what the
// receiver needs to check order and measure latency, and nothing else.
const bodyMagic = "pb1 "

// AppendBody appends a benchmark body of at least size bytes.
func AppendBody(dst []byte, sender int, n uint64, sentNanos int64, size int) []byte {
	start := len(dst)
	dst = append(dst, bodyMagic...)
	dst = strconv.AppendInt(dst, int64(sender), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, n, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, sentNanos, 10)
	dst = append(dst, ' ')
	for len(dst)-start < size {
		dst = append(dst, 'x')
	}
	return dst
}

// ParseBody reads a benchmark body; ok is false for anything else.
func ParseBody(b []byte) (sender int, n uint64, sentNanos int64, ok bool) {
	if len(b) < len(bodyMagic) || string(b[:len(bodyMagic)]) != bodyMagic {
		return 0, 0, 0, false
	}
	b = b[len(bodyMagic):]
	next := func() (uint64, bool) {
		var v uint64
		i := 0
		for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
			if i >= 19 {
				return 0, false
			}
			v = v*10 + uint64(b[i]-'0')
		}
		if i == 0 || i >= len(b) || b[i] != ' ' {
			return 0, false
		}
		b = b[i+1:]
		return v, true
	}
	s, ok1 := next()
	num, ok2 := next()
	t, ok3 := next()
	if !ok1 || !ok2 || !ok3 || s > 1<<30 {
		return 0, 0, 0, false
	}
	return int(s), num, int64(t), true
}

// ClientMsgID is the client_msg_id of message n of a sender's device.
func ClientMsgID(dst []byte, n uint64) []byte {
	dst = append(dst, 'm')
	return strconv.AppendUint(dst, n, 10)
}

// frameErr wraps a scan error with the frame kind.
func frameErr(kind string, err error) error { return fmt.Errorf("bench: %s frame: %w", kind, err) }
