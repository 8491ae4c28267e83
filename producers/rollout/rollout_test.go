package rollout

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

func TestParseWave(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Selector
		err  string
	}{
		{"tag=canary", Selector{Tag: "canary"}, ""},
		{"25%", Selector{Percent: 25}, ""},
		{"100%", Selector{Percent: 100}, ""},
		{"all", Selector{All: true}, ""},
		{"0%", Selector{}, "1% to 100%"},
		{"101%", Selector{}, "1% to 100%"},
		{"x%", Selector{}, "1% to 100%"},
		{"tag=", Selector{}, "name the tag"},
		{"canary", Selector{}, "want tag=TAG"},
	} {
		got, err := ParseWave(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseWave(%q) = %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseWave(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("ParseWave(%q).String() = %q", tc.in, got.String())
		}
	}
}

func sel(t *testing.T, vs ...string) []Selector {
	var out []Selector
	for _, v := range vs {
		s, err := ParseWave(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestPlan(t *testing.T) {
	fleet := []Host{{Name: "e"}, {Name: "b", Tags: []string{"canary"}}, {Name: "a"}, {Name: "d"}, {Name: "c", Tags: []string{"web"}}}
	for _, tc := range []struct {
		name  string
		waves []string
		want  [][]string
		err   string
	}{
		{"canary, half, all", []string{"tag=canary", "50%", "all"}, [][]string{{"b"}, {"a", "c"}, {"d", "e"}}, ""},
		{"at least one", []string{"1%", "all"}, [][]string{{"a"}, {"b", "c", "d", "e"}}, ""},
		{"a tag nobody has", []string{"tag=db", "all"}, nil, `no host has the tag "db"`},
		{"a wave after all", []string{"all", "10%"}, nil, "wave 2 (10%) selects no host"},
		{"a tag taken by an earlier wave", []string{"all", "tag=web"}, nil, "wave 2 (tag=web) selects no host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waves, err := Plan(sel(t, tc.waves...), fleet)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got [][]string
			for _, w := range waves {
				got = append(got, w.Hosts)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("waves = %v, want %v", got, tc.want)
			}
		})
	}
	if _, err := Plan(sel(t, "all"), nil); err == nil {
		t.Fatal("a plan over no hosts")
	}
}

func TestRollbackID(t *testing.T) {
	id := events.NewID()
	if RollbackID(id) != RollbackID(id) || RollbackID(id) == WaveID(id, 1) || RollbackID(id) == RollbackID(events.NewID()) {
		t.Fatal("RollbackID not deterministic and distinct")
	}
	if err := events.ValidateID(RollbackID(id)); err != nil {
		t.Fatal(err)
	}
}

func TestWaveID(t *testing.T) {
	id := events.NewID()
	a, b := WaveID(id, 1), WaveID(id, 2)
	if a != WaveID(id, 1) || a == b {
		t.Fatalf("WaveID not deterministic and distinct: %s %s", a, b)
	}
	if err := events.ValidateID(a); err != nil {
		t.Fatal(err)
	}
}

// history builds stored events for Fold: rollout events of id and host
// facts, with increasing sequences.
type history struct {
	id  string
	seq uint64
	t0  time.Time
	evs []bus.Stored
}

func (h *history) add(subject string, e events.Event, at time.Duration) {
	h.seq++
	e.Time = h.t0.Add(at)
	h.evs = append(h.evs, bus.Stored{Seq: h.seq, Subject: subject, Event: e})
}

func (h *history) rollout(k events.Kind, data any, at time.Duration) {
	e, _ := events.New(k, h.id, "test", data)
	switch k {
	case events.RolloutWaveStarted:
		e.UpgradeID = WaveID(h.id, data.(events.RolloutFact).Wave)
	case events.RolloutHalted, events.RolloutRolledBack:
		e.UpgradeID = RollbackID(h.id)
	}
	subj, _ := events.RolloutSubject(h.id, k)
	h.add(subj, e, at)
}

func (h *history) host(host string, k events.Kind, wave int, at time.Duration) {
	e, _ := events.New(k, host, "test", events.Fact{Reason: "why"})
	if wave > 0 {
		e.UpgradeID = WaveID(h.id, wave)
	}
	subj, _ := events.HostSubject(host, k)
	h.add(subj, e, at)
}

// rebooting is a's upgrade.succeeded of wave 1 that owes a reboot.
func (h *history) rebooting(host string, wave int, at time.Duration) {
	e, _ := events.New(events.UpgradeSucceeded, host, "test", events.Fact{RebootPending: true})
	e.UpgradeID = WaveID(h.id, wave)
	subj, _ := events.HostSubject(host, events.UpgradeSucceeded)
	h.add(subj, e, at)
}

// rollbackFact is a host's terminal fact of the rollback of h's rollout.
func (h *history) rollbackFact(host string, k events.Kind, at time.Duration) {
	e, _ := events.New(k, host, "test", events.Fact{Reason: "why"})
	e.UpgradeID = RollbackID(h.id)
	subj, _ := events.HostSubject(host, k)
	h.add(subj, e, at)
}

// TestDecideRollback: the steps of --on-failure rollback, from the halt
// to rollout.rolled-back.
func TestDecideRollback(t *testing.T) {
	plan := events.RolloutPlan{Rev: "new", OnFailure: events.OnFailureRollback, Waves: []events.RolloutWave{
		{Spec: "tag=canary", Hosts: []string{"a"}}, {Spec: "all", Hosts: []string{"b", "c"}},
	}}
	// wave2 runs wave 1 on a (from p1), then wave 2 on b (from p2, or
	// from an unknown commit) and c, with a's wave 1 host fact left out
	// when restarted (a controller that read wave 1's end from
	// wave.succeeded only).
	wave2 := func(h *history, p events.RolloutPlan, bPrev string, restarted bool) {
		h.rollout(events.RolloutRequested, p, 0)
		h.rollout(events.RolloutStarted, nil, 0)
		h.rollout(events.RolloutWaveStarted, events.RolloutFact{Wave: 1, Hosts: []string{"a"}, Previous: map[string]string{"a": "p1"}}, 0)
		if !restarted {
			h.host("a", events.UpgradeSucceeded, 1, time.Second)
		}
		h.rollout(events.RolloutWaveSucceeded, events.RolloutFact{Wave: 1, Upgraded: []string{"a"}}, 2*time.Second)
		prev := map[string]string{"c": "p3"}
		if bPrev != "" {
			prev["b"] = bPrev
		}
		h.rollout(events.RolloutWaveStarted, events.RolloutFact{Wave: 2, Hosts: []string{"b", "c"}, Previous: prev}, 2*time.Second)
		h.host("b", events.UpgradeSucceeded, 2, 3*time.Second)
		h.host("c", events.UpgradeFailed, 2, 4*time.Second)
	}
	halted := func(h *history, p events.RolloutPlan) {
		wave2(h, p, "p2", false)
		h.rollout(events.RolloutHalted, events.RolloutFact{Wave: 2, Reason: "c failed",
			Rollback: []events.RolloutHostCommit{{Host: "a", Commit: "p1"}, {Host: "b", Commit: "p2"}}}, 4*time.Second)
	}
	back := []events.RolloutHostCommit{{Host: "a", Commit: "p1"}, {Host: "b", Commit: "p2"}}
	for _, tc := range []struct {
		name     string
		plan     func(*events.RolloutPlan)
		hist     func(*history, events.RolloutPlan)
		at       time.Duration
		want     events.Kind
		rollback []events.RolloutHostCommit // halted's, or rolled-back's went back
		not      []string                   // hosts that do not go back
		why      string
		wake     time.Duration
	}{
		{"halt: the upgraded hosts go back", nil, func(h *history, p events.RolloutPlan) { wave2(h, p, "p2", false) },
			5 * time.Second, events.RolloutHalted, back, nil, "c (wave 2: upgrade.failed why)", 0},
		{"halt after a restart: wave 1's upgraded from wave.succeeded", nil, func(h *history, p events.RolloutPlan) { wave2(h, p, "p2", true) },
			5 * time.Second, events.RolloutHalted, back, nil, "", 0},
		{"halt: a host whose previous commit is unknown stays", nil, func(h *history, p events.RolloutPlan) { wave2(h, p, "", false) },
			5 * time.Second, events.RolloutHalted, back[:1], []string{"b"}, "", 0},
		{"halt: a host that ran the rollout's commit already stays", nil, func(h *history, p events.RolloutPlan) { wave2(h, p, "new", false) },
			5 * time.Second, events.RolloutHalted, back[:1], nil, "", 0},
		{"halt with on-failure halt: no rollback", func(p *events.RolloutPlan) { p.OnFailure = "" }, func(h *history, p events.RolloutPlan) { wave2(h, p, "p2", false) },
			5 * time.Second, events.RolloutHalted, nil, nil, "", 0},
		{"halted: wait for the rollback's ends", nil, func(h *history, p events.RolloutPlan) {
			halted(h, p)
			h.rollbackFact("a", events.UpgradeSucceeded, 5*time.Second)
			h.host("b", events.UpgradeSucceeded, 2, 5*time.Second) // not the rollback's
		}, time.Hour, "", nil, nil, "", 0},
		{"rollback ended: rolled-back", nil, func(h *history, p events.RolloutPlan) {
			halted(h, p)
			h.rollbackFact("a", events.UpgradeSucceeded, 5*time.Second)
			h.rollbackFact("b", events.UpgradeRejected, 6*time.Second)
		}, 6 * time.Second, events.RolloutRolledBack, back[:1], []string{"b"}, "1 host(s) back on their previous commit, 1 not: b (upgrade.rejected why)", 0},
		{"rollback with a wave timeout: wake at it", func(p *events.RolloutPlan) { p.WaveTimeoutMS = 60_000 }, func(h *history, p events.RolloutPlan) {
			halted(h, p)
			h.rollbackFact("a", events.UpgradeSucceeded, 5*time.Second)
		}, 10 * time.Second, "", nil, nil, "", 64 * time.Second},
		{"rollback past the wave timeout: the missing host did not go back", func(p *events.RolloutPlan) { p.WaveTimeoutMS = 60_000 }, func(h *history, p events.RolloutPlan) {
			halted(h, p)
			h.rollbackFact("a", events.UpgradeSucceeded, 5*time.Second)
		}, 64 * time.Second, events.RolloutRolledBack, back[:1], []string{"b"}, "no terminal fact within the wave timeout", 0},
		{"halted with nobody to send back: rolled-back at once", nil, func(h *history, p events.RolloutPlan) {
			h.rollout(events.RolloutRequested, p, 0)
			h.rollout(events.RolloutStarted, nil, 0)
			h.rollout(events.RolloutWaveStarted, events.RolloutFact{Wave: 1, Hosts: []string{"a"}}, 0)
			h.host("a", events.UpgradeFailed, 1, time.Second)
			h.rollout(events.RolloutHalted, events.RolloutFact{Wave: 1}, time.Second)
		}, time.Second, events.RolloutRolledBack, nil, nil, "0 host(s) back", 0},
		{"rolled back: nothing", nil, func(h *history, p events.RolloutPlan) {
			halted(h, p)
			h.rollout(events.RolloutRolledBack, events.RolloutFact{}, 5*time.Second)
		}, time.Hour, "", nil, nil, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := plan
			if tc.plan != nil {
				tc.plan(&p)
			}
			h := &history{id: events.NewID(), t0: tableT0}
			tc.hist(h, p)
			r := h.replayed(t)
			step := Decide(r, h.t0.Add(tc.at))
			if step.Kind != tc.want {
				t.Fatalf("step = %s (%+v), want %s", step.Kind, step, tc.want)
			}
			if !strings.Contains(step.Fact.Reason, tc.why) {
				t.Fatalf("reason %q, want %q in it", step.Fact.Reason, tc.why)
			}
			if tc.wake != 0 && !step.Wake.Equal(h.t0.Add(tc.wake)) {
				t.Fatalf("wake = %s, want t0+%s", step.Wake, tc.wake)
			}
			got := step.Fact.Rollback
			if step.Kind == events.RolloutRolledBack {
				got = step.Fact.RolledBack
			}
			if !reflect.DeepEqual(got, tc.rollback) {
				t.Fatalf("rollback %v, want %v", got, tc.rollback)
			}
			var not []string
			for _, f := range step.Fact.NotRolledBack {
				not = append(not, f.Host)
			}
			if !reflect.DeepEqual(not, tc.not) {
				t.Fatalf("not rolled back %v, want %v", step.Fact.NotRolledBack, tc.not)
			}
			rollback := p.Rollback() && (step.Kind == events.RolloutHalted || step.Kind == events.RolloutRolledBack)
			if rollback != (step.UpgradeID == RollbackID(h.id)) {
				t.Fatalf("upgrade id %q, want RollbackID %v", step.UpgradeID, rollback)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	plan := events.RolloutPlan{Rev: "abc", BakeMS: 60_000, MaxFailures: 0, Waves: []events.RolloutWave{
		{Spec: "tag=canary", Hosts: []string{"a"}}, {Spec: "all", Hosts: []string{"b", "c"}},
	}}
	started := func(h *history) {
		h.rollout(events.RolloutRequested, plan, 0)
		h.rollout(events.RolloutStarted, nil, 0)
	}
	wave1 := func(h *history) {
		started(h)
		h.rollout(events.RolloutWaveStarted, events.RolloutFact{Wave: 1, Hosts: []string{"a"}}, 0)
	}
	wave1Done := func(h *history) {
		wave1(h)
		h.host("a", events.UpgradeSucceeded, 1, 10*time.Second)
	}
	wave2 := func(h *history) {
		wave1Done(h)
		h.rollout(events.RolloutWaveSucceeded, events.RolloutFact{Wave: 1}, 70*time.Second)
		h.rollout(events.RolloutWaveStarted, events.RolloutFact{Wave: 2, Hosts: []string{"b", "c"}}, 70*time.Second)
	}
	for _, tc := range []struct {
		name string
		plan func(*events.RolloutPlan)
		hist func(*history)
		at   time.Duration
		want events.Kind
		wave int
		wake time.Duration // 0: no wake
		why  string        // in the reason
	}{
		{"requested: start", nil, func(h *history) { h.rollout(events.RolloutRequested, plan, 0) }, 0, events.RolloutStarted, 0, 0, ""},
		{"started: first wave", nil, started, 0, events.RolloutWaveStarted, 1, 0, ""},
		{"wave running: wait for facts", nil, wave1, time.Hour, "", 0, 0, ""},
		{"other upgrade's end does not count", nil, func(h *history) {
			wave1(h)
			h.host("a", events.UpgradeSucceeded, 0, time.Second)
		}, time.Hour, "", 0, 0, ""},
		{"wave ended: bake", nil, wave1Done, 30 * time.Second, "", 0, 70 * time.Second, ""},
		{"baked: wave succeeded", nil, wave1Done, 70 * time.Second, events.RolloutWaveSucceeded, 1, 0, ""},
		{"no bake: succeeded at once", func(p *events.RolloutPlan) { p.BakeMS = 0 }, wave1Done, 10 * time.Second, events.RolloutWaveSucceeded, 1, 0, ""},
		{"canary failed: halt", nil, func(h *history) {
			wave1(h)
			h.host("a", events.UpgradeFailed, 1, time.Second)
		}, time.Second, events.RolloutHalted, 1, 0, "a (wave 1: upgrade.failed why)"},
		{"canary rejected: halt", nil, func(h *history) {
			wave1(h)
			h.host("a", events.UpgradeRejected, 1, time.Second)
		}, time.Second, events.RolloutHalted, 1, 0, "upgrade.rejected"},
		{"skipped is no failure", nil, func(h *history) {
			wave1(h)
			h.host("a", events.UpgradeSkipped, 1, time.Second)
		}, 2 * time.Minute, events.RolloutWaveSucceeded, 1, 0, ""},
		{"one failure allowed", func(p *events.RolloutPlan) { p.MaxFailures = 1 }, func(h *history) {
			wave1(h)
			h.host("a", events.UpgradeFailed, 1, time.Second)
		}, 2 * time.Minute, events.RolloutWaveSucceeded, 1, 0, ""},
		{"worker stopped while baking: halt", nil, func(h *history) {
			wave1Done(h)
			h.host("a", events.WorkerStopped, 0, 20*time.Second)
		}, 30 * time.Second, events.RolloutHalted, 1, 0, "worker.stopped while baking"},
		{"worker stopped before its upgrade ended: not a bake failure", nil, func(h *history) {
			wave1(h)
			h.host("a", events.WorkerStopped, 0, time.Second)
			h.host("a", events.UpgradeSucceeded, 1, 10*time.Second)
		}, 70 * time.Second, events.RolloutWaveSucceeded, 1, 0, ""},
		{"second wave waits for both", nil, func(h *history) {
			wave2(h)
			h.host("b", events.UpgradeSucceeded, 2, 80*time.Second)
		}, time.Hour, "", 0, 0, ""},
		{"last wave baked: rollout succeeded", nil, func(h *history) {
			wave2(h)
			h.host("b", events.UpgradeSucceeded, 2, 80*time.Second)
			h.host("c", events.UpgradeSucceeded, 2, 90*time.Second)
			h.rollout(events.RolloutWaveSucceeded, events.RolloutFact{Wave: 2}, 150*time.Second)
		}, 150 * time.Second, events.RolloutSucceeded, 0, 0, "2 wave(s), 0 host(s) failed"},
		{"failures of a finished wave still count", func(p *events.RolloutPlan) { p.MaxFailures = 1 }, func(h *history) {
			wave1(h)
			h.host("a", events.UpgradeFailed, 1, time.Second)
			h.rollout(events.RolloutWaveSucceeded, events.RolloutFact{Wave: 1, Failed: []events.RolloutFailure{{Host: "a", Wave: 1, Reason: "upgrade.failed"}}}, 70*time.Second)
			h.rollout(events.RolloutWaveStarted, events.RolloutFact{Wave: 2, Hosts: []string{"b", "c"}}, 70*time.Second)
			h.host("b", events.UpgradeFailed, 2, 80*time.Second)
		}, 80 * time.Second, events.RolloutHalted, 2, 0, "2 host(s) failed"},
		{"wave timeout: missing hosts fail", func(p *events.RolloutPlan) { p.WaveTimeoutMS = 300_000 }, wave1, 5 * time.Minute, events.RolloutHalted, 1, 0, "within the wave timeout"},
		{"before the wave timeout: wake at it", func(p *events.RolloutPlan) { p.WaveTimeoutMS = 300_000 }, wave1, time.Minute, "", 0, 5 * time.Minute, ""},
		{"abort asked: aborted", nil, func(h *history) {
			wave1(h)
			h.rollout(events.RolloutAbortRequested, events.RolloutAsk{RequestedBy: "alice", Reason: "oops"}, time.Second)
		}, time.Second, events.RolloutAborted, 0, 0, "aborted by alice: oops"},
		{"pause asked: paused", nil, func(h *history) {
			wave1(h)
			h.rollout(events.RolloutPauseRequested, events.RolloutAsk{}, time.Second)
		}, time.Second, events.RolloutPaused, 0, 0, ""},
		{"paused: no next wave", nil, func(h *history) {
			wave1Done(h)
			h.rollout(events.RolloutPauseRequested, events.RolloutAsk{}, time.Second)
			h.rollout(events.RolloutPaused, events.RolloutFact{}, time.Second)
			h.rollout(events.RolloutWaveSucceeded, events.RolloutFact{Wave: 1}, 70*time.Second)
		}, time.Hour, "", 0, 0, ""},
		{"resume asked: resumed", nil, func(h *history) {
			started(h)
			h.rollout(events.RolloutPauseRequested, events.RolloutAsk{}, time.Second)
			h.rollout(events.RolloutPaused, events.RolloutFact{}, time.Second)
			h.rollout(events.RolloutResumeRequested, events.RolloutAsk{}, 2*time.Second)
		}, time.Hour, events.RolloutResumed, 0, 0, ""},
		{"a host that reboots: wait for its boot check", nil, func(h *history) {
			wave1(h)
			h.rebooting("a", 1, 10*time.Second)
			h.host("a", events.WorkerStopped, 0, 20*time.Second) // the reboot stops the worker
		}, time.Hour, "", 0, 0, ""},
		{"rebooted and validated: bake from the boot", nil, func(h *history) {
			wave1(h)
			h.rebooting("a", 1, 10*time.Second)
			h.host("a", events.WorkerStopped, 0, 20*time.Second)
			h.host("a", events.BootValidated, 0, 40*time.Second)
		}, 50 * time.Second, "", 0, 100 * time.Second, ""},
		{"rebooted and validated, baked: wave succeeded", nil, func(h *history) {
			wave1(h)
			h.rebooting("a", 1, 10*time.Second)
			h.host("a", events.BootValidated, 0, 40*time.Second)
		}, 100 * time.Second, events.RolloutWaveSucceeded, 1, 0, ""},
		{"the boot after the reboot failed: halt", nil, func(h *history) {
			wave1(h)
			h.rebooting("a", 1, 10*time.Second)
			h.host("a", events.BootFailed, 0, 40*time.Second)
		}, 41 * time.Second, events.RolloutHalted, 1, 0, "boot.failed"},
		{"window closed: no wave, look again", func(p *events.RolloutPlan) { p.Window = windowAround(2, 3) }, started, 0, "", 0, time.Minute, ""},
		{"window open: first wave", func(p *events.RolloutPlan) { p.Window = windowAround(-1, 1) }, started, 0, events.RolloutWaveStarted, 1, 0, ""},
		{"window closed: a running wave goes on", func(p *events.RolloutPlan) { p.Window = windowAround(2, 3); p.BakeMS = 0 }, wave1Done, 10 * time.Second, events.RolloutWaveSucceeded, 1, 0, ""},
		{"window closed: a halt is not delayed", func(p *events.RolloutPlan) { p.Window = windowAround(2, 3) }, func(h *history) {
			wave1(h)
			h.host("a", events.UpgradeFailed, 1, time.Second)
		}, time.Second, events.RolloutHalted, 1, 0, ""},
		{"ended: nothing", nil, func(h *history) {
			started(h)
			h.rollout(events.RolloutHalted, events.RolloutFact{Reason: "x"}, 0)
			h.rollout(events.RolloutAbortRequested, events.RolloutAsk{}, 0)
		}, time.Hour, "", 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := plan
			if tc.plan != nil {
				tc.plan(&p)
			}
			h := &history{id: events.NewID(), t0: tableT0}
			saved := plan
			plan = p // the closures request this rollout's plan
			tc.hist(h)
			plan = saved
			r := h.replayed(t)
			step := Decide(r, h.t0.Add(tc.at))
			if step.Kind != tc.want || step.Fact.Wave != tc.wave {
				t.Fatalf("step = %s wave %d (%+v), want %s wave %d", step.Kind, step.Fact.Wave, step, tc.want, tc.wave)
			}
			if tc.wake != 0 && !step.Wake.Equal(h.t0.Add(tc.wake)) {
				t.Fatalf("wake = %s, want t0+%s", step.Wake, tc.wake)
			}
			if !strings.Contains(step.Fact.Reason, tc.why) {
				t.Fatalf("reason %q, want %q in it", step.Fact.Reason, tc.why)
			}
			if step.Kind == events.RolloutWaveStarted && step.UpgradeID != WaveID(h.id, tc.wave) {
				t.Fatalf("wave id %s, want WaveID", step.UpgradeID)
			}
		})
	}
}

// windowAround returns a daily window from `from` to `to` hours after the
// table's t0 (2026-12-01 04:00 UTC), in local time as the controller
// reads it.
func windowAround(from, to int) string {
	t0 := tableT0.Local()
	return t0.Add(time.Duration(from)*time.Hour).Format("15:04") + "-" + t0.Add(time.Duration(to)*time.Hour).Format("15:04")
}

// tableT0 is when the Decide tables' histories start.
var tableT0 = time.Date(2026, 12, 1, 4, 0, 0, 0, time.UTC)

// replayed folds h into a Rollout, then folds it again to show that a
// replay after a restart changes nothing.
func (h *history) replayed(t *testing.T) *Rollout {
	t.Helper()
	r := &Rollout{ID: h.id}
	for _, st := range h.evs {
		r.Fold(st)
	}
	for _, st := range h.evs {
		if r.Fold(st) {
			t.Fatalf("seq %d folded twice", st.Seq)
		}
	}
	return r
}
