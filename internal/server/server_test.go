package server

import (
	"context"
	"strings"
	"testing"
)

func TestPlaintextOnlyOnLoopback(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"loopback plaintext", Config{TCPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0"}, ""},
		{"public tcp plaintext", Config{TCPAddr: "0.0.0.0:0"}, "refusing plaintext"},
		{"public http plaintext", Config{HTTPAddr: ":0"}, "refusing plaintext"},
		{"public plaintext allowed", Config{TCPAddr: "0.0.0.0:0", AllowPlaintext: true}, ""},
		{"public with TLS", Config{TCPAddr: "0.0.0.0:0", TLSSelfSigned: true}, ""},
		{"bad fsync mode", Config{TCPAddr: "127.0.0.1:0", Fsync: "sometimes"}, "--fsync"},
		{"cert without key and self-signed", Config{TLSCert: "x", TLSSelfSigned: true}, "either"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.DataDir = t.TempDir()
			srv, err := Start(tc.cfg)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				if err := srv.Shutdown(context.Background()); err != nil {
					t.Fatalf("Shutdown: %v", err)
				}
				return
			}
			if err == nil {
				srv.Shutdown(context.Background())
				t.Fatalf("Start succeeded, want an error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}
