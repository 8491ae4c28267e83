package main

import (
	"context"
	"fmt"
	"time"

	"github.com/convoy-fleet/convoy/bus"
)

type projectorCmd struct{ env *env }

// Run provisions an external NATS (the stream, the buckets) and keeps the
// projections there: what `convoy server` does for its embedded bus.
func (c *projectorCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("projector", "projector --nats URL [--replicas N]",
		example{"provision your own 3-node NATS cluster and keep the status view there", "convoy projector --nats nats://nats1.example.org:4222 --nkey /etc/convoy/projector.nk --replicas 3"},
	)
	replicas := fs.Int("replicas", 1, "stream and bucket replicas when they are created (3 on a 3-node cluster)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *replicas < 1 || *replicas > 5 {
		return usageErr(fmt.Errorf("--replicas %d: want 1 to 5", *replicas))
	}
	log, err := c.env.logger(*logLevel)
	if err != nil {
		return err
	}
	url := c.env.nats
	if url == "" {
		url = bus.DefaultURL
	}
	conn, proj, err := connectProjector(ctx, bus.ConnectConfig{URL: url, Name: "convoy projector", Replicas: *replicas, NKeyFile: c.env.nkey, CAFile: c.env.tlsCA, MaxWait: 30 * time.Second}, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	log.Info("convoy projector running", "url", url, "replicas", *replicas)
	return runProjector(ctx, proj, log)
}
