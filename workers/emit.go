package workers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// Facts reach the bus through the outbox: emit writes each to the outbox
// first, then appends it guarded by the last sequence of the host's facts
// this worker knows, and removes it once JetStream has acknowledged it.

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
	if w.queueOnly {
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
	subjects, evs, damaged, err := w.out.pending(w.cfg.Host)
	if err != nil {
		return err
	}
	for _, d := range damaged {
		w.log.Error("damaged outbox entry kept aside, not published: that fact may be missing from the bus (docs/runbooks.md)",
			"file", d.Name, "kept_at", d.KeptAt, logErr, d.Err)
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
