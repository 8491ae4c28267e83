package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// Rollout is one rollout as its facts and its hosts' facts tell it:
// everything Decide needs and nothing the controller keeps elsewhere.
type Rollout struct {
	ID        string             `json:"id"`
	Plan      events.RolloutPlan `json:"plan"`
	Requested time.Time          `json:"requested"`
	// Seq is the sequence of the last event under the rollout's subjects:
	// the guard of the controller's next append.
	Seq     uint64 `json:"seq"`
	Started bool   `json:"started"`
	// Waves are the waves started so far.
	Waves  []Wave `json:"waves"`
	Paused bool   `json:"paused"`
	// Asks are the operator's asks not yet answered by a fact.
	Abort  *events.RolloutAsk `json:"abort,omitempty"`
	Pause  *events.RolloutAsk `json:"pause,omitempty"`
	Resume *events.RolloutAsk `json:"resume,omitempty"`
	// End is the kind of the terminal fact, once written, and Reason its
	// reason.
	End    events.Kind             `json:"end,omitempty"`
	Reason string                  `json:"reason,omitempty"`
	Failed []events.RolloutFailure `json:"failed,omitempty"`
	Ended  time.Time               `json:"ended,omitzero"`
	// Rollback is what a halt with on_failure rollback sends back, from
	// rollout.halted; RolledBack is set by rollout.rolled-back.
	Rollback   *Rollback `json:"rollback,omitempty"`
	RolledBack bool      `json:"rolled_back,omitempty"`
}

// Rollback is the rollback after a halt: the hosts asked to go back to
// their previous commit under the upgrade id ID, and their terminal
// facts.
type Rollback struct {
	ID       string                     `json:"upgrade"`
	Hosts    []events.RolloutHostCommit `json:"hosts,omitempty"`
	Started  time.Time                  `json:"started"`
	StartSeq uint64                     `json:"start_seq"`
	// Unknown are the upgraded hosts that cannot go back, with why (no
	// previous commit known), as rollout.halted recorded them.
	Unknown []events.RolloutFailure `json:"unknown,omitempty"`
	Ends    map[string]HostEnd      `json:"ends,omitempty"`
}

// Pending reports whether the controller still has something to do for
// r: it has not ended, or its rollback has not ended.
func (r *Rollout) Pending() bool {
	return r.End == "" || r.Rollback != nil && !r.RolledBack
}

// Wave is one started wave.
type Wave struct {
	Number    int       `json:"wave"`
	ID        string    `json:"upgrade"`
	Hosts     []string  `json:"hosts"`
	Started   time.Time `json:"started"`
	StartSeq  uint64    `json:"start_seq"`
	Succeeded bool      `json:"succeeded"`
	// Previous is, per host, the commit it ran when the wave started
	// (wave.started).
	Previous map[string]string `json:"previous,omitempty"`
	// Upgraded are the hosts whose upgrade ended upgrade.succeeded, as
	// wave.succeeded recorded them.
	Upgraded []string `json:"upgraded,omitempty"`
	// Failed are the wave's hosts that counted as failures, as its
	// wave.succeeded recorded them: a restarted controller counts them
	// without reading the wave's host facts again.
	Failed []events.RolloutFailure `json:"failed,omitempty"`
	// Ends are the hosts' terminal facts of the wave's upgrade.
	Ends map[string]HostEnd `json:"ends,omitempty"`
	// Troubles are, per host, the first fact after its terminal one that
	// makes it count as failed while the wave bakes (worker.stopped,
	// health.failed, boot.failed).
	Troubles map[string]HostEnd `json:"troubles,omitempty"`
}

// HostEnd is one host fact a wave counts.
type HostEnd struct {
	Seq    uint64      `json:"seq"`
	Kind   events.Kind `json:"kind"`
	Time   time.Time   `json:"time"`
	Reason string      `json:"reason,omitempty"`
	// RebootPending: the host reboots for this upgrade, and is done only
	// once the boot check after the reboot has run (Booted).
	RebootPending bool      `json:"reboot_pending,omitempty"`
	Booted        time.Time `json:"booted,omitzero"`
	BootedSeq     uint64    `json:"booted_seq,omitempty"`
}

// ended returns when the host is done with the wave's upgrade, and
// whether it is: at its terminal fact, or, when it reboots for it, at the
// boot check after the reboot (a failed one is a trouble, which ends it
// too).
func (w *Wave) ended(host string) (time.Time, bool) {
	end, ok := w.Ends[host]
	switch {
	case !ok:
		return time.Time{}, false
	case !end.RebootPending:
		return end.Time, true
	case !end.Booted.IsZero():
		return end.Booted, true
	}
	if t, ok := w.Troubles[host]; ok {
		return t.Time, true
	}
	return time.Time{}, false
}

// failedEnd reports whether a terminal kind counts as a failure.
func failedEnd(k events.Kind) bool {
	return k == events.UpgradeFailed || k == events.UpgradeRejected || k == events.UpgradeAborted
}

// trouble reports whether a host fact after a host's upgrade makes it
// count as failed while its wave bakes.
func trouble(k events.Kind) bool {
	return k == events.WorkerStopped || k == events.HealthFailed || k == events.BootFailed
}

// Current returns the wave that has started and not yet succeeded.
func (r *Rollout) Current() *Wave {
	if n := len(r.Waves); n > 0 && !r.Waves[n-1].Succeeded {
		return &r.Waves[n-1]
	}
	return nil
}

// windowCheck is how often a rollout waiting for its window looks again.
const windowCheck = time.Minute

// WaitingForWindow reports whether, at now, the next wave is due but the
// plan's window is closed.
func (r *Rollout) WaitingForWindow(now time.Time) bool {
	if r.End != "" || r.Paused || !r.Started || r.Current() != nil || len(r.Waves) >= len(r.Plan.Waves) || r.Plan.Window == "" {
		return false
	}
	w, err := events.ParseWindow(r.Plan.Window)
	return err == nil && !w.Contains(now.Local())
}

// State says in a word where the rollout is.
func (r *Rollout) State() string {
	switch {
	case r.End != "":
		return r.End.Outcome()
	case r.Paused:
		return "paused"
	case !r.Started:
		return "requested"
	}
	return "running"
}

// Fold applies one stored event to r: r's own events (from
// rollout.requested on) and its hosts' facts. Events at or below r.Seq
// (of r's subjects) are applied already and ignored. It reports whether
// r changed.
func (r *Rollout) Fold(st bus.Stored) bool {
	if st.Err != nil {
		return false
	}
	e := st.Event
	if strings.HasPrefix(st.Subject, "convoy.rollout.") {
		if st.Seq <= r.Seq {
			return false
		}
		r.Seq = st.Seq
		r.foldOwn(e)
		return true
	}
	return r.foldHost(st)
}

func (r *Rollout) foldOwn(e events.Event) {
	var f events.RolloutFact
	_ = e.DecodeData(&f)
	ask := func() *events.RolloutAsk {
		var a events.RolloutAsk
		_ = e.DecodeData(&a)
		return &a
	}
	switch e.Kind() {
	case events.RolloutRequested:
		_ = e.DecodeData(&r.Plan)
		r.Requested = e.Time
	case events.RolloutAbortRequested:
		r.Abort = ask()
	case events.RolloutPauseRequested:
		r.Pause, r.Resume = ask(), nil
	case events.RolloutResumeRequested:
		r.Resume, r.Pause = ask(), nil
	case events.RolloutStarted:
		r.Started = true
	case events.RolloutWaveStarted:
		r.Waves = append(r.Waves, Wave{Number: f.Wave, ID: e.UpgradeID, Hosts: f.Hosts, Started: e.Time, StartSeq: r.Seq,
			Previous: f.Previous, Ends: map[string]HostEnd{}, Troubles: map[string]HostEnd{}})
	case events.RolloutWaveSucceeded:
		if w := r.Current(); w != nil && w.Number == f.Wave {
			w.Succeeded = true
			w.Upgraded = f.Upgraded
			for _, x := range f.Failed {
				if x.Wave == w.Number {
					w.Failed = append(w.Failed, x)
				}
			}
		}
	case events.RolloutPaused:
		r.Paused, r.Pause = true, nil
	case events.RolloutResumed:
		r.Paused, r.Resume = false, nil
	case events.RolloutHalted, events.RolloutSucceeded, events.RolloutAborted:
		r.End, r.Reason, r.Failed, r.Ended = e.Kind(), f.Reason, f.Failed, e.Time
		if e.Kind() == events.RolloutHalted && r.Plan.Rollback() {
			r.Rollback = &Rollback{ID: e.UpgradeID, Hosts: f.Rollback, Started: e.Time, StartSeq: r.Seq,
				Unknown: f.NotRolledBack, Ends: map[string]HostEnd{}}
		}
	case events.RolloutRolledBack:
		r.RolledBack = true
	}
}

func (r *Rollout) foldHost(st bus.Stored) bool {
	e := st.Event
	if b := r.Rollback; b != nil {
		if r.RolledBack || st.Seq <= b.StartSeq || e.UpgradeID != b.ID || !e.Kind().IsTerminal() {
			return false
		}
		if !slices.ContainsFunc(b.Hosts, func(h events.RolloutHostCommit) bool { return h.Host == e.Host() }) {
			return false
		}
		if _, ok := b.Ends[e.Host()]; ok {
			return false
		}
		f, _ := e.Fact()
		b.Ends[e.Host()] = HostEnd{Seq: st.Seq, Kind: e.Kind(), Time: e.Time, Reason: f.Reason}
		return true
	}
	w := r.Current()
	if w == nil || st.Seq <= w.StartSeq || !slices.Contains(w.Hosts, e.Host()) {
		return false
	}
	k := e.Kind()
	f, _ := e.Fact()
	host := e.Host()
	switch {
	case k.IsTerminal() && e.UpgradeID == w.ID:
		if _, ok := w.Ends[host]; ok {
			return false
		}
		w.Ends[host] = HostEnd{Seq: st.Seq, Kind: k, Time: e.Time, Reason: f.Reason, RebootPending: k == events.UpgradeSucceeded && f.RebootPending}
		return true
	case k == events.BootValidated:
		end, ok := w.Ends[host]
		if !ok || !end.RebootPending || !end.Booted.IsZero() || st.Seq < end.Seq {
			return false
		}
		end.Booted, end.BootedSeq = e.Time, st.Seq
		w.Ends[host] = end
		return true
	case trouble(k):
		end, ok := w.Ends[host]
		if !ok || st.Seq < end.Seq {
			return false
		}
		if k == events.WorkerStopped && end.RebootPending && (end.BootedSeq == 0 || st.Seq < end.BootedSeq) {
			return false // the reboot it owes stops the worker
		}
		if _, ok := w.Troubles[host]; ok {
			return false
		}
		w.Troubles[host] = HostEnd{Seq: st.Seq, Kind: k, Time: e.Time, Reason: f.Reason}
		return true
	}
	return false
}

// Step is what Decide says to do: append a fact of Kind (none when
// empty), and, when nothing happens before, look again at Wake.
type Step struct {
	Kind events.Kind
	Fact events.RolloutFact
	// UpgradeID is the wave's upgrade id (wave.started), or the
	// rollback's (halted and rolled-back with on_failure rollback).
	UpgradeID string
	// Wake, if not zero, is when Decide will say something else without
	// a new fact: the end of a bake or a wave's deadline.
	Wake time.Time
}

// failures returns every host that counts as failed so far, by wave,
// then host. A wave past its deadline counts its hosts without a
// terminal fact.
func (r *Rollout) failures(now time.Time) []events.RolloutFailure {
	var out []events.RolloutFailure
	for _, w := range r.Waves {
		if w.Succeeded {
			out = append(out, w.Failed...)
			continue
		}
		late := r.Plan.WaveTimeoutMS > 0 && !now.Before(w.Started.Add(r.Plan.WaveTimeout()))
		for _, h := range w.Hosts {
			end, ok := w.Ends[h]
			switch {
			case ok && failedEnd(end.Kind):
				out = append(out, events.RolloutFailure{Host: h, Wave: w.Number, Reason: strings.TrimSpace(string(end.Kind) + " " + end.Reason)})
			case ok && w.Troubles[h].Kind != "":
				t := w.Troubles[h]
				out = append(out, events.RolloutFailure{Host: h, Wave: w.Number, Reason: strings.TrimSpace(string(t.Kind) + " while baking " + t.Reason)})
			case !ok && late:
				out = append(out, events.RolloutFailure{Host: h, Wave: w.Number, Reason: "no terminal fact within the wave timeout " + r.Plan.WaveTimeout().String()})
			}
		}
	}
	return out
}

// Decide returns the next step of r at now. It is pure: the same facts
// and time give the same step, in any controller.
func Decide(r *Rollout, now time.Time) Step {
	if r.End != "" {
		if r.Rollback != nil && !r.RolledBack {
			return rolledBack(r, now)
		}
		return Step{}
	}
	if len(r.Plan.Waves) == 0 {
		return Step{}
	}
	if r.Abort != nil {
		reason := "aborted"
		if r.Abort.RequestedBy != "" {
			reason += " by " + r.Abort.RequestedBy
		}
		if r.Abort.Reason != "" {
			reason += ": " + r.Abort.Reason
		}
		return Step{Kind: events.RolloutAborted, Fact: events.RolloutFact{Reason: reason, Failed: r.failures(now)}}
	}
	if !r.Started {
		return Step{Kind: events.RolloutStarted}
	}
	failed := r.failures(now)
	if len(failed) > r.Plan.MaxFailures {
		f := events.RolloutFact{Failed: failed, Reason: fmt.Sprintf("%d host(s) failed, more than --max-failures %d: %s", len(failed), r.Plan.MaxFailures, describe(failed))}
		if w := r.Current(); w != nil {
			f.Wave = w.Number
		} else if n := len(r.Waves); n > 0 {
			f.Wave = r.Waves[n-1].Number
		}
		if !r.Plan.Rollback() {
			return Step{Kind: events.RolloutHalted, Fact: f}
		}
		f.Rollback, f.NotRolledBack = r.toRollBack()
		return Step{Kind: events.RolloutHalted, Fact: f, UpgradeID: RollbackID(r.ID)}
	}
	if r.Pause != nil && !r.Paused {
		return Step{Kind: events.RolloutPaused, Fact: events.RolloutFact{Reason: askReason("paused", r.Pause)}}
	}
	if r.Resume != nil && r.Paused {
		return Step{Kind: events.RolloutResumed, Fact: events.RolloutFact{Reason: askReason("resumed", r.Resume)}}
	}
	if w := r.Current(); w != nil {
		var done time.Time // when the wave's last host was done
		for _, h := range w.Hosts {
			end, ok := w.ended(h)
			if !ok {
				done = time.Time{}
				break
			}
			if end.After(done) {
				done = end
			}
		}
		if done.IsZero() {
			if r.Plan.WaveTimeoutMS == 0 {
				return Step{}
			}
			deadline := w.Started.Add(r.Plan.WaveTimeout())
			if now.Before(deadline) {
				return Step{Wake: deadline}
			}
			done = deadline // the missing hosts failed (counted above)
		}
		if bakeEnd := done.Add(r.Plan.Bake()); now.Before(bakeEnd) {
			return Step{Wake: bakeEnd}
		}
		var upgraded []string
		for _, h := range w.Hosts {
			if w.Ends[h].Kind == events.UpgradeSucceeded {
				upgraded = append(upgraded, h)
			}
		}
		return Step{Kind: events.RolloutWaveSucceeded, Fact: events.RolloutFact{Wave: w.Number, Failed: failed, Upgraded: upgraded}}
	}
	if len(r.Waves) == len(r.Plan.Waves) {
		return Step{Kind: events.RolloutSucceeded, Fact: events.RolloutFact{Failed: failed,
			Reason: fmt.Sprintf("%d wave(s), %d host(s) failed", len(r.Waves), len(failed))}}
	}
	if r.Paused {
		return Step{}
	}
	if r.WaitingForWindow(now) {
		return Step{Wake: now.Add(windowCheck)}
	}
	n := len(r.Waves) + 1
	return Step{Kind: events.RolloutWaveStarted, UpgradeID: WaveID(r.ID, n),
		Fact: events.RolloutFact{Wave: n, Hosts: r.Plan.Waves[n-1].Hosts}}
}

// toRollBack returns the hosts the rollout upgraded (their wave's upgrade
// ended upgrade.succeeded), wave by wave, with the commit each ran when
// its wave started, and those whose previous commit is unknown.
func (r *Rollout) toRollBack() (back []events.RolloutHostCommit, unknown []events.RolloutFailure) {
	for _, w := range r.Waves {
		upgraded := w.Upgraded
		if !w.Succeeded {
			upgraded = nil
			for _, h := range w.Hosts {
				if w.Ends[h].Kind == events.UpgradeSucceeded {
					upgraded = append(upgraded, h)
				}
			}
		}
		for _, h := range upgraded {
			prev := w.Previous[h]
			switch {
			case prev == "":
				unknown = append(unknown, events.RolloutFailure{Host: h, Wave: w.Number, Reason: "its commit before the rollout is unknown"})
			case prev == r.Plan.Rev:
				// It ran the rollout's commit already: nothing to undo.
			default:
				back = append(back, events.RolloutHostCommit{Host: h, Commit: prev})
			}
		}
	}
	return back, unknown
}

// rolledBack decides the end of a halted rollout's rollback: wait for
// every host's terminal fact (until the wave timeout after the halt, if
// the plan has one), then say who went back.
func rolledBack(r *Rollout, now time.Time) Step {
	b := r.Rollback
	late := r.Plan.WaveTimeoutMS > 0 && !now.Before(b.Started.Add(r.Plan.WaveTimeout()))
	f := events.RolloutFact{NotRolledBack: slices.Clone(b.Unknown)}
	for _, h := range b.Hosts {
		end, ok := b.Ends[h.Host]
		switch {
		case !ok && !late:
			if r.Plan.WaveTimeoutMS > 0 {
				return Step{Wake: b.Started.Add(r.Plan.WaveTimeout())}
			}
			return Step{}
		case !ok:
			f.NotRolledBack = append(f.NotRolledBack, events.RolloutFailure{Host: h.Host,
				Reason: "no terminal fact within the wave timeout " + r.Plan.WaveTimeout().String()})
		case end.Kind == events.UpgradeSucceeded,
			end.Kind == events.UpgradeSkipped && strings.HasPrefix(end.Reason, events.ReasonAlreadyCurrent):
			f.RolledBack = append(f.RolledBack, h)
		default:
			f.NotRolledBack = append(f.NotRolledBack, events.RolloutFailure{Host: h.Host, Reason: strings.TrimSpace(string(end.Kind) + " " + end.Reason)})
		}
	}
	f.Reason = fmt.Sprintf("%d host(s) back on their previous commit, %d not", len(f.RolledBack), len(f.NotRolledBack))
	if len(f.NotRolledBack) > 0 {
		f.Reason += ": " + describe(f.NotRolledBack)
	}
	return Step{Kind: events.RolloutRolledBack, Fact: f, UpgradeID: b.ID}
}

func askReason(what string, a *events.RolloutAsk) string {
	s := what
	if a.RequestedBy != "" {
		s += " by " + a.RequestedBy
	}
	if a.Reason != "" {
		s += ": " + a.Reason
	}
	return s
}

func describe(fs []events.RolloutFailure) string {
	parts := make([]string, 0, len(fs))
	for _, f := range fs {
		if f.Wave == 0 {
			parts = append(parts, fmt.Sprintf("%s (%s)", f.Host, f.Reason))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s (wave %d: %s)", f.Host, f.Wave, f.Reason))
	}
	return strings.Join(parts, ", ")
}
