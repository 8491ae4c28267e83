package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/workers"
)

type workerCmd struct{ env *env }

func (c *workerCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("worker", "worker --config FILE [--allow-root]",
		example{"run this host's worker", "convoy worker --config /etc/convoy/worker.toml"},
		example{"the same against a remote bus, with its own log level", "convoy --nats nats://bus.example.org:4222 worker --config /etc/convoy/worker.toml --log-level debug"},
	)
	hf := addHostFlags(fs, "run as root (containers and tests only)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg, log, err := c.env.loadHost(hf)
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 && !*hf.allowRoot {
		return usageErr(errors.New("refusing to run as root, as nh os does: run the worker as a normal user and let system.elevation (sudo) grant the switch alone; --allow-root overrides this in containers and tests"))
	}
	conn, err := c.env.connectAs(ctx, "worker "+cfg.Host, -1, bus.InboxPrefix(cfg.Host))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer conn.Close()
	w, err := workers.New(workers.Options{Config: cfg, Conn: conn, Logger: log, Version: version})
	if err != nil {
		return usageErr(err)
	}
	if err := w.Run(ctx); err != nil {
		return fmt.Errorf("worker %s: %w", cfg.Host, err)
	}
	return nil
}
