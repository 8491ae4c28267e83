package bus

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerConfig configures the embedded nats-server.
type ServerConfig struct {
	// DataDir holds JetStream's file storage. Required.
	DataDir string
	// Listen is HOST:PORT; default 127.0.0.1:4222. Port 0 picks a free port.
	Listen string
	// ReadyTimeout bounds start-up; default 10s.
	ReadyTimeout time.Duration
	// Name is the server's name, unique in a cluster; default "convoy".
	Name string
	// Cluster, if set, joins a JetStream cluster: the cluster's name, the
	// HOST:PORT to listen on for routes, and the routes to the others
	// (nats://HOST:PORT). With three nodes, provision with Replicas 3.
	Cluster *ClusterConfig
}

// ClusterConfig joins the embedded server to a NATS cluster.
type ClusterConfig struct {
	Name   string
	Listen string
	Routes []string
}

// DefaultListen is where the embedded server listens unless told otherwise.
const DefaultListen = "127.0.0.1:4222"

// Server is an embedded nats-server with JetStream on file storage. Every
// stored message is fsynced before it is acknowledged (sync_interval:
// always), so an acknowledged event survives a crash of the process or the
// machine.
type Server struct {
	ns *server.Server
}

// StartServer starts the embedded server and waits until it accepts
// connections.
func StartServer(cfg ServerConfig) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("start server: no data dir (pass --data DIR)")
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 10 * time.Second
	}
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("start server: listen address %q: want HOST:PORT such as %s", cfg.Listen, DefaultListen)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("start server: listen port %q: want a number from 0 to 65535", portStr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("start server: data dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("start server: data dir: %w", err)
	}
	name := cfg.Name
	if name == "" {
		name = "convoy"
	}
	opts := &server.Options{
		ServerName: name,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: true,
		NoSigs:     true,
		NoLog:      true,
		// JetStream's own limits; the stream itself is unbounded.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  -1,
	}
	if c := cfg.Cluster; c != nil {
		ch, cp, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("start server: cluster listen %q: want HOST:PORT", c.Listen)
		}
		cport, err := strconv.Atoi(cp)
		if err != nil {
			return nil, fmt.Errorf("start server: cluster port %q: %w", cp, err)
		}
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: ch, Port: cport}
		opts.Routes = server.RoutesFromStr(strings.Join(c.Routes, ","))
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("start server: not ready after %s (is %s already in use?)", cfg.ReadyTimeout, cfg.Listen)
	}
	return &Server{ns: ns}, nil
}

// ClientURL returns the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Name returns the server's name.
func (s *Server) Name() string { return s.ns.Name() }

// Shutdown stops the server and waits until it has stopped. Stored data is
// already durable; Shutdown loses nothing.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
