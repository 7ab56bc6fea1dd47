package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func flags(server string) connFlags {
	return connFlags{server: server, device: defaultDevice, timeout: time.Second}
}

func TestResolveTarget(t *testing.T) {
	tests := []struct {
		server    string
		tls       bool
		addr      string
		host      string
		websocket bool
		useTLS    bool
		usage     bool
	}{
		{server: "127.0.0.1:7400", addr: "127.0.0.1:7400", host: "127.0.0.1"},
		{server: "chat.example", addr: "chat.example:7400", host: "chat.example"},
		{server: "[::1]", addr: "[::1]:7400", host: "::1"},
		{server: "[::1]:9", addr: "[::1]:9", host: "::1"},
		{server: "chat.example:7401", tls: true, addr: "chat.example:7401", host: "chat.example", useTLS: true},
		{server: "ws://127.0.0.1:7480", addr: "ws://127.0.0.1:7480/ws", host: "127.0.0.1", websocket: true},
		{server: "ws://127.0.0.1:7480/custom", addr: "ws://127.0.0.1:7480/custom", host: "127.0.0.1", websocket: true},
		{server: "wss://chat.example/ws", addr: "wss://chat.example/ws", host: "chat.example", websocket: true, useTLS: true},
		{server: "ws://127.0.0.1:7480/ws", tls: true, usage: true},
		{server: "http://127.0.0.1:7480", usage: true},
		{server: "ws://", usage: true},
		{server: ":7400", usage: true},
	}
	for _, tc := range tests {
		f := flags(tc.server)
		f.tls = tc.tls
		got, err := f.resolveTarget()
		if tc.usage {
			var u usageError
			if !errors.As(err, &u) {
				t.Errorf("%q: err = %v, want a usage error", tc.server, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.server, err)
			continue
		}
		want := target{addr: tc.addr, host: tc.host, websocket: tc.websocket, useTLS: tc.useTLS}
		if got != want {
			t.Errorf("%q: got %+v, want %+v", tc.server, got, want)
		}
	}
}

func TestConnOptions(t *testing.T) {
	pin := strings.Repeat("ab", 32)
	env := func(tok string) func(string) string {
		return func(k string) string {
			if k == tokenEnv {
				return tok
			}
			return ""
		}
	}
	tests := []struct {
		name    string
		mod     func(*connFlags)
		env     string
		usage   bool   // a usage error
		fail    bool   // another error
		tls     bool   // TLS configured
		warning string // on stderr
	}{
		{name: "token flag", mod: func(f *connFlags) { f.token = "T" }},
		{name: "token from env", env: "T"},
		{name: "no token", usage: true},
		{name: "bad device", mod: func(f *connFlags) { f.token, f.device = "T", "a b" }, usage: true},
		{name: "pin implies tls", mod: func(f *connFlags) { f.token, f.pin = "T", pin }, tls: true},
		{name: "bad pin", mod: func(f *connFlags) { f.token, f.pin = "T", "xyz" }, usage: true},
		{name: "insecure with pin", mod: func(f *connFlags) { f.token, f.pin, f.insecure = "T", pin, true }, usage: true},
		{name: "insecure warns", mod: func(f *connFlags) { f.token, f.insecure = "T", true }, tls: true, warning: "not checked"},
		{name: "missing ca file", mod: func(f *connFlags) { f.token, f.ca = "T", "/nonexistent.pem" }, fail: true},
		{name: "plaintext remote warns", mod: func(f *connFlags) { f.token, f.server = "T", "10.0.0.1:7400" }, warning: "plaintext"},
		{name: "plaintext ws remote warns", mod: func(f *connFlags) { f.token, f.server = "T", "ws://chat.example/ws" }, warning: "plaintext"},
		{name: "wss is tls", mod: func(f *connFlags) { f.token, f.server = "T", "wss://chat.example" }, tls: true},
		{name: "zero timeout", mod: func(f *connFlags) { f.token, f.timeout = "T", 0 }, usage: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := flags(defaultServer)
			if tc.mod != nil {
				tc.mod(&f)
			}
			var stderr bytes.Buffer
			opts, err := f.options(&stderr, env(tc.env))
			var u usageError
			switch {
			case tc.usage:
				if !errors.As(err, &u) {
					t.Fatalf("err = %v, want a usage error", err)
				}
				return
			case tc.fail:
				if err == nil || errors.As(err, &u) {
					t.Fatalf("err = %v, want a non-usage error", err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if opts.Token != "T" || opts.Device != defaultDevice {
				t.Errorf("opts %+v", opts)
			}
			if (opts.TLS != nil) != tc.tls {
				t.Errorf("TLS = %v, want %v", opts.TLS != nil, tc.tls)
			}
			if opts.TLS != nil && opts.TLS.ServerName == "" {
				t.Error("no ServerName")
			}
			if tc.warning == "" && stderr.Len() > 0 || !strings.Contains(stderr.String(), tc.warning) {
				t.Errorf("stderr %q, want warning %q", stderr.String(), tc.warning)
			}
		})
	}
}
