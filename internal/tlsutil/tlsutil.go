// Package tlsutil builds the TLS configurations of PIM's listeners and
// clients: TLS 1.3 only, certificates from files or a self-signed one kept in
// the data directory, and client-side certificate pinning by SHA-256
// fingerprint (so a self-signed server can be trusted without a CA).
//
// Invariants:
//   - Every config this package returns has MinVersion TLS 1.3.
//   - A fingerprint is the lower-case hex SHA-256 of the DER certificate; pins
//     are compared in that normal form whatever way the user wrote them.
package tlsutil

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
)

// ServerConfig returns a server TLS config serving the certificate chain and
// key in the given PEM files.
func ServerConfig(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("tlsutil: both a certificate and a key file are needed")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: load key pair %s, %s: %w", certFile, keyFile, err)
	}
	return serverConfig(cert), nil
}

func serverConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
}

// Fingerprint returns the SHA-256 fingerprint of cert: the lower-case hex of
// the hash of its DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	return FingerprintDER(cert.Raw)
}

// FingerprintDER returns the SHA-256 fingerprint of a DER-encoded certificate.
func FingerprintDER(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// NormalizePin returns pin as a fingerprint in normal form. It accepts upper
// or lower case hex, with or without ':' separators (as openssl prints them)
// and an optional "sha256:" or "sha256/" prefix.
func NormalizePin(pin string) (string, error) {
	p := strings.TrimSpace(pin)
	lower := strings.ToLower(p)
	for _, prefix := range []string{"sha256:", "sha256/", "sha256="} {
		lower = strings.TrimPrefix(lower, prefix)
	}
	lower = strings.ReplaceAll(lower, ":", "")
	b, err := hex.DecodeString(lower)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("tlsutil: pin %q is not a SHA-256 fingerprint (64 hex digits)", pin)
	}
	return lower, nil
}
