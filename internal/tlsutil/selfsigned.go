package tlsutil

// SelfSigned keeps one certificate per data directory. Invariants: the key and
// certificate are created once and never replaced (replacing them would break
// every client's pin); the key file is mode 0600; each file appears under its
// final name only complete (written to a temporary name, synced, renamed); a
// pair is never loaded without checking the key matches the certificate.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names of the self-signed certificate and key inside the data directory.
const (
	SelfSignedCertFile = "tls-cert.pem"
	SelfSignedKeyFile  = "tls-key.pem"
)

// selfSignedValidity is how long a generated certificate is valid.
const selfSignedValidity = 10 * 365 * 24 * time.Hour

// SelfSigned returns a server TLS config with the data directory's
// self-signed certificate and its SHA-256 fingerprint (for clients'
// --tls-pin). On first use it creates an ECDSA P-256 key and a certificate
// for localhost, 127.0.0.1, ::1 and hosts (names or IP addresses), persisted
// as tls-cert.pem and tls-key.pem in dataDir. Later calls load that pair
// unchanged, whatever hosts they pass: delete both files to make a new one
// (clients then need the new fingerprint).
func SelfSigned(dataDir string, hosts []string) (*tls.Config, string, error) {
	certPath := filepath.Join(dataDir, SelfSignedCertFile)
	keyPath := filepath.Join(dataDir, SelfSignedKeyFile)
	certOK, err := exists(certPath)
	if err != nil {
		return nil, "", err
	}
	keyOK, err := exists(keyPath)
	if err != nil {
		return nil, "", err
	}
	switch {
	case certOK != keyOK:
		return nil, "", fmt.Errorf("tlsutil: only one of %s and %s exists: remove it to create a new pair", certPath, keyPath)
	case !certOK:
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, "", fmt.Errorf("tlsutil: create data dir: %w", err)
		}
		certPEM, keyPEM, err := generate(hosts, time.Now())
		if err != nil {
			return nil, "", err
		}
		// Key first: a cert file without its key is never visible.
		if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
			return nil, "", err
		}
		if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
			return nil, "", err
		}
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, "", fmt.Errorf("tlsutil: load self-signed pair from %s: %w", dataDir, err)
	}
	return serverConfig(cert), FingerprintDER(cert.Certificate[0]), nil
}

// generate makes a self-signed certificate and its key, PEM-encoded.
func generate(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "pim self-signed", Organization: []string{"PIM"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // so the file can also serve as its own --tls-ca
	}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsutil: marshal key: %w", err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("tlsutil: %w", err)
}

// writeFileAtomic writes data to path via a synced temporary file and a rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("tlsutil: create %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("tlsutil: write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tlsutil: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tlsutil: write %s: %w", path, err)
	}
	return nil
}
