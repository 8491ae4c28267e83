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

	"github.com/convoy-fleet/convoy/producers"
)

type gitWatchCmd struct{ env *env }

// Run follows a branch of the config repo's remote until stopped and
// requests an upgrade to each new tip; with --listen, a verified push
// webhook makes it look at once.
func (c *gitWatchCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("git-watch", "git-watch --remote URL [--branch B] [--every D] [--listen ADDR --webhook-secret-file FILE] --all|--tag T|HOST...",
		example{"upgrade every host to each new commit on main, looking every 30s", "convoy git-watch --remote ssh://git@forge.example/ops/nix-config.git --all"},
		example{"and at once on a push webhook, signed with the secret in a file", "convoy git-watch --remote https://forge.example/ops/nix-config.git --listen 127.0.0.1:9419 --webhook-secret-file /run/secrets/convoy-webhook --every 10m --all"},
		example{"upgrade the hosts tagged canary to each new commit", "convoy git-watch --remote /srv/git/nix-config.git --tag canary"},
		example{"follow the staging branch for two hosts", "convoy git-watch --remote /srv/git/nix-config.git --branch staging sorrow torment"},
	)
	remote := fs.String("remote", "", "URL or path of the config repo, as git takes it (required)")
	branch := fs.String("branch", "main", "the branch to follow")
	every := fs.Duration("every", producers.DefaultGitWatchEvery, "ask the remote this often (git ls-remote); also the longest back-off")
	listen := fs.String("listen", "", "serve push webhooks on this address (POST /), e.g. 127.0.0.1:9419; off by default")
	secretFile := fs.String("webhook-secret-file", "", "file holding the webhook secret (required with --listen)")
	sel := addSelection(fs)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	hosts, err := parse(fs, args)
	if err != nil {
		return err
	}
	g := &producers.GitWatch{Remote: *remote, Branch: *branch, Every: *every, Hosts: producers.HostList(hosts...)}
	var errs []error
	if err := g.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, sel.check(hosts))
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
