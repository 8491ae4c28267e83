package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/projections/dashboard"
	"github.com/convoy-fleet/convoy/projections/metrics"
)

// DefaultHTTP is the address the docs suggest for --http.
const DefaultHTTP = "127.0.0.1:9426"

// tokenCookie holds the token in a browser that opened /?token=....
const tokenCookie = "convoy_token"

// httpConfig is the HTTP listener of convoy server and convoy demo: the
// dashboard on /, /healthz, and /metrics when Metrics is set.
type httpConfig struct {
	// Addr is HOST:PORT. Beyond loopback, TLS and a token are required.
	Addr string
	// TLSCert and TLSKey are PEM files; with them the listener serves
	// HTTPS only.
	TLSCert, TLSKey string
	// TokenFile holds the bearer token every request but /healthz must
	// give (required beyond loopback; optional on loopback).
	TokenFile string
	// Metrics, when set, serves /metrics (package projections/metrics).
	Metrics http.Handler
	// Storage, when set, is the storage guard of the server this process
	// runs (bus.Server.Storage): /healthz reports it and fails while the
	// disk is full.
	Storage func() bus.Storage
}

// addHTTPFlags adds --http and its TLS and token flags to fs.
func addHTTPFlags(fs *flag.FlagSet, cfg *httpConfig, def, usage string) {
	fs.StringVar(&cfg.Addr, "http", def, usage)
	fs.StringVar(&cfg.TLSCert, "http-tls-cert", "", "TLS certificate file of the --http listener (required beyond loopback)")
	fs.StringVar(&cfg.TLSKey, "http-tls-key", "", "TLS key file of the --http listener")
	fs.StringVar(&cfg.TokenFile, "http-token-file", "", "file holding the token every --http request (but /healthz) must give as `Authorization: Bearer TOKEN` (required beyond loopback)")
}

// loopback reports whether host (of HOST:PORT) is a loopback address.
func loopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// Validate reports every problem of c at once.
func (c httpConfig) Validate() error {
	var errs []error
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		errs = append(errs, fmt.Errorf("--http %q: want HOST:PORT such as %s", c.Addr, DefaultHTTP))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--http-tls-cert and --http-tls-key go together"))
	}
	if err == nil && !loopback(host) {
		// Beyond loopback anyone on the network could read the fleet's
		// outputs and commits.
		if c.TLSCert == "" {
			errs = append(errs, fmt.Errorf("--http %s is beyond loopback: give --http-tls-cert and --http-tls-key", c.Addr))
		}
		if c.TokenFile == "" {
			errs = append(errs, fmt.Errorf("--http %s is beyond loopback: give --http-token-file (a file holding a random token, mode 0600)", c.Addr))
		}
	}
	return errors.Join(errs...)
}

// httpListener serves the dashboard, /healthz and /metrics. Serve runs
// until Shutdown; both are the execute and interrupt of a run group part.
type httpListener struct {
	srv    *http.Server
	ln     net.Listener
	url    string
	cancel context.CancelFunc // ends the requests' context: event streams end
}

// newHTTPListener checks cfg, reads the token and the certificate, and
// binds the address, so that every mistake shows before the server says
// it is ready.
func newHTTPListener(ctx context.Context, cfg httpConfig, conn *bus.Conn, log *slog.Logger) (*httpListener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, usageErr(err)
	}
	var token []byte
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("--http-token-file: %w", err)
		}
		if token = []byte(strings.TrimSpace(string(b))); len(token) < 16 {
			return nil, usageErr(fmt.Errorf("--http-token-file %s: the token is %d characters long; want at least 16 (e.g. openssl rand -hex 32 > %s)", cfg.TokenFile, len(token), cfg.TokenFile))
		}
	}
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--http-tls-cert: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	dash, err := dashboard.New(ctx, dashboard.Config{Conn: conn, Logger: log.With("part", "dashboard")})
	if err != nil {
		return nil, err
	}
	fleet, err := projections.OpenFleet(ctx, conn)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	guarded := http.NewServeMux()
	guarded.Handle("/", dash)
	if cfg.Metrics != nil {
		guarded.Handle("GET /metrics", cfg.Metrics)
	}
	var h http.Handler = guarded
	if token != nil {
		h = requireToken(token, tlsCfg != nil, guarded)
	}
	mux.Handle("/", h)
	mux.Handle("GET /healthz", healthz(fleet, cfg.Storage))

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", cfg.Addr, err)
	}
	scheme := "http"
	if tlsCfg != nil {
		ln, scheme = tls.NewListener(ln, tlsCfg), "https"
	}
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: /events streams for as long as a page is open.
		BaseContext: func(net.Listener) context.Context { return base },
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return &httpListener{srv: srv, ln: ln, url: scheme + "://" + ln.Addr().String() + "/", cancel: cancel}, nil
}

// URL is the listener's address, as a browser opens it.
func (l *httpListener) URL() string { return l.url }

// Serve serves until Shutdown, and then returns nil.
func (l *httpListener) Serve() error {
	if err := l.srv.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// shutdownGrace bounds how long Shutdown waits for requests in flight.
const shutdownGrace = 5 * time.Second

// Shutdown ends the event streams, stops accepting, and waits up to
// shutdownGrace for the requests in flight.
func (l *httpListener) Shutdown() {
	l.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := l.srv.Shutdown(ctx); err != nil {
		_ = l.srv.Close()
	}
}

// requireToken lets through requests that give token: as `Authorization:
// Bearer TOKEN` (Prometheus, curl), in the cookie a browser got by
// opening any page with ?token=TOKEN once (answered with a redirect to
// the same page without it, so the token leaves the address bar and the
// history), or not at all (401). Tokens are compared in constant time,
// as SHA-256 sums, so neither their content nor their length leaks.
func requireToken(token []byte, secure bool, next http.Handler) http.Handler {
	want := sha256.Sum256(token)
	ok := func(got string) bool {
		sum := sha256.Sum256([]byte(got))
		return subtle.ConstantTimeCompare(sum[:], want[:]) == 1
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); found && ok(a) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && ok(c.Value) {
			next.ServeHTTP(w, r)
			return
		}
		q := r.URL.Query()
		if t := q.Get("token"); t != "" && ok(t) && r.Method == http.MethodGet {
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: t, Path: "/", HttpOnly: true, Secure: secure, SameSite: http.SameSiteLaxMode})
			q.Del("token")
			u := *r.URL
			u.RawQuery = q.Encode()
			http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="convoy"`)
		http.Error(w, "401 unauthorized: give the token of --http-token-file as `Authorization: Bearer TOKEN`, or open /?token=TOKEN once in a browser", http.StatusUnauthorized)
	})
}

// health is the answer of /healthz.
type health struct {
	Status string `json:"status"` // "ok" or "unavailable"
	Bus    string `json:"bus"`    // "connected" or "unreachable"
	// ProjectorLag is how many stream sequences the status view is
	// behind, when the bus answered.
	ProjectorLag *uint64 `json:"projector_lag_events,omitempty"`
	// Storage is the level of the server's data dir (ok, low or full)
	// and StorageProblem what it means while it is not ok.
	Storage        bus.StorageLevel `json:"storage,omitempty"`
	StorageProblem string           `json:"storage_problem,omitempty"`
	Error          string           `json:"error,omitempty"`
}

// healthTimeout bounds the bus reads of one /healthz.
const healthTimeout = 2 * time.Second

// healthz answers 200 when the bus answers (the stream's last sequence
// and the projector's checkpoint), 503 when it does not or when the
// server's storage (if storage is given) is full. A lagging projector and
// a disk below --min-free are reported, not failed: a burst of events
// makes the projector lag, and a low disk still stores facts.
func healthz(fleet *projections.Fleet, storage func() bus.Storage) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), healthTimeout)
		defer cancel()
		h, code := health{Status: "ok", Bus: "connected"}, http.StatusOK
		lag, err := fleet.Lag(ctx)
		if err != nil {
			h, code = health{Status: "unavailable", Bus: "unreachable", Error: err.Error()}, http.StatusServiceUnavailable
		} else {
			h.ProjectorLag = &lag
		}
		if storage != nil {
			st := storage()
			h.Storage, h.StorageProblem = st.Level, st.Problem()
			if st.Level == bus.StorageFull {
				h.Status, code = "unavailable", http.StatusServiceUnavailable
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(h)
	})
}

// newMetrics returns the metrics /metrics serves: the fleet's, and the
// storage guard's when storage is given. The caller runs its Run as a
// part of the run group.
func newMetrics(ctx context.Context, conn *bus.Conn, storage func() bus.Storage, log *slog.Logger) (*metrics.Metrics, error) {
	fleet, err := projections.OpenFleet(ctx, conn)
	if err != nil {
		return nil, err
	}
	m, err := metrics.New(ctx, metrics.Config{Conn: conn, Fleet: fleet, Version: version, Logger: log})
	if err != nil {
		return nil, err
	}
	if storage != nil {
		if err := m.Register(metrics.StorageCollector(storage)); err != nil {
			return nil, err
		}
	}
	return m, nil
}
