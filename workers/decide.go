package workers

import (
	"errors"
	"fmt"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// The worker's decisions are pure functions of what it has read: admit
// for a delivered request, judge for the target the pull stage resolved.
// They do no I/O, so every skip and reject reason is table-tested.

// verdict is what the worker does with a request.
type verdict int

const (
	proceed verdict = iota // run it
	skip                   // end it with upgrade.skipped
	reject                 // end it with upgrade.rejected
	ignore                 // it already ended: acknowledge it, append nothing
)

// decision is a verdict and the reason the terminal fact gives.
type decision struct {
	verdict verdict
	reason  string
}

func rejectf(format string, a ...any) decision {
	return decision{verdict: reject, reason: fmt.Sprintf(format, a...)}
}

// kind is the terminal kind a skip or reject ends with.
func (d decision) kind() events.Kind {
	if d.verdict == skip {
		return events.UpgradeSkipped
	}
	return events.UpgradeRejected
}

// upgradeIDOf returns a request's upgrade id: its upgradeid, else its
// event id.
func upgradeIDOf(st bus.Stored) string {
	if st.Event.UpgradeID != "" {
		return st.Event.UpgradeID
	}
	return st.Event.ID
}

// admit decides what host's worker does with the request st. done says
// the request's upgrade already ended (in the local state or the upgrade
// index); newer that a newer upgrade request for the host is queued
// behind it. An admitted upgrade request comes back decoded.
func admit(host string, st bus.Stored, done, newer bool) (decision, events.UpgradeRequest) {
	var req events.UpgradeRequest
	if st.Err != nil {
		return rejectf("malformed request at stream sequence %d on %s: %v", st.Seq, st.Subject, st.Err), req
	}
	// The id names files under the state dir: only a ULID will do.
	if id := upgradeIDOf(st); events.ValidateID(id) != nil {
		return rejectf("request at stream sequence %d has upgrade id %q, which is not a ULID", st.Seq, id), req
	}
	if done {
		return decision{verdict: ignore, reason: "already handled"}, req
	}
	e := st.Event
	if e.Host() != host {
		return rejectf("request is for host %q but arrived on %s", e.Host(), st.Subject), req
	}
	switch e.Kind() {
	case events.PinRequested:
		return decision{}, req
	case events.UpgradeRequested:
		if err := e.DecodeData(&req); err != nil {
			return rejectf("%v", err), req
		}
		if newer {
			return decision{verdict: skip, reason: events.ReasonSuperseded + ": a newer upgrade request is queued"}, req
		}
		return decision{}, req
	}
	return rejectf("unknown request type %q", e.Type), req
}

// target is what the pull stage learnt about an upgrade's target and the
// host, before anything is changed.
type target struct {
	rev string // as requested ("" for the branch tip)
	// err is set when the revision names no commit of the tracked branch
	// (ErrBadRev, ErrNotOnBranch) or its signature is not trusted
	// (ErrUnsigned); the fields below are then unset.
	err     error
	commit  string // the config commit to deploy
	secrets string // the secrets commit to deploy ("" without secrets)
	head    string // the config commit checked out now
	// older says commit is an ancestor of deployed.
	older bool
	// What the host's state records.
	deployed, deployedSecrets, quarantined string
	// A downgrade needs both the host's config and the request to allow it.
	configAllowsDowngrade, requestAllowsDowngrade bool
	// rolloutRollback is the rollout a request undoes (its
	// rollout_rollback); such a downgrade needs only the config's
	// upgrade.allow_rollout_rollback.
	rolloutRollback             string
	configAllowsRolloutRollback bool
}

// judge decides whether the upgrade goes on to move the checkouts.
func judge(t target) decision {
	switch {
	case t.err != nil:
		return decision{verdict: reject, reason: t.err.Error()}
	case t.quarantined != "" && t.commit == t.quarantined:
		return rejectf("commit %s failed its boot checks and the host fell back to the golden generation; push a fix (a new commit) to upgrade", short(t.commit))
	case t.deployed != "" && t.commit == t.deployed && t.secrets == t.deployedSecrets && t.commit == t.head:
		return decision{verdict: skip, reason: events.ReasonAlreadyCurrent + ": " + short(t.commit) + " is deployed"}
	case t.older && t.rolloutRollback != "" && t.configAllowsRolloutRollback:
		return decision{}
	case t.older && t.rolloutRollback != "" && !(t.configAllowsDowngrade && t.requestAllowsDowngrade):
		return rejectf("downgrade refused: %s, the rollback of rollout %s, is an ancestor of the deployed %s (set upgrade.allow_rollout_rollback in the worker config)",
			short(t.commit), t.rolloutRollback, short(t.deployed))
	case t.older && !(t.configAllowsDowngrade && t.requestAllowsDowngrade):
		hint := "set upgrade.allow_downgrade in the worker config and request it to allow"
		if t.configAllowsDowngrade {
			hint = "request it with --allow-downgrade"
		}
		return rejectf("downgrade refused: %s is an ancestor of the deployed %s (%s)", short(t.commit), short(t.deployed), hint)
	}
	return decision{}
}

// isRevRejection reports whether err from resolving or verifying a target
// is the request's fault (judge rejects it) rather than the host's.
func isRevRejection(err error) bool {
	return errors.Is(err, ErrBadRev) || errors.Is(err, ErrNotOnBranch) || errors.Is(err, ErrUnsigned)
}
