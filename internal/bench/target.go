package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/tlsutil"
)

// TargetOptions says which server to measure: a spawned one, or a running
// one given by address.
type TargetOptions struct {
	Spawn bool
	SpawnOptions

	// A running server (without Spawn).
	Server    string // TCP host:port
	ServerPID int    // for /proc figures (0: none)
	DataDir   string // the server's --data, to read its token key
	AdminKey  string // or: mint tokens with the admin key over HTTP
	HTTP      string // the server's HTTP address (host:port), for tokens and metrics

	// TLS to a running server (a spawned one uses its own self-signed
	// certificate, pinned).
	TLS      bool
	TLSPin   string
	TLSCA    string
	Insecure bool
	// Fsync is what the report says of a running server's fsync mode
	// (a spawned server is given it as --fsync).
	Fsync string
}

// Target is a server under test.
type Target struct {
	Addr     string
	TLS      *tls.Config
	PID      int
	HTTPBase string // "" if unknown
	Fsync    string
	Spawned  *Spawned
	// How TLS was configured, for worker processes that build their own.
	TLSPin, TLSCA string
	TLSInsecure   bool

	// CPUProfile and HeapProfile, if set, are files to write the server's
	// CPU profile of the measured phase and its heap profile at the end of
	// it to (a spawned server only: it runs with a profiling endpoint).
	CPUProfile, HeapProfile string
	// Notes are remarks for the report (e.g. a profile that failed).
	Notes []string

	httpc    *http.Client
	keys     *auth.Keys
	adminKey string
}

// OpenTarget spawns the server or checks the options of a running one.
func OpenTarget(ctx context.Context, o TargetOptions) (*Target, error) {
	if o.Spawn {
		return spawnTarget(ctx, o)
	}
	if o.Server == "" {
		return nil, errors.New("give --spawn, or --server ADDR of a running server")
	}
	t := &Target{Addr: o.Server, PID: o.ServerPID, Fsync: o.Fsync}
	host, _, err := net.SplitHostPort(o.Server)
	if err != nil {
		return nil, fmt.Errorf("--server %q: %v", o.Server, err)
	}
	useTLS := o.TLS || o.TLSPin != "" || o.TLSCA != "" || o.Insecure
	if useTLS {
		if t.TLS, err = tlsutil.ClientConfig(host, o.TLSPin, o.Insecure, o.TLSCA); err != nil {
			return nil, err
		}
		t.TLSPin, t.TLSCA, t.TLSInsecure = o.TLSPin, o.TLSCA, o.Insecure
	}
	if o.HTTP != "" {
		scheme := "http"
		if useTLS {
			scheme = "https"
		}
		t.HTTPBase = scheme + "://" + o.HTTP
	}
	switch {
	case o.DataDir != "":
		if t.keys, err = auth.Load(o.DataDir); err != nil {
			return nil, err
		}
	case o.AdminKey != "":
		if t.HTTPBase == "" {
			return nil, errors.New("--admin-key needs --http ADDR (the server's HTTP listener) to mint tokens")
		}
		t.adminKey = o.AdminKey
	default:
		return nil, errors.New("tokens are needed: give --data DIR (the server's data directory) or --admin-key KEY with --http ADDR")
	}
	t.httpc = newHTTPClient(t.TLS)
	return t, nil
}

func spawnTarget(ctx context.Context, o TargetOptions) (*Target, error) {
	so := o.SpawnOptions
	if o.Fsync != "" {
		so.Args = append([]string{"--fsync", o.Fsync}, so.Args...)
	}
	s, err := Spawn(ctx, so)
	if err != nil {
		return nil, err
	}
	t := &Target{Addr: s.TCP, PID: s.PID, HTTPBase: s.HTTPBase, Fsync: o.Fsync, Spawned: s}
	if t.Fsync == "" {
		t.Fsync = "always"
	}
	for i, a := range so.Args { // the last --fsync given wins, as in pim serve
		if a == "--fsync" && i+1 < len(so.Args) {
			t.Fsync = so.Args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--fsync="); ok {
			t.Fsync = v
		}
	}
	if s.TLS {
		if s.Fingerprint == "" {
			s.Stop(5 * time.Second)
			return nil, errors.New("spawned TLS server printed no certificate fingerprint")
		}
		host, _, _ := net.SplitHostPort(s.TCP)
		if t.TLS, err = tlsutil.ClientConfig(host, s.Fingerprint, false, ""); err != nil {
			s.Stop(5 * time.Second)
			return nil, err
		}
		t.TLSPin = s.Fingerprint
	}
	if t.keys, err = auth.Load(s.DataDir); err != nil {
		s.Stop(5 * time.Second)
		return nil, err
	}
	t.httpc = newHTTPClient(t.TLS)
	return t, nil
}

func newHTTPClient(cfg *tls.Config) *http.Client {
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 16}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// Close stops a spawned server (SIGTERM, then SIGKILL after 60s).
func (t *Target) Close() error {
	if t.httpc != nil {
		t.httpc.CloseIdleConnections()
	}
	if t.Spawned != nil {
		return t.Spawned.Stop(60 * time.Second)
	}
	return nil
}

// Tokens returns a token for each user, in order.
func (t *Target) Tokens(ctx context.Context, users []string) ([]string, error) {
	out := make([]string, len(users))
	if t.keys != nil {
		for i, u := range users {
			tok, err := t.keys.Issue(u, 24*time.Hour)
			if err != nil {
				return nil, err
			}
			out[i] = tok
		}
		return out, nil
	}
	// Over HTTP, with a few requests in flight.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan int)
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				tok, err := t.mintHTTP(ctx, users[i])
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				out[i] = tok
				mu.Unlock()
			}
		}()
	}
	for i := range users {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed || ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return out, first
}

func (t *Target) mintHTTP(ctx context.Context, user string) (string, error) {
	body, _ := json.Marshal(map[string]string{"user": user, "ttl": "24h"})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.HTTPBase+"/v1/tokens", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+t.adminKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.httpc.Do(req)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("mint token: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var tr struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &tr); err != nil || tr.Token == "" {
		return "", fmt.Errorf("mint token: bad answer %q", b)
	}
	return tr.Token, nil
}

// Metrics reads the named metrics from the server's /metrics (nil if the
// server has no known HTTP address or does not answer).
func (t *Target) Metrics(ctx context.Context, names ...string) map[string]float64 {
	if t.HTTPBase == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.HTTPBase+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := t.httpc.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	return ParseMetrics(resp.Body, names...)
}

// ParseMetrics reads the Prometheus text format and returns the value of each
// named unlabelled metric present (a labelled one is summed over its labels).
func ParseMetrics(r io.Reader, names ...string) map[string]float64 {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, rest, ok = line[:i], strings.TrimSpace(line[j+1:]), true
		}
		if !ok || !want[name] {
			continue
		}
		vs, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
		v, err := strconv.ParseFloat(vs, 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out
}

// PhaseStart starts the server's CPU profile, if one was asked for.
func (t *Target) PhaseStart(ctx context.Context) {
	if t.CPUProfile == "" {
		return
	}
	if _, err := t.pprof(ctx, http.MethodPost, "/cpu/start"); err != nil {
		t.Notes = append(t.Notes, "server CPU profile: "+err.Error())
	}
}

// PhaseEnd stops the server's CPU profile and takes its heap profile, if
// they were asked for, and writes them to their files.
func (t *Target) PhaseEnd(ctx context.Context) {
	if t.CPUProfile != "" {
		if b, err := t.pprof(ctx, http.MethodPost, "/cpu/stop"); err != nil {
			t.Notes = append(t.Notes, "server CPU profile: "+err.Error())
		} else if err := os.WriteFile(t.CPUProfile, b, 0o644); err != nil {
			t.Notes = append(t.Notes, "server CPU profile: "+err.Error())
		} else {
			t.Notes = append(t.Notes, "server CPU profile of the measured phase: "+t.CPUProfile)
		}
	}
	if t.HeapProfile != "" {
		if b, err := t.pprof(ctx, http.MethodGet, "/heap?gc=1"); err != nil {
			t.Notes = append(t.Notes, "server heap profile: "+err.Error())
		} else if err := os.WriteFile(t.HeapProfile, b, 0o644); err != nil {
			t.Notes = append(t.Notes, "server heap profile: "+err.Error())
		} else {
			t.Notes = append(t.Notes, "server heap profile at the end of the measured phase: "+t.HeapProfile)
		}
	}
}

func (t *Target) pprof(ctx context.Context, method, path string) ([]byte, error) {
	if t.Spawned == nil || t.Spawned.Pprof == "" {
		return nil, errors.New("needs --spawn (the spawned server runs with a profiling endpoint)")
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+t.Spawned.Pprof+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// RSSReader returns how to read the server's RSS: /proc when its PID is
// known, else its /metrics (process_resident_memory_bytes); nil if neither.
func (t *Target) RSSReader() func() (int64, error) {
	switch {
	case t.PID > 0:
		return func() (int64, error) {
			st, err := ReadProcStatus(t.PID)
			return st.RSS, err
		}
	case t.HTTPBase != "":
		return func() (int64, error) {
			v, ok := t.Metrics(context.Background(), "process_resident_memory_bytes")["process_resident_memory_bytes"]
			if !ok {
				return 0, errors.New("no process_resident_memory_bytes in /metrics")
			}
			return int64(v), nil
		}
	}
	return nil
}
