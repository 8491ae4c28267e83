package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	rungroup "github.com/oklog/run"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/producers/rollout"
	"github.com/convoy-fleet/convoy/projections"
)

type gitWatchCmd struct{ env *env }

// Run follows a branch of the config repo's remote until stopped and
// requests an upgrade to each new tip; with --listen, a verified push
// webhook makes it look at once.
func (c *gitWatchCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("git-watch", "git-watch --remote URL [--branch B] [--every D] [--listen ADDR --webhook-secret-file FILE] [--window W] --all|--tag T|HOST...|--wave SEL...",
		example{"upgrade every host to each new commit on main, looking every 30s", "convoy git-watch --remote ssh://git@forge.example/ops/nix-config.git --all"},
		example{"and at once on a push webhook, signed with the secret in a file", "convoy git-watch --remote https://forge.example/ops/nix-config.git --listen 127.0.0.1:9419 --webhook-secret-file /run/secrets/convoy-webhook --every 10m --all"},
		example{"upgrade the hosts tagged canary to each new commit", "convoy git-watch --remote /srv/git/nix-config.git --tag canary"},
		example{"start a rollout of each new commit: the canary first, then the rest, baking an hour; only at night", "convoy git-watch --remote /srv/git/nix-config.git --wave tag=canary --wave all --bake 1h --window 22:00-06:00"},
		example{"follow the staging branch for two hosts", "convoy git-watch --remote /srv/git/nix-config.git --branch staging sorrow torment"},
	)
	remote := fs.String("remote", "", "URL or path of the config repo, as git takes it (required)")
	branch := fs.String("branch", "main", "the branch to follow")
	every := fs.Duration("every", producers.DefaultGitWatchEvery, "ask the remote this often (git ls-remote); also the longest back-off")
	listen := fs.String("listen", "", "serve push webhooks on this address (POST /), e.g. 127.0.0.1:9419; off by default")
	secretFile := fs.String("webhook-secret-file", "", "file holding the webhook secret (required with --listen)")
	sel := addSelection(fs)
	var waves waveFlags
	fs.Var(&waves, "wave", "start a rollout of each new commit instead, in these waves (as convoy rollout start --wave; repeat)")
	bake := fs.Duration("bake", 0, "with --wave: how long each wave must stay healthy")
	maxFail := fs.Int("max-failures", 0, "with --wave: hosts that may fail before the rollout halts")
	onFailure := fs.String("on-failure", "halt", "with --wave: halt, or rollback")
	window := fs.String("window", "", "act on a new commit only inside this window, in local time (\"Sat 02:00-05:00\"); with --wave, the rollout's waves too")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	hosts, err := parse(fs, args)
	if err != nil {
		return err
	}
	g := &producers.GitWatch{Remote: *remote, Branch: *branch, Every: *every, Hosts: producers.HostList(hosts...)}
	var errs []error
	if g.Window, err = events.ParseWindow(*window); err != nil {
		errs = append(errs, fmt.Errorf("--window %w", err))
	}
	plan := events.RolloutPlan{BakeMS: bake.Milliseconds(), MaxFailures: *maxFail, OnFailure: *onFailure, Window: *window, RequestedBy: "git-watch"}
	if *onFailure != events.OnFailureHalt && *onFailure != events.OnFailureRollback {
		errs = append(errs, fmt.Errorf("--on-failure %q: want halt or rollback", *onFailure))
	}
	if len(waves) > 0 {
		if len(hosts) > 0 || *sel.all || *sel.tag != "" {
			errs = append(errs, errors.New("--wave starts a rollout, whose waves select the hosts: name no hosts, --all or --tag"))
		}
	} else {
		errs = append(errs, sel.check(hosts))
	}
	if err := g.Validate(); err != nil {
		errs = append(errs, err)
	}
	var secret []byte
	switch {
	case *listen != "" && *secretFile == "":
		errs = append(errs, errors.New("--listen needs --webhook-secret-file FILE: convoy accepts only signed webhooks"))
	case *listen == "" && *secretFile != "":
		errs = append(errs, errors.New("--webhook-secret-file without --listen: give the address to serve webhooks on"))
	case *secretFile != "":
		if secret, err = readSecret(*secretFile); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return usageErr(err)
	}
	log, err := c.env.logger(*logLevel)
	if err != nil {
		return err
	}
	g.Log = log
	var ln net.Listener
	if *listen != "" {
		if ln, err = net.Listen("tcp", *listen); err != nil {
			return usageErr(fmt.Errorf("--listen %s: %w", *listen, err))
		}
		defer ln.Close()
	}
	conn, err := c.env.connect(ctx, "git-watch", -1)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer conn.Close()
	g.Hosts = sel.source(conn)
	if len(waves) > 0 {
		g.Start = func(ctx context.Context, commit string) error { return startRollout(ctx, conn, commit, waves, plan) }
	}

	var group rungroup.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		group.Add(func() error { return g.Run(ctx, conn) }, func(error) { cancel() })
	}
	if ln != nil {
		mux := http.NewServeMux()
		h := producers.WebhookHandler(secret, g.Poke, log)
		mux.Handle("/", h)
		mux.Handle("/webhook", h)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
		group.Add(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve webhooks: %w", err)
			}
			return nil
		}, func(error) {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		})
		fmt.Fprintf(c.env.stdout, "listening for push webhooks on http://%s/\n", ln.Addr())
	}
	fmt.Fprintf(c.env.stdout, "following %s branch %s every %s\n", producers.RedactURL(*remote), *branch, *every)
	return group.Run()
}

// readSecret reads a webhook secret: the file's content without the
// trailing newline an editor adds.
func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--webhook-secret-file: %w", err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("--webhook-secret-file %s is empty", path)
	}
	return []byte(s), nil
}

// startRollout starts a rollout of commit, planned now, under an id
// derived from the commit: two watchers, or a restart, start it once.
func startRollout(ctx context.Context, conn *bus.Conn, commit string, waves []rollout.Selector, plan events.RolloutPlan) error {
	fleet, err := projections.OpenFleet(ctx, conn)
	if err != nil {
		return err
	}
	plan.Rev = commit
	if plan.Waves, err = planWaves(ctx, fleet, waves); err != nil {
		return err
	}
	_, err = rollout.StartAs(ctx, conn, producers.CommitID(commit), plan)
	if errors.Is(err, rollout.ErrExists) {
		return nil
	}
	return err
}
