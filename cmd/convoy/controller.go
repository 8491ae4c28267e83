package main

import (
	"context"
	"log/slog"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/producers/rollout"
)

type controllerCmd struct{ env *env }

// Run provisions an external NATS and runs the rollout controller there:
// what `convoy server` does for its embedded bus. Beside a convoy server,
// or another convoy controller, it is a second controller: each fact is
// guarded, so the two act once.
func (c *controllerCmd) Run(ctx context.Context, args []string) error {
	return c.env.runExternal(ctx, "controller", args, runController,
		example{"run the rollouts on your own NATS, next to convoy projector", "convoy controller --nats nats://nats1.example.org:4222 --nkey /etc/convoy/controller.nk --replicas 3"},
		example{"a second controller beside convoy server, on another machine", "convoy controller --nats tls://convoy.example.org:4222 --tls-ca /etc/convoy/ca.pem --nkey /etc/convoy/controller.nk"},
	)
}

// runController keeps the rollout controller running on conn until ctx
// ends: the part of convoy server and convoy controller.
func runController(ctx context.Context, conn *bus.Conn, log *slog.Logger) error {
	ctl := &rollout.Controller{Conn: conn, Log: log.With("part", "rollout-controller")}
	return keepRunning(ctx, "rollout controller", ctl.Run, log)
}
