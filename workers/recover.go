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
// upgrade that ended is recorded; a delivery left unacked is acked.
func (w *Worker) recover(ctx context.Context) error {
	inf := w.state.InFlight
	if inf == nil {
		return w.settleLastRun(ctx)
	}
	end, err := w.terminalOf(ctx, inf.UpgradeID)
	if err != nil {
		return err
	}
	if end != nil {
		return w.adoptEnd(ctx, inf, *end)
	}
	return w.putBack(ctx, inf)
}

// settleLastRun handles a previous run with no upgrade in flight: it acks
// a delivery whose end was recorded just before a kill, and ends an
// upgrade the bus says never ended (the state dir was lost) without
// touching the host.
func (w *Worker) settleLastRun(ctx context.Context) error {
	if w.state.Unacked != "" {
		w.ackLater(w.state.Unacked)
		w.state.Unacked = ""
		if err := w.saveState(); err != nil {
			return err
		}
	}
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
	w.ackLater(inf.AckSubject)
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
	r := request{id: inf.UpgradeID, ack: inf.AckSubject}
	if err := w.finish(ctx, r, events.UpgradeAborted, events.Fact{Stage: "recovery", Commit: rb.Commit, Result: rb.Result,
		Reason: "worker stopped mid-upgrade (crash or kill); host put back to the commit it had before"}); err != nil {
		return err
	}
	w.ackLater(inf.AckSubject)
	return nil
}

// terminalOf returns upgrade id's terminal fact if it is stored, else
// nil. The upgrade in flight is the host's newest, so its terminal fact,
// if any, is the last one on its terminal subject: a few direct reads of
// the host's own subjects, which is all a host credential may read.
func (w *Worker) terminalOf(ctx context.Context, id string) (*bus.Stored, error) {
	for _, k := range events.Kinds {
		if !k.IsTerminal() {
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
		if st.Event.UpgradeID == id {
			return &st, nil
		}
	}
	return nil, nil
}

// ackLater acknowledges a delivery a previous run (or a failed attempt)
// left unacked, so the consumer hands out the next request now instead
// of after the ack wait. Best effort: a redelivery is recognised as done.
func (w *Worker) ackLater(ackSubject string) { _ = w.conn.Ack(ackSubject) }
