package dashboard

import (
	"fmt"
	"html/template"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers/rollout"
	"github.com/convoy-fleet/convoy/projections"
)

// funcs are the templates' helpers. Each returns plain strings, which
// html/template escapes: none returns template.HTML.
var funcs = template.FuncMap{
	"short": short,
	// sid shortens a ULID to its random tail: its head is a timestamp
	// that ids made close together share.
	"sid": func(id string) string {
		if len(id) > 8 {
			return "…" + id[len(id)-8:]
		}
		return id
	},
	"ago": ago,
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"ms":      duration,
	"outcome": func(k string) string { return events.Kind(k).Outcome() },
	"base": func(p string) string {
		if i := strings.LastIndexByte(p, '/'); i >= 0 {
			return p[i+1:]
		}
		return p
	},
}

// short is a commit's first 8 characters.
func short(c string) string {
	if len(c) > 8 {
		return c[:8]
	}
	return c
}

// ago says how long before now t was, coarsely.
func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

// duration formats a stage's milliseconds.
func duration(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case ms <= 0:
		return ""
	case d < time.Second:
		return fmt.Sprintf("%dms", ms)
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// row is one host's line of the fleet table.
type row struct {
	projections.Status
	// Result is the outcome of the last upgrade ("succeeded", "failed").
	Result string
}

func newRow(s projections.Status) row {
	return row{Status: s, Result: events.Kind(s.LastResult).Outcome()}
}

// factView is one fact as a host or upgrade page lists it.
type factView struct {
	Seq      uint64
	Kind     string
	Stage    string
	Outcome  string
	Time     time.Time
	Duration int64
	Reason   string
	Output   string
	Log      string
	ExitCode *int
	Commit   string
	Gen      int
	Result   string
}

func newFactView(st bus.Stored) factView {
	e := st.Event
	k := e.Kind()
	v := factView{Seq: st.Seq, Kind: string(k), Stage: k.Stage(), Outcome: k.Outcome(), Time: e.Time}
	if k.IsRequest() {
		return v
	}
	if f, err := e.Fact(); err == nil {
		v.Duration, v.Reason, v.ExitCode, v.Commit, v.Gen, v.Result, v.Log = f.DurationMS, f.Reason, f.ExitCode, f.Commit, f.Generation, f.Result, f.Log
		if v.Failed() {
			v.Output = f.Output // the tail of what failed
		}
	}
	return v
}

// Failed reports whether the fact is a stage's failure.
func (v factView) Failed() bool {
	return v.Outcome == "failed" || v.Outcome == "rejected" || v.Outcome == "aborted"
}

// upgradeView is one host's upgrade: its stages in order and its end.
type upgradeView struct {
	Host      string
	ID        string
	Requested time.Time
	Started   time.Time
	Stages    []factView
	// End is the terminal fact, when there is one.
	End *factView
	// From the upgrade index, when known.
	Commit string
	Reason string
}

// Outcome is how the upgrade ended ("succeeded", "failed"), or "running"
// or "queued".
func (u *upgradeView) Outcome() string {
	switch {
	case u.End != nil:
		return u.End.Outcome
	case !u.Started.IsZero():
		return "running"
	}
	return "queued"
}

// Duration is from upgrade.started to the terminal fact.
func (u *upgradeView) Duration() int64 {
	if u.End == nil || u.Started.IsZero() {
		return 0
	}
	return u.End.Time.Sub(u.Started).Milliseconds()
}

// FailedStage is the stage fact that failed, with its output tail.
func (u *upgradeView) FailedStage() *factView {
	for i := len(u.Stages) - 1; i >= 0; i-- {
		if u.Stages[i].Failed() && u.Stages[i].Output != "" {
			return &u.Stages[i]
		}
	}
	return nil
}

func (u *upgradeView) add(st bus.Stored) {
	v := newFactView(st)
	k := events.Kind(v.Kind)
	switch {
	case k == events.UpgradeRequested:
		u.Requested = v.Time
	case k == events.UpgradeStarted:
		u.Started = v.Time
	case k.IsTerminal():
		u.End = &v
		if v.Commit != "" {
			u.Commit = v.Commit
		}
		u.Reason = v.Reason
	case !k.IsRequest():
		u.Stages = append(u.Stages, v)
	}
}

// apply takes what the upgrade index knows and the facts did not say.
func (u *upgradeView) apply(r upgradeindex.Record) {
	if u.Commit == "" {
		u.Commit = r.Commit
	}
	if u.Reason == "" {
		u.Reason = r.Reason
	}
	if u.Requested.IsZero() {
		u.Requested = r.Requested
	}
}

// folder groups stored events into upgrades, in the order they began.
type folder struct {
	byKey map[string]*upgradeView
	order []*upgradeView
}

func newFolder() *folder { return &folder{byKey: map[string]*upgradeView{}} }

func (f *folder) get(host, id string) *upgradeView {
	k := host + "/" + id
	u := f.byKey[k]
	if u == nil {
		u = &upgradeView{Host: host, ID: id}
		f.byKey[k] = u
		f.order = append(f.order, u)
	}
	return u
}

// add folds st into its upgrade; events of no upgrade, and messages that
// do not decode, are passed over.
func (f *folder) add(st bus.Stored) {
	if st.Err != nil || st.Event.UpgradeID == "" {
		return
	}
	f.get(st.Event.Host(), st.Event.UpgradeID).add(st)
}

func (f *folder) list() []*upgradeView { return f.order }

type hostData struct {
	Row      row
	Status   projections.Status
	Upgrades []*upgradeView
	More     int
	Other    []factView
}

// counts tallies the hosts of an upgrade or wave by outcome.
type counts struct{ Total, Succeeded, Failed, Running, Waiting int }

func (c *counts) add(outcome string) {
	c.Total++
	switch outcome {
	case "succeeded", "skipped":
		c.Succeeded++
	case "failed", "rejected", "aborted":
		c.Failed++
	case "running":
		c.Running++
	default:
		c.Waiting++
	}
}

// Done is how many hosts have ended.
func (c counts) Done() int { return c.Succeeded + c.Failed }

type upgradeData struct {
	ID    string
	Hosts []*upgradeView
	Count counts
}

// rolloutSummary is a rollout's line in the fleet page's list.
type rolloutSummary struct {
	ID        string
	Rev       string
	State     string
	Waves     int
	Started   int
	Requested time.Time
	Reason    string
}

func newSummary(r *rollout.Rollout) rolloutSummary {
	return rolloutSummary{ID: r.ID, Rev: r.Plan.Rev, State: r.State(), Waves: len(r.Plan.Waves), Started: len(r.Waves), Requested: r.Requested, Reason: r.Reason}
}

// summaryLimit is how many ended rollouts the fleet page lists, after
// every rollout still going.
const summaryLimit = 5

// summarize lists the rollouts still going and the newest that ended,
// newest first.
func summarize(rs []*rollout.Rollout) []rolloutSummary {
	var out []rolloutSummary
	ended := 0
	for i := len(rs) - 1; i >= 0; i-- {
		r := rs[i]
		if !r.Pending() {
			if ended == summaryLimit {
				continue
			}
			ended++
		}
		out = append(out, newSummary(r))
	}
	return out
}

type rolloutData struct {
	Summary  rolloutSummary
	Rollout  *rollout.Rollout
	Waves    []waveView
	Rollback *waveView
}

// waveView is one wave of a rollout, or its rollback.
type waveView struct {
	Number    int
	Spec      string
	UpgradeID string
	Started   time.Time
	Succeeded bool
	Hosts     []string
	Rows      []waveHost
	Count     counts
}

type waveHost struct {
	Host    string
	Outcome string
	Reason  string
	Commit  string
}

// fill sets the wave's hosts' outcomes from their upgrade records (nil:
// the wave has not started).
func (w *waveView) fill(recs map[string]upgradeindex.Record) {
	for _, h := range w.Hosts {
		wh := waveHost{Host: h, Outcome: "waiting"}
		if r, ok := recs[h]; ok {
			wh.Reason, wh.Commit = r.Reason, r.Commit
			if r.Ended() {
				wh.Outcome = events.Kind(r.Terminal).Outcome()
			} else {
				wh.Outcome = "running"
			}
		}
		w.Rows = append(w.Rows, wh)
		w.Count.add(wh.Outcome)
	}
}

// State says in a word where the wave is.
func (w waveView) State() string {
	switch {
	case w.Succeeded:
		return "done"
	case w.UpgradeID == "":
		return "pending"
	}
	return "running"
}
