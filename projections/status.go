package projections

import (
	"slices"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// Host states in Status.State.
const (
	StateUnknown   = "unknown"   // requests seen, no worker fact yet
	StateIdle      = "idle"      // nothing running; last upgrade ok or none
	StateQueued    = "queued"    // a request waits for the worker
	StateUpgrading = "upgrading" // an upgrade is running
	StateFailed    = "failed"    // the last upgrade failed, rejected or aborted
)

// Status is one host's row of the fleet view.
type Status struct {
	Host  string `json:"host"`
	State string `json:"state"`
	// Stage is the stage running now, or the last one that ran.
	Stage string `json:"stage,omitempty"`
	// Commit, SecretsCommit, Result and Generation are what the host runs.
	Commit        string `json:"commit,omitempty"`
	SecretsCommit string `json:"secrets_commit,omitempty"`
	Result        string `json:"result,omitempty"`
	Generation    int    `json:"generation,omitempty"`
	// Golden is the pinned golden result and its generation.
	Golden           string `json:"golden,omitempty"`
	GoldenGeneration int    `json:"golden_generation,omitempty"`
	// RebootRequired: Result boots another kernel, initrd or modules
	// than the booted system. Set by the worker's facts that name what
	// runs (worker.started, switch.succeeded, rollback.succeeded,
	// upgrade.succeeded); cleared by a boot check of Result.
	RebootRequired bool `json:"reboot_required,omitempty"`
	// LastUpgrade is the id of the newest upgrade that started or was
	// requested; LastResult its terminal kind ("upgrade.succeeded").
	LastUpgrade string    `json:"last_upgrade,omitempty"`
	LastResult  string    `json:"last_result,omitempty"`
	LastReason  string    `json:"last_reason,omitempty"`
	LastFailed  string    `json:"last_failed_stage,omitempty"`
	LastEnded   time.Time `json:"last_ended,omitzero"`
	// LastSucceeded is the time of the newest upgrade.succeeded.
	LastSucceeded time.Time `json:"last_succeeded,omitzero"`
	Requested     string    `json:"requested,omitempty"` // newest queued request
	// Worker is WorkerOnline after worker.started and WorkerOffline
	// after worker.stopped; Fleet's reads make it WorkerSilent when an
	// online worker's lease has expired. WorkerSeen is the time of its
	// latest fact.
	Worker string `json:"worker,omitempty"`
	// Tags are the host's groups, as its worker last started with.
	Tags          []string  `json:"tags,omitempty"`
	WorkerVersion string    `json:"worker_version,omitempty"`
	WorkerSeen    time.Time `json:"worker_seen,omitzero"`
	Updated       time.Time `json:"updated,omitzero"`
	// Seq is the last stream sequence applied to this row.
	Seq uint64 `json:"seq"`
}

// HasTag reports whether the host's worker started with tag; every host
// has the empty tag.
func (s Status) HasTag(tag string) bool { return tag == "" || slices.Contains(s.Tags, tag) }

// Apply folds one stored event into s. It returns false, leaving s alone,
// for events already applied (Seq not above s.Seq), for undecodable
// messages, and for kinds it does not know.
func Apply(s *Status, st bus.Stored) bool {
	if st.Seq <= s.Seq || st.Err != nil {
		return false
	}
	e := st.Event
	k := e.Kind()
	if !k.Known() {
		return false
	}
	s.Seq = st.Seq
	s.Updated = e.Time
	if s.State == "" {
		s.State = StateUnknown
	}
	if k.IsRequest() {
		if k == events.UpgradeRequested {
			s.Requested = e.UpgradeID
			if s.State != StateUpgrading {
				s.State = StateQueued
			}
		}
		return true
	}
	f, err := e.Fact()
	if err != nil {
		return true
	}
	s.WorkerSeen = e.Time
	if s.Worker == "" {
		s.Worker = "online"
	}
	switch k {
	case events.WorkerStarted:
		s.Worker, s.WorkerVersion, s.Tags = "online", f.Version, f.Tags
		if f.Commit != "" {
			s.Commit = f.Commit
		}
		if f.Result != "" {
			s.Result = f.Result
			s.RebootRequired = f.RebootRequired
		}
		if s.State == StateUnknown || s.State == StateUpgrading {
			s.State = StateIdle
		}
		return true
	case events.WorkerStopped:
		s.Worker = "offline"
		return true
	case events.UpgradeStarted:
		s.State, s.LastUpgrade, s.LastResult, s.LastReason, s.LastFailed = StateUpgrading, e.UpgradeID, "", "", ""
		if s.Requested == e.UpgradeID {
			s.Requested = ""
		}
	case events.PullSucceeded:
		s.SecretsCommit = f.SecretsNewCommit
	case events.SwitchSucceeded:
		s.Commit, s.Result, s.RebootRequired = f.Commit, f.Result, f.RebootRequired
		if f.Generation != 0 {
			s.Generation = f.Generation
		}
	case events.RollbackSucceeded:
		s.Commit, s.SecretsCommit = f.Commit, f.SecretsOldCommit
		if f.Result != "" {
			s.Result, s.RebootRequired = f.Result, f.RebootRequired
		}
		if f.Generation != 0 {
			s.Generation = f.Generation
		}
	case events.BootValidated, events.BootFailed:
		if f.Result == s.Result {
			s.RebootRequired = false // the host booted it
		}
	case events.GoldenPinned, events.GoldenRestored:
		s.Golden, s.GoldenGeneration = f.Result, f.Generation
		if k == events.GoldenRestored {
			s.Result = f.Result
			if f.Generation != 0 {
				s.Generation = f.Generation
			}
		}
	}
	if k.IsTerminal() && f.Stage == "golden" {
		// A refused pin request: it changes nothing on the host.
		s.LastReason = f.Reason
		return true
	}
	if k.IsTerminal() {
		s.LastUpgrade, s.LastResult, s.LastReason, s.LastEnded = e.UpgradeID, string(k), f.Reason, e.Time
		if s.Requested == e.UpgradeID {
			s.Requested = ""
		}
		s.LastFailed = ""
		switch k {
		case events.UpgradeSucceeded, events.UpgradeSkipped:
			s.State = StateIdle
		default:
			s.State, s.LastFailed = StateFailed, f.Stage
		}
		if k == events.UpgradeSucceeded {
			s.LastSucceeded = e.Time
		}
		if k == events.UpgradeSucceeded && f.Commit != "" {
			s.Commit = f.Commit
		}
		if k == events.UpgradeSucceeded && f.Result != "" {
			s.RebootRequired = f.RebootRequired
		}
		if s.Requested != "" {
			s.State = StateQueued
		}
		return true
	}
	if k.Stage() != "boot" && k.Stage() != "golden" && k != events.RebootStarted {
		s.Stage = k.Stage()
	}
	return true
}
