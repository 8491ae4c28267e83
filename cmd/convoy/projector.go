package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/projections"
)

type projectorCmd struct{ env *env }

// Run provisions an external NATS (the stream, the buckets) and keeps the
// projections there: what `convoy server` does for its embedded bus.
func (c *projectorCmd) Run(ctx context.Context, args []string) error {
	keep := func(ctx context.Context, conn *bus.Conn, log *slog.Logger) error {
		proj, err := projections.NewProjector(ctx, conn)
		if err != nil {
			return err
		}
		return runProjector(ctx, proj, log)
	}
	return c.env.runExternal(ctx, "projector", args, keep,
		example{"provision your own 3-node NATS cluster and keep the status view there", "convoy projector --nats nats://nats1.example.org:4222 --nkey /etc/convoy/projector.nk --replicas 3"},
	)
}

// runExternal runs part, a part of convoy server, against an external
// NATS (convoy projector, convoy controller): it parses the command's
// flags (--replicas, --log-level), connects to --nats, trying for 30
// seconds, provisions the stream and buckets, and runs part on the
// connection until ctx ends.
func (e *env) runExternal(ctx context.Context, name string, args []string, part func(context.Context, *bus.Conn, *slog.Logger) error, examples ...example) error {
	fs := e.flags(name, name+" --nats URL [--replicas N] [--log-level LEVEL]", examples...)
	replicas := fs.Int("replicas", 1, "stream and bucket replicas when they are created (3 on a 3-node cluster)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *replicas < 1 || *replicas > 5 {
		return usageErr(fmt.Errorf("--replicas %d: want 1 to 5", *replicas))
	}
	log, err := e.logger(*logLevel)
	if err != nil {
		return err
	}
	url := e.nats
	if url == "" {
		url = bus.DefaultURL
	}
	conn, err := connectProvisioned(ctx, bus.ConnectConfig{URL: url, Name: "convoy " + name, Replicas: *replicas, NKeyFile: e.nkey, CAFile: e.tlsCA, MaxWait: 30 * time.Second}, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	log.Info("convoy "+name+" running", "url", url, "replicas", *replicas)
	return part(ctx, conn, log)
}
