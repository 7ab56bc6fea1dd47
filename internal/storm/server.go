// The server under test, as the storm drives it: kill it (SIGKILL) or drain
// it (SIGTERM), and start it again on the same data and addresses.
//
// Invariants of this file:
//   - Every process started is stopped by Close (SIGTERM, then SIGKILL after
//     a grace), also when the storm fails half-way; the data directory of
//     the first process (which every restart reuses) is removed last,
//     unless kept.
//   - Restarts listen on exactly the addresses of the first process, so the
//     clients reconnect to where they were.
package storm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/bench"
	"github.com/pim-project/pim/internal/tlsutil"
)

// Server is the server under test.
type Server interface {
	// Addr is the TCP address clients dial (the same across restarts).
	Addr() string
	// ClientTLS fills the TLS fields of a fleet's job (nothing for plaintext).
	ClientTLS(*FleetConfig)
	// PID is the server process (0: not measurable).
	PID() int
	// Tokens mints a token per user.
	Tokens(ctx context.Context, users []string) ([]string, error)
	// Metrics reads the named metrics (nil if unavailable).
	Metrics(ctx context.Context, names ...string) map[string]float64
	// Kill stops the server like a crash and returns once it is gone.
	Kill(ctx context.Context) error
	// Drain asks the server to stop gracefully (SIGTERM: GoAways spread over
	// its drain window) and returns once it has exited.
	Drain(ctx context.Context) error
	// Restart starts the server again and returns once it listens.
	Restart(ctx context.Context) error
	// Close stops the server and releases everything.
	Close() error
}

// SpawnOptions configures a spawned server.
type SpawnOptions struct {
	bench.SpawnOptions
	// DrainTimeout bounds how long a drained server may take to exit.
	DrainTimeout time.Duration
}

// Spawned is a `pim serve` process restarted on the same data.
type Spawned struct {
	o     SpawnOptions
	first *bench.Spawned // owns the data directory
	cur   *bench.Spawned
	old   []*bench.Spawned
	keys  *auth.Keys
	httpc *http.Client
}

// Spawn starts the first server process.
func Spawn(ctx context.Context, o SpawnOptions) (*Spawned, error) {
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = 2 * time.Minute
	}
	s, err := bench.Spawn(ctx, o.SpawnOptions)
	if err != nil {
		return nil, err
	}
	keys, err := auth.Load(s.DataDir)
	if err != nil {
		s.Stop(5 * time.Second)
		return nil, err
	}
	sp := &Spawned{o: o, first: s, cur: s, keys: keys, httpc: &http.Client{Timeout: 10 * time.Second}}
	if s.TLS { // the metrics endpoint is HTTPS with the pinned self-signed certificate
		host, _, _ := net.SplitHostPort(s.TCP)
		tc, err := tlsutil.ClientConfig(host, s.Fingerprint, false, "")
		if err != nil {
			s.Stop(5 * time.Second)
			return nil, err
		}
		sp.httpc.Transport = &http.Transport{TLSClientConfig: tc}
	}
	return sp, nil
}

// Addr implements Server.
func (s *Spawned) Addr() string { return s.first.TCP }

// ClientTLS implements Server.
func (s *Spawned) ClientTLS(c *FleetConfig) {
	if s.first.TLS {
		c.TLS, c.TLSPin = true, s.first.Fingerprint
	}
}

// PID implements Server.
func (s *Spawned) PID() int { return s.cur.PID }

// Args are the current server's command line.
func (s *Spawned) Args() []string { return s.cur.Args[1:] }

// LogPaths are the servers' logs (kept only with Keep).
func (s *Spawned) LogPaths() []string {
	var out []string
	for _, p := range append(append([]*bench.Spawned{}, s.old...), s.cur) {
		out = append(out, p.LogPath)
	}
	return out
}

// Tokens implements Server.
func (s *Spawned) Tokens(_ context.Context, users []string) ([]string, error) {
	out := make([]string, len(users))
	for i, u := range users {
		t, err := s.keys.Issue(u, 24*time.Hour)
		if err != nil {
			return nil, fmt.Errorf("storm: token for %s: %w", u, err)
		}
		out[i] = t
	}
	return out, nil
}

// Metrics implements Server.
func (s *Spawned) Metrics(ctx context.Context, names ...string) map[string]float64 {
	if s.cur.HTTPBase == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cur.HTTPBase+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := s.httpc.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	return bench.ParseMetrics(resp.Body, names...)
}

// Kill implements Server.
func (s *Spawned) Kill(ctx context.Context) error {
	return s.signalAndWait(ctx, syscall.SIGKILL, 30*time.Second)
}

// Drain implements Server.
func (s *Spawned) Drain(ctx context.Context) error {
	return s.signalAndWait(ctx, syscall.SIGTERM, s.o.DrainTimeout)
}

func (s *Spawned) signalAndWait(ctx context.Context, sig syscall.Signal, timeout time.Duration) error {
	if err := syscall.Kill(s.cur.PID, sig); err != nil {
		return fmt.Errorf("storm: signal the server: %w", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.cur.Exited():
		return nil
	case <-t.C:
		_ = syscall.Kill(s.cur.PID, syscall.SIGKILL)
		<-s.cur.Exited()
		return fmt.Errorf("storm: the server did not exit within %v of %v; killed", timeout, sig)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Restart implements Server.
func (s *Spawned) Restart(ctx context.Context) error {
	select {
	case <-s.cur.Exited():
	default:
		return errors.New("storm: restart while the server runs")
	}
	o := s.o.SpawnOptions
	o.Args = append(append([]string(nil), o.Args...), "--data", s.first.DataDir, "--tcp", s.first.TCP)
	if s.first.HTTPBase != "" {
		u, err := url.Parse(s.first.HTTPBase)
		if err != nil {
			return fmt.Errorf("storm: server HTTP address %q: %w", s.first.HTTPBase, err)
		}
		o.Args = append(o.Args, "--http", u.Host)
	}
	o.TLS = false // the first process made the certificate; the flag is in its args
	if s.first.TLS {
		o.Args = append(o.Args, "--tls-self-signed")
	}
	n, err := bench.Spawn(ctx, o)
	if err != nil {
		return fmt.Errorf("storm: restart: %w", err)
	}
	if n.TCP != s.first.TCP {
		n.Stop(5 * time.Second)
		return fmt.Errorf("storm: the restarted server listens on %s, not %s", n.TCP, s.first.TCP)
	}
	if s.cur != s.first {
		s.old = append(s.old, s.cur)
	}
	s.cur = n
	return nil
}

// Close implements Server.
func (s *Spawned) Close() error {
	var errs []error
	if err := s.cur.Stop(30 * time.Second); err != nil && s.cur != s.first {
		errs = append(errs, err)
	}
	for _, o := range s.old {
		_ = o.Stop(time.Second) // exited already; removes its directory
	}
	if s.cur != s.first {
		_ = s.first.Stop(time.Second) // killed or drained already; removes the data
	}
	return errors.Join(errs...)
}
