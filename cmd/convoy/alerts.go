package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/projections/alerts"
)

type alertsCmd struct{ env *env }

// Run sends the fleet's alerts to the sinks of --config until stopped.
func (c *alertsCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("alerts", "alerts --config FILE [--nats URL] [--log-level LEVEL]",
		example{"send alerts as alerts.toml's [alerts] section says (see docs/alerts.md)", "convoy alerts --config /etc/convoy/alerts.toml"},
		example{"with an operator credential, against a remote bus", "convoy alerts --config alerts.toml --nats tls://convoy.example.org:4222 --tls-ca /etc/convoy/ca.pem --nkey /etc/convoy/alerts.nk"},
	)
	config := fs.String("config", "", "TOML file with an [alerts] section (required; see docs/alerts.md)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *config == "" {
		return usageErr(errors.New("--config FILE is required (see docs/alerts.md)"))
	}
	log, err := c.env.logger(*logLevel)
	if err != nil {
		return err
	}
	cfg, err := alerts.LoadFile(*config)
	if err != nil {
		return usageErr(err)
	}
	conn, err := c.env.connect(ctx, "alerts", 30*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	a, err := newAlerter(ctx, conn, cfg, alerts.Options{}, log)
	if err != nil {
		return err
	}
	return runAlerter(ctx, a, log)
}

// newAlerter starts the alerts subscriber of cfg on conn: a config that
// cannot start (a missing secret file) is a usage error.
func newAlerter(ctx context.Context, conn *bus.Conn, cfg alerts.Config, o alerts.Options, log *slog.Logger) (*alerts.Alerter, error) {
	a, err := alerts.New(ctx, conn, cfg, log.With("part", "alerts"), o)
	if err != nil {
		return nil, usageErr(fmt.Errorf("alerts: %w", err))
	}
	log.Info("convoy alerts running", "part", "alerts", "sinks", len(cfg.Sinks), "rules", len(cfg.Rules))
	return a, nil
}

// runAlerter keeps a running until ctx ends (convoy alerts, and the part
// convoy server runs when its config has an [alerts] section); a failure
// is logged and the subscriber restarted.
func runAlerter(ctx context.Context, a *alerts.Alerter, log *slog.Logger) error {
	return keepRunning(ctx, "alerts", a.Run, log.With("part", "alerts"))
}
