package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSelfSignedCreatesOncePersistsAndCoversHosts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfg, fp, err := SelfSigned(dir, []string{"chat.example", "10.1.2.3", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 {
		t.Fatalf("MinVersion = %x", cfg.MinVersion)
	}
	leaf, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := Fingerprint(leaf); got != fp || len(fp) != 64 {
		t.Fatalf("fingerprint %q, Fingerprint(leaf) %q", fp, got)
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "chat.example", "10.1.2.3"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("certificate does not cover %s: %v", h, err)
		}
	}
	if len(leaf.DNSNames) != 2 {
		t.Errorf("duplicate DNS names: %v", leaf.DNSNames)
	}
	st, err := os.Stat(filepath.Join(dir, SelfSignedKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", st.Mode().Perm())
	}
	// Second call: same pair, whatever the hosts.
	_, fp2, err := SelfSigned(dir, []string{"other.example"})
	if err != nil {
		t.Fatal(err)
	}
	if fp2 != fp {
		t.Fatalf("fingerprint changed across calls: %s then %s", fp, fp2)
	}
	// No temporary files left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("data dir holds %d entries, want 2", len(ents))
	}
}

func TestSelfSignedRefusesHalfAPair(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SelfSignedKeyFile), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := SelfSigned(dir, nil); err == nil || !strings.Contains(err.Error(), "only one") {
		t.Fatalf("err = %v, want refusal", err)
	}
}

func TestServerConfigFromFiles(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := SelfSigned(dir, nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := ServerConfig(filepath.Join(dir, SelfSignedCertFile), filepath.Join(dir, SelfSignedKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS13 || len(cfg.Certificates) != 1 {
		t.Fatalf("bad config %+v", cfg)
	}
	if _, err := ServerConfig(filepath.Join(dir, "missing.pem"), filepath.Join(dir, SelfSignedKeyFile)); err == nil {
		t.Fatal("missing cert file accepted")
	}
	if _, err := ServerConfig("", ""); err == nil {
		t.Fatal("empty file names accepted")
	}
}

func TestNormalizePin(t *testing.T) {
	const h = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	colons := colonize(h)
	for _, in := range []string{h, strings.ToUpper(h), colons, "sha256:" + h, "SHA256/" + h, " " + h + "\n"} {
		got, err := NormalizePin(in)
		if err != nil || got != h {
			t.Errorf("NormalizePin(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "abc", h[:62], h + "00", "zz" + h[2:]} {
		if _, err := NormalizePin(in); err == nil {
			t.Errorf("NormalizePin(%q) accepted", in)
		}
	}
}

// serve accepts TLS connections with cfg and completes their handshakes.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func TestClientConfigHandshakes(t *testing.T) {
	dir := t.TempDir()
	srv, fp, err := SelfSigned(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	ca := filepath.Join(dir, SelfSignedCertFile)
	otherPin := strings.Repeat("ab", 32)

	tests := []struct {
		name       string
		serverName string
		pin        string
		insecure   bool
		ca         string
		wantErr    string // "" means the handshake succeeds
	}{
		{"pin", "127.0.0.1", fp, false, "", ""},
		{"pin upper case with colons", "127.0.0.1", colonize(fp), false, "", ""},
		{"pin ignores name", "not-in-cert.example", fp, false, "", ""},
		{"wrong pin", "127.0.0.1", otherPin, false, "", "does not match"},
		{"ca file", "localhost", "", false, ca, ""},
		{"ca file wrong name", "nope.example", "", false, ca, "certificate"},
		{"pin and ca", "localhost", fp, false, ca, ""},
		{"pin and ca wrong name", "nope.example", fp, false, ca, "CA file"},
		{"system roots reject self-signed", "localhost", "", false, "", "certificate"},
		{"insecure", "localhost", "", true, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ClientConfig(tc.serverName, tc.pin, tc.insecure, tc.ca)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MinVersion != tls.VersionTLS13 {
				t.Fatalf("MinVersion = %x", cfg.MinVersion)
			}
			c, err := tls.Dial("tcp", addr, cfg)
			if err == nil {
				c.Close()
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("handshake failed: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatal("handshake succeeded")
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("err = %v, want it to mention %q", err, tc.wantErr)
			}
			if tc.name == "wrong pin" && !errors.Is(err, ErrPinMismatch) {
				t.Errorf("err = %v, want ErrPinMismatch in chain", err)
			}
		})
	}
}

func TestClientConfigRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	pin := strings.Repeat("ab", 32)
	for name, f := range map[string]func() (*tls.Config, error){
		"insecure with pin":   func() (*tls.Config, error) { return ClientConfig("h", pin, true, "") },
		"insecure with ca":    func() (*tls.Config, error) { return ClientConfig("h", "", true, notPEM) },
		"bad pin":             func() (*tls.Config, error) { return ClientConfig("h", "xyz", false, "") },
		"missing ca file":     func() (*tls.Config, error) { return ClientConfig("h", "", false, filepath.Join(dir, "none")) },
		"ca file without pem": func() (*tls.Config, error) { return ClientConfig("h", "", false, notPEM) },
	} {
		if _, err := f(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestServerRefusesTLS12(t *testing.T) {
	srv, fp, err := SelfSigned(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	cfg, _ := ClientConfig("127.0.0.1", fp, false, "")
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if c, err := tls.Dial("tcp", addr, cfg); err == nil {
		c.Close()
		t.Fatal("TLS 1.2 handshake succeeded")
	}
}

func TestIsLoopback(t *testing.T) {
	tests := map[string]bool{
		"127.0.0.1:7400":          true,
		"127.9.9.9:1":             true,
		"[::1]:7400":              true,
		"::1":                     true,
		"localhost:7400":          true,
		"LOCALHOST":               true,
		"localhost":               true,
		"ws://127.0.0.1:7480/ws":  true,
		"wss://localhost/ws":      true,
		"ws://[::1]:7480/ws":      true,
		"[::ffff:127.0.0.1]:1":    true,
		"10.0.0.1:7400":           false,
		"0.0.0.0:7400":            false,
		":7400":                   false,
		"example.com:7400":        false,
		"localhost.example.com:1": false,
		"ws://example.com/ws":     false,
		"":                        false,
	}
	for addr, want := range tests {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func colonize(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(strings.ToUpper(h[i : i+2]))
	}
	return b.String()
}
