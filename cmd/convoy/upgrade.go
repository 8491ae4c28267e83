package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"sort"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/projections"
)

type upgradeCmd struct{ env *env }

func requester() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if h, err := os.Hostname(); err == nil {
		name += "@" + h
	}
	return name
}

// hostResult is one host's line in upgrade --json.
type hostResult struct {
	Host    string `json:"host"`
	Seq     uint64 `json:"request_seq,omitempty"`
	Result  string `json:"result,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Commit  string `json:"commit,omitempty"`
	Already bool   `json:"already_done,omitempty"`
}

func (c *upgradeCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("upgrade", "upgrade HOST...|--all|--tag T [--rev R] [--id ULID] [--wait] [--timeout D] [--json]",
		example{"upgrade the hosts tagged canary, and wait", "convoy upgrade --tag canary --wait"},
		example{"upgrade every host to the tip of its branch and follow each stage", "convoy upgrade --all --wait"},
		example{"deploy one commit on two hosts; give up waiting after 20 minutes (exit 3)", "convoy upgrade sorrow torment --rev 4f2a9c1 --wait --timeout 20m"},
		example{"retry a request without upgrading twice: the same id is the same upgrade", "convoy upgrade sorrow --id 01M80APSTYVXCF8DA3FQ0RBP5B --json"},
	)
	sel := addSelection(fs)
	rev := fs.String("rev", "", "commit or ref on the tracked branch (default: its tip)")
	id := fs.String("id", "", "upgrade id (a ULID) to make a retried request idempotent")
	wait := fs.Bool("wait", false, "follow each stage until every host is done")
	timeout := fs.Duration("timeout", 30*time.Minute, "with --wait: give up waiting after this long (exit 3)")
	downgrade := fs.Bool("allow-downgrade", false, "ask to deploy an ancestor of the deployed commit (the worker config must allow it)")
	asJSON := fs.Bool("json", false, "print a JSON summary")
	hosts, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := sel.check(hosts); err != nil {
		return usageErr(err)
	}
	req := producers.Request{Rev: *rev, ID: *id, AllowDowngrade: *downgrade, By: requester()}
	conn, fleet, err := c.env.openFleet(ctx, "upgrade")
	if err != nil {
		return err
	}
	defer conn.Close()
	if req.Hosts, err = sel.resolve(ctx, fleet); err != nil {
		return usageErr(err)
	}
	if sel.named() {
		if err := c.warnUnserved(ctx, fleet, req.Hosts); err != nil {
			return err
		}
	}
	upID, sent, err := producers.Upgrade(ctx, conn, req)
	if err != nil {
		if upID == "" {
			return usageErr(err)
		}
		if len(sent) > 0 {
			fmt.Fprintf(c.env.stderr, "upgrade %s requested for %d of %d host(s); request the others again with --id %s\n", upID, len(sent), len(req.Hosts), upID)
		}
		return err
	}
	results := make(map[string]*hostResult, len(sent))
	for _, s := range sent {
		r := &hostResult{Host: s.Host, Seq: s.Seq}
		if s.Done != nil {
			r.Already, r.Result, r.Reason, r.Commit = true, s.Done.Terminal, s.Done.Reason, s.Done.Commit
		}
		results[s.Host] = r
	}
	if !*asJSON {
		fmt.Fprintf(c.env.stdout, "upgrade %s requested for %d host(s)\n", upID, len(sent))
	}
	if !*wait {
		return c.report(upID, results, *asJSON, false)
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	started := map[string]time.Time{}
	_, err = producers.Wait(wctx, conn, upID, sent, func(st bus.Stored) {
		e := st.Event
		if e.Kind() == events.UpgradeStarted {
			started[e.Host()] = e.Time
		}
		if e.Kind().IsTerminal() {
			f, _ := e.Fact()
			r := results[e.Host()]
			r.Result, r.Reason, r.Commit = string(e.Kind()), f.Reason, f.Commit
		}
		if !*asJSON {
			printFact(c.env.stdout, st)
			if e.Kind().IsTerminal() && !started[e.Host()].IsZero() {
				fmt.Fprintf(c.env.stdout, "%s  %-10s done in %s\n", e.Time.Local().Format("15:04:05.000"), e.Host(), e.Time.Sub(started[e.Host()]).Round(10*time.Millisecond))
			}
		}
	})
	if err != nil {
		if errors.Is(wctx.Err(), context.DeadlineExceeded) {
			_ = c.report(upID, results, *asJSON, true)
			return timeoutErr(fmt.Errorf("timed out after %s waiting for upgrade %s; it goes on on the hosts: follow it with `convoy history --upgrade %s`", *timeout, upID, upID))
		}
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	return c.report(upID, results, *asJSON, true)
}

// warnUnserved warns about each of the named hosts that no worker has
// served yet, reading only their rows.
func (c *upgradeCmd) warnUnserved(ctx context.Context, fleet *projections.Fleet, hosts []string) error {
	sts, err := fleet.Hosts(ctx, hosts)
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if sts[h].Worker == "" {
			fmt.Fprintf(c.env.stderr, "warning: no worker has served %q yet; the request waits until one starts\n", h)
		}
	}
	return nil
}

// report prints the summary and decides the exit code: 1 when any host's
// upgrade failed, was rejected or aborted.
func (c *upgradeCmd) report(id string, results map[string]*hostResult, asJSON, waited bool) error {
	hosts := make([]string, 0, len(results))
	for h := range results {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	failed := 0
	list := make([]*hostResult, 0, len(hosts))
	for _, h := range hosts {
		r := results[h]
		list = append(list, r)
		switch events.Kind(r.Result) {
		case events.UpgradeFailed, events.UpgradeRejected, events.UpgradeAborted:
			failed++
		}
	}
	if asJSON {
		_ = json.NewEncoder(c.env.stdout).Encode(struct {
			Upgrade string        `json:"upgrade"`
			Hosts   []*hostResult `json:"hosts"`
		}{id, list})
	} else if waited || failed > 0 {
		t := table(c.env.stdout)
		row(t, "HOST", "RESULT", "COMMIT", "REASON")
		for _, r := range list {
			res := r.Result
			if res == "" {
				res = "(running)"
			}
			if r.Already {
				res += " (earlier, same id)"
			}
			row(t, r.Host, res, dash(short(r.Commit)), dash(r.Reason))
		}
		if err := t.Flush(); err != nil {
			return err
		}
	}
	if failed > 0 {
		return failedErr(fmt.Errorf("%d of %d host(s) did not upgrade: %w", failed, len(list), errSilent))
	}
	return nil
}
