package e2e

// The scenarios of the seed's Phase 15 test report
// (seeds/phase-15-test-results.md), on the sandbox hosts sorrow and
// torment, including the ones the report never ran (Tests 7 and 9).

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// Seed Test 3: a pushed commit is pulled, built, validated and switched
// to, and every stage is a fact on the bus.
func TestSeed3UpgradeWorkflow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts sandbox.Options
		want []string
	}{
		{"plain", sandbox.Options{},
			[]string{"upgrade.started", "pull.succeeded", "build.succeeded", "switch.succeeded", "upgrade.succeeded"}},
		{"hooks and checks", sandbox.Options{
			PreUpdateHooks:   []string{"echo pre-update hook: syncing dotfiles"},
			ValidationChecks: []string{"grep -q 'openssh.enable = true' configuration.nix", "grep -q 'tailscale.enable = true' configuration.nix"},
			HealthChecks:     []string{"test -s \"$CONVOY_REPO/configuration.nix\""},
		}, []string{"upgrade.started", "hooks.succeeded", "pull.succeeded", "build.succeeded", "validation.passed", "switch.succeeded", "health.passed", "upgrade.succeeded"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, []string{"sorrow"}, tc.opts)
			r.startWorker("sorrow")
			h := r.fleet.Hosts["sorrow"]
			// The seed ran five upgrade cycles on sorrow; two show the
			// second one starts from the first one's result.
			for i, content := range []string{configV1, configV2} {
				before := h.Running()
				c := r.commit(content, "test(auto-upgrade): test comment")
				res := r.convoy("upgrade", "sorrow", "--wait", "--timeout", "60s")
				wantExit(t, res, exitOK)
				id := upgradeIDIn(t, res)
				if !strings.Contains(res.stdout, "upgrade.succeeded") || !strings.Contains(res.stdout, "done in") {
					t.Fatalf("upgrade --wait does not show the upgrade ending: %s", res)
				}

				facts := r.facts("sorrow", id)
				wantKinds(t, facts, tc.want...)
				pull := find(t, facts, "pull.succeeded")
				if pull.NewCommit != c || pull.Commit != c {
					t.Fatalf("pull.succeeded: new commit %s, want %s", pull.NewCommit, c)
				}
				sw := find(t, facts, "switch.succeeded")
				if sw.PreviousResult != before {
					t.Fatalf("cycle %d: switch.succeeded previous result %q, want %q", i, sw.PreviousResult, before)
				}
				if head, _ := r.head("sorrow"); head != c {
					t.Fatalf("HEAD of sorrow's nix-config is %s, want the pushed %s", head, c)
				}
				running := h.Running()
				if running != sw.Result || !strings.HasPrefix(filepath.Base(running), "system-"+c[:7]) {
					t.Fatalf("sorrow runs %q; switch.succeeded says %q; want a result built from %s", running, sw.Result, c[:7])
				}
				st := r.waitStatus("sorrow", "upgrade "+id+" ended", func(s hostStatus) bool { return s.LastUpgrade == id && s.LastResult != "" })
				if st.State != "idle" || st.Commit != c || st.LastResult != "upgrade.succeeded" || st.Result != running || st.Worker != "online" {
					t.Fatalf("status sorrow: %+v; want idle on %s, upgrade.succeeded, running %s, worker online", st, c, running)
				}
			}

			res := r.convoy("status")
			wantExit(t, res, exitOK)
			if c, _ := r.head("sorrow"); !strings.Contains(res.stdout, "sorrow") || !strings.Contains(res.stdout, "idle") || !strings.Contains(res.stdout, c[:12]) {
				t.Fatalf("status table: %s", res)
			}

			// The audit trail of one upgrade: its request and its facts.
			id := r.waitStatus("sorrow", "an upgrade", func(s hostStatus) bool { return s.LastUpgrade != "" }).LastUpgrade
			lines := r.history("--upgrade", id)
			if len(lines) == 0 || lines[0].kind() != "upgrade.requested" || lines[0].Subject != "convoy.req.sorrow.upgrade" {
				t.Fatalf("history --upgrade %s does not start with its request: %v", id, kinds(lines))
			}
			wantKinds(t, lines[1:], tc.want...)
			for _, l := range lines {
				if l.upgradeID() != id {
					t.Fatalf("history --upgrade %s lists seq %d of upgrade %s", id, l.Seq, l.upgradeID())
				}
			}
		})
	}
}

// Seed Test 4: a commit that does not build is refused; the config and
// the secrets checkouts go back to their commits and nothing switches.
func TestSeed4BuildFailureRollsBack(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"torment"}, sandbox.Options{})
	r.startWorker("torment")
	h := r.fleet.Hosts["torment"]

	good := r.commit(configV1, "test(auto-upgrade): add fourth test comment")
	r.upgrade(exitOK, "torment", "--wait", "--timeout", "60s")
	oldConfig, oldSecrets := r.head("torment")
	running := h.Running()
	if oldConfig != good || running == "" {
		t.Fatalf("after the good upgrade: HEAD %s running %q", oldConfig, running)
	}

	newSecrets := r.commitSecrets("wifi: rotated\n", "rotate wifi")
	bad := r.commit(configBroken, "test: inject syntax error")
	sum := r.upgrade(exitFailed, "torment", "--wait", "--timeout", "60s")
	if got := sum.result("torment"); got != "upgrade.failed" {
		t.Fatalf("upgrade result %q, want upgrade.failed", got)
	}

	facts := r.facts("torment", sum.Upgrade)
	wantKinds(t, facts, "upgrade.started", "pull.succeeded", "build.failed", "rollback.succeeded", "upgrade.failed")
	pull := find(t, facts, "pull.succeeded")
	if pull.OldCommit != oldConfig || pull.NewCommit != bad || pull.SecretsOldCommit != oldSecrets || pull.SecretsNewCommit != newSecrets {
		t.Fatalf("pull.succeeded: %+v; want config %s→%s and secrets %s→%s", pull, oldConfig, bad, oldSecrets, newSecrets)
	}
	build := find(t, facts, "build.failed")
	if !strings.Contains(build.Output, "syntax error") || build.ExitCode == nil || *build.ExitCode != 1 || build.Commit != bad {
		t.Fatalf("build.failed: exit %v commit %s output %q; want exit 1 on %s and the error text", build.ExitCode, build.Commit, build.Output, bad)
	}
	if !strings.Contains(build.Reason, "syntax error") {
		t.Fatalf("build.failed reason %q does not say what went wrong", build.Reason)
	}
	end := find(t, facts, "upgrade.failed")
	if end.Stage != "build" || end.Commit != oldConfig {
		t.Fatalf("upgrade.failed: stage %q commit %s; want build, %s", end.Stage, end.Commit, oldConfig)
	}

	// git reset --hard to the recorded commits, in both repos.
	if c, s := r.head("torment"); c != oldConfig || s != oldSecrets {
		t.Fatalf("after the rollback HEADs are config %s secrets %s; want %s %s", c, s, oldConfig, oldSecrets)
	}
	if got := h.Running(); got != running {
		t.Fatalf("a failed build switched the system: runs %q, want %q", got, running)
	}
	// What an operator reads: the error in the history, and a filter.
	res := r.convoy("history", "torment")
	wantExit(t, res, exitOK)
	if !strings.Contains(res.stdout, "build.failed") || !strings.Contains(res.stdout, "syntax error, unexpected") {
		t.Fatalf("history does not show the build error: %s", res)
	}
	if lines := r.history("torment", "--type", "build.failed"); len(lines) != 1 || lines[0].upgradeID() != sum.Upgrade {
		t.Fatalf("history --type build.failed: %v", kinds(lines))
	}
	st := r.waitStatus("torment", "the failure", func(s hostStatus) bool { return s.LastUpgrade == sum.Upgrade && s.LastResult != "" })
	if st.State != "failed" || st.LastResult != "upgrade.failed" || st.LastFailed != "build" || st.Commit != oldConfig || st.SecretsCommit != oldSecrets {
		t.Fatalf("status torment: %+v; want failed in build, on %s / %s", st, oldConfig, oldSecrets)
	}

	// The seed's "restore torment config" commit: the next good commit
	// deploys, with the secrets change that waited.
	fixed := r.commit(configV2, "fix: restore torment config after rollback test")
	r.upgrade(exitOK, "torment", "--wait", "--timeout", "60s")
	if c, s := r.head("torment"); c != fixed || s != newSecrets {
		t.Fatalf("after the fix HEADs are %s %s; want %s %s", c, s, fixed, newSecrets)
	}
	r.waitStatus("torment", "idle on the fix", func(s hostStatus) bool {
		return s.State == "idle" && s.Commit == fixed && s.SecretsCommit == newSecrets
	})
}

// Seed Test 6: both hosts upgrade at once to the same commit.
func TestSeed6ConcurrentUpgrades(t *testing.T) {
	t.Parallel()
	hosts := []string{"sorrow", "torment"}
	r := newRig(t, hosts, sandbox.Options{ValidationChecks: []string{"grep -q 'openssh.enable = true' configuration.nix"}})
	for _, h := range hosts {
		r.startWorker(h)
	}
	// --all upgrades the hosts the fleet view knows: wait for both.
	eventually(t, 30*time.Second, "the fleet view to list both hosts", func() bool {
		sts, _, _ := r.status()
		return len(sts) == 2
	})

	check := func(sum upgradeSummary, c string) {
		t.Helper()
		for _, h := range hosts {
			if got := sum.result(h); got != "upgrade.succeeded" {
				t.Fatalf("%s: %q, want upgrade.succeeded (%+v)", h, got, sum)
			}
			wantKinds(t, r.facts(h, sum.Upgrade), "upgrade.started", "pull.succeeded", "build.succeeded", "validation.passed", "switch.succeeded", "upgrade.succeeded")
			if head, _ := r.head(h); head != c {
				t.Fatalf("%s HEAD %s, want %s", h, head, c)
			}
			if run := filepath.Base(r.fleet.Hosts[h].Running()); !strings.HasPrefix(run, "system-"+c[:7]) {
				t.Fatalf("%s runs %s, want the build of %s", h, run, c[:7])
			}
		}
	}

	c1 := r.commit(configV1, "test(auto-upgrade): add comment for concurrent upgrade test")
	check(r.upgrade(exitOK, "--all", "--wait", "--timeout", "60s"), c1)

	c2 := r.commit(configV2, "test: concurrent upgrade, named hosts")
	check(r.upgrade(exitOK, "sorrow", "torment", "--wait", "--timeout", "60s"), c2)

	sorrow, _ := r.head("sorrow")
	torment, _ := r.head("torment")
	if sorrow != torment {
		t.Fatalf("the hosts ended on different commits: %s and %s", sorrow, torment)
	}
	for _, h := range hosts {
		r.waitStatus(h, "idle on "+c2, func(s hostStatus) bool { return s.State == "idle" && s.Commit == c2 })
	}
}

// Seed Test 7 (never run by the seed): a failing validation check, in
// each on_validation_failure mode.
func TestSeed7ValidationFailure(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"rollback", "notify", "ignore"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, []string{"sorrow"}, sandbox.Options{
				ValidationChecks:    []string{"grep -q never-there configuration.nix"},
				OnValidationFailure: mode,
			})
			r.startWorker("sorrow")
			h := r.fleet.Hosts["sorrow"]
			old, _ := r.head("sorrow")
			c := r.commit(configV1, "enable tailscale")

			if mode == "rollback" {
				sum := r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "60s")
				facts := r.facts("sorrow", sum.Upgrade)
				wantKinds(t, facts, "upgrade.started", "pull.succeeded", "build.succeeded", "validation.failed", "rollback.succeeded", "upgrade.failed")
				if v := find(t, facts, "validation.failed"); v.Action != "rollback" || v.ExitCode == nil || *v.ExitCode != 1 {
					t.Fatalf("validation.failed: action %q exit %v; want rollback, 1", v.Action, v.ExitCode)
				}
				if end := find(t, facts, "upgrade.failed"); end.Stage != "validation" {
					t.Fatalf("upgrade.failed stage %q, want validation", end.Stage)
				}
				if head, _ := r.head("sorrow"); head != old {
					t.Fatalf("HEAD %s, want the old %s", head, old)
				}
				if run := h.Running(); run != "" {
					t.Fatalf("a failed validation switched the system to %q", run)
				}
				r.waitStatus("sorrow", "failed in validation", func(s hostStatus) bool {
					return s.LastUpgrade == sum.Upgrade && s.State == "failed" && s.LastFailed == "validation"
				})
				return
			}

			sum := r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
			facts := r.facts("sorrow", sum.Upgrade)
			wantKinds(t, facts, "upgrade.started", "pull.succeeded", "build.succeeded", "validation.failed", "switch.succeeded", "upgrade.succeeded")
			if v := find(t, facts, "validation.failed"); v.Action != mode {
				t.Fatalf("validation.failed action %q, want %q", v.Action, mode)
			}
			if head, _ := r.head("sorrow"); head != c {
				t.Fatalf("HEAD %s, want %s", head, c)
			}
			if run := h.Running(); run != find(t, facts, "switch.succeeded").Result || run == "" {
				t.Fatalf("sorrow runs %q, want the new build", run)
			}
			r.waitStatus("sorrow", "idle on "+c, func(s hostStatus) bool {
				return s.LastUpgrade == sum.Upgrade && s.State == "idle" && s.Commit == c && s.LastResult == "upgrade.succeeded"
			})
		})
	}
}

// Seed Test 9 (never run by the seed): pre-update hooks run before the
// pull, and a failing hook stops the upgrade before git is touched.
func TestSeed9PreUpdateHooks(t *testing.T) {
	t.Parallel()
	t.Run("run before the pull", func(t *testing.T) {
		t.Parallel()
		saw := filepath.Join(t.TempDir(), "hook-saw")
		r := newRig(t, []string{"sorrow"}, sandbox.Options{
			PreUpdateHooks: []string{`echo "$CONVOY_UPGRADE_ID $(git rev-parse HEAD) $(git rev-parse origin/main)" > ` + sh(saw)},
		})
		r.startWorker("sorrow")
		old, _ := r.head("sorrow")
		c := r.commit(configV1, "enable tailscale")
		sum := r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
		wantKinds(t, r.facts("sorrow", sum.Upgrade), "upgrade.started", "hooks.succeeded", "pull.succeeded", "build.succeeded", "switch.succeeded", "upgrade.succeeded")
		b, err := os.ReadFile(saw)
		if err != nil {
			t.Fatalf("the hook did not run: %v", err)
		}
		// The hook saw the old checkout and an unfetched tracking ref.
		if got, want := strings.TrimSpace(string(b)), sum.Upgrade+" "+old+" "+old; got != want {
			t.Fatalf("the hook saw %q, want %q (upgrade id, old HEAD, old origin/main)", got, want)
		}
		if head, _ := r.head("sorrow"); head != c {
			t.Fatalf("HEAD %s, want %s", head, c)
		}
	})
	t.Run("a failing hook stops the upgrade", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, []string{"sorrow"}, sandbox.Options{PreUpdateHooks: []string{"true", "echo chezmoi: cannot reach the dotfiles remote >&2; exit 3"}})
		r.startWorker("sorrow")
		h := r.fleet.Hosts["sorrow"]
		old, oldSecrets := r.head("sorrow")
		tracking := r.git(h.Repo, "rev-parse", "origin/main")
		r.commit(configV1, "enable tailscale")
		r.commitSecrets("wifi: rotated\n", "rotate")

		sum := r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "60s")
		facts := r.facts("sorrow", sum.Upgrade)
		wantKinds(t, facts, "upgrade.started", "hooks.failed", "upgrade.failed")
		hf := find(t, facts, "hooks.failed")
		if hf.ExitCode == nil || *hf.ExitCode != 3 || !strings.Contains(hf.Output, "cannot reach the dotfiles remote") {
			t.Fatalf("hooks.failed: exit %v output %q; want exit 3 and the hook's output", hf.ExitCode, hf.Output)
		}
		if end := find(t, facts, "upgrade.failed"); end.Stage != "hooks" {
			t.Fatalf("upgrade.failed stage %q, want hooks", end.Stage)
		}
		for _, l := range r.history("sorrow") {
			if strings.HasPrefix(l.kind(), "pull.") {
				t.Fatalf("a pull ran after a failed hook: seq %d %s", l.Seq, l.kind())
			}
		}
		// Git untouched: same HEADs, and not even fetched.
		if c, s := r.head("sorrow"); c != old || s != oldSecrets {
			t.Fatalf("HEADs %s %s, want %s %s", c, s, old, oldSecrets)
		}
		if got := r.git(h.Repo, "rev-parse", "origin/main"); got != tracking {
			t.Fatalf("origin/main moved from %s to %s: the repo was fetched after a failed hook", tracking, got)
		}
		if run := h.Running(); run != "" {
			t.Fatalf("a failed hook switched the system to %q", run)
		}
	})
}
