// Package auth issues and verifies the tokens that bind a connection to a
// user, and holds the admin key of the HTTP API.
//
// Tokens are JWTs signed with HMAC-SHA256 (HS256) under a 256-bit key kept
// in the data directory (token.key, created on first start, mode 0600). The
// subject is the user id; every token has an expiry. Invariants: Verify
// accepts only HS256 tokens signed by this key, unexpired, whose subject is
// a valid user id; no other algorithm is ever accepted.
package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pim-project/pim/internal/store"
)

// File names inside the data directory.
const (
	TokenKeyFile = "token.key"
	AdminKeyFile = "admin.key"
)

var (
	// ErrInvalidToken: the token is malformed, badly signed or names an invalid user.
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrExpired: the token's expiry has passed.
	ErrExpired = errors.New("auth: token expired")
)

// Keys holds the token signing key and the admin key.
type Keys struct {
	signing []byte
	admin   string
	now     func() time.Time
}

// LoadOrCreate reads the keys from dir, creating any that are missing.
func LoadOrCreate(dir string) (*Keys, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("auth: create data dir: %w", err)
	}
	signing, err := loadOrCreateKey(filepath.Join(dir, TokenKeyFile))
	if err != nil {
		return nil, err
	}
	admin, err := loadOrCreateKey(filepath.Join(dir, AdminKeyFile))
	if err != nil {
		return nil, err
	}
	return &Keys{signing: signing, admin: hex.EncodeToString(admin), now: time.Now}, nil
}

// Load reads existing keys from dir; it fails if the server never ran there.
func Load(dir string) (*Keys, error) {
	signing, err := readKey(filepath.Join(dir, TokenKeyFile))
	if err != nil {
		return nil, err
	}
	admin, err := readKey(filepath.Join(dir, AdminKeyFile))
	if err != nil {
		return nil, err
	}
	return &Keys{signing: signing, admin: hex.EncodeToString(admin), now: time.Now}, nil
}

// NewForTest returns Keys with the given signing key and clock (tests only).
func NewForTest(signing []byte, admin string, now func() time.Time) *Keys {
	return &Keys{signing: signing, admin: admin, now: now}
}

func readKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("auth: read key (has `pim serve` run with this --data dir?): %w", err)
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) < 32 {
		return nil, fmt.Errorf("auth: %s is not a 64-hex-digit key", path)
	}
	return k, nil
}

func loadOrCreateKey(path string) ([]byte, error) {
	k, err := readKey(path)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	k = make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("auth: generate key: %w", err)
	}
	// O_EXCL: two processes starting at once must not overwrite each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return readKey(path)
		}
		return nil, fmt.Errorf("auth: create key: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(hex.EncodeToString(k) + "\n"); err != nil {
		return nil, fmt.Errorf("auth: write key: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("auth: sync key: %w", err)
	}
	return k, nil
}

// Issue returns a token for user valid for ttl.
func (k *Keys) Issue(user string, ttl time.Duration) (string, error) {
	if !store.ValidID(user) {
		return "", fmt.Errorf("auth: invalid user id %q: use 1-64 characters of A-Z a-z 0-9 . _ @ -", user)
	}
	if ttl <= 0 {
		return "", fmt.Errorf("auth: ttl must be positive, got %v", ttl)
	}
	now := k.now()
	claims := jwt.RegisteredClaims{
		Subject:   user,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(k.signing)
	if err != nil {
		return "", fmt.Errorf("auth: sign token: %w", err)
	}
	return s, nil
}

// Verify checks token and returns its user.
func (k *Keys) Verify(token string) (string, error) {
	var claims jwt.RegisteredClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return k.signing, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithTimeFunc(k.now))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", ErrExpired
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrInvalidToken, err)
	case !store.ValidID(claims.Subject):
		return "", fmt.Errorf("%w: bad subject", ErrInvalidToken)
	}
	return claims.Subject, nil
}

// AdminKey returns the admin key (hex) that HTTP admin calls present as a bearer token.
func (k *Keys) AdminKey() string { return k.admin }

// IsAdmin reports, in constant time, whether key is the admin key.
func (k *Keys) IsAdmin(key string) bool {
	return subtle.ConstantTimeCompare([]byte(key), []byte(k.admin)) == 1
}

// WithClock returns a copy of k that reads time from now (for tests and tools).
func (k *Keys) WithClock(now func() time.Time) *Keys {
	c := *k
	c.now = now
	return &c
}
