package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers/rollout"
	"github.com/convoy-fleet/convoy/projections"
)

type statusCmd struct{ env *env }

func (c *statusCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("status", "status [HOST...] [--tag T] [--json]",
		example{"show every host's state, commit and last upgrade", "convoy status"},
		example{"one host, as JSON", "convoy status sorrow --json"},
		example{"the hosts tagged canary in their worker config", "convoy status --tag canary"},
	)
	asJSON := fs.Bool("json", false, "print JSON")
	tag := fs.String("tag", "", "only hosts with this tag (tags = [...] in the worker config)")
	hosts, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *tag != "" {
		if err := events.ValidateTag(*tag); err != nil {
			return usageErr(fmt.Errorf("--tag: %w", err))
		}
	}
	for _, h := range hosts {
		if err := events.ValidateHost(h); err != nil {
			return usageErr(err)
		}
	}
	conn, fleet, err := c.env.openFleet(ctx, "status")
	if err != nil {
		return err
	}
	defer conn.Close()
	sts, err := c.read(ctx, fleet, hosts)
	if err != nil {
		return err
	}
	sts = slices.DeleteFunc(sts, func(s projections.Status) bool { return !s.HasTag(*tag) })
	printStorage(ctx, conn, c.env.stderr)
	if lag, err := fleet.Lag(ctx); err == nil && lag > 0 {
		fmt.Fprintf(c.env.stderr, "note: the status view is %d event(s) behind the stream (is `convoy server` running its projector?)\n", lag)
	}
	if *asJSON {
		if sts == nil {
			sts = []projections.Status{}
		}
		enc := json.NewEncoder(c.env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sts)
	}
	if len(sts) == 0 && *tag != "" {
		fmt.Fprintf(c.env.stdout, "no host has tag %q (tags = [...] in a worker config, shown once its worker started)\n", *tag)
		return nil
	}
	if len(sts) == 0 {
		fmt.Fprintln(c.env.stdout, "no hosts yet: start a worker (convoy worker --config FILE)")
		return nil
	}
	t := table(c.env.stdout)
	row(t, "HOST", "STATE", "STAGE", "COMMIT", "RESULT", "GOLDEN", "LAST UPGRADE", "WORKER", "TAGS", "UPDATED", "REBOOT")
	for _, s := range sts {
		last := s.LastResult
		if last != "" && s.LastFailed != "" {
			last += " (" + s.LastFailed + ")"
		}
		golden := filepath.Base(s.Golden)
		if s.Golden == "" {
			golden = "-"
		}
		row(t, s.Host, s.State, dash(s.Stage), dash(short(s.Commit)), dash(filepath.Base(s.Result)), golden, dash(last), dash(s.Worker), dash(strings.Join(s.Tags, ",")), ago(s.Updated), reboot(s.RebootRequired))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	return c.printRollouts(ctx, conn)
}

// printRollouts lists the rollouts that have not ended, under the table.
func (c *statusCmd) printRollouts(ctx context.Context, conn *bus.Conn) error {
	rs, err := rollout.List(ctx, conn)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.End != "" {
			continue
		}
		fmt.Fprintf(c.env.stdout, "rollout %s: %s, wave %d of %d, rev %s (convoy rollout status %s)\n", r.ID, r.State(), len(r.Waves), len(r.Plan.Waves), short(r.Plan.Rev), r.ID)
	}
	return nil
}

// read returns the named hosts' rows, in the order named, or every row.
func (c *statusCmd) read(ctx context.Context, fleet *projections.Fleet, hosts []string) ([]projections.Status, error) {
	if len(hosts) == 0 {
		return fleet.All(ctx)
	}
	byHost, err := fleet.Hosts(ctx, hosts)
	if err != nil {
		return nil, err
	}
	sts := make([]projections.Status, 0, len(hosts))
	for _, h := range hosts {
		s, ok := byHost[h]
		if !ok {
			return nil, usageErr(projections.UnknownHost(h))
		}
		sts = append(sts, s)
	}
	return sts, nil
}

// reboot marks a host whose running system waits for a reboot.
func reboot(required bool) string {
	if required {
		return "required"
	}
	return "-"
}

func dash(s string) string {
	if s == "" || s == "." {
		return "-"
	}
	return s
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}
