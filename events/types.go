package events

// Kind names what happened, as "<stage>.<outcome>" (for example
// "build.failed"). The CloudEvents type is TypePrefix + kind, and a host
// fact is stored under the subject convoy.host.<host>.<kind>.
type Kind string

// TypePrefix is prepended to a Kind to form the CloudEvents type attribute.
const TypePrefix = "convoy."

// Requests, written by producers under convoy.req.<host>.<verb>.
const (
	UpgradeRequested Kind = "upgrade.requested"
	PinRequested     Kind = "pin.requested"
)

// Facts about one upgrade, written only by the host's worker. Every upgrade
// that starts ends with exactly one terminal fact (see IsTerminal).
const (
	UpgradeStarted    Kind = "upgrade.started"
	HooksSucceeded    Kind = "hooks.succeeded"
	HooksFailed       Kind = "hooks.failed"
	PullSucceeded     Kind = "pull.succeeded"
	PullFailed        Kind = "pull.failed"
	BuildSucceeded    Kind = "build.succeeded"
	BuildFailed       Kind = "build.failed"
	ValidationPassed  Kind = "validation.passed"
	ValidationFailed  Kind = "validation.failed"
	SwitchSucceeded   Kind = "switch.succeeded"
	SwitchFailed      Kind = "switch.failed"
	HealthPassed      Kind = "health.passed"
	HealthFailed      Kind = "health.failed"
	RollbackSucceeded Kind = "rollback.succeeded"
	RollbackFailed    Kind = "rollback.failed"

	UpgradeSucceeded Kind = "upgrade.succeeded"
	UpgradeFailed    Kind = "upgrade.failed"
	UpgradeSkipped   Kind = "upgrade.skipped"
	UpgradeRejected  Kind = "upgrade.rejected"
	UpgradeAborted   Kind = "upgrade.aborted"
)

// Boot, golden generation and worker lifecycle facts.
const (
	BootValidated  Kind = "boot.validated"
	BootFailed     Kind = "boot.failed"
	GoldenPinned   Kind = "golden.pinned"
	GoldenRestored Kind = "golden.restored"
	WorkerStarted  Kind = "worker.started"
	WorkerStopped  Kind = "worker.stopped"
)

// RebootStarted is appended by the worker just before it runs the reboot
// command; the boot check after the reboot ends it (boot.validated or
// boot.failed).
const RebootStarted Kind = "reboot.started"

// Kinds lists every kind this version of convoy emits, in pipeline order.
var Kinds = []Kind{
	UpgradeRequested, PinRequested,
	UpgradeStarted, HooksSucceeded, HooksFailed, PullSucceeded, PullFailed,
	BuildSucceeded, BuildFailed, ValidationPassed, ValidationFailed,
	SwitchSucceeded, SwitchFailed, HealthPassed, HealthFailed,
	RollbackSucceeded, RollbackFailed,
	UpgradeSucceeded, UpgradeFailed, UpgradeSkipped, UpgradeRejected, UpgradeAborted,
	BootValidated, BootFailed, GoldenPinned, GoldenRestored,
	WorkerStarted, WorkerStopped,
	RebootStarted,
}

var known = func() map[Kind]bool {
	m := make(map[Kind]bool, len(Kinds)+len(RolloutKinds))
	for _, k := range Kinds {
		m[k] = true
	}
	for _, k := range RolloutKinds {
		m[k] = true
	}
	return m
}()

// Known reports whether k is a kind this version defines. Readers skip
// kinds they do not know instead of failing: newer workers may emit more.
func (k Kind) Known() bool { return known[k] }

// Type returns the CloudEvents type attribute for k.
func (k Kind) Type() string { return TypePrefix + string(k) }

// IsTerminal reports whether k ends an upgrade. Exactly one terminal fact
// is written per upgrade id and host.
func (k Kind) IsTerminal() bool {
	switch k {
	case UpgradeSucceeded, UpgradeFailed, UpgradeSkipped, UpgradeRejected, UpgradeAborted:
		return true
	}
	return false
}

// IsRequest reports whether k is written by producers on convoy.req.
func (k Kind) IsRequest() bool { return k == UpgradeRequested || k == PinRequested }

// Stage returns the part of k before the dot ("build" for "build.failed").
func (k Kind) Stage() string {
	for i := 0; i < len(k); i++ {
		if k[i] == '.' {
			return string(k[:i])
		}
	}
	return string(k)
}

// Outcome returns the part of k after the dot ("failed" for "build.failed").
func (k Kind) Outcome() string {
	for i := 0; i < len(k); i++ {
		if k[i] == '.' {
			return string(k[i+1:])
		}
	}
	return ""
}

// Skip and reject reasons carried in Fact.Reason with a free-text detail.
const (
	ReasonSuperseded     = "superseded"
	ReasonAlreadyCurrent = "already current"
)

// UpgradeRequest is the data of upgrade.requested. The worker, not the
// request, decides what is deployed: Rev must resolve to a commit on the
// worker's tracked branch, and anything else is rejected.
type UpgradeRequest struct {
	// Rev is a commit (or ref) on the tracked branch; empty means the tip.
	Rev string `json:"rev,omitempty"`
	// AllowDowngrade asks to deploy an ancestor of the deployed commit.
	AllowDowngrade bool `json:"allow_downgrade,omitempty"`
	// RequestedBy names the producer (user@host, "schedule", ...).
	RequestedBy string `json:"requested_by,omitempty"`
	// RolloutRollback, set by the rollout controller, is the id of the
	// rollout whose halt this request undoes: a worker whose config sets
	// upgrade.allow_rollout_rollback lets it deploy an ancestor of the
	// deployed commit without AllowDowngrade.
	RolloutRollback string `json:"rollout_rollback,omitempty"`
}

// PinRequest is the data of pin.requested: pin the host's current
// generation as golden if it passed validation.
type PinRequest struct {
	RequestedBy string `json:"requested_by,omitempty"`
}

// Fact is the data of every convoy.host event. Each field is set where it
// applies (see docs/events.md for which kinds carry which fields), so a
// reader needs nothing but the event itself.
type Fact struct {
	// Rev is the revision the request asked for (upgrade.started).
	Rev string `json:"rev,omitempty"`
	// Commit is the config commit this fact is about: the target from
	// pull.succeeded on, the deployed one in terminal facts.
	Commit string `json:"commit,omitempty"`
	// OldCommit and NewCommit are the config repo before and after the pull.
	OldCommit string `json:"old_commit,omitempty"`
	NewCommit string `json:"new_commit,omitempty"`
	// SecretsOldCommit and SecretsNewCommit are the secrets repo's.
	SecretsOldCommit string `json:"secrets_old_commit,omitempty"`
	SecretsNewCommit string `json:"secrets_new_commit,omitempty"`
	// Result is what the build produced (a store path for NixOS) or, after
	// a rollback or in a terminal fact, what the host now runs.
	Result string `json:"result,omitempty"`
	// PreviousResult is what ran before the switch.
	PreviousResult string `json:"previous_result,omitempty"`
	// Generation is the system profile generation, where the driver has one.
	Generation int `json:"generation,omitempty"`
	// Command is the argv of the command that decided the outcome.
	Command []string `json:"command,omitempty"`
	// ExitCode of that command; nil when it did not run or was killed.
	ExitCode *int `json:"exit_code,omitempty"`
	// DurationMS is how long the stage took.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// Output is the tail of the stage's combined output.
	Output string `json:"output,omitempty"`
	// Log is the path of the full log on the host.
	Log string `json:"log,omitempty"`
	// Reason says why, in words, for failures, skips and rejections.
	Reason string `json:"reason,omitempty"`
	// Action is what on_validation_failure decided: rollback, notify, ignore.
	Action string `json:"action,omitempty"`
	// Stage is the stage that failed (terminal facts) or was rolled back.
	Stage string `json:"stage,omitempty"`
	// Version is the worker's version (worker.started).
	Version string `json:"version,omitempty"`
	// Failures counts consecutive failed boots (boot.failed).
	Failures int `json:"failures,omitempty"`
	// RebootPending is set in upgrade.succeeded when the worker will
	// reboot the host for this upgrade (inside its reboot window); the
	// boot check after that reboot appends boot.validated or boot.failed.
	RebootPending bool `json:"reboot_pending,omitempty"`
	// Tags are the host's groups from its config (worker.started).
	Tags []string `json:"tags,omitempty"`
	// RequestSeq is the stream sequence of the request a terminal fact
	// (or golden.pinned) answers: how far the worker has served its
	// requests.
	RequestSeq uint64 `json:"request_seq,omitempty"`
	// RebootRequired says the system in Result boots another kernel,
	// initrd or kernel modules than the booted system: it takes full
	// effect only after a reboot (nixos driver; absent means false).
	RebootRequired bool `json:"reboot_required,omitempty"`
}
