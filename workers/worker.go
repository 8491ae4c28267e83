package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
)

// ErrSecondWorker is wrapped when another worker wrote this host's facts:
// two workers for one host would interleave, so this one stops.
var ErrSecondWorker = errors.New("another worker is running for this host")

// Options wires a Worker. Config and Conn are required.
type Options struct {
	Config *Config
	Conn   *bus.Conn
	Logger *slog.Logger
	// Driver overrides the driver the config selects (tests).
	Driver Driver
	// Version is reported in worker.started.
	Version string
	// Env is added to the environment of every command the worker runs
	// (tests point Nix at a private store with it).
	Env []string
	// Exec, if set, runs every command in place of the host's processes:
	// convoy bench's simulated hosts, whose commands do nothing.
	Exec Exec
	// WrapExec, if set, wraps how every command runs (convoy bench times
	// a real worker's commands with it).
	WrapExec func(Exec) Exec
	// Now is the clock reboot windows are judged by (tests); default
	// time.Now.
	Now func() time.Time
	// RebootCheck is how often a pending reboot looks at its window;
	// default 30s.
	RebootCheck time.Duration
}

// Worker is the one process that changes a host. It reads the host's
// requests one at a time, in stream order (bus.Requests), runs the
// pipeline, and appends every stage's fact to convoy.host.<host>.> before
// the next stage's side effect starts. It owns its state in the goroutine
// that calls Run.
type Worker struct {
	cfg      *Config
	conn     *bus.Conn
	driver   Driver
	log      *slog.Logger
	version  string
	extraEnv []string
	execute  Exec // Options.Exec
	wrapExec func(Exec) Exec
	source   string
	statePth string
	logDir   string
	out      outbox
	upgrades *upgradeindex.Index
	leases   *bus.Bucket

	now         func() time.Time
	window      events.Window // reboot.window
	rebootCheck time.Duration

	// queueOnly is set when the bus cannot be reached (boot-check): facts
	// go to the outbox alone, for the worker to publish when it starts.
	queueOnly bool
	state     *localState
	// damaged is set when state.json was damaged and stateMissing when
	// there was none, until the state is rebuilt from the host's facts.
	damaged      *DamagedStateError
	stateMissing bool
	lastSeq      uint64 // last sequence of this host's facts this worker knows
}

// New checks the host's checkouts and returns a worker. It does not touch
// the bus or the state dir until Run.
func New(o Options) (*Worker, error) {
	if o.Config == nil {
		return nil, errors.New("worker: Config is required")
	}
	c := o.Config
	if err := Check(c); err != nil {
		return nil, err
	}
	d := o.Driver
	if d == nil {
		d, _ = NewDriver(c)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	win, err := events.ParseWindow(c.Reboot.Window)
	if err != nil {
		return nil, fmt.Errorf("reboot.window: %w", err)
	}
	now, check := o.Now, o.RebootCheck
	if now == nil {
		now = time.Now
	}
	if check <= 0 {
		check = 30 * time.Second
	}
	return &Worker{
		now: now, window: win, rebootCheck: check,
		cfg: c, conn: o.Conn, driver: d, version: o.Version, extraEnv: o.Env, execute: o.Exec, wrapExec: o.WrapExec,
		log:      log.With(logHost, c.Host),
		source:   "convoy/worker/" + c.Host,
		statePth: filepath.Join(c.StateDir, "state.json"),
		logDir:   filepath.Join(c.StateDir, "logs"),
		out:      outbox{dir: filepath.Join(c.StateDir, "outbox")},
	}, nil
}

// Check reports what on this host keeps the config from working (a
// missing checkout), before anything connects to the bus.
func Check(c *Config) error {
	var errs []error
	for _, r := range c.repos() {
		if err := r.check(); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := NewDriver(c); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// repos returns the tracked checkouts with a discarding Exec; jobs make
// their own with logging.
func (c *Config) repos() []*gitRepo {
	rs := []*gitRepo{{name: "repo", cfg: c.Repo}}
	if c.Secrets != nil {
		rs = append(rs, &gitRepo{name: "secrets", cfg: *c.Secrets})
	}
	return rs
}

// Run serves the host's requests until ctx is done. It returns nil after a
// clean stop, or an error when it cannot go on (bus provisioning, a second
// worker for the host, a state dir it cannot write).
func (w *Worker) Run(ctx context.Context) error {
	if w.conn == nil {
		return errors.New("worker: no bus connection")
	}
	lock, err := w.open()
	if err != nil {
		return err
	}
	defer lock.Close()
	if w.damaged != nil {
		// Rebuilt from the bus below; without the bus, refused.
		if err := w.probeBus(ctx); err != nil {
			return refuseDamaged(w.damaged, err)
		}
	}
	if err := w.waitProvisioned(ctx); err != nil {
		return err
	}
	// Losing the lease to another worker stops this one.
	outer := ctx
	ctx, stopAll := context.WithCancelCause(ctx)
	defer stopAll(nil)
	release, err := w.lease(ctx, stopAll)
	if err != nil {
		return err
	}
	defer release()
	if err := w.syncSeq(ctx); err != nil {
		return err
	}
	if err := w.flushOutbox(ctx); err != nil {
		return err
	}
	if err := w.rebuildIfNeeded(ctx); err != nil {
		return err
	}
	if err := w.recover(ctx); err != nil {
		return err
	}
	head, _ := (&gitRepo{name: "repo", cfg: w.cfg.Repo, run: w.quietExec()}).head(ctx)
	current, _ := w.driver.Current(ctx, w.quietExec())
	reboot, _ := w.needsReboot(current)
	if err := w.emit(ctx, "", events.WorkerStarted, events.Fact{Version: w.version, Commit: head, Result: current, Tags: w.cfg.Tags, RebootRequired: reboot}); err != nil {
		return err
	}
	w.log.Info("worker started", "commit", short(head), "result", current)
	w.pruneLogs()
	err = w.serve(ctx)
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if cause := context.Cause(ctx); errors.Is(cause, ErrSecondWorker) {
		err = cause
	}
	if errors.Is(err, ErrSecondWorker) {
		return err
	}
	if serr := w.emit(stopCtx, "", events.WorkerStopped, events.Fact{Version: w.version}); serr != nil {
		w.log.Warn("worker.stopped not published; it waits in the outbox", logErr, serr)
	}
	if outer.Err() != nil {
		return nil
	}
	return err
}

// waitProvisioned waits, logging, until the stream and buckets exist:
// a worker may start before the server has created them, or before the
// projector has on an external cluster.
func (w *Worker) waitProvisioned(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 5*time.Second, 0
	return backoff.RetryNotify(func() error {
		var err error
		if w.upgrades, err = upgradeindex.Open(ctx, w.conn); err != nil {
			return err
		}
		if w.leases, err = w.conn.Bucket(ctx, bus.LeasesBucket); err != nil {
			return err
		}
		_, err = w.conn.LastSeq(ctx)
		return err
	}, backoff.WithContext(b, ctx), func(err error, next time.Duration) {
		w.log.Warn("waiting for the bus to be provisioned (convoy server or convoy projector creates the stream)", logErr, err, logRetry, next)
	})
}

// open creates the state dir, locks it and loads the local state.
func (w *Worker) open() (*os.File, error) {
	for _, d := range []string{w.cfg.StateDir, w.logDir, w.out.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
		if d != w.cfg.StateDir {
			ownLikeParent(d)
		}
	}
	lock, err := lockDir(w.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	st, missing, err := loadState(w.statePth)
	var damaged *DamagedStateError
	switch {
	case errors.As(err, &damaged):
		// Rebuilt from the host's facts once the bus answers (see
		// rebuildState), or refused.
		st = &localState{}
	case err != nil:
		lock.Close()
		return nil, err
	}
	w.state, w.stateMissing, w.damaged = st, missing, damaged
	return lock, nil
}

// rebuildIfNeeded rebuilds a missing or damaged state from the host's
// facts (rebuildState).
func (w *Worker) rebuildIfNeeded(ctx context.Context) error {
	if w.damaged == nil && !w.stateMissing {
		return nil
	}
	if err := w.rebuildState(ctx, w.damaged); err != nil {
		return err
	}
	w.damaged, w.stateMissing = nil, false
	return nil
}

func (w *Worker) saveState() error { return saveState(w.statePth, w.state) }

// saveInFlight changes the record of the upgrade in flight and saves it.
func (w *Worker) saveInFlight(change func(*inFlight)) error {
	change(w.state.InFlight)
	return w.saveState()
}

// openLog opens the log file of upgrade id for appending, capped at
// logs.max_size.
func (w *Worker) openLog(id string) (*cappedLog, string, error) {
	path := filepath.Join(w.logDir, id+".log")
	f, err := openCappedLog(path, int64(w.cfg.Logs.MaxSize))
	if err != nil {
		return nil, "", fmt.Errorf("upgrade log: %w", err)
	}
	return f, path, nil
}

// pruneLogs applies logs.keep and logs.max_age to the upgrade logs. A
// log it cannot remove is logged and left.
func (w *Worker) pruneLogs() {
	removed, err := pruneLogs(w.logDir, w.cfg.Logs.Keep, w.cfg.Logs.MaxAge.Duration, w.now())
	if len(removed) > 0 {
		w.log.Info("old upgrade logs removed (logs.keep, logs.max_age)", "removed", len(removed), "oldest", removed[0])
	}
	if err != nil {
		w.log.Warn("removing old upgrade logs", logErr, err)
	}
}

// quietExec runs short probes (git rev-parse, current) without a log file.
func (w *Worker) quietExec() Exec {
	return w.exec(time.Minute, "", io.Discard)
}

// exec returns how commands run: with timeout, the worker's environment
// for upgrade id, and their output appended to log.
func (w *Worker) exec(timeout time.Duration, id string, log io.Writer) Exec {
	run := w.execute
	if run == nil {
		run = newExec(timeout, w.env(id), log)
	}
	if w.wrapExec != nil {
		run = w.wrapExec(run)
	}
	return run
}

func (w *Worker) env(upgradeID string) []string {
	env := append([]string{}, w.extraEnv...)
	env = append(env, "CONVOY_HOST="+w.cfg.Host, "CONVOY_REPO="+w.cfg.Repo.Path, "CONVOY_STATE_DIR="+w.cfg.StateDir)
	if w.cfg.Secrets != nil {
		env = append(env, "CONVOY_SECRETS="+w.cfg.Secrets.Path)
	}
	if upgradeID != "" {
		env = append(env, "CONVOY_UPGRADE_ID="+upgradeID)
	}
	return env
}
