package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
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
	// AckWait is how long a request may go without a progress ack before
	// JetStream redelivers it; default 30s. Progress acks are sent every
	// AckWait/3 while an upgrade runs.
	AckWait time.Duration
}

// Worker is the one process that changes a host. It consumes the host's
// requests one at a time from the durable consumer worker-<host>, runs the
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
	ackWait  time.Duration
	source   string
	statePth string
	logDir   string
	out      outbox
	upgrades jetstream.KeyValue
	leases   jetstream.KeyValue
	delivery string // ack subject of the request being handled

	state   *localState
	lastSeq uint64 // last sequence of this host's facts this worker knows
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
	ackWait := o.AckWait
	if ackWait == 0 {
		ackWait = 30 * time.Second
	}
	return &Worker{
		cfg: c, conn: o.Conn, driver: d, version: o.Version, ackWait: ackWait, extraEnv: o.Env,
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
	if err := w.recover(ctx); err != nil {
		return err
	}
	head, _ := (&gitRepo{name: "repo", cfg: w.cfg.Repo, run: w.quietExec()}).head(ctx)
	current, _ := w.driver.Current(ctx, w.quietExec())
	if err := w.emit(ctx, "", events.WorkerStarted, events.Fact{Version: w.version, Commit: head, Result: current}); err != nil {
		return err
	}
	w.log.Info("worker started", "commit", short(head), "result", current)
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
		if w.upgrades, err = w.conn.KV(ctx, bus.UpgradesBucket); err != nil {
			return err
		}
		if w.leases, err = w.conn.KV(ctx, bus.LeasesBucket); err != nil {
			return err
		}
		_, err = w.conn.LastSeq(ctx)
		return err
	}, backoff.WithContext(b, ctx), func(err error, next time.Duration) {
		w.log.Warn("waiting for the bus to be provisioned (convoy server or convoy projector creates the stream)", logErr, err, logRetry, next)
	})
}

// serve consumes requests until ctx is done. When the consumer goes away
// (deleted, or the bus lost it) it is created again.
func (w *Worker) serve(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 10*time.Second, 0
	for {
		err := w.consume(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrSecondWorker) {
			return err
		}
		next := b.NextBackOff()
		w.log.Warn("consumer lost; creating it again", logErr, err, logRetry, next)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(next):
		}
	}
}

func (w *Worker) consume(ctx context.Context) error {
	cons, err := w.conn.WorkerConsumer(ctx, w.cfg.Host, w.ackWait)
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		return fmt.Errorf("consume %s: %w", bus.WorkerConsumerName(w.cfg.Host), err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	failures := 0
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			failures++
			w.log.Warn("consume", logErr, err)
			if failures >= 3 || errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				return err
			}
			continue
		}
		failures = 0
		if err := w.handle(ctx, m); err != nil {
			return err
		}
	}
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
	if w.state, err = loadState(w.statePth); err != nil {
		lock.Close()
		return nil, err
	}
	return lock, nil
}

// syncSeq learns the sequence of this host's last fact.
func (w *Worker) syncSeq(ctx context.Context) error {
	last, err := w.conn.Last(ctx, events.HostFacts(w.cfg.Host))
	switch {
	case errors.Is(err, bus.ErrNotFound):
		w.lastSeq = 0
	case err != nil:
		return err
	default:
		w.lastSeq = last.Seq
	}
	return nil
}

// emit appends one fact and returns once JetStream has acknowledged it.
// The event is first written to the outbox; while the bus is unreachable
// emit retries with backoff (logged) and the event waits there, so it is
// published exactly once, even across a restart. No caller starts the
// next side effect before emit returns nil.
func (w *Worker) emit(ctx context.Context, upgradeID string, k events.Kind, f events.Fact) error {
	e, err := events.New(k, w.cfg.Host, w.source, f)
	if err != nil {
		return err
	}
	e.UpgradeID = upgradeID
	subj, err := events.HostSubject(w.cfg.Host, k)
	if err != nil {
		return err
	}
	if err := w.out.put(subj, e); err != nil {
		return err
	}
	if w.conn == nil {
		w.log.Warn("bus unreachable; event queued in the outbox for the worker to publish", logKind, k)
		return nil
	}
	if err := w.publish(ctx, subj, e); err != nil {
		if errors.Is(err, ErrSecondWorker) {
			// Refused by the guard: it was not stored and must never be.
			_ = w.out.remove(e.ID)
		}
		return err
	}
	w.log.Debug("fact", logKind, k, logUpgrade, upgradeID, logSeq, w.lastSeq)
	return w.out.remove(e.ID)
}

func (w *Worker) publish(ctx context.Context, subj string, e events.Event) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	return backoff.RetryNotify(func() error {
		seq, err := w.conn.Append(ctx, subj, e, &bus.Expect{Filter: events.HostFacts(w.cfg.Host), Seq: w.lastSeq})
		var ce *bus.ConflictError
		if errors.As(err, &ce) {
			if w.adoptOwn(ctx, ce.Actual) {
				return errors.New("an earlier event of ours was stored without our seeing its ack; retrying after it")
			}
			return backoff.Permanent(fmt.Errorf("%w: %w; stop the other worker for %s", ErrSecondWorker, err, w.cfg.Host))
		}
		if err != nil {
			return err
		}
		// A retry deduplicated by id returns the original, older sequence.
		w.lastSeq = max(w.lastSeq, seq)
		return nil
	}, backoff.WithContext(b, ctx), func(err error, next time.Duration) {
		w.log.Warn("bus unavailable; event waits in the outbox", logKind, e.Type, logErr, err, logRetry, next)
	})
}

// adoptOwn handles a failed append guard: if the message at seq is one of
// this worker's own outbox events (stored, but its ack was lost to a
// cancelled context or a dropped connection), it is ours, not a second
// worker's: record it as published and report true.
func (w *Worker) adoptOwn(ctx context.Context, seq uint64) bool {
	// The guard failed at the last fact under the host's filter: read
	// that one (a host credential may read only its own subjects).
	st, err := w.conn.Last(ctx, events.HostFacts(w.cfg.Host))
	if err != nil || st.Seq != seq || st.MsgID == "" || !w.out.has(st.MsgID) {
		return false
	}
	w.lastSeq = max(w.lastSeq, seq)
	_ = w.out.remove(st.MsgID)
	w.log.Info("an event stored before its ack was lost is recorded as published", logSeq, seq, logKind, st.Event.Type)
	return true
}

func (w *Worker) flushOutbox(ctx context.Context) error {
	subjects, evs, err := w.out.pending()
	if err != nil {
		return err
	}
	for i, e := range evs {
		if err := w.publish(ctx, subjects[i], e); err != nil {
			return err
		}
		if err := w.out.remove(e.ID); err != nil {
			return err
		}
		w.log.Info("published from outbox", logKind, e.Type, logUpgrade, e.UpgradeID)
	}
	return nil
}

func (w *Worker) saveState() error { return saveState(w.statePth, w.state) }

// quietExec runs short probes (git rev-parse, current) without a log file.
func (w *Worker) quietExec() Exec {
	return newExec(time.Minute, w.env(""), io.Discard)
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

// handle processes one request and acks it once its terminal fact is
// durable. It returns an error only when the worker must stop.
func (w *Worker) handle(ctx context.Context, m jetstream.Msg) error {
	md, err := m.Metadata()
	if err != nil {
		w.log.Warn("request without metadata; terminated", logErr, err)
		return m.Term()
	}
	w.delivery = m.Reply()
	progress := w.progress(ctx, m)
	err = w.process(ctx, m, md.Sequence.Stream)
	progress()
	if err != nil {
		if errors.Is(err, ErrSecondWorker) {
			return err
		}
		if ctx.Err() != nil {
			// Stopping: hand the request back at once; the next run
			// recognises it as done (or recovers it) by its upgrade id.
			_ = m.Nak()
			return nil
		}
		w.log.Error("request not finished; the host is put back and the request redelivered", logSeq, md.Sequence.Stream, logErr, err)
		if rerr := w.recover(ctx); rerr != nil {
			w.log.Error("recovery failed; it is tried again at the next request or start", logErr, rerr)
		}
		return m.NakWithDelay(5 * time.Second)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := m.DoubleAck(actx); err != nil {
		w.log.Warn("ack", logSeq, md.Sequence.Stream, logErr, err)
	} else if w.state.Unacked != "" {
		w.state.Unacked = ""
		_ = w.saveState()
	}
	return nil
}

// progress sends progress acks until the returned func is called.
func (w *Worker) progress(ctx context.Context, m jetstream.Msg) func() {
	return every(ctx, w.ackWait/3, func(context.Context) { _ = m.InProgress() })
}

// every calls f every period in a goroutine of its own until ctx ends or
// the returned func is called; that func waits for the goroutine.
func every(ctx context.Context, period time.Duration, f func(context.Context)) func() {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				f(ctx)
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

// process decides what a request is and runs it.
func (w *Worker) process(ctx context.Context, m jetstream.Msg, seq uint64) error {
	st := bus.Stored{Seq: seq, Subject: m.Subject(), MsgID: m.Headers().Get(jetstream.MsgIDHeader)}
	st.Event, st.Err = events.Decode(m.Data())
	if st.Err != nil {
		return w.reject(ctx, st, fmt.Sprintf("malformed request at stream sequence %d on %s: %v", seq, st.Subject, st.Err))
	}
	e := st.Event
	id := e.UpgradeID
	if id == "" {
		id = e.ID
	}
	if err := events.ValidateID(id); err != nil {
		// The id names files under the state dir: only a ULID will do.
		return w.reject(ctx, bus.Stored{Seq: seq, Subject: st.Subject}, fmt.Sprintf("request at stream sequence %d has upgrade id %q, which is not a ULID", seq, id))
	}
	if w.state.done(id) || w.upgradeEnded(ctx, id) {
		w.log.Info("request already handled; acknowledged without running it again", logUpgrade, id, logSeq, seq)
		return nil
	}
	switch {
	case e.Host() != w.cfg.Host:
		return w.reject(ctx, st, fmt.Sprintf("request is for host %q but arrived on %s", e.Host(), st.Subject))
	case e.Kind() == events.UpgradeRequested:
		var req events.UpgradeRequest
		if err := e.DecodeData(&req); err != nil {
			return w.reject(ctx, st, err.Error())
		}
		if newer, err := w.newerRequest(ctx, seq, id); err != nil {
			return err
		} else if newer {
			return w.finish(ctx, id, events.UpgradeSkipped, events.Fact{Rev: req.Rev, Reason: events.ReasonSuperseded + ": a newer upgrade request is queued"})
		}
		return w.upgrade(ctx, id, req)
	case e.Kind() == events.PinRequested:
		return w.pin(ctx, id)
	default:
		return w.reject(ctx, st, fmt.Sprintf("unknown request type %q", e.Type))
	}
}

// upgradeEnded reports whether the upgrade index already has a terminal
// fact for this host and id (a retry after the dedupe window).
func (w *Worker) upgradeEnded(ctx context.Context, id string) bool {
	if events.ValidateID(id) != nil {
		return false
	}
	ent, err := w.upgrades.Get(ctx, w.cfg.Host+"."+id)
	if err != nil {
		return false
	}
	var r projections.UpgradeRecord
	return json.Unmarshal(ent.Value(), &r) == nil && r.Terminal != ""
}

// newerRequest reports whether a newer upgrade request for this host,
// under another upgrade id, is queued behind the one at seq.
func (w *Worker) newerRequest(ctx context.Context, seq uint64, id string) (bool, error) {
	subj, _ := events.RequestSubject(w.cfg.Host, events.UpgradeRequested)
	last, err := w.conn.Last(ctx, subj)
	if err != nil {
		if errors.Is(err, bus.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return last.Seq > seq && last.Event.UpgradeID != id, nil
}

func (w *Worker) reject(ctx context.Context, st bus.Stored, reason string) error {
	id := st.Event.UpgradeID
	if id == "" {
		id = st.Event.ID
	}
	if events.ValidateID(id) != nil {
		id = events.NewID()
	}
	w.log.Warn("request rejected", logUpgrade, id, logReason, reason)
	return w.finish(ctx, id, events.UpgradeRejected, events.Fact{Reason: reason})
}

// finish appends the terminal fact and forgets the in-flight upgrade.
func (w *Worker) finish(ctx context.Context, id string, k events.Kind, f events.Fact) error {
	if err := w.emit(ctx, id, k, f); err != nil {
		return err
	}
	return w.ended(id)
}

// ended records locally that upgrade id has its terminal fact, and that
// the delivery of its request still needs an ack (see recover).
func (w *Worker) ended(id string) error {
	w.state.finish(id)
	w.state.Unacked = w.delivery
	return w.saveState()
}
