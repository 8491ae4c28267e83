package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/workers"
)

type goldenCmd struct{ env *env }

func (c *goldenCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("golden", "golden show|pin HOST [--json] [--timeout D]",
		example{"show the host's golden generation and the one it runs", "convoy golden show sorrow"},
		example{"pin the generation the host runs as golden; wait up to 2 minutes for its worker", "convoy golden pin sorrow --timeout 2m"},
	)
	asJSON := fs.Bool("json", false, "print JSON")
	timeout := fs.Duration("timeout", time.Minute, "pin: how long to wait for the worker's answer (exit 3)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "show" && pos[0] != "pin") {
		return usageErr(errors.New("want: convoy golden show HOST, or convoy golden pin HOST"))
	}
	host := pos[1]
	if err := events.ValidateHost(host); err != nil {
		return usageErr(err)
	}
	if pos[0] == "show" {
		return c.show(ctx, host, *asJSON)
	}
	return c.pin(ctx, host, *timeout)
}

// show prints the host's golden and running generations from the fleet view.
func (c *goldenCmd) show(ctx context.Context, host string, asJSON bool) error {
	conn, fleet, err := c.env.openFleet(ctx, "golden")
	if err != nil {
		return err
	}
	defer conn.Close()
	s, err := fleet.Host(ctx, host)
	if errors.Is(err, projections.ErrUnknownHost) {
		return usageErr(err)
	}
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(c.env.stdout).Encode(map[string]any{"host": host, "golden": s.Golden, "golden_generation": s.GoldenGeneration, "result": s.Result, "generation": s.Generation})
	}
	if s.Golden == "" {
		fmt.Fprintf(c.env.stdout, "%s: no golden generation pinned yet (it is pinned after a validated boot, or with convoy golden pin %s)\n", host, host)
		return nil
	}
	fmt.Fprintf(c.env.stdout, "%s: golden generation %d %s\n%s: running generation %d %s\n", host, s.GoldenGeneration, s.Golden, host, s.Generation, s.Result)
	return nil
}

// pin asks the host's worker to pin its running generation as golden and
// waits up to timeout for its answer.
func (c *goldenCmd) pin(ctx context.Context, host string, timeout time.Duration) error {
	conn, err := c.env.connect(ctx, "golden", 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	id, seq, err := producers.Pin(ctx, conn, host, requester())
	if err != nil {
		return err
	}
	fmt.Fprintf(c.env.stderr, "pin %s requested from %s's worker\n", id, host)
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var got bus.Stored
	err = conn.Follow(wctx, []string{events.HostFacts(host)}, bus.From{Seq: seq}, func(st bus.Stored) error {
		if st.Event.UpgradeID == id && (st.Event.Kind() == events.GoldenPinned || st.Event.Kind().IsTerminal()) {
			got = st
			return bus.ErrStop
		}
		return nil
	})
	if err != nil {
		if errors.Is(wctx.Err(), context.DeadlineExceeded) {
			return timeoutErr(fmt.Errorf("no answer from %s's worker after %s (is it running?); the request stays queued for it", host, timeout))
		}
		return err
	}
	printFact(c.env.stdout, got)
	if got.Event.Kind() != events.GoldenPinned {
		return failedErr(errSilent)
	}
	return nil
}

type bootCheckCmd struct{ env *env }

func (c *bootCheckCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("boot-check", "boot-check --config FILE [--allow-root]",
		example{"after boot: validate the running system, pin it as golden or fall back", "convoy boot-check --config /etc/convoy/worker.toml"},
		example{"the same as root although system.elevation is set", "convoy boot-check --config /etc/convoy/worker.toml --allow-root"},
	)
	hf := addHostFlags(fs, "run as root although system.elevation is set")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	cfg, log, err := c.env.loadHost(hf)
	if err != nil {
		return err
	}
	// With an elevation program it elevates the few commands that need it,
	// like the worker; only without one must it run as root.
	if os.Geteuid() == 0 && len(cfg.System.Elevation) > 0 && !*hf.allowRoot {
		return usageErr(fmt.Errorf("refusing to run as root: system.elevation is %q, so run boot-check as the worker's user (it elevates the profile switch and the pin); --allow-root overrides this", cfg.System.Elevation))
	}
	// At boot the bus may not be up yet: try briefly, then go on offline
	// and leave the events in the outbox for the worker.
	conn, err := c.env.connectAs(ctx, "boot-check", 10*time.Second, bus.InboxPrefix(cfg.Host))
	if err != nil {
		log.Warn("bus unreachable; boot-check events wait in the outbox", "err", err)
		conn = nil
	} else {
		defer conn.Close()
	}
	br, err := workers.BootCheck(ctx, workers.Options{Config: cfg, Conn: conn, Logger: log, Version: version})
	switch {
	case br.Validated:
		msg := "boot validated: " + br.Result
		if br.Pinned {
			msg += " (pinned as golden)"
		}
		fmt.Fprintln(c.env.stdout, msg)
	case br.Restored != "":
		fmt.Fprintf(c.env.stdout, "boot check failed %d times: golden %s is now current and the boot default\n", br.Failures, br.Restored)
	}
	if br.Queued {
		fmt.Fprintln(c.env.stdout, "the bus was unreachable: the events wait in the outbox and the worker publishes them when it starts")
	}
	if err != nil {
		if errors.Is(err, workers.ErrBootCheckFailed) {
			return failedErr(err)
		}
		return err
	}
	return nil
}
