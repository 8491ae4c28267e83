package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
)

type historyCmd struct{ env *env }

// parseSince reads an absolute RFC 3339 time or a duration back from now.
func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want a duration back from now (24h) or an RFC 3339 time (2026-11-22T04:00:00Z)", s)
}

func (c *historyCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("history", "history [HOST] [--upgrade ID] [--type KIND[,KIND]] [--since T] [--until T] [--json]",
		example{"what happened on one host in the last two hours", "convoy history sorrow --since 2h"},
		example{"the request and every fact of one upgrade", "convoy history --upgrade 01M80APSTYVXCF8DA3FQ0RBP5B"},
		example{"every failed build and every rollback since a time, as JSON lines", "convoy history --type build.failed,rollback --since 2026-11-22T04:00:00Z --json"},
	)
	upgrade := fs.String("upgrade", "", "only this upgrade id")
	types := fs.String("type", "", "only these kinds, comma separated (build.failed, or a stage: build)")
	since := fs.String("since", "", "from this time (RFC 3339) or this long ago (24h)")
	until := fs.String("until", "", "up to this time (RFC 3339) or this long ago")
	asJSON := fs.Bool("json", false, "print JSON lines")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	q := projections.Query{Upgrade: *upgrade}
	if len(pos) > 1 {
		return usageErr(errors.New("name at most one host"))
	}
	if len(pos) == 1 {
		if err := events.ValidateHost(pos[0]); err != nil {
			return usageErr(err)
		}
		q.Host = pos[0]
	}
	if q.Upgrade != "" {
		if err := events.ValidateID(q.Upgrade); err != nil {
			return usageErr(fmt.Errorf("--upgrade: %w", err))
		}
	}
	if q.Since, err = parseSince(*since); err != nil {
		return usageErr(fmt.Errorf("--since %w", err))
	}
	if q.Until, err = parseSince(*until); err != nil {
		return usageErr(fmt.Errorf("--until %w", err))
	}
	if *types != "" {
		for _, t := range strings.Split(*types, ",") {
			q.Kinds = append(q.Kinds, events.Kind(strings.TrimPrefix(strings.TrimSpace(t), events.TypePrefix)))
		}
	}
	conn, fleet, err := c.env.openFleet(ctx, "history")
	if err != nil {
		return err
	}
	defer conn.Close()
	printRetained(ctx, conn, c.env.stderr)
	n := 0
	err = fleet.History(ctx, q, func(st bus.Stored) error {
		n++
		if *asJSON {
			return printJSON(c.env.stdout, st)
		}
		printFact(c.env.stdout, st)
		return nil
	})
	if errors.Is(err, bus.ErrNotFound) {
		return usageErr(err)
	}
	if err != nil {
		return err
	}
	if n == 0 && !*asJSON {
		fmt.Fprintln(c.env.stderr, "no events match")
	}
	return nil
}
