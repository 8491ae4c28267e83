package e2e

// Things that go wrong around an upgrade: the git remote is unreachable
// (the seed's Test 8, never run), someone edited the checkout on the
// host, the bus goes down mid-upgrade, the worker is killed mid-upgrade.

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// gate is a validation check that blocks until the test opens it, so a
// test can act while an upgrade is in its validation stage. It gives up
// by itself after 30s.
type gate struct{ dir string }

func newGate(t *testing.T) gate {
	g := gate{dir: t.TempDir()}
	t.Cleanup(g.open) // release a check whose worker was killed
	return g
}

func (g gate) check() string {
	return "touch " + sh(filepath.Join(g.dir, "waiting")) +
		"; i=0; while [ ! -f " + sh(filepath.Join(g.dir, "open")) + " ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done" +
		"; test -f " + sh(filepath.Join(g.dir, "open"))
}

func (g gate) waiting() bool {
	_, err := os.Stat(filepath.Join(g.dir, "waiting"))
	return err == nil
}

func (g gate) open() { _ = os.WriteFile(filepath.Join(g.dir, "open"), nil, 0o644) }

// Seed Test 8 (never run by the seed): the git remote cannot be reached.
// The upgrade fails at the pull, the host is untouched, and the next
// upgrade after the network is back goes through.
func TestSeed8RemoteUnreachable(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	r.startWorker("sorrow")
	h := r.fleet.Hosts["sorrow"]
	old, oldSecrets := r.head("sorrow")
	c := r.commit(configV1, "v1")
	s := r.commitSecrets("wifi: rotated\n", "rotate")

	for _, remote := range []string{r.fleet.Remote, r.fleet.Secrets} {
		if err := os.Rename(remote, remote+".offline"); err != nil {
			t.Fatal(err)
		}
		sum := r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "60s")
		facts := r.facts("sorrow", sum.Upgrade)
		wantKinds(t, facts, "upgrade.started", "pull.failed", "upgrade.failed")
		pf := find(t, facts, "pull.failed")
		if !strings.Contains(pf.Reason, "fetch") || pf.OldCommit != old {
			t.Fatalf("pull.failed: reason %q old commit %s; want a failed fetch from %s", pf.Reason, pf.OldCommit, old)
		}
		if gc, gs := r.head("sorrow"); gc != old || gs != oldSecrets || h.Running() != "" {
			t.Fatalf("a failed pull changed the host: HEADs %s %s, running %q", gc, gs, h.Running())
		}
		r.waitStatus("sorrow", "failed in pull", func(st hostStatus) bool {
			return st.LastUpgrade == sum.Upgrade && st.State == "failed" && st.LastFailed == "pull"
		})
		if err := os.Rename(remote+".offline", remote); err != nil {
			t.Fatal(err)
		}
	}

	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	if gc, gs := r.head("sorrow"); gc != c || gs != s {
		t.Fatalf("after the network is back: HEADs %s %s, want %s %s", gc, gs, c, s)
	}
}

// Changes made by hand in the host's checkout are never overwritten: the
// pull fails and says why.
func TestLocalChangesAreNotOverwritten(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	r.startWorker("sorrow")
	h := r.fleet.Hosts["sorrow"]
	r.commit(configV1, "v1")

	file := filepath.Join(h.Repo, "configuration.nix")
	edit := "{ services.openssh.enable = true; # hot fix on the host\n}\n"
	if err := os.WriteFile(file, []byte(edit), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "60s")
	facts := r.facts("sorrow", sum.Upgrade)
	wantKinds(t, facts, "upgrade.started", "pull.failed", "upgrade.failed")
	if reason := find(t, facts, "pull.failed").Reason; !strings.Contains(reason, "uncommitted changes") {
		t.Fatalf("pull.failed reason %q does not name the uncommitted changes", reason)
	}
	if b, _ := os.ReadFile(file); string(b) != edit {
		t.Fatalf("the hand edit was overwritten: %q", b)
	}

	// Committed locally but never pushed: still not convoy's to drop.
	r.git(h.Repo, "commit", "--quiet", "-am", "hot fix")
	local, _ := r.head("sorrow")
	sum = r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "60s")
	facts = r.facts("sorrow", sum.Upgrade)
	wantKinds(t, facts, "upgrade.started", "pull.failed", "upgrade.failed")
	if reason := find(t, facts, "pull.failed").Reason; !strings.Contains(reason, "has commits that origin/main does not") {
		t.Fatalf("pull.failed reason %q does not name the local commits", reason)
	}
	if head, _ := r.head("sorrow"); head != local {
		t.Fatalf("HEAD %s, want the local commit %s", head, local)
	}
}

// The bus goes down while an upgrade runs: the worker finishes the stage,
// keeps its fact in the outbox and waits (no side effect before the fact
// is stored); when the bus is back every fact is stored exactly once, in
// order, and the upgrade completes.
func TestBusOutageMidUpgrade(t *testing.T) {
	t.Parallel()
	g := newGate(t)
	r := newRig(t, []string{"sorrow"}, sandbox.Options{ValidationChecks: []string{g.check()}})
	w := r.startWorker("sorrow")
	h := r.fleet.Hosts["sorrow"]
	c := r.commit(configV1, "v1")
	id := r.upgrade(exitOK, "sorrow").Upgrade
	eventually(t, 30*time.Second, "the validation stage", g.waiting)

	r.stopServer(syscall.SIGKILL)
	g.open()
	outbox := filepath.Join(h.StateDir, "outbox")
	eventually(t, 30*time.Second, "validation.passed to wait in the outbox", func() bool {
		ents, _ := os.ReadDir(outbox)
		return len(ents) > 0 && strings.Contains(w.stderr.String(), "waits in the outbox")
	})
	if run := h.Running(); run != "" {
		t.Fatalf("the worker switched (%q) before validation.passed was stored", run)
	}

	r.startServer()
	sum := r.upgrade(exitOK, "sorrow", "--id", id, "--wait", "--timeout", "60s")
	if sum.result("sorrow") != "upgrade.succeeded" {
		t.Fatalf("%+v", sum)
	}
	wantKinds(t, r.facts("sorrow", id), "upgrade.started", "pull.succeeded", "build.succeeded", "validation.passed", "switch.succeeded", "upgrade.succeeded")
	eventually(t, 30*time.Second, "the outbox to empty", func() bool {
		ents, _ := os.ReadDir(outbox)
		return len(ents) == 0
	})
	if head, _ := r.head("sorrow"); head != c || h.Running() == "" {
		t.Fatalf("HEAD %s running %q; want %s switched", head, h.Running(), c)
	}
	r.waitStatus("sorrow", "idle on "+c, func(s hostStatus) bool { return s.State == "idle" && s.Commit == c })
}

// The worker is killed mid-upgrade (OOM, power): restarted, it puts the
// checkouts back and ends the upgrade with exactly one upgrade.aborted.
func TestWorkerCrashMidUpgrade(t *testing.T) {
	t.Parallel()
	g := newGate(t)
	r := newRig(t, []string{"sorrow"}, sandbox.Options{ValidationChecks: []string{g.check()}})
	w := r.startWorker("sorrow")
	h := r.fleet.Hosts["sorrow"]
	old, oldSecrets := r.head("sorrow")
	c := r.commit(configV1, "v1")
	r.commitSecrets("wifi: rotated\n", "rotate")
	id := r.upgrade(exitOK, "sorrow").Upgrade
	eventually(t, 30*time.Second, "the validation stage", g.waiting)
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("mid-upgrade HEAD %s, want %s", head, c)
	}

	if code := w.stop(syscall.SIGKILL, 10*time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("worker exit %d after SIGKILL", code)
	}
	g.open()
	r.startWorker("sorrow")
	facts := r.facts("sorrow", id)
	wantKinds(t, facts, "upgrade.started", "pull.succeeded", "build.succeeded", "rollback.succeeded", "upgrade.aborted")
	if rb := find(t, facts, "rollback.succeeded"); rb.Stage != "recovery" || rb.Commit != old {
		t.Fatalf("rollback.succeeded: stage %q commit %s; want recovery to %s", rb.Stage, rb.Commit, old)
	}
	if gc, gs := r.head("sorrow"); gc != old || gs != oldSecrets || h.Running() != "" {
		t.Fatalf("after recovery: HEADs %s %s running %q; want %s %s, nothing switched", gc, gs, h.Running(), old, oldSecrets)
	}
	res := r.convoy("upgrade", "sorrow", "--id", id, "--wait", "--timeout", "30s")
	wantExit(t, res, exitFailed)
	if !strings.Contains(res.stdout, "upgrade.aborted") {
		t.Fatalf("waiting on the crashed upgrade: %s", res)
	}
	r.waitStatus("sorrow", "aborted", func(s hostStatus) bool {
		return s.LastUpgrade == id && s.LastResult == "upgrade.aborted" && s.Commit == old
	})

	// The host serves the next request at once.
	start := time.Now()
	res = r.convoy("upgrade", "sorrow", "--wait", "--timeout", "20s")
	took := time.Since(start)
	mustHold(t, res.code != exitTimeout,
		"after a worker crash, the next request waits",
		"exit ", res.code, " after ", took.Round(time.Millisecond))
	wantExit(t, res, exitOK)
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
	if n := r.count("sorrow", id, "upgrade.aborted") + r.count("sorrow", id, "upgrade.succeeded") + r.count("sorrow", id, "upgrade.failed"); n != 1 {
		t.Fatalf("upgrade %s has %d terminal facts, want 1", id, n)
	}
}

// `upgrade --all` means the fleet: hosts that run a worker. A request for
// a mistyped host (which no worker will ever serve) must not make every
// later `upgrade --all --wait` time out.
func TestUpgradeAllIgnoresHostsWithoutWorker(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	r.startWorker("sorrow")
	r.waitStatus("sorrow", "worker online", func(s hostStatus) bool { return s.Worker == "online" })
	r.upgrade(exitOK, "sorow") // the typo is accepted and queued
	r.waitStatus("sorow", "queued", func(s hostStatus) bool { return s.State == "queued" })

	c := r.commit(configV1, "v1")
	res := r.convoy("upgrade", "--all", "--wait", "--timeout", "10s")
	mustHold(t, res.code != exitTimeout, "`upgrade --all` includes hosts that only ever had a request (a typo) and waits on them until --timeout",
		"exit ", res.code, ": ", lastLine(res.stdout))
	wantExit(t, res, exitOK)
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
}

// A health check that fails after the switch rolls back the system as
// well as the checkouts: the host runs what it ran before.
func TestHealthCheckFailureRollsBackTheSwitch(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{HealthChecks: []string{"! grep -q broken-at-runtime configuration.nix"}})
	r.startWorker("sorrow")
	h := r.fleet.Hosts["sorrow"]
	c1 := r.commit(configV1, "v1")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	running := h.Running()

	c2 := r.commit("{ services.openssh.enable = true; # broken-at-runtime\n}\n", "builds, but sshd will not come up")
	sum := r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "60s")
	facts := r.facts("sorrow", sum.Upgrade)
	wantKinds(t, facts, "upgrade.started", "pull.succeeded", "build.succeeded", "switch.succeeded", "health.failed", "rollback.succeeded", "upgrade.failed")
	sw := find(t, facts, "switch.succeeded")
	if sw.Commit != c2 || sw.PreviousResult != running {
		t.Fatalf("switch.succeeded: commit %s previous %q; want %s, %q", sw.Commit, sw.PreviousResult, c2, running)
	}
	if rb := find(t, facts, "rollback.succeeded"); rb.Result != running || rb.Commit != c1 {
		t.Fatalf("rollback.succeeded: result %q commit %s; want %q, %s", rb.Result, rb.Commit, running, c1)
	}
	if got := h.Running(); got != running {
		t.Fatalf("after the rollback the host runs %q, want %q", got, running)
	}
	if head, _ := r.head("sorrow"); head != c1 {
		t.Fatalf("HEAD %s, want %s", head, c1)
	}
	st := r.waitStatus("sorrow", "failed in health", func(s hostStatus) bool { return s.LastUpgrade == sum.Upgrade && s.LastResult != "" })
	if st.State != "failed" || st.LastFailed != "health" || st.Commit != c1 || st.Result != running {
		t.Fatalf("status: %+v; want failed in health, on %s running %q", st, c1, running)
	}
}
