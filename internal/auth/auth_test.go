package auth

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestIssueVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	k := NewForTest([]byte(strings.Repeat("k", 32)), "admin", clock)
	other := NewForTest([]byte(strings.Repeat("o", 32)), "admin", clock)
	tok, err := k.Issue("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := k.Verify(tok); err != nil || u != "alice" {
		t.Fatalf("Verify = %q, %v", u, err)
	}
	none := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "alice",
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))})
	noneTok, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	tests := []struct {
		name  string
		keys  *Keys
		token string
		want  error
	}{
		{"other key", other, tok, ErrInvalidToken},
		{"garbage", k, "not-a-token", ErrInvalidToken},
		{"alg none", k, noneTok, ErrInvalidToken},
		{"tampered", k, tok[:len(tok)-2] + "xx", ErrInvalidToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.keys.Verify(tc.token); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	now = now.Add(2 * time.Hour)
	if _, err := k.Verify(tok); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token: got %v", err)
	}
	if _, err := k.Issue("bad user", time.Hour); err == nil {
		t.Fatal("Issue accepted an invalid user id")
	}
}

func TestLoadOrCreatePersists(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil {
		t.Fatal("Load of an empty dir succeeded")
	}
	a, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := a.Issue("bob", time.Hour)
	b, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := b.Verify(tok); err != nil || u != "bob" {
		t.Fatalf("reloaded keys: Verify = %q, %v", u, err)
	}
	if !b.IsAdmin(a.AdminKey()) || b.IsAdmin("nope") {
		t.Fatal("admin key not persisted")
	}
}
