package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	rungroup "github.com/oklog/run"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/projections"
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
	fs := c.env.flags("server", "server [--data DIR] [--listen HOST:PORT]")
	data := fs.String("data", defaultDataDir(), "directory for JetStream's file storage")
	listen := fs.String("listen", bus.DefaultListen, "address to listen on (loopback only)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	log, err := c.env.logger(*logLevel)
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return usageErr(fmt.Errorf("--listen %q: want HOST:PORT such as %s", *listen, bus.DefaultListen))
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return usageErr(fmt.Errorf("--listen %s: the embedded server listens on loopback only; to serve a fleet across machines, run a NATS cluster with authentication and point convoy at it with --nats", *listen))
	}
	srv, err := bus.StartServer(bus.ServerConfig{DataDir: *data, Listen: *listen})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	conn, err := bus.Connect(ctx, bus.ConnectConfig{URL: srv.ClientURL(), Name: "convoy server", MaxWait: 5 * time.Second})
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Provision(ctx); err != nil {
		return err
	}
	proj, err := projections.NewProjector(ctx, conn)
	if err != nil {
		return err
	}
	log.Info("convoy server ready", "url", srv.ClientURL(), "data", *data, "fsync", "always")
	fmt.Fprintf(c.env.stdout, "convoy server listening on %s (data in %s)\n", srv.ClientURL(), *data)

	var g rungroup.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			for {
				err := proj.Run(ctx)
				if ctx.Err() != nil {
					return nil
				}
				log.Error("projector stopped; restarting", "err", err)
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		}, func(error) { cancel() })
	}
	err = g.Run()
	log.Info("convoy server stopped")
	return err
}
