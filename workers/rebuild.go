package workers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// state.json is a cache of the host's own facts: what it holds that
// matters after the upgrade in flight has ended can be read back from the
// last fact on a few of the host's subjects (direct reads, which is all a
// host credential may do). rebuildState does that when state.json is
// missing or damaged.

// rebuildKinds are the subjects a rebuild reads the last fact of.
var rebuildKinds = []events.Kind{
	events.UpgradeSucceeded, events.UpgradeFailed, events.UpgradeRejected, events.UpgradeSkipped, events.UpgradeAborted,
	events.GoldenPinned, events.GoldenRestored, events.BootValidated, events.BootFailed, events.RebootStarted,
	events.PullSucceeded,
}

// probeTimeout bounds the look at the bus that decides whether a damaged
// state can be rebuilt.
const probeTimeout = 10 * time.Second

// probeBus reports whether the bus answers, within probeTimeout.
func (w *Worker) probeBus(ctx context.Context) error {
	if w.conn == nil {
		return errors.New("no bus connection")
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	_, err := w.conn.LastSeq(ctx)
	return err
}

// refuseDamaged is the error of a worker whose state.json is damaged
// while the bus, which it would be rebuilt from, is unreachable.
func refuseDamaged(damaged *DamagedStateError, busErr error) error {
	return fmt.Errorf("%w; the bus is unreachable too (%w), so it cannot be rebuilt from this host's facts: start again once the bus is back", damaged, busErr)
}

// rebuildState replaces the local state with one read from the host's
// facts and saves it; a damaged state.json is kept aside first, as
// state.json.damaged-<time>. It runs after the outbox is published, so
// the facts include every one this host wrote.
func (w *Worker) rebuildState(ctx context.Context, damaged *DamagedStateError) error {
	last := map[events.Kind]bus.Stored{}
	for _, k := range rebuildKinds {
		subj, _ := events.HostSubject(w.cfg.Host, k)
		st, err := w.conn.Last(ctx, subj)
		if errors.Is(err, bus.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("rebuild state from the bus: %w", err)
		}
		if st.Err == nil {
			last[k] = st
		}
	}
	s := stateFromFacts(last, w.needsReboot)
	log := w.log
	if damaged != nil {
		aside := fmt.Sprintf("%s.damaged-%s", w.statePth, w.now().UTC().Format("20060102T150405.000000000Z"))
		if err := os.Rename(w.statePth, aside); err != nil {
			return fmt.Errorf("keep the damaged state aside: %w", err)
		}
		log = log.With("damaged", damaged.Err, "kept_aside", aside)
	}
	w.state = s
	if err := w.saveState(); err != nil {
		return err
	}
	if damaged == nil && len(last) == 0 {
		return nil // a new host: nothing to rebuild
	}
	what := "state.json was missing"
	if damaged != nil {
		what = "state.json was damaged"
	}
	log.Warn(what+"; rebuilt from this host's facts on the bus",
		"deployed", short(s.Deployed), "deployed_secrets", short(s.DeployedSecrets), "quarantined", short(s.Quarantined),
		"position", s.Position, "recent", len(s.Recent), "boot_failures", s.BootFailures, "pending_reboot", s.PendingReboot != nil)
	return nil
}

// stateFromFacts is the local state the last facts on the host's subjects
// say, with no upgrade in flight (recover ends one the bus says never
// ended). needsReboot says why a pending reboot is needed.
func stateFromFacts(last map[events.Kind]bus.Stored, needsReboot func(string) (bool, string)) *localState {
	s := &localState{}
	fact := func(k events.Kind) (events.Fact, uint64, bool) {
		st, ok := last[k]
		if !ok {
			return events.Fact{}, 0, false
		}
		f, err := st.Event.Fact()
		return f, st.Seq, err == nil
	}
	seq := func(k events.Kind) uint64 { return last[k].Seq }

	// Position and recent ids: the ends of the newest requests, oldest
	// first (older ones are recognised by the upgrade index).
	var ends []bus.Stored
	for k, st := range last {
		if k.IsTerminal() || k == events.GoldenPinned {
			ends = append(ends, st)
		}
	}
	sort.Slice(ends, func(i, j int) bool { return ends[i].Seq < ends[j].Seq })
	for _, st := range ends {
		if f, err := st.Event.Fact(); err == nil {
			s.Position = max(s.Position, f.RequestSeq)
		}
		if id := st.Event.UpgradeID; events.ValidateID(id) == nil && !s.done(id) {
			s.Recent = append(s.Recent, id)
		}
	}

	// Deployed: the last success. Its secrets commit is in the success
	// (secrets_new_commit), or, in facts written before it was, in the
	// pull of the same upgrade.
	succ, succSeq, ok := fact(events.UpgradeSucceeded)
	if ok {
		s.Deployed, s.DeployedSecrets = succ.Commit, succ.SecretsNewCommit
		if pull, _, ok := fact(events.PullSucceeded); s.DeployedSecrets == "" && ok && last[events.PullSucceeded].Event.UpgradeID == last[events.UpgradeSucceeded].Event.UpgradeID {
			s.DeployedSecrets = pull.SecretsNewCommit
		}
	}

	// Quarantined: named by the last golden fallback; in facts written
	// before it was, the success deployed when the fallback happened.
	if gr, grSeq, ok := fact(events.GoldenRestored); ok {
		s.Quarantined = gr.Commit
		if s.Quarantined == "" && succSeq != 0 && succSeq < grSeq {
			s.Quarantined = succ.Commit
		}
	}

	// Systems that passed a boot check: the last validated and the last
	// pinned (a pin needs a validated system).
	kinds := []events.Kind{events.BootValidated, events.GoldenPinned}
	if seq(events.BootValidated) > seq(events.GoldenPinned) {
		kinds = []events.Kind{events.GoldenPinned, events.BootValidated} // newest last
	}
	for _, k := range kinds {
		if f, _, ok := fact(k); ok && f.Result != "" {
			s.markValidated(f.Result)
		}
	}

	// Boot failures: counted until a validated boot or a fallback.
	if bf, bfSeq, ok := fact(events.BootFailed); ok && bfSeq > seq(events.BootValidated) && bfSeq > seq(events.GoldenRestored) {
		s.BootFailures, s.BootFailed = bf.Failures, bf.Result
	}

	// A reboot is owed from a success that said so until the boot check
	// after it.
	if ok && succ.RebootPending && succSeq > seq(events.BootValidated) && succSeq > seq(events.BootFailed) {
		p := &pendingReboot{UpgradeID: last[events.UpgradeSucceeded].Event.UpgradeID, Result: succ.Result, Generation: succ.Generation}
		if _, why := needsReboot(succ.Result); why != "" {
			p.Reason = why
		} else {
			p.Reason = "the system of this upgrade boots another kernel, initrd or modules"
		}
		if rs, ok := last[events.RebootStarted]; ok && rs.Seq > succSeq {
			p.Attempted = rs.Event.Time
		}
		s.PendingReboot = p
	}
	return s
}
