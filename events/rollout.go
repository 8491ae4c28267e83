package events

import (
	"fmt"
	"time"
)

// Rollout kinds, stored under convoy.rollout.<id>.<kind>. The operator's
// asks end in ".requested"; everything else is the controller's decision,
// and only the controller writes it.
const (
	RolloutRequested       Kind = "rollout.requested"
	RolloutAbortRequested  Kind = "rollout.abort.requested"
	RolloutPauseRequested  Kind = "rollout.pause.requested"
	RolloutResumeRequested Kind = "rollout.resume.requested"

	RolloutStarted       Kind = "rollout.started"
	RolloutWaveStarted   Kind = "rollout.wave.started"
	RolloutWaveSucceeded Kind = "rollout.wave.succeeded"
	RolloutPaused        Kind = "rollout.paused"
	RolloutResumed       Kind = "rollout.resumed"
	RolloutHalted        Kind = "rollout.halted"
	RolloutSucceeded     Kind = "rollout.succeeded"
	RolloutAborted       Kind = "rollout.aborted"
	// RolloutRolledBack follows rollout.halted when the plan's OnFailure
	// is "rollback": it says which upgraded hosts went back to their
	// previous commit and which did not. It is not an end: the rollout
	// ended with rollout.halted.
	RolloutRolledBack Kind = "rollout.rolled-back"
)

// RolloutKinds lists the rollout kinds, the operator's asks first.
var RolloutKinds = []Kind{
	RolloutRequested, RolloutAbortRequested, RolloutPauseRequested, RolloutResumeRequested,
	RolloutStarted, RolloutWaveStarted, RolloutWaveSucceeded, RolloutPaused, RolloutResumed,
	RolloutHalted, RolloutSucceeded, RolloutAborted, RolloutRolledBack,
}

// IsRolloutEnd reports whether k ends a rollout. Exactly one such fact is
// written per rollout.
func (k Kind) IsRolloutEnd() bool {
	return k == RolloutHalted || k == RolloutSucceeded || k == RolloutAborted
}

// RolloutSubject returns convoy.rollout.<id>.<kind>.
func RolloutSubject(id string, k Kind) (string, error) {
	if err := ValidateID(id); err != nil {
		return "", err
	}
	if k.Stage() != ClassRollout || k.Outcome() == "" {
		return "", fmt.Errorf("%s is not a rollout kind", k)
	}
	return "convoy.rollout." + id + "." + string(k), nil
}

// RolloutFacts returns the filter convoy.rollout.<id>.> of one rollout's
// events, requests and facts.
func RolloutFacts(id string) string { return "convoy.rollout." + id + ".>" }

// RolloutRequestFilters are the subjects of the operator's asks
// (convoy.rollout.<id>.rollout.requested and
// convoy.rollout.<id>.rollout.<verb>.requested): what an operator
// credential may publish, and no controller fact matches them.
var RolloutRequestFilters = []string{
	"convoy.rollout.*." + string(RolloutRequested),
	"convoy.rollout.*.rollout.*.requested",
}

// RolloutWave is one wave of a rollout's plan: the selector the operator
// gave and the hosts it selected when the rollout was requested.
type RolloutWave struct {
	// Spec is the selector: "tag=canary", "25%" or "all".
	Spec  string   `json:"spec"`
	Hosts []string `json:"hosts"`
}

// RolloutPlan is the data of rollout.requested: everything the controller
// needs, fixed when the rollout is asked for, so that a restarted
// controller decides as the first one would have.
type RolloutPlan struct {
	// Rev is the commit (or ref) every host is asked to deploy.
	Rev   string        `json:"rev"`
	Waves []RolloutWave `json:"waves"`
	// BakeMS is how long, in milliseconds, a wave must stay healthy after
	// its last host's terminal fact before the next wave starts.
	BakeMS int64 `json:"bake_ms,omitempty"`
	// MaxFailures is how many hosts may fail, over the whole rollout,
	// before it halts.
	MaxFailures int `json:"max_failures"`
	// WaveTimeoutMS, when set, is how long a wave waits for its hosts'
	// terminal facts; a host without one by then counts as a failure.
	WaveTimeoutMS int64 `json:"wave_timeout_ms,omitempty"`
	// OnFailure is what a halt does: "halt" (nothing more, the default)
	// or "rollback" (OnFailureRollback).
	OnFailure string `json:"on_failure,omitempty"`
	// Window, when set, is when a wave may start, in the controller's
	// local time ("Sat 02:00-05:00"; see ParseWindow).
	Window      string `json:"window,omitempty"`
	RequestedBy string `json:"requested_by,omitempty"`
}

// The values of RolloutPlan.OnFailure.
const (
	OnFailureHalt = "halt"
	// OnFailureRollback: after rollout.halted, the hosts the rollout
	// upgraded are asked to go back to the commit each had when its wave
	// started, then rollout.rolled-back is written.
	OnFailureRollback = "rollback"
)

// Rollback reports whether a halt rolls the upgraded hosts back.
func (p RolloutPlan) Rollback() bool { return p.OnFailure == OnFailureRollback }

// Bake returns the plan's bake time.
func (p RolloutPlan) Bake() time.Duration { return time.Duration(p.BakeMS) * time.Millisecond }

// WaveTimeout returns the plan's wave deadline (0: none).
func (p RolloutPlan) WaveTimeout() time.Duration {
	return time.Duration(p.WaveTimeoutMS) * time.Millisecond
}

// RolloutAsk is the data of the operator's rollout.<verb>.requested.
type RolloutAsk struct {
	RequestedBy string `json:"requested_by,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// RolloutFact is the data of the controller's rollout facts. Each field
// is set where it applies; a wave's upgrade id is the envelope's
// upgradeid.
type RolloutFact struct {
	// Wave is the wave's number, from 1 (wave kinds, and halted).
	Wave int `json:"wave,omitempty"`
	// Hosts are the wave's hosts (wave.started).
	Hosts []string `json:"hosts,omitempty"`
	// Previous is, per host of the wave, the commit the status view
	// showed for it when the wave started (wave.started; a host the view
	// had no commit for is missing).
	Previous map[string]string `json:"previous,omitempty"`
	// Upgraded are the wave's hosts whose upgrade ended upgrade.succeeded
	// (wave.succeeded).
	Upgraded []string `json:"upgraded,omitempty"`
	// Rollback are the hosts a halt with on_failure rollback sends back,
	// each with its previous commit (halted), under the upgrade id in the
	// envelope's upgradeid.
	Rollback []RolloutHostCommit `json:"rollback,omitempty"`
	// RolledBack are the hosts whose rollback ended upgrade.succeeded,
	// and NotRolledBack those that did not, with why (rolled-back).
	RolledBack    []RolloutHostCommit `json:"rolled_back,omitempty"`
	NotRolledBack []RolloutFailure    `json:"not_rolled_back,omitempty"`
	// Failed are the hosts that counted as failures so far, with why
	// (wave.succeeded, halted).
	Failed []RolloutFailure `json:"failed,omitempty"`
	// Reason says why, in words (halted, aborted, paused, resumed,
	// rolled-back).
	Reason string `json:"reason,omitempty"`
}

// RolloutFailure is one host that counted as a failure.
type RolloutFailure struct {
	Host   string `json:"host"`
	Wave   int    `json:"wave"`
	Reason string `json:"reason"`
}

// RolloutHostCommit is a host and a commit: the one a rollback sends it
// back to.
type RolloutHostCommit struct {
	Host   string `json:"host"`
	Commit string `json:"commit"`
}
