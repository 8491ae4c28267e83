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

// request is the request being handled: its upgrade id and where it is
// stored.
type request struct {
	id  string
	seq uint64
}

// serve handles the host's requests, one at a time in stream order, until
// ctx is done. A request that cannot be finished (a fact that cannot be
// made durable) is retried after the host is put back; the position only
// moves past a request once it has ended.
func (w *Worker) serve(ctx context.Context) error {
	b := backoff.NewExponentialBackOff()
	b.MaxInterval, b.MaxElapsedTime = 10*time.Second, 0
	var reqs *bus.Requests
	defer func() {
		if reqs != nil {
			reqs.Close()
		}
	}()
	for {
		var st bus.Stored
		// A pending reboot starts here: right after the terminal fact
		// that required it, or when its window opens.
		err := w.rebootIfDue(ctx)
		if errors.Is(err, ErrSecondWorker) {
			return err
		}
		if err != nil && ctx.Err() == nil {
			w.log.Warn("pending reboot", logErr, err)
		}
		err = ctx.Err()
		if err == nil && reqs == nil {
			reqs, err = w.conn.Requests(ctx, w.cfg.Host, w.state.Position)
		}
		if err == nil {
			nctx, cancel := w.untilRebootCheck(ctx)
			st, err = reqs.Next(nctx)
			cancel()
			if err != nil && ctx.Err() == nil && nctx.Err() != nil {
				continue // time to look at the reboot window again
			}
		}
		if err == nil {
			err = w.handle(ctx, st)
		}
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrSecondWorker):
			return err
		case err != nil:
			next := b.NextBackOff()
			w.log.Warn("reading requests", logErr, err, logRetry, next)
			if !sleep(ctx, next) {
				return ctx.Err()
			}
			continue
		}
		b.Reset()
	}
}

// handle runs one request to its end. Until it ends, it is retried, each
// time after recovery has put the host back; it returns an error only when
// the worker must stop.
func (w *Worker) handle(ctx context.Context, st bus.Stored) error {
	for {
		err := w.process(ctx, st, request{seq: st.Seq})
		switch {
		case err == nil:
			// Saved with the next change of state: a restart before
			// that reads the request again and finds it ended.
			w.state.Position = max(w.state.Position, st.Seq)
			w.pruneLogs()
			return nil
		case errors.Is(err, ErrSecondWorker) || ctx.Err() != nil:
			// Stopping: the next run recognises the request as ended
			// or recovers it.
			return err
		}
		w.log.Error("request not finished; the host is put back and the request tried again", logSeq, st.Seq, logErr, err)
		if rerr := w.recover(ctx); rerr != nil {
			w.log.Error("recovery failed; it is tried again before the request", logErr, rerr)
		}
		if !sleep(ctx, 5*time.Second) {
			return ctx.Err()
		}
	}
}

// sleep waits for d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
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

// finish appends the terminal fact of r, which names the request it
// answers, and records that r ended.
func (w *Worker) finish(ctx context.Context, r request, k events.Kind, f events.Fact) error {
	f.RequestSeq = r.seq
	if err := w.emit(ctx, r.id, k, f); err != nil {
		return err
	}
	return w.ended(r)
}

// ended records locally that r has its terminal fact: the upgrade in
// flight is forgotten and the position moves past its request.
func (w *Worker) ended(r request) error {
	w.state.finish(r.id)
	w.state.Position = max(w.state.Position, r.seq)
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
