package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	rungroup "github.com/oklog/run"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/projections/metrics"
	"github.com/convoy-fleet/convoy/workers"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

type demoCmd struct{ env *env }

// step prints the heading of a step of the demo.
func step(out io.Writer, format string, a ...any) { fmt.Fprintf(out, "\n== "+format+"\n", a...) }

// Run starts an embedded bus, a nix-config remote and two hosts in a temp
// dir, and drives one upgrade that succeeds and one that fails and rolls
// back, through the same code paths as `convoy upgrade` and `convoy status`.
func (c *demoCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("demo", "demo [--keep] [--no-nix] [-v] [--http HOST:PORT] [--stay]",
		example{"a fleet of two hosts in a temp dir: one upgrade succeeds, one fails and rolls back", "convoy demo"},
		example{"the same, then keep the dashboard open on http://127.0.0.1:9426/ until Ctrl-C", "convoy demo --http 127.0.0.1:9426 --stay"},
		example{"the same with the workers' logs, keeping the temp dir to look at", "convoy demo --keep -v"},
	)
	keep := fs.Bool("keep", false, "keep the temp dir (bus data, repos, logs) and print its path")
	verbose := fs.Bool("v", false, "show the workers' logs")
	noNix := fs.Bool("no-nix", false, "use the command driver even when Nix is installed")
	var hcfg httpConfig
	addHTTPFlags(fs, &hcfg, "127.0.0.1:0", "serve the dashboard on HOST:PORT (port 0: any free port; empty: no dashboard)")
	stay := fs.Bool("stay", false, "when the demo is done, keep the bus and the dashboard up until Ctrl-C")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	if *stay && hcfg.Addr == "" {
		return usageErr(errors.New("--stay keeps the dashboard open: it needs --http"))
	}
	if hcfg.Addr != "" {
		if err := hcfg.Validate(); err != nil {
			return usageErr(err)
		}
	}
	outer := ctx // --stay waits on it, past the demo's timeout
	out := c.env.stdout
	dir, err := os.MkdirTemp("", "convoy-demo-")
	if err != nil {
		return err
	}
	if *keep {
		defer fmt.Fprintf(out, "\nkept %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	step(out, "starting an embedded JetStream bus in %s", filepath.Join(dir, "bus"))
	srv, err := bus.StartServer(bus.ServerConfig{DataDir: filepath.Join(dir, "bus"), Listen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer srv.Shutdown()
	conn, err := bus.Connect(ctx, bus.ConnectConfig{URL: srv.ClientURL(), Name: "convoy demo"})
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.Provision(ctx); err != nil {
		return err
	}
	proj, err := projections.NewProjector(ctx, conn)
	if err != nil {
		return err
	}
	var web *httpListener
	var mets *metrics.Metrics
	if hcfg.Addr != "" {
		// No storage guard runs in the demo: no storage metrics.
		if mets, err = newMetrics(ctx, conn, nil, slog.New(slog.DiscardHandler)); err != nil {
			return err
		}
		hcfg.Metrics = mets.Handler()
		if web, err = newHTTPListener(ctx, hcfg, conn, slog.New(slog.DiscardHandler)); err != nil {
			return err
		}
		fmt.Fprintf(out, "the dashboard is on %s: watch the upgrades there (Prometheus metrics on %smetrics)\n", web.URL(), web.URL())
	}

	hosts := []string{"sorrow", "torment"}
	useNix := !*noNix && sandbox.HaveNix() == nil
	step(out, "creating a nix-config remote, a secrets remote and checkouts for %v", hosts)
	fleet, err := sandbox.New(filepath.Join(dir, "fleet"), hosts, sandbox.Options{
		NATS:             srv.ClientURL(),
		PreUpdateHooks:   []string{"echo pre-update hook: syncing dotfiles"},
		ValidationChecks: []string{"grep -q 'openssh.enable = true' configuration.nix"},
		Nix:              useNix,
	})
	if err != nil {
		return err
	}
	if useNix {
		fmt.Fprintf(out, "Nix is installed: each host builds nixosConfigurations.<host> with the nix builder into a store of its own (%s)\n", filepath.Join(dir, "fleet", "<host>", "nix", "store"))
	} else {
		fmt.Fprintln(out, "Nix is not installed: hosts use the command driver (install Nix to see real builds and generations)")
	}
	logOut := io.Discard
	if *verbose {
		logOut = c.env.stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, nil))

	// The projector and the workers run until the script ends. Only the
	// script watches ctx (the timeout, Ctrl-C), so its result is the
	// demo's; a part that stops before it is an error.
	var g rungroup.Group
	parts := context.WithoutCancel(ctx)
	{
		ctx, cancel := context.WithCancel(parts)
		g.Add(func() error { return stopped("projector", runProjector(ctx, proj, log)) }, func(error) { cancel() })
	}
	for _, h := range hosts {
		var nixEnv []string
		if useNix {
			nixEnv = fleet.Hosts[h].NixEnv()
		}
		cfg, err := workers.LoadConfig(fleet.Hosts[h].Config)
		if err != nil {
			return err
		}
		w, err := workers.New(workers.Options{Config: cfg, Conn: conn, Logger: log, Version: version, Env: nixEnv})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(parts)
		g.Add(func() error { return stopped("worker "+h, w.Run(ctx)) }, func(error) { cancel() })
	}
	if web != nil {
		g.Add(func() error { return stopped("dashboard", web.Serve()) }, func(error) { web.Shutdown() })
		ctx, cancel := context.WithCancel(parts)
		g.Add(func() error { return stopped("metrics", mets.Run(ctx)) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		outer, cancelOuter := context.WithCancel(outer)
		g.Add(func() error {
			if err := c.script(ctx, conn, srv.ClientURL(), fleet, hosts); err != nil {
				return err
			}
			if !*stay {
				if web != nil {
					fmt.Fprintf(out, "To look at them in the dashboard and /metrics afterwards: convoy demo --http %s --stay\n", DefaultHTTP)
				}
				return nil
			}
			fmt.Fprintf(out, "\nThe demo is done; the dashboard stays on %s (and the metrics on %smetrics) until Ctrl-C.\n", web.URL(), web.URL())
			<-outer.Done()
			return nil
		}, func(error) { cancel(); cancelOuter() })
	}
	return g.Run()
}

// stopped is the error of a part of the demo that returned err before the
// script ended.
func stopped(part string, err error) error {
	if err == nil {
		return fmt.Errorf("%s stopped", part)
	}
	return fmt.Errorf("%s: %w", part, err)
}

// script drives the demo once the workers run: the two upgrades, the
// hosts' git state after the rollback, and the fleet's status.
func (c *demoCmd) script(ctx context.Context, conn *bus.Conn, url string, fleet *sandbox.Fleet, hosts []string) error {
	out := c.env.stdout
	for _, h := range hosts {
		if err := waitFor(ctx, conn, h, events.WorkerStarted); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "workers for %v are serving their requests\n", hosts)

	sub := &env{stdout: out, stderr: c.env.stderr, nats: url}
	good, err := fleet.Commit("{ services.openssh.enable = true; services.tailscale.enable = true; }\n", "enable tailscale")
	if err != nil {
		return err
	}
	step(out, "upgrade 1: commit %s enables tailscale; convoy upgrade --all --wait", short(good))
	if err := (&upgradeCmd{env: sub}).Run(ctx, []string{"--all", "--wait", "--timeout", "1m"}); err != nil {
		return fmt.Errorf("the good upgrade did not succeed: %w", err)
	}
	bad, err := fleet.Commit("{ services.openssh.enable = true; this is a syntax error that will break the build; }\n", "break the build")
	if err != nil {
		return err
	}
	step(out, "upgrade 2: commit %s has a syntax error; the build fails and both hosts roll back", short(bad))
	err = (&upgradeCmd{env: sub}).Run(ctx, []string{"--all", "--wait", "--timeout", "1m"})
	if exitCode(err) != exitFailed {
		return fmt.Errorf("the broken upgrade should have failed, got: %v", err)
	}
	step(out, "git state after the rollback")
	for _, h := range hosts {
		head, _, err := fleet.Hosts[h].Head()
		if err != nil {
			return err
		}
		verdict := "back at the last good commit"
		if head != good {
			verdict = "NOT at the last good commit"
		}
		fmt.Fprintf(out, "%-8s HEAD %s (%s); running %s\n", h, short(head), verdict, filepath.Base(fleet.Hosts[h].Running()))
	}
	step(out, "fleet status (convoy status)")
	if err := waitCaughtUp(ctx, conn); err != nil {
		return err
	}
	if err := (&statusCmd{env: sub}).Run(ctx, nil); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nEvery line above is an immutable event on the stream; replay them with `convoy history`.\n")
	return nil
}

func waitFor(ctx context.Context, conn *bus.Conn, host string, k events.Kind) error {
	err := conn.Follow(ctx, []string{events.HostFacts(host)}, bus.From{}, func(st bus.Stored) error {
		if st.Event.Kind() == k {
			return bus.ErrStop
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s from %s: %w", k, host, err)
	}
	return nil
}

// waitCaughtUp waits until the status projection has applied the stream.
func waitCaughtUp(ctx context.Context, conn *bus.Conn) error {
	fleet, err := projections.OpenFleet(ctx, conn)
	if err != nil {
		return err
	}
	for {
		lag, err := fleet.Lag(ctx)
		if err != nil {
			return err
		}
		if lag == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
