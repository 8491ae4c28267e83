package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/workers"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// realHost is the one host convoy bench upgrades with a real worker.
const realHost = "bench-real"

// realUpgrade is what one upgrade of the real worker took, from the
// stored times of its request and facts.
type realUpgrade struct {
	toStarted time.Duration // request stored → upgrade.started stored
	total     time.Duration // request stored → terminal fact stored
	commands  time.Duration // the time its commands ran
}

// overhead is what the worker added around its commands.
func (u realUpgrade) overhead() time.Duration { return u.total - u.commands }

// realWorker runs one real worker, on a sandbox host (real git, the
// command driver with the sandbox's shell build and switch), and upgrades
// it k times, each to a new commit.
func realWorker(ctx context.Context, url, dir string, k int, log *slog.Logger) ([]realUpgrade, error) {
	fleet, err := sandbox.New(dir, []string{realHost}, sandbox.Options{NATS: url})
	if err != nil {
		return nil, fmt.Errorf("real worker: %w", err)
	}
	cfg, err := workers.LoadConfig(fleet.Hosts[realHost].Config)
	if err != nil {
		return nil, fmt.Errorf("real worker: %w", err)
	}
	conn, err := bus.Connect(ctx, bus.ConnectConfig{URL: url, Name: "convoy bench " + realHost, InboxPrefix: bus.InboxPrefix(realHost)})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// Every command the worker runs is timed, whole: git, build, switch,
	// current, the checks.
	var commandNS atomic.Int64
	timed := func(run workers.Exec) workers.Exec {
		return func(ctx context.Context, dir string, argv []string, env ...string) workers.CmdResult {
			start := time.Now()
			defer func() { commandNS.Add(int64(time.Since(start))) }()
			return run(ctx, dir, argv, env...)
		}
	}
	w, err := workers.New(workers.Options{Config: cfg, Conn: conn, Logger: log, Version: version, WrapExec: timed})
	if err != nil {
		return nil, fmt.Errorf("real worker: %w", err)
	}
	from, err := conn.LastSeq(ctx)
	if err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	var runErr error
	go func() { runErr = w.Run(wctx); close(stopped) }()
	defer func() { stop(); <-stopped }()
	if err := awaitFact(ctx, conn, realHost, events.WorkerStarted, from+1, stopped); err != nil {
		if errors.Is(err, errWorkerStopped) {
			return nil, fmt.Errorf("real worker: %w: %v", err, runErr)
		}
		return nil, err
	}
	ups := make([]realUpgrade, 0, k)
	for i := range k {
		if _, err := fleet.Commit(fmt.Sprintf("{ services.openssh.enable = true; # convoy bench upgrade %d\n}\n", i+1), "bench"); err != nil {
			return ups, err
		}
		commandNS.Store(0)
		u, err := upgradeOnce(ctx, conn, &commandNS)
		if err != nil {
			return ups, fmt.Errorf("real worker, upgrade %d of %d: %w", i+1, k, err)
		}
		ups = append(ups, u)
	}
	return ups, nil
}

// upgradeOnce requests an upgrade of realHost and waits for its end.
func upgradeOnce(ctx context.Context, conn *bus.Conn, commandNS *atomic.Int64) (realUpgrade, error) {
	var u realUpgrade
	id, sent, err := producers.Upgrade(ctx, conn, producers.Request{Hosts: []string{realHost}, By: "convoy bench"})
	if err != nil {
		return u, err
	}
	req, err := conn.Get(ctx, sent[0].Seq)
	if err != nil {
		return u, err
	}
	var started, ended time.Time
	var end events.Kind
	_, err = producers.Wait(ctx, conn, id, sent, func(st bus.Stored) {
		switch k := st.Event.Kind(); {
		case k == events.UpgradeStarted:
			started = st.Stored
		case k.IsTerminal():
			ended, end = st.Stored, k
		}
	})
	if err != nil {
		return u, err
	}
	if end != events.UpgradeSucceeded {
		return u, fmt.Errorf("upgrade %s ended %s; see convoy history --upgrade %s", id, end, id)
	}
	u.toStarted, u.total = started.Sub(req.Stored), ended.Sub(req.Stored)
	u.commands = time.Duration(commandNS.Load())
	return u, nil
}

var errWorkerStopped = errors.New("the worker stopped")

// awaitFact waits until host stores a fact of kind k at or after
// sequence from. It returns errWorkerStopped if stopped is closed first.
func awaitFact(ctx context.Context, conn *bus.Conn, host string, k events.Kind, from uint64, stopped <-chan struct{}) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-stopped:
			cancel(errWorkerStopped)
		case <-ctx.Done():
		}
	}()
	err := conn.Follow(ctx, []string{events.HostFacts(host)}, bus.From{Seq: from}, func(st bus.Stored) error {
		if st.Event.Kind() == k {
			return bus.ErrStop
		}
		return nil
	})
	if err != nil && errors.Is(context.Cause(ctx), errWorkerStopped) {
		return errWorkerStopped
	}
	return err
}
