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
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// RequestQueueLimit is how many JetStream API requests the embedded
// server queues before it refuses more.
const RequestQueueLimit = 100_000

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
	// Auth requires every client to authenticate with an nkey listed in
	// UsersFile (default DataDir/users.json), with the permissions of its
	// role. The server's own connection gets a key made at start.
	Auth      bool
	UsersFile string
	// TLSCert and TLSKey, if set, serve TLS; clients verify the server
	// against the CA they are given.
	TLSCert, TLSKey string
	// Cluster, if set, joins a JetStream cluster: the cluster's name, the
	// HOST:PORT to listen on for routes, and the routes to the others
	// (nats://HOST:PORT). With three nodes, provision with Replicas 3.
	Cluster *ClusterConfig
	// MinFree is the storage guard's reserve in bytes (see WatchStorage):
	// below it new requests are refused, below MinFree/8 every append.
	// 0 turns the thresholds off; a write that fails for lack of space is
	// still caught and recovered from.
	MinFree uint64
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
	ns        *server.Server
	opts      *server.Options
	usersFile string
	self      nkeys.KeyPair // the server's own credential, when Auth
	guard     *guard
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
		name = "convoy-" + portStr
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
		// JetStream's own limits. nats-server's default store limit is
		// 75% of the disk that was free at start, fixed from then on: a
		// cap that says nothing once the disk changes. The storage guard
		// (WatchStorage) watches the real free space instead.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  1 << 50,
		// A fleet's workers all (re)connecting at once each make a few
		// API calls; the default queue of 10,000 would refuse some.
		JetStreamRequestQueueLimit: RequestQueueLimit,
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
	srv := &Server{opts: opts, guard: newGuard(name, dir, cfg.MinFree)}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey})
		if err != nil {
			return nil, fmt.Errorf("start server: TLS: %w", err)
		}
		opts.TLSConfig, opts.TLSTimeout = tc, 5
	}
	if cfg.Auth {
		srv.usersFile = cfg.UsersFile
		if srv.usersFile == "" {
			srv.usersFile = filepath.Join(dir, UsersFile)
		}
		if srv.self, err = nkeys.CreateUser(); err != nil {
			return nil, fmt.Errorf("start server: %w", err)
		}
		users, err := srv.users()
		if err != nil {
			return nil, fmt.Errorf("start server: %w", err)
		}
		opts.Nkeys = users
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start server: %w", err)
	}
	srv.ns = ns
	// Only to catch writes that fail for lack of space; nothing is logged.
	ns.SetLogger(serverLog{srv.guard}, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(cfg.ReadyTimeout) {
		ns.Shutdown()
		return nil, fmt.Errorf("start server: not ready after %s (is %s already in use?)", cfg.ReadyTimeout, cfg.Listen)
	}
	return srv, nil
}

// users returns the nkey users the server accepts: its own and the file's.
func (s *Server) users() ([]*server.NkeyUser, error) {
	us, err := LoadUsers(s.usersFile)
	if err != nil {
		return nil, err
	}
	pub, err := s.self.PublicKey()
	if err != nil {
		return nil, err
	}
	return append(nkeyUsers(us), &server.NkeyUser{Nkey: pub}), nil
}

// ReloadUsers rereads the users file and applies it to the running
// server; connections of removed users are closed.
func (s *Server) ReloadUsers() error {
	if s.self == nil {
		return nil
	}
	users, err := s.users()
	if err != nil {
		return err
	}
	opts := s.opts.Clone()
	opts.Nkeys = users
	if err := s.ns.ReloadOptions(opts); err != nil {
		return fmt.Errorf("reload users: %w", err)
	}
	s.opts = opts
	return nil
}

// InternalURL is the URL to give Connect together with ClientOptions: the
// connection is in process, so it is never TLS.
func (s *Server) InternalURL() string {
	return strings.Replace(s.ClientURL(), "tls://", "nats://", 1)
}

// UsersFile returns the users file of a server with Auth ("" without).
func (s *Server) UsersFile() string { return s.usersFile }

// ClientOptions returns the options for the server's own connection: in
// process (no TLS to verify), with its credential when Auth is on.
func (s *Server) ClientOptions() []nats.Option {
	if s.self == nil {
		return []nats.Option{nats.InProcessServer(s.ns)}
	}
	pub, _ := s.self.PublicKey()
	return []nats.Option{nats.Nkey(pub, s.self.Sign), nats.InProcessServer(s.ns)}
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
