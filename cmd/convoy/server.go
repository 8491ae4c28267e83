package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	rungroup "github.com/oklog/run"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/projections/alerts"
	"github.com/convoy-fleet/convoy/projections/metrics"
)

type serverCmd struct{ env *env }

func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/convoy/bus"
	}
	if d, err := os.UserHomeDir(); err == nil {
		return filepath.Join(d, ".local", "state", "convoy", "bus")
	}
	return "convoy-bus"
}

func (c *serverCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("server", "server [--data DIR] [--listen HOST:PORT] [--http HOST:PORT]",
		example{"run the bus and the projections on 127.0.0.1:4222, with the data in the default dir", "convoy server"},
		example{"serve the fleet over the network: TLS, and credentials from convoy creds", "convoy server --listen 0.0.0.0:4222 --tls-cert /etc/convoy/bus.pem --tls-key /etc/convoy/bus-key.pem --data /var/lib/convoy/bus"},
		example{"also serve the dashboard, /healthz and /metrics on http://127.0.0.1:9426/", "convoy server --http 127.0.0.1:9426"},
		example{"serve them to the network: TLS and a token are then required", "convoy server --http 0.0.0.0:9426 --http-tls-cert /etc/convoy/http.pem --http-tls-key /etc/convoy/http-key.pem --http-token-file /etc/convoy/http-token"},
		example{"take the flags from a file (keys are flag names: http = \"127.0.0.1:9426\", min_free = \"1GiB\") and send the alerts of its [alerts] section", "convoy server --config /etc/convoy/server.toml"},
		example{"one node of a three-node cluster (run node2 and node3 likewise, with the same --routes)", "convoy server --name node1 --listen 10.0.0.1:4222 --tls-cert /etc/convoy/bus.pem --tls-key /etc/convoy/bus-key.pem --cluster convoy --cluster-listen 10.0.0.1:6222 --routes nats://10.0.0.1:6222,nats://10.0.0.2:6222,nats://10.0.0.3:6222 --replicas 3"},
	)
	data := fs.String("data", defaultDataDir(), "directory for JetStream's file storage")
	listen := fs.String("listen", bus.DefaultListen, "address to listen on; beyond loopback, credentials and TLS are required")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	auth := fs.Bool("auth", false, "require credentials from convoy creds (always on beyond loopback)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate file (required beyond loopback)")
	tlsKey := fs.String("tls-key", "", "TLS key file")
	noTLS := fs.Bool("insecure-no-tls", false, "listen beyond loopback without TLS (credentials still required)")
	name := fs.String("name", "", "server name, unique in a cluster (default convoy-<port>)")
	cluster := fs.String("cluster", "", "join a JetStream cluster of this name (with --cluster-listen and --routes)")
	clusterListen := fs.String("cluster-listen", "", "HOST:PORT for cluster routes")
	routes := fs.String("routes", "", "comma-separated nats://HOST:PORT routes to the other nodes")
	replicas := fs.Int("replicas", 1, "replicas of the stream and buckets when they are created (3 on a 3-node cluster)")
	controller := fs.Bool("controller", true, "run the rollout controller (false: it runs elsewhere, as convoy controller)")
	storage := addStorageFlags(fs)
	var hcfg httpConfig
	addHTTPFlags(fs, &hcfg, "", "serve the dashboard, /healthz and /metrics on HOST:PORT, e.g. "+DefaultHTTP+" (off when empty)")
	memLimit := fs.String("memory-limit", "512MiB", "soft limit of the server's memory: the Go runtime collects harder near it, and may exceed it when it must (0: none; the GOMEMLIMIT environment variable, if set, wins)")
	config := fs.String("config", "", "TOML file whose keys are these flags (http = \"127.0.0.1:9426\"; the command line wins) and whose [alerts] section, if any, is sent as convoy alerts does (docs/alerts.md)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	var alertsCfg *alerts.Config
	if *config != "" {
		var err error
		if alertsCfg, err = applyServerConfig(*config, fs); err != nil {
			return usageErr(err)
		}
	}
	minFree, retention, err := storage.parse()
	if err != nil {
		return err
	}
	limit, err := parseBytes(*memLimit)
	if err != nil {
		return usageErr(fmt.Errorf("--memory-limit %w", err))
	}
	if limit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		// Idle connections leave garbage that the default GC target lets
		// grow to twice the live heap; a fleet's server should not.
		debug.SetMemoryLimit(limit)
	}
	if c.env.given["nats"] {
		fmt.Fprintln(c.env.stderr, "note: --nats is ignored: the server runs its own bus (for an external NATS, run convoy projector --nats URL instead)")
	}
	log, err := c.env.logger(*logLevel)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return usageErr(fmt.Errorf("--listen %q: want HOST:PORT such as %s", *listen, bus.DefaultListen))
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usageErr(errors.New("--tls-cert and --tls-key go together"))
	}
	if hcfg.Addr != "" {
		if err := hcfg.Validate(); err != nil {
			return usageErr(err)
		}
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		// Beyond loopback anyone on the network could rebuild the fleet.
		*auth = true
		if *tlsCert == "" && !*noTLS {
			return usageErr(fmt.Errorf("--listen %s is beyond loopback: give --tls-cert and --tls-key (or, knowingly, --insecure-no-tls)", *listen))
		}
	}
	if _, err := os.Stat(filepath.Join(*data, bus.UsersFile)); err == nil && !*auth {
		// Credentials were issued for this bus: never ignore them.
		*auth = true
		log.Info("credentials exist in the data dir; authentication is on", "users", filepath.Join(*data, bus.UsersFile))
	}
	scfg := bus.ServerConfig{DataDir: *data, Listen: *listen, Auth: *auth, TLSCert: *tlsCert, TLSKey: *tlsKey, Name: *name, MinFree: minFree}
	if *cluster != "" {
		if *clusterListen == "" || *routes == "" {
			return usageErr(errors.New("--cluster needs --cluster-listen HOST:PORT and --routes nats://HOST:PORT,..."))
		}
		scfg.Cluster = &bus.ClusterConfig{Name: *cluster, Listen: *clusterListen, Routes: strings.Split(*routes, ",")}
		if *name == "" {
			return usageErr(errors.New("--cluster needs --name, unique among the nodes"))
		}
		scfg.ReadyTimeout = time.Minute
	}
	if *replicas < 1 || *replicas > 5 {
		return usageErr(fmt.Errorf("--replicas %d: want 1 to 5", *replicas))
	}
	srv, err := bus.StartServer(scfg)
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	conn, proj, err := connectProjector(ctx, bus.ConnectConfig{URL: srv.InternalURL(), Name: "convoy server", MaxWait: 5 * time.Second, Replicas: *replicas, Options: srv.ClientOptions(), Retention: &retention}, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	var web *httpListener
	var mets *metrics.Metrics
	if hcfg.Addr != "" {
		if mets, err = newMetrics(ctx, conn, srv.Storage, log.With("part", "metrics")); err != nil {
			return err
		}
		hcfg.Metrics, hcfg.Storage = mets.Handler(), srv.Storage
		if web, err = newHTTPListener(ctx, hcfg, conn, log.With("part", "http")); err != nil {
			return err
		}
	}
	var alerter *alerts.Alerter
	if alertsCfg != nil {
		storage := func(context.Context) ([]bus.Storage, error) { return []bus.Storage{srv.Storage()}, nil }
		if alerter, err = newAlerter(ctx, conn, *alertsCfg, alerts.Options{Storage: storage}, log); err != nil {
			return err
		}
		if mets != nil {
			if err := mets.Register(metrics.AlertsCollector(alerter.Stats)); err != nil {
				return err
			}
		}
	}
	log.Info("convoy server ready", "url", srv.ClientURL(), "data", *data, "fsync", "always", "auth", *auth, "tls", *tlsCert != "", "min_free", bus.FormatBytes(minFree), "retain", retention.MaxAge, "retain_bytes", retention.MaxBytes)
	fmt.Fprintf(c.env.stdout, "convoy server listening on %s (data in %s)\n", srv.ClientURL(), *data)
	if *auth {
		fmt.Fprintf(c.env.stdout, "credentials required; issue them with convoy creds ... --data %s\n", *data)
	}
	if web != nil {
		log.Info("dashboard ready", "url", web.URL(), "token", hcfg.TokenFile != "")
		fmt.Fprintf(c.env.stdout, "dashboard on %s\n", web.URL())
	}

	var g rungroup.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return runProjector(ctx, proj, log) }, func(error) { cancel() })
	}
	if *controller {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return runController(ctx, conn, log) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return runStorageGuard(ctx, srv, conn, log) }, func(error) { cancel() })
	}
	if every := snapshotEvery(retention); every > 0 {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return runSnapshots(ctx, proj, every, log) }, func(error) { cancel() })
	}
	if alerter != nil {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return runAlerter(ctx, alerter, log) }, func(error) { cancel() })
	}
	if web != nil {
		g.Add(web.Serve, func(error) { web.Shutdown() })
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return mets.Run(ctx) }, func(error) { cancel() })
	}
	if *auth {
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { watchUsers(ctx, srv, log); return nil }, func(error) { cancel() })
	}
	err = g.Run()
	log.Info("convoy server stopped")
	return err
}

// connectProjector connects to the bus, provisions it, and returns the
// projector that keeps its status view: the start of convoy server. The
// caller closes the connection.
func connectProjector(ctx context.Context, cfg bus.ConnectConfig, log *slog.Logger) (*bus.Conn, *projections.Projector, error) {
	conn, err := connectProvisioned(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	proj, err := projections.NewProjector(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, proj, nil
}

// connectProvisioned connects to the bus and provisions it. The caller
// closes the connection.
func connectProvisioned(ctx context.Context, cfg bus.ConnectConfig, log *slog.Logger) (*bus.Conn, error) {
	conn, err := bus.Connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// A cluster can provision only once its nodes have elected a leader.
	if err := provision(ctx, conn, log); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// provision creates the stream and buckets, retrying while a cluster
// elects its leaders.
func provision(ctx context.Context, conn *bus.Conn, log *slog.Logger) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, bus.APITimeout)
		err := conn.Provision(pctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		log.Warn("provisioning the stream; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// runProjector keeps the projector running until ctx ends.
func runProjector(ctx context.Context, proj *projections.Projector, log *slog.Logger) error {
	return keepRunning(ctx, "projector", proj.Run, log)
}

// keepRunning runs part until ctx ends, restarting it a second after it
// stops with an error.
func keepRunning(ctx context.Context, name string, part func(context.Context) error, log *slog.Logger) error {
	for {
		err := part(ctx)
		if ctx.Err() != nil {
			return nil
		}
		log.Error(name+" stopped; restarting", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// watchUsers applies changes to the users file (from convoy creds) to the
// running server.
func watchUsers(ctx context.Context, srv *bus.Server, log *slog.Logger) {
	var last time.Time
	if fi, err := os.Stat(srv.UsersFile()); err == nil {
		last = fi.ModTime()
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(srv.UsersFile())
		if err != nil || !fi.ModTime().After(last) {
			continue
		}
		last = fi.ModTime()
		if err := srv.ReloadUsers(); err != nil {
			log.Error("users file not applied", "file", srv.UsersFile(), "err", err)
			continue
		}
		log.Info("users file applied", "file", srv.UsersFile())
	}
}
