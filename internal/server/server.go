// Package server wires PIM's roles into one process: the store, the bus, the
// business logic, the gateway (TCP and WebSocket long connections), the HTTP
// API, metrics and health. It is what `pim serve` runs.
//
// Invariants:
//   - Plaintext listeners are only opened on loopback addresses unless
//     AllowPlaintext is set; with TLS configured, every listener is TLS 1.3.
//   - Shutdown stops accepting first, lets in-flight requests finish and
//     sends GoAway to every session (spread over the drain window) before
//     the store is closed, so nothing that was acknowledged is lost and
//     nothing is acknowledged after Close.
//   - GET /v1/lbs, POST /v1/admin/drain and /healthz are served by this
//     package (http.go), and GET /v1/admin/backup (backup.go); everything
//     else under /v1/ by internal/api.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pim-project/pim/internal/admission"
	"github.com/pim-project/pim/internal/api"
	"github.com/pim-project/pim/internal/auth"
	"github.com/pim-project/pim/internal/bus/local"
	"github.com/pim-project/pim/internal/gateway"
	"github.com/pim-project/pim/internal/lbs"
	"github.com/pim-project/pim/internal/logic"
	"github.com/pim-project/pim/internal/store"
	pebblestore "github.com/pim-project/pim/internal/store/pebble"
	"github.com/pim-project/pim/internal/tlsutil"
)

// Fsync modes.
const (
	FsyncAlways = "always" // ack after fsync (group commit); the default
	FsyncOff    = "off"    // ack after the OS has the write; a machine crash may lose acked messages
)

// Config configures a Server. Zero values take the defaults of `pim serve`.
type Config struct {
	DataDir        string
	TCPAddr        string // "" disables the TCP listener
	HTTPAddr       string // "" disables the HTTP listener (API, WebSocket, metrics)
	TLSCert        string
	TLSKey         string
	TLSSelfSigned  bool
	AllowPlaintext bool
	Fsync          string
	MaxGroupSize   int
	Heartbeat      time.Duration
	Logger         *slog.Logger

	// Advertise is the host clients reach this node at (LBS answers); ""
	// takes the listeners' hosts (the machine's name for a wildcard).
	Advertise string
	// Admission limits connections, logins and sends; the zero value
	// limits nothing (see internal/admission and docs/operations.md).
	Admission admission.Config
	// LBS caps the clients the LBS sends to one node per second (zero: no
	// cap); LBSTTL is how long clients keep an answer (0: lbs.DefaultTTL).
	LBS    admission.Limit
	LBSTTL time.Duration
	// DrainWindow is the longest a drain spreads GoAways over
	// (0: gateway.DefaultDrainWindow); DrainRate the GoAways per second it
	// aims at (0: gateway.DefaultDrainRate; < 0: always the whole window).
	DrainWindow time.Duration
	DrainRate   float64
	// MaxBufferedBytes bounds the responses queued for all connections
	// (0: gateway.DefaultMaxBufferedBytes); CatchupConcurrency the backlog
	// reads running at once (0: the gateway's default).
	MaxBufferedBytes   int64
	CatchupConcurrency int
	// NoReadState stops maintaining conversation lists and delivered
	// receipts (only for benchmarks of what they cost: clients then get
	// empty lists and no delivered receipts).
	NoReadState bool
}

// Server is a running PIM node.
type Server struct {
	cfg         Config
	log         *slog.Logger
	st          *pebblestore.Store
	keys        *auth.Keys
	gw          *gateway.Gateway
	admit       *admission.Controller // the gateway's and the HTTP API's: one budget per user
	svc         *logic.Service
	lbs         *lbs.Balancer
	nodeID      string
	httpSrv     *http.Server
	tcpLn       net.Listener
	httpLn      net.Listener
	fingerprint string
	tls         bool

	wg       sync.WaitGroup
	stopBg   context.CancelFunc // ends the background work (receipts)
	errMu    sync.Mutex
	serveErr error
	shutOnce sync.Once
	backup   backupState // GET /v1/admin/backup (backup.go)
}

// Start opens the store and starts listening. The caller must call Shutdown.
func Start(cfg Config) (s *Server, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = "pim-data"
	}
	if cfg.Fsync == "" {
		cfg.Fsync = FsyncAlways
	}
	if cfg.Fsync != FsyncAlways && cfg.Fsync != FsyncOff {
		return nil, fmt.Errorf("--fsync must be %q or %q, got %q", FsyncAlways, FsyncOff, cfg.Fsync)
	}
	s = &Server{cfg: cfg, log: cfg.Logger}
	tlsCfg, err := s.tlsConfig()
	if err != nil {
		return nil, err
	}
	if err := s.checkPlaintext(tlsCfg); err != nil {
		return nil, err
	}
	if s.keys, err = auth.LoadOrCreate(cfg.DataDir); err != nil {
		return nil, err
	}
	// The store announces each write's events on the bus from its writer, in
	// commit order, so every user's events reach the sessions in user-seq
	// order (logic then publishes nothing itself).
	b := local.New()
	s.st, err = pebblestore.Open(filepath.Join(cfg.DataDir, storeDir), pebblestore.Options{
		Sync: cfg.Fsync == FsyncAlways, Logger: cfg.Logger, OnCommit: func(ds []store.Delivery) {
			for _, d := range ds {
				b.Publish(d.User, d.Event)
			}
		}, NoConvList: cfg.NoReadState})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	srv := s // s is nil on the error returns
	defer func() {
		if err != nil {
			srv.closeListeners()
			srv.st.Close()
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc := logic.New(logic.Config{Store: s.st, MaxGroupSize: cfg.MaxGroupSize, Logger: s.log, Registerer: reg,
		NoDeliveredReceipts: cfg.NoReadState})
	s.svc = svc
	if err := s.listen(tlsCfg); err != nil {
		return nil, err
	}
	bg, stopBg := context.WithCancel(context.Background())
	s.stopBg = stopBg
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		svc.RunReceipts(bg)
	}()
	go func() {
		defer s.wg.Done()
		svc.RunDelivered(bg)
	}()
	s.lbs = s.newBalancer()
	s.admit = admission.New(cfg.Admission, time.Now())
	s.gw = gateway.New(gateway.Config{Logic: svc, Bus: b, Auth: s.keys, TLS: tlsCfg,
		Heartbeat: cfg.Heartbeat, Logger: s.log, Registerer: reg,
		Admission:   s.admit,
		DrainWindow: cfg.DrainWindow, DrainRate: cfg.DrainRate,
		Alternatives:       func(tr string) []string { return s.lbs.Alternatives(s.nodeID, tr) },
		MaxBufferedBytes:   cfg.MaxBufferedBytes,
		CatchupConcurrency: cfg.CatchupConcurrency,
	})
	s.startHTTP(tlsCfg, svc, reg)
	s.startTCP()
	return s, nil
}

func (s *Server) tlsConfig() (*tls.Config, error) {
	switch {
	case s.cfg.TLSCert != "" || s.cfg.TLSKey != "":
		if s.cfg.TLSSelfSigned {
			return nil, errors.New("use either --tls-cert/--tls-key or --tls-self-signed, not both")
		}
		c, err := tlsutil.ServerConfig(s.cfg.TLSCert, s.cfg.TLSKey)
		if err != nil {
			return nil, err
		}
		s.tls = true
		return c, nil
	case s.cfg.TLSSelfSigned:
		if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("create data dir: %w", err)
		}
		c, fp, err := tlsutil.SelfSigned(s.cfg.DataDir, nil)
		if err != nil {
			return nil, err
		}
		s.tls, s.fingerprint = true, fp
		return c, nil
	}
	return nil, nil
}

func (s *Server) checkPlaintext(tlsCfg *tls.Config) error {
	if tlsCfg != nil || s.cfg.AllowPlaintext {
		return nil
	}
	for _, a := range []string{s.cfg.TCPAddr, s.cfg.HTTPAddr} {
		if a != "" && !tlsutil.IsLoopback(a) {
			return fmt.Errorf("refusing plaintext on non-loopback address %s: configure --tls-cert/--tls-key (or --tls-self-signed), or pass --allow-plaintext", a)
		}
	}
	return nil
}

func (s *Server) listen(tlsCfg *tls.Config) error {
	var err error
	if s.cfg.TCPAddr != "" {
		if s.tcpLn, err = net.Listen("tcp", s.cfg.TCPAddr); err != nil {
			return fmt.Errorf("listen tcp %s: %w", s.cfg.TCPAddr, err)
		}
	}
	if s.cfg.HTTPAddr != "" {
		if s.httpLn, err = net.Listen("tcp", s.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("listen http %s: %w", s.cfg.HTTPAddr, err)
		}
		if tlsCfg != nil {
			s.httpLn = tls.NewListener(s.httpLn, tlsCfg)
		}
	}
	return nil
}

func (s *Server) closeListeners() {
	for _, ln := range []net.Listener{s.tcpLn, s.httpLn} {
		if ln != nil {
			ln.Close()
		}
	}
}

func (s *Server) startHTTP(tlsCfg *tls.Config, svc *logic.Service, reg *prometheus.Registry) {
	if s.httpLn == nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", s.gw.WebSocketHandler())
	// Exact paths win over the /v1/ prefix whatever the order.
	mux.Handle("/v1/lbs", lbs.Handler(s.lbs, s.keys, s.log))
	mux.Handle("/v1/admin/drain", s.drainHandler())
	mux.Handle("/v1/", api.New(api.Config{Logic: svc, Keys: s.keys, Logger: s.log, Admission: s.admit}))
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", s.healthz)
	mux.Handle("/v1/admin/backup", s.backupHandler())
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, TLSConfig: tlsCfg,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.fail(fmt.Errorf("http server: %w", err))
		}
	}()
}

func (s *Server) startTCP() {
	if s.tcpLn == nil {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.gw.ServeTCP(s.tcpLn); err != nil && !errors.Is(err, net.ErrClosed) {
			s.fail(fmt.Errorf("tcp gateway: %w", err))
		}
	}()
}

func (s *Server) fail(err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.serveErr == nil {
		s.serveErr = err
		s.log.Error("listener failed", "err", err)
	}
}

// TCPAddr is the address of the TCP listener (nil if disabled).
func (s *Server) TCPAddr() net.Addr {
	if s.tcpLn == nil {
		return nil
	}
	return s.tcpLn.Addr()
}

// HTTPAddr is the address of the HTTP listener (nil if disabled).
func (s *Server) HTTPAddr() net.Addr {
	if s.httpLn == nil {
		return nil
	}
	return s.httpLn.Addr()
}

// TLS reports whether the listeners use TLS.
func (s *Server) TLS() bool { return s.tls }

// Fingerprint is the SHA-256 fingerprint of a self-signed certificate ("" otherwise).
func (s *Server) Fingerprint() string { return s.fingerprint }

// DataDir is the server's data directory.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// Logic returns the business service (for in-process tools and tests).
func (s *Server) Logic() *logic.Service { return s.svc }

// Keys returns the token and admin keys.
func (s *Server) Keys() *auth.Keys { return s.keys }

// Epoch returns the data set's epoch.
func (s *Server) Epoch() string { return s.st.Epoch() }

// Drain starts draining the gateway (see gateway.Gateway.Drain): GoAways
// spread over window (<= 0: the configured one). The server keeps serving
// HTTP; Shutdown completes the stop.
func (s *Server) Drain(window time.Duration) gateway.DrainStatus { return s.gw.Drain(window) }

// Kill stops the server at once, as a crash would for the clients: no
// GoAway, connections reset. The store is closed (acknowledged messages
// are durable anyway). For tests and benchmarks of reconnect storms.
func (s *Server) Kill() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.shutOnce.Do(func() {
		s.gw.Abort()
		if s.httpSrv != nil {
			s.httpSrv.Close()
		}
		s.closeListeners()
		s.stopBg()
		s.wg.Wait()
		_ = s.gw.Shutdown(ctx)
		_ = s.st.Close()
	})
}

// Shutdown stops the server: it stops accepting, drains sessions with GoAway
// spread over the drain window, stops the HTTP server and closes the store.
// ctx should outlast the drain window plus gateway.DefaultDrainGrace. It
// returns the first error a listener failed with, if any.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	s.shutOnce.Do(func() {
		if err := s.gw.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("gateway shutdown: %w", err))
		}
		if s.httpSrv != nil {
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			}
		}
		s.closeListeners()
		s.stopBg()
		s.wg.Wait()
		if err := s.st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close store: %w", err))
		}
		s.errMu.Lock()
		if s.serveErr != nil {
			errs = append(errs, s.serveErr)
		}
		s.errMu.Unlock()
	})
	return errors.Join(errs...)
}
