package workers

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// request is the request being handled: its upgrade id, where it is
// stored, and how to acknowledge its delivery later (after a crash).
type request struct {
	id  string
	seq uint64
	ack string // bus.Delivery.AckSubject
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

// consume handles requests one at a time until the consumer fails.
func (w *Worker) consume(ctx context.Context) error {
	reqs, err := w.conn.Requests(ctx, w.cfg.Host, w.ackWait)
	if err != nil {
		return err
	}
	defer reqs.Close()
	stop := context.AfterFunc(ctx, reqs.Close)
	defer stop()
	failures := 0
	for {
		d, err := reqs.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, bus.ErrClosed) {
				return ctx.Err()
			}
			failures++
			w.log.Warn("consume", logErr, err)
			if failures >= 3 || errors.Is(err, bus.ErrConsumerGone) {
				return err
			}
			continue
		}
		failures = 0
		if err := w.handle(ctx, d); err != nil {
			return err
		}
	}
}

// handle processes one delivery and acks it once its terminal fact is
// durable. It returns an error only when the worker must stop.
func (w *Worker) handle(ctx context.Context, d *bus.Delivery) error {
	if d.Seq == 0 {
		w.log.Warn("request without metadata; dropped", logErr, d.Err)
		return d.Drop()
	}
	stopProgress := every(ctx, w.ackWait/3, func(context.Context) { _ = d.InProgress() })
	err := w.process(ctx, d.Stored, request{seq: d.Seq, ack: d.AckSubject()})
	stopProgress()
	if err != nil {
		if errors.Is(err, ErrSecondWorker) {
			return err
		}
		if ctx.Err() != nil {
			// Stopping: hand the request back at once; the next run
			// recognises it as done (or recovers it) by its upgrade id.
			_ = d.Retry(0)
			return nil
		}
		w.log.Error("request not finished; the host is put back and the request redelivered", logSeq, d.Seq, logErr, err)
		if rerr := w.recover(ctx); rerr != nil {
			w.log.Error("recovery failed; it is tried again at the next request or start", logErr, rerr)
		}
		return d.Retry(5 * time.Second)
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := d.Ack(actx); err != nil {
		w.log.Warn("ack", logSeq, d.Seq, logErr, err)
	} else if w.state.Unacked != "" {
		w.state.Unacked = ""
		_ = w.saveState()
	}
	return nil
}

// process reads what the worker knows of the request, lets admit decide,
// and runs or ends it.
func (w *Worker) process(ctx context.Context, st bus.Stored, r request) error {
	r.id = upgradeIDOf(st)
	known := events.ValidateID(r.id) == nil
	done := known && (w.state.done(r.id) || w.upgradeEnded(ctx, r.id))
	newer := false
	if known && !done && st.Event.Host() == w.cfg.Host && st.Event.Kind() == events.UpgradeRequested {
		var err error
		if newer, err = w.newerRequest(ctx, r.seq, r.id); err != nil {
			return err
		}
	}
	d, req := admit(w.cfg.Host, st, done, newer)
	if !known {
		r.id = events.NewID() // a rejection still needs an id of its own
	}
	switch d.verdict {
	case ignore:
		w.log.Info("request already handled; acknowledged without running it again", logUpgrade, r.id, logSeq, r.seq)
		return nil
	case reject:
		w.log.Warn("request rejected", logUpgrade, r.id, logReason, d.reason)
		return w.finish(ctx, r, events.UpgradeRejected, events.Fact{Reason: d.reason})
	case skip:
		return w.finish(ctx, r, events.UpgradeSkipped, events.Fact{Rev: req.Rev, Reason: d.reason})
	}
	if st.Event.Kind() == events.PinRequested {
		return w.pin(ctx, r)
	}
	return w.upgrade(ctx, r, req)
}

// upgradeEnded reports whether the upgrade index has a terminal fact for
// this host's upgrade id (a retry after the stream's dedupe window).
func (w *Worker) upgradeEnded(ctx context.Context, id string) bool {
	rec, err := w.upgrades.Get(ctx, w.cfg.Host, id)
	return err == nil && rec.Ended()
}

// newerRequest reports whether a newer upgrade request for this host,
// under another upgrade id, is queued behind the one at seq.
func (w *Worker) newerRequest(ctx context.Context, seq uint64, id string) (bool, error) {
	subj, _ := events.RequestSubject(w.cfg.Host, events.UpgradeRequested)
	last, err := w.conn.Last(ctx, subj)
	if errors.Is(err, bus.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return last.Seq > seq && last.Event.UpgradeID != id, nil
}

// finish appends the terminal fact of r and records that it ended.
func (w *Worker) finish(ctx context.Context, r request, k events.Kind, f events.Fact) error {
	if err := w.emit(ctx, r.id, k, f); err != nil {
		return err
	}
	return w.ended(r)
}

// ended records locally that r has its terminal fact, forgets the
// upgrade in flight, and keeps r's delivery to ack should this process
// die before it does (see recover).
func (w *Worker) ended(r request) error {
	w.state.finish(r.id)
	w.state.Unacked = r.ack
	return w.saveState()
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
