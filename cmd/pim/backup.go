package main

// `pim backup`: an online backup of a running server, over its HTTP API
// (GET /v1/admin/backup with the admin key). Invariants: --out appears only
// once the whole archive has arrived and reads back as a complete backup
// (server.VerifyBackup); until then the download goes to a temporary file
// next to it, removed on failure. An existing --out is never overwritten.
// The file is private (0600): it holds the token signing key.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pim-project/pim/internal/server"
	"github.com/pim-project/pim/internal/tlsutil"
)

const defaultHTTPServer = "http://127.0.0.1:7480"

type backupFlags struct {
	server   string
	adminKey string
	out      string
	pin      string
	ca       string
	insecure bool
	timeout  time.Duration
}

func newBackupCmd() *cobra.Command {
	var f backupFlags
	cmd := &cobra.Command{
		Use:   "backup --out FILE [--server URL] [--admin-key FILE]",
		Short: "Take a backup of a running server (store, token and admin keys) into a .tar.gz",
		Long: "backup asks a running server for a consistent copy of its data (GET /v1/admin/backup with the\n" +
			"admin key) while it keeps serving, and writes it to --out once it has arrived whole.\n" +
			"The archive holds the store and the keys (tokens stay valid after a restore): keep it private.\n" +
			"Restore it with `pim restore --from FILE --data NEW-DIR`, which gives the data a new epoch.",
		Example: "  pim backup --server http://127.0.0.1:7480 --admin-key ./pim-data/admin.key --out pim-backup.tar.gz",
		Args:    cobra.NoArgs,
		RunE:    runE(func(cmd *cobra.Command, _ []string) error { return f.run(cmd) }),
	}
	fs := cmd.Flags()
	fs.StringVar(&f.server, "server", defaultHTTPServer, "the server's HTTP API: http(s)://host:port, or host:port")
	fs.StringVar(&f.adminKey, "admin-key", "pim-data/admin.key", "file holding the admin key (the server's DATA/admin.key)")
	fs.StringVar(&f.out, "out", "", "the archive to write (required; must not exist)")
	fs.StringVar(&f.pin, "tls-pin", "", "trust only a server certificate with this SHA-256 fingerprint (hex); implies https")
	fs.StringVar(&f.ca, "tls-ca", "", "verify the server against the CA certificates in this PEM file; implies https")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "https without verifying the server at all (testing only)")
	fs.DurationVar(&f.timeout, "timeout", time.Minute, "time limit for connecting and for the server to start answering (the transfer itself is not limited)")
	cmd.MarkFlagRequired("out")
	return cmd
}

func (f *backupFlags) run(cmd *cobra.Command) error {
	endpoint, hc, err := f.client()
	if err != nil {
		return err
	}
	if _, err := os.Lstat(f.out); err == nil {
		return usagef("--out %s already exists: pick a new name (a backup never overwrites one)", f.out)
	}
	key, err := os.ReadFile(f.adminKey)
	if err != nil {
		return failed("read the admin key", err)
	}
	m, size, err := f.download(cmd.Context(), hc, endpoint, strings.TrimSpace(string(key)))
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "backup written to %s (%d bytes): epoch %s, taken %s on node %s\n",
		f.out, size, m.Epoch, m.Created.Format(time.RFC3339), m.Node)
	fmt.Fprintf(out, "it holds the data directory's keys (%s): keep it as private as the data directory\n", strings.Join(m.Files, ", "))
	fmt.Fprintf(out, "restore it with: pim restore --from %s --data NEW-DIR (the restored data gets a new epoch)\n", f.out)
	return nil
}

// client validates --server and the TLS flags and returns the endpoint URL
// and an HTTP client for it.
func (f *backupFlags) client() (string, *http.Client, error) {
	if f.timeout <= 0 {
		return "", nil, usagef("--timeout must be positive")
	}
	anyTLS := f.pin != "" || f.ca != "" || f.insecure
	s := strings.TrimSpace(f.server)
	if !strings.Contains(s, "://") {
		s = "http://" + s
		if anyTLS {
			s = "https://" + strings.TrimPrefix(s, "http://")
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", nil, usagef("--server %q: want http://host:port, https://host:port or host:port", f.server)
	}
	if u.Scheme == "http" && anyTLS {
		return "", nil, usagef("the TLS flags need an https:// --server")
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/admin/backup"
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: f.timeout}).DialContext,
		TLSHandshakeTimeout:   f.timeout,
		ResponseHeaderTimeout: f.timeout,
	}
	if u.Scheme == "https" {
		cfg, err := tlsutil.ClientConfig(u.Hostname(), f.pin, f.insecure, f.ca)
		if err != nil {
			return "", nil, usageErr(fmt.Errorf("TLS setup: %w", err))
		}
		tr.TLSClientConfig = cfg
	}
	return u.String(), &http.Client{Transport: tr}, nil
}

// download fetches the archive into a temporary file next to --out,
// verifies it and moves it to --out.
func (f *backupFlags) download(ctx context.Context, hc *http.Client, endpoint, key string) (server.BackupManifest, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return server.BackupManifest{}, 0, failed("backup", err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := hc.Do(req)
	if err != nil {
		return server.BackupManifest{}, 0, failed("backup", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return server.BackupManifest{}, 0, httpFailure("backup", resp)
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.out), ".pim-backup-*.partial")
	if err != nil {
		return server.BackupManifest{}, 0, failed("backup", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	size, err := io.Copy(tmp, resp.Body)
	if err != nil {
		return server.BackupManifest{}, 0, failed(fmt.Sprintf("backup: the transfer broke off after %d bytes", size), err)
	}
	if err := tmp.Sync(); err != nil {
		return server.BackupManifest{}, 0, failed("backup", err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return server.BackupManifest{}, 0, failed("backup", err)
	}
	m, err := server.VerifyBackup(tmp)
	if err != nil {
		return server.BackupManifest{}, 0, failed("backup: the archive received is not a complete backup", err)
	}
	if err := tmp.Close(); err != nil {
		return server.BackupManifest{}, 0, failed("backup", err)
	}
	if err := os.Rename(tmp.Name(), f.out); err != nil {
		return server.BackupManifest{}, 0, failed("backup", err)
	}
	done = true
	return m, size, nil
}

// httpFailure describes an error answer of the HTTP API ({"error": {code, message}}).
func httpFailure(what string, resp *http.Response) error {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &body) != nil || body.Error.Message == "" {
		return errors.New(what + ": the server answered " + resp.Status)
	}
	return fmt.Errorf("%s: the server answered %s: %s (code %s)", what, resp.Status, body.Error.Message, body.Error.Code)
}
