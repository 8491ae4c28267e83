package e2e

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers/sandbox"
	"github.com/convoy-fleet/convoy/workers/sandbox/sandboxtest"
)

// A rollout with --on-failure rollback whose second wave fails halts, and
// the host its first wave upgraded goes back to the commit it ran before:
// its checkout, the status view and rollout.rolled-back (stored once) say
// so. ash, the second wave, fails its health check once the test creates
// the marker file; the workers allow a rollout's rollback.
func TestRolloutRollback(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "ash-unhealthy")
	r := newRig(t, rolloutHosts, sandbox.Options{Tags: map[string][]string{"birch": {"canary"}},
		AllowRolloutRollback: true,
		HealthChecks:         []string{`test "$CONVOY_HOST" != ash || ! test -e ` + sh(marker)}})
	for _, h := range rolloutHosts {
		r.startWorker(h)
	}
	for _, h := range rolloutHosts {
		r.waitStatus(h, "worker seen", func(s hostStatus) bool { return s.Worker != "" })
	}
	// Every host deploys c1 first, so that c1 is what they run (and
	// deployed) when the second rollout starts: going back is a downgrade.
	c1 := r.commit(configV1, "v1")
	first := convoy(t, 2*time.Minute, "--nats", r.url, "rollout", "start", "--rev", c1, "--wave", "all", "--wait")
	wantExit(t, first, exitOK)
	for _, h := range rolloutHosts {
		r.statusOf(h, "on c1", func(s hostStatus) bool { return s.Commit == c1 })
	}
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c2 := r.commit(strings.Replace(configV1, "}", " networking.firewall.enable = true; }", 1), "v2")
	res := convoy(t, 2*time.Minute, "--nats", r.url, "rollout", "start", "--rev", c2,
		"--wave", "tag=canary", "--wave", "25%", "--wave", "all", "--on-failure", "rollback", "--wait")
	wantExit(t, res, exitFailed)
	id := strings.Fields(res.stdout)[0]
	evs := r.rolloutEvents(id)
	wantKinds(t, evs, "rollout.requested", "rollout.started",
		"rollout.wave.started", "rollout.wave.succeeded",
		"rollout.wave.started", "rollout.halted", "rollout.rolled-back")
	if f := rolloutData(t, evs[2]); f.Previous["birch"] != c1 {
		t.Fatalf("wave 1 previous commits %v, want birch on %s", f.Previous, c1)
	}
	halt := rolloutData(t, evs[5])
	if len(halt.Failed) != 1 || halt.Failed[0].Host != "ash" {
		t.Fatalf("halted: %+v", halt)
	}
	back := []events.RolloutHostCommit{{Host: "birch", Commit: c1}}
	if !reflect.DeepEqual(halt.Rollback, back) {
		t.Fatalf("halted rolls back %+v, want %+v", halt.Rollback, back)
	}
	rollbackID := evs[5].upgradeID()
	if evs[6].upgradeID() != rollbackID || rollbackID == "" {
		t.Fatalf("rolled-back under %q, halted under %q", evs[6].upgradeID(), rollbackID)
	}
	done := rolloutData(t, evs[6])
	if !reflect.DeepEqual(done.RolledBack, back) || len(done.NotRolledBack) != 0 {
		t.Fatalf("rolled-back: %+v", done)
	}
	// birch went back, asked once, by a request marked as the rollback.
	if head, _ := r.head("birch"); head != c1 {
		t.Fatalf("birch on %s, want its previous %s", head, c1)
	}
	r.statusOf("birch", "back on c1", func(s hostStatus) bool { return s.Commit == c1 && s.LastUpgrade == rollbackID })
	var reqs int
	for _, l := range r.history("birch", "--type", "upgrade.requested") {
		if l.upgradeID() != rollbackID {
			continue
		}
		reqs++
		if !strings.Contains(string(l.Event.Data), `"rollout_rollback":"`+id+`"`) {
			t.Fatalf("rollback request not marked: %s", l.Event.Data)
		}
	}
	if reqs != 1 {
		t.Fatalf("birch's rollback requested %d times", reqs)
	}
	if fs := r.facts("birch", rollbackID); fs[len(fs)-1].kind() != "upgrade.succeeded" {
		t.Fatalf("birch's rollback ended %s", fs[len(fs)-1].kind())
	}
	// The last wave never started: its hosts stay on c1, asked nothing
	// by this rollout.
	for _, h := range []string{"cedar", "elm", "oak"} {
		if head, _ := r.head(h); head != c1 {
			t.Fatalf("%s on %s, want %s", h, head, c1)
		}
	}
	st := r.convoy("rollout", "status", id, "--wait")
	wantExit(t, st, exitFailed)
	if !strings.Contains(st.stdout, "rolled back") {
		t.Fatalf("status: %s", st)
	}
}

// statusOf polls `status HOST --json` until cond holds. Unlike waitStatus
// it does not wait for the view to report no lag: the projector does not
// read rollout facts, so after the rollout's last fact the view reports
// itself behind the stream until a host fact follows.
func (r *rig) statusOf(host, what string, cond func(hostStatus) bool) {
	r.t.Helper()
	eventually(r.t, 30*time.Second, "status of "+host+": "+what, func() bool {
		sts, _, _ := r.status(host)
		return len(sts) == 1 && cond(sts[0])
	})
}

// The same on real Nix: the canary the rollout upgraded runs, after the
// rollback, the very system (store path) it ran before the rollout.
func TestRolloutRollbackOnNix(t *testing.T) {
	needNix(t)
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "ash-unhealthy")
	hosts := []string{"birch", "ash"}
	r := newRig(t, hosts, sandbox.Options{Nix: true, Tags: map[string][]string{"birch": {"canary"}},
		AllowRolloutRollback: true,
		HealthChecks:         []string{`test "$CONVOY_HOST" != ash || ! test -e ` + sh(marker)}})
	for _, h := range hosts {
		r.startWorker(h)
	}
	c1 := r.commit(nixV1, "v1")
	r.upgrade(exitOK, "--all", "--wait", "--timeout", "90s")
	before := sandboxtest.RunningSystem(t, r.fleet.Hosts["birch"])
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c2 := r.commit(nixV2, "v2")
	res := convoy(t, 3*time.Minute, "--nats", r.url, "rollout", "start", "--rev", c2,
		"--wave", "tag=canary", "--wave", "all", "--on-failure", "rollback", "--wait")
	wantExit(t, res, exitFailed)
	id := strings.Fields(res.stdout)[0]
	evs := r.rolloutEvents(id)
	wantKinds(t, evs, "rollout.requested", "rollout.started",
		"rollout.wave.started", "rollout.wave.succeeded",
		"rollout.wave.started", "rollout.halted", "rollout.rolled-back")
	if head, _ := r.head("birch"); head != c1 {
		t.Fatalf("birch's checkout is on %s, want %s", head, c1)
	}
	if now := sandboxtest.RunningSystem(t, r.fleet.Hosts["birch"]); now != before {
		t.Fatalf("birch runs %s after the rollback, want the system it ran before the rollout, %s", now, before)
	}
}
