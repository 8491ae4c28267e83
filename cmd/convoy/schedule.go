package main

import (
	"context"
	"fmt"
	"time"

	"github.com/convoy-fleet/convoy/producers"
)

type scheduleCmd struct{ env *env }

// Run requests upgrades on a schedule until stopped. Run it on one or two machines; each slot is requested once.
func (c *scheduleCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("schedule", "schedule --every D | --daily HH:MM [--tz ZONE] [HOST...|--all|--tag T] [--rev R]",
		example{"upgrade the hosts tagged canary every hour", "convoy schedule --every 1h --tag canary"},
		example{"upgrade every host each day at 04:00 Berlin time", "convoy schedule --daily 04:00 --tz Europe/Berlin"},
		example{"upgrade two hosts at the top of every hour", "convoy schedule --every 1h sorrow torment"},
	)
	every := fs.Duration("every", 0, "request at every multiple of this period (1h: on the hour)")
	daily := fs.String("daily", "", "request once a day at this time (04:00)")
	tz := fs.String("tz", "Local", "time zone of --daily")
	rev := fs.String("rev", "", "revision to request (default: each host's branch tip)")
	sel := addSelection(fs)
	hosts, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(hosts) == 0 && *sel.tag == "" {
		*sel.all = true // no hosts named: the fleet, as before --all existed
	}
	if err := sel.check(hosts); err != nil {
		return usageErr(err)
	}
	loc, err := time.LoadLocation(*tz)
	if err != nil {
		return usageErr(fmt.Errorf("--tz %q: %w", *tz, err))
	}
	s := &producers.Schedule{Every: *every, Daily: *daily, Location: loc, Hosts: producers.HostList(hosts...), Rev: *rev}
	if err := s.Validate(); err != nil {
		return usageErr(err)
	}
	conn, err := c.env.connect(ctx, "schedule", -1)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer conn.Close()
	s.Hosts = sel.source(conn)
	s.OnRequest = func(slot time.Time, id string, sent []producers.Sent, err error) {
		if err != nil {
			fmt.Fprintf(c.env.stderr, "%s: slot %s: upgrade %s not requested yet: %v\n", time.Now().Format(time.RFC3339), slot.Format(time.RFC3339), id, err)
			return
		}
		fmt.Fprintf(c.env.stdout, "%s: slot %s: upgrade %s requested for %d host(s)\n", time.Now().Format(time.RFC3339), slot.Format(time.RFC3339), id, len(sent))
	}
	fmt.Fprintf(c.env.stdout, "next upgrade at %s\n", s.Next(time.Now()).Format(time.RFC3339))
	return s.Run(ctx, conn, nil)
}
