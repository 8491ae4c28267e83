package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

var rolloutHosts = []string{"ash", "birch", "cedar", "elm", "oak"}

// newRolloutRig starts five workers; birch is the canary.
func newRolloutRig(t *testing.T) *rig {
	r := newRig(t, rolloutHosts, sandbox.Options{Tags: map[string][]string{"birch": {"canary"}}})
	for _, h := range rolloutHosts {
		r.startWorker(h)
	}
	for _, h := range rolloutHosts {
		r.waitStatus(h, "worker seen", func(s hostStatus) bool { return s.Worker != "" })
	}
	return r
}

// rolloutEvents returns the rollout's events from history, in order.
func (r *rig) rolloutEvents(id string) []histLine {
	r.t.Helper()
	var out []histLine
	for _, l := range r.history() {
		if strings.HasPrefix(l.Subject, "convoy.rollout."+id+".") {
			out = append(out, l)
		}
	}
	return out
}

func rolloutData(t *testing.T, l histLine) events.RolloutFact {
	t.Helper()
	var f events.RolloutFact
	if err := json.Unmarshal(l.Event.Data, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// requestsFor counts host's upgrade.requested under each of ids.
func (r *rig) requestsFor(host string, ids []string) int {
	n := 0
	for _, l := range r.history(host, "--type", "upgrade.requested") {
		if slices.Contains(ids, l.upgradeID()) {
			n++
		}
	}
	return n
}

func TestRolloutThreeWaves(t *testing.T) {
	t.Parallel()
	r := newRolloutRig(t)
	c := r.commit(configV1, "v1")
	res := convoy(t, 2*time.Minute, "--nats", r.url, "rollout", "start", "--rev", c,
		"--wave", "tag=canary", "--wave", "50%", "--wave", "all", "--bake", "1s", "--wait")
	wantExit(t, res, exitOK)
	id := strings.Fields(res.stdout)[0]
	if !strings.Contains(res.stdout, "succeeded") {
		t.Fatalf("no success printed: %s", res)
	}
	evs := r.rolloutEvents(id)
	wantKinds(t, evs, "rollout.requested", "rollout.started",
		"rollout.wave.started", "rollout.wave.succeeded",
		"rollout.wave.started", "rollout.wave.succeeded",
		"rollout.wave.started", "rollout.wave.succeeded", "rollout.succeeded")
	want := [][]string{{"birch"}, {"ash", "cedar"}, {"elm", "oak"}}
	var ids []string
	for i, l := range evs {
		if l.kind() != "rollout.wave.started" {
			continue
		}
		f := rolloutData(t, l)
		if !slices.Equal(f.Hosts, want[f.Wave-1]) {
			t.Fatalf("wave %d hosts %v, want %v", f.Wave, f.Hosts, want[f.Wave-1])
		}
		ids = append(ids, l.upgradeID())
		// Every host of the wave ended before the wave succeeded, and the
		// bake passed in between.
		done := evs[i+1]
		for _, h := range f.Hosts {
			fs := r.facts(h, l.upgradeID())
			end := fs[len(fs)-1]
			if end.kind() != "upgrade.succeeded" || end.Seq > done.Seq {
				t.Fatalf("%s: %s at seq %d, wave %d succeeded at %d", h, end.kind(), end.Seq, f.Wave, done.Seq)
			}
			if d := done.Event.Time.Sub(end.Event.Time); d < time.Second {
				t.Fatalf("wave %d succeeded %s after %s's end: no bake", f.Wave, d, h)
			}
		}
	}
	for _, h := range rolloutHosts {
		if head, _ := r.head(h); head != c {
			t.Fatalf("%s on %s, want %s", h, head, c)
		}
		if n := r.requestsFor(h, ids); n != 1 {
			t.Fatalf("%s requested %d times by the rollout", h, n)
		}
	}
	st := r.convoy("rollout", "status", id)
	wantExit(t, st, exitOK)
	if !strings.Contains(st.stdout, "succeeded") {
		t.Fatalf("status: %s", st)
	}
}

func TestRolloutCanaryFailureHalts(t *testing.T) {
	t.Parallel()
	r := newRolloutRig(t)
	before := map[string]string{}
	for _, h := range rolloutHosts {
		before[h], _ = r.head(h)
	}
	c := r.commit(configBroken, "broken")
	res := convoy(t, 2*time.Minute, "--nats", r.url, "rollout", "start", "--rev", c,
		"--wave", "tag=canary", "--wave", "all", "--wait")
	wantExit(t, res, exitFailed)
	id := strings.Fields(res.stdout)[0]
	evs := r.rolloutEvents(id)
	wantKinds(t, evs, "rollout.requested", "rollout.started", "rollout.wave.started", "rollout.halted")
	halt := rolloutData(t, evs[3])
	if len(halt.Failed) != 1 || halt.Failed[0].Host != "birch" || !strings.Contains(halt.Reason, "birch") {
		t.Fatalf("halted: %+v", halt)
	}
	for _, h := range rolloutHosts {
		if h == "birch" {
			continue
		}
		if n := len(r.history(h, "--type", "upgrade.requested")); n != 0 {
			t.Fatalf("%s of a later wave got %d requests", h, n)
		}
		if head, _ := r.head(h); head != before[h] {
			t.Fatalf("%s moved to %s", h, head)
		}
	}
	st := r.convoy("rollout", "status", id, "--wait")
	wantExit(t, st, exitFailed)
	if ab := r.convoy("rollout", "abort", id); ab.code != exitUsage || !strings.Contains(ab.stderr, "ended") {
		t.Fatalf("abort of a halted rollout: %s", ab)
	}
}

func TestRolloutBadInput(t *testing.T) {
	t.Parallel()
	r := newRolloutRig(t)
	for _, args := range [][]string{
		{"--rev", "main", "--wave", "tag=db"},
		{"--rev", "main", "--wave", "0%"},
		{"--rev", "main", "--wave", "101%"},
		{"--rev", "main", "--wave", "all", "--wave", "10%"},
		{"--wave", "all"},
		{"--rev", "main"},
	} {
		res := r.convoy(append([]string{"rollout", "start"}, args...)...)
		wantExit(t, res, exitUsage)
	}
	wantExit(t, r.convoy("rollout", "status", events.NewID()), exitUsage)
	wantExit(t, r.convoy("rollout", "abort", events.NewID()), exitUsage)
	for _, h := range rolloutHosts {
		if n := len(r.history(h, "--type", "upgrade.requested")); n != 0 {
			t.Fatalf("%s got a request from bad input", h)
		}
	}
}

// The server, and the controller in it, is killed with SIGKILL while a
// wave bakes and while the next runs; restarted on its data dir, it ends
// the rollout as it would have, asks no host twice, and writes one end.
func TestRolloutControllerKilled(t *testing.T) {
	t.Parallel()
	r := newRolloutRig(t)
	c := r.commit(configV1, "v1")
	res := r.convoy("rollout", "start", "--rev", c, "--wave", "tag=canary", "--wave", "50%", "--wave", "all", "--bake", "3s")
	wantExit(t, res, exitOK)
	id := strings.Fields(res.stdout)[0]
	count := func(kind string) int {
		n := 0
		for _, l := range r.rolloutEvents(id) {
			if l.kind() == kind {
				n++
			}
		}
		return n
	}
	for _, point := range []struct {
		what string
		cond func() bool
	}{
		{"wave 1 started", func() bool { return count("rollout.wave.started") >= 1 }},
		{"wave 2 started", func() bool { return count("rollout.wave.started") >= 2 }},
		{"wave 2 baking", func() bool {
			return count("rollout.wave.started") >= 2 && len(r.history("ash", "--type", "upgrade.succeeded")) > 0
		}},
	} {
		eventually(t, time.Minute, point.what, point.cond)
		if code := r.stopServer(syscall.SIGKILL); code != 128+int(syscall.SIGKILL) {
			t.Fatalf("server exit %d, want killed", code)
		}
		t.Logf("killed the server at %q", point.what)
		r.startServer()
	}
	st := convoy(t, 2*time.Minute, "--nats", r.url, "rollout", "status", id, "--wait")
	wantExit(t, st, exitOK)
	evs := r.rolloutEvents(id)
	ends := 0
	var ids []string
	for _, l := range evs {
		if events.Kind(l.kind()).IsRolloutEnd() {
			ends++
		}
		if l.kind() == "rollout.wave.started" {
			ids = append(ids, l.upgradeID())
		}
	}
	if ends != 1 || len(ids) != 3 {
		t.Fatalf("%d ends, %d waves: %v", ends, len(ids), kinds(evs))
	}
	wantKinds(t, evs, "rollout.requested", "rollout.started",
		"rollout.wave.started", "rollout.wave.succeeded",
		"rollout.wave.started", "rollout.wave.succeeded",
		"rollout.wave.started", "rollout.wave.succeeded", "rollout.succeeded")
	for _, h := range rolloutHosts {
		if n := r.requestsFor(h, ids); n != 1 {
			t.Fatalf("%s requested %d times by the rollout", h, n)
		}
		if head, _ := r.head(h); head != c {
			t.Fatalf("%s on %s, want %s", h, head, c)
		}
	}
}

// An abort while the canary bakes ends the rollout: no later wave.
func TestRolloutAbort(t *testing.T) {
	t.Parallel()
	r := newRolloutRig(t)
	c := r.commit(configV1, "v1")
	res := r.convoy("rollout", "start", "--rev", c, "--wave", "tag=canary", "--wave", "all", "--bake", "1h")
	wantExit(t, res, exitOK)
	id := strings.Fields(res.stdout)[0]
	eventually(t, time.Minute, "the canary upgraded", func() bool { head, _ := r.head("birch"); return head == c })
	wantExit(t, r.convoy("rollout", "pause", id), exitOK)
	eventually(t, 30*time.Second, "the rollout paused", func() bool {
		return strings.Contains(r.convoy("rollout", "status", id).stdout, ": paused,")
	})
	wantExit(t, r.convoy("rollout", "abort", id, "--reason", "test"), exitOK)
	st := convoy(t, time.Minute, "--nats", r.url, "rollout", "status", id, "--wait")
	wantExit(t, st, exitFailed)
	evs := r.rolloutEvents(id)
	wantKinds(t, evs, "rollout.requested", "rollout.started", "rollout.wave.started",
		"rollout.pause.requested", "rollout.paused", "rollout.abort.requested", "rollout.aborted")
	if f := rolloutData(t, evs[len(evs)-1]); !strings.Contains(f.Reason, "test") {
		t.Fatalf("aborted: %+v", f)
	}
	for _, h := range []string{"ash", "cedar", "elm", "oak"} {
		if n := len(r.history(h, "--type", "upgrade.requested")); n != 0 {
			t.Fatalf("%s got %d requests after the abort", h, n)
		}
	}
}

// A rollout whose window is closed requests no wave and says it waits.
func TestRolloutWaitsForItsWindow(t *testing.T) {
	t.Parallel()
	r := newRolloutRig(t)
	c := r.commit(configV1, "v1")
	now := time.Now()
	closed := now.Add(2*time.Hour).Format("15:04") + "-" + now.Add(3*time.Hour).Format("15:04")
	wantExit(t, r.convoy("rollout", "start", "--rev", c, "--wave", "all", "--window", "Someday 02:00-05:00"), exitUsage)
	res := r.convoy("rollout", "start", "--rev", c, "--wave", "tag=canary", "--wave", "all", "--window", closed)
	wantExit(t, res, exitOK)
	id := strings.Fields(res.stdout)[0]
	eventually(t, 30*time.Second, "the rollout waiting for its window", func() bool {
		return strings.Contains(r.convoy("rollout", "status", id).stdout, "waiting for window "+closed+" to start wave 1")
	})
	if st := r.convoy("status"); !strings.Contains(st.stdout, "rollout "+id+": running, wave 0 of 2") {
		t.Fatalf("convoy status does not show the running rollout: %s", st)
	}
	wantExit(t, r.convoy("rollout", "abort", id), exitOK)
	wantExit(t, convoy(t, time.Minute, "--nats", r.url, "rollout", "status", id, "--wait"), exitFailed)
	wantKinds(t, r.rolloutEvents(id), "rollout.requested", "rollout.started", "rollout.abort.requested", "rollout.aborted")
	for _, h := range []string{"birch", "ash", "cedar", "elm", "oak"} {
		if n := len(r.history(h, "--type", "upgrade.requested")); n != 0 {
			t.Fatalf("%s got %d requests outside the window", h, n)
		}
	}
}
