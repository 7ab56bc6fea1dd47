package logic

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	mrand "math/rand/v2"
	"sync"
	"time"
)

// idGen makes message ids: 48 bits of Unix milliseconds then 80 random bits,
// in lower-case base32hex, so ids sort by creation time (roughly: clocks
// cannot be trusted, the conversation seq is the order) and never collide.
type idGen struct {
	mu  sync.Mutex
	rng *mrand.ChaCha8
}

var idEncoding = base32.HexEncoding.WithPadding(base32.NoPadding)

func newIDGen() *idGen {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	return &idGen{rng: mrand.NewChaCha8(seed)}
}

func (g *idGen) next(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	g.mu.Lock()
	r1, r2 := g.rng.Uint64(), g.rng.Uint64()
	g.mu.Unlock()
	binary.BigEndian.PutUint16(b[6:8], uint16(r1))
	binary.BigEndian.PutUint64(b[8:], r2)
	return toLower(idEncoding.EncodeToString(b[:]))
}

// groupID returns a random 16-character group id suffix.
func (g *idGen) groupID() string {
	var b [10]byte
	g.mu.Lock()
	binary.BigEndian.PutUint64(b[:8], g.rng.Uint64())
	binary.BigEndian.PutUint16(b[8:], uint16(g.rng.Uint64()))
	g.mu.Unlock()
	return toLower(idEncoding.EncodeToString(b[:]))
}

func toLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
