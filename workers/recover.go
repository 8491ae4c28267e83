package workers

import (
	"context"
	"errors"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// recover ends what a previous run left unfinished, so every upgrade ends
// exactly once: an upgrade in flight is put back (the checkouts and, if
// its switch had started, the system) and ends with upgrade.aborted; an
// upgrade that ended is recorded. The position moves past every request
// whose end is stored.
func (w *Worker) recover(ctx context.Context) error {
	ends, err := w.lastEnds(ctx)
	if err != nil {
		return err
	}
	for _, e := range ends {
		if f, err := e.Event.Fact(); err == nil {
			w.state.Position = max(w.state.Position, f.RequestSeq)
		}
	}
	inf := w.state.InFlight
	if inf == nil {
		return w.settleLastRun(ctx)
	}
	for _, e := range ends {
		if e.Event.UpgradeID == inf.UpgradeID && e.Event.Kind().IsTerminal() {
			return w.adoptEnd(ctx, inf, e)
		}
	}
	return w.putBack(ctx, inf)
}

// settleLastRun handles a previous run with no upgrade in flight: an
// upgrade the bus says never ended (the state dir was lost) ends without
// touching the host.
func (w *Worker) settleLastRun(ctx context.Context) error {
	last, err := w.conn.Last(ctx, events.HostFacts(w.cfg.Host))
	if errors.Is(err, bus.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	id, k := last.Event.UpgradeID, last.Event.Kind()
	if id == "" || k.IsTerminal() || k == events.GoldenPinned || w.state.done(id) {
		return nil
	}
	return w.finish(ctx, request{id: id}, events.UpgradeAborted, events.Fact{Reason: "worker restarted without a record of this upgrade; host left as found"})
}

// adoptEnd records an in-flight upgrade whose terminal fact is stored:
// the process stopped after appending it, before recording it.
func (w *Worker) adoptEnd(ctx context.Context, inf *inFlight, end bus.Stored) error {
	if end.Event.Kind() == events.UpgradeSucceeded {
		f, _ := end.Event.Fact()
		w.state.Deployed = f.Commit
		if w.cfg.Secrets != nil {
			w.state.DeployedSecrets, _ = (&gitRepo{name: "secrets", cfg: *w.cfg.Secrets, run: w.quietExec()}).head(ctx)
		}
	}
	w.state.finish(inf.UpgradeID)
	return w.saveState()
}

// putBack rolls back an upgrade a dead worker left in flight and ends it
// with upgrade.aborted.
func (w *Worker) putBack(ctx context.Context, inf *inFlight) error {
	// A command the dead worker started may still run (a switch in its own
	// process group): stop it before putting the host back.
	killLeftover(w.cfg.StateDir, inf.UpgradeID)
	w.log.Warn("recovering an upgrade left in flight", logUpgrade, inf.UpgradeID)
	lf, logPath, err := w.openLog(inf.UpgradeID)
	if err != nil {
		return err
	}
	defer lf.Close()
	j := w.newJob(inf.UpgradeID, logPath, lf)
	j.oldCommit, j.oldSecrets, j.previous = inf.OldCommit, inf.OldSecrets, inf.Previous
	j.moved, j.switched = inf.Moved, inf.Switching
	rb, err := j.rollback(ctx, "recovery", inf.Switching)
	if err != nil {
		return err
	}
	r := request{id: inf.UpgradeID, seq: inf.RequestSeq}
	return w.finish(ctx, r, events.UpgradeAborted, events.Fact{Stage: "recovery", Commit: rb.Commit, Result: rb.Result,
		Reason: "worker stopped mid-upgrade (crash or kill); host put back to the commit it had before"})
}

// lastEnds returns the last fact on each of the host's subjects that end
// a request (terminal facts and golden.pinned). The upgrade in flight is
// the host's newest, so its end, if stored, is among them: a few direct
// reads of the host's own subjects, which is all a host credential may
// read.
func (w *Worker) lastEnds(ctx context.Context) ([]bus.Stored, error) {
	var ends []bus.Stored
	for _, k := range events.Kinds {
		if !k.IsTerminal() && k != events.GoldenPinned {
			continue
		}
		subj, _ := events.HostSubject(w.cfg.Host, k)
		st, err := w.conn.Last(ctx, subj)
		if errors.Is(err, bus.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		ends = append(ends, st)
	}
	return ends, nil
}
