package tlsutil

// ClientConfig's invariant: exactly one trust mode is in force. With a pin,
// a handshake succeeds only if the server's leaf certificate hashes to the pin
// (and, with a CA file too, also chains to that CA for serverName); chain
// verification against the system roots is skipped only because the pin
// check replaces it. InsecureSkipVerify without a pin is set only when the
// caller explicitly asked for it.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ErrPinMismatch reports a server certificate that does not match the pin.
var ErrPinMismatch = errors.New("tlsutil: server certificate does not match the pinned fingerprint")

// ClientConfig returns a client TLS config (TLS 1.3) for a server named
// serverName (a host name or IP address, also sent as SNI).
//
//   - pinSHA256 != "": the server's leaf certificate must have this SHA-256
//     fingerprint (any form NormalizePin accepts). Self-signed servers work.
//     With caFile as well, the chain must also verify against that CA.
//   - caFile != "": verify the chain against the PEM certificates in caFile
//     instead of the system roots.
//   - insecure: no verification at all (explicit opt-in; conflicts with a
//     pin or a CA file).
//   - none of them: verify against the system roots.
func ClientConfig(serverName, pinSHA256 string, insecure bool, caFile string) (*tls.Config, error) {
	if insecure && (pinSHA256 != "" || caFile != "") {
		return nil, fmt.Errorf("tlsutil: skipping verification conflicts with a pin or a CA file")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: serverName}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	switch {
	case insecure:
		cfg.InsecureSkipVerify = true
	case pinSHA256 != "":
		pin, err := NormalizePin(pinSHA256)
		if err != nil {
			return nil, err
		}
		roots := cfg.RootCAs
		// The pin replaces chain verification (which a self-signed server
		// would fail); VerifyConnection runs on every handshake, resumed
		// ones included.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyPinned(cs, pin, roots, serverName)
		}
	}
	return cfg, nil
}

func verifyPinned(cs tls.ConnectionState, pin string, roots *x509.CertPool, serverName string) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("tlsutil: server sent no certificate")
	}
	leaf := cs.PeerCertificates[0]
	if got := Fingerprint(leaf); got != pin {
		return fmt.Errorf("%w: got %s, want %s", ErrPinMismatch, got, pin)
	}
	if roots == nil {
		return nil
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: serverName}); err != nil {
		return fmt.Errorf("tlsutil: pinned certificate does not verify against the CA file: %w", err)
	}
	return nil
}

func loadPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tlsutil: no PEM certificate in %s", caFile)
	}
	return pool, nil
}
