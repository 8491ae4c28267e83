package main

import (
	"context"
	"fmt"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

type watchCmd struct{ env *env }

// Run prints the hosts' facts and requests, and the rollouts' events
// (unless hosts are named), as they are stored, from now
// (or from the first event) until ctx is done, and then returns nil.
func (c *watchCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("watch", "watch [HOST...] [--json] [--all-history]",
		example{"follow every host's events as they happen", "convoy watch"},
		example{"one host's events from the first, then live, as JSON lines", "convoy watch sorrow --all-history --json"},
	)
	asJSON := fs.Bool("json", false, "print JSON lines")
	from := fs.Bool("all-history", false, "start at the first event instead of now")
	hosts, err := parse(fs, args)
	if err != nil {
		return err
	}
	filters := []string{events.AllHostFacts, events.AllRequests, events.AllRolloutFacts}
	if len(hosts) > 0 {
		filters = nil
		for _, h := range hosts {
			if err := events.ValidateHost(h); err != nil {
				return usageErr(err)
			}
			filters = append(filters, events.HostFacts(h), events.HostRequests(h))
		}
	}
	conn, err := c.env.connect(ctx, "watch", 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if !*asJSON {
		fmt.Fprintln(c.env.stderr, "watching; Ctrl-C to stop")
	}
	err = conn.Follow(ctx, filters, bus.From{New: !*from}, func(st bus.Stored) error {
		if *asJSON {
			return printJSON(c.env.stdout, st)
		}
		printFact(c.env.stdout, st)
		return nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}
