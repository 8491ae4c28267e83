package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/convoy-fleet/convoy/projections"
)

type projectionsCmd struct{ env *env }

// Run recomputes every host's status from the whole stream and replaces
// the view; it is safe while convoy server runs its projector.
func (c *projectionsCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("projections", "projections rebuild",
		example{"recompute every host's status from the whole stream", "convoy projections rebuild"},
	)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || pos[0] != "rebuild" {
		return usageErr(errors.New("want: convoy projections rebuild"))
	}
	conn, fleet, err := c.env.openFleet(ctx, "projections")
	if err != nil {
		return err
	}
	defer conn.Close()
	p, err := projections.NewProjector(ctx, conn)
	if err != nil {
		return err
	}
	start := time.Now()
	n, err := p.Rebuild(ctx)
	if err != nil {
		return err
	}
	sts, err := fleet.All(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.env.stdout, "rebuilt the status of %d host(s) from %d event(s) in %s\n", len(sts), n, time.Since(start).Round(time.Millisecond))
	return nil
}
