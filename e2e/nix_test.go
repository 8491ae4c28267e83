package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
	"github.com/convoy-fleet/convoy/workers/sandbox/sandboxtest"
)

// The seed's scenarios on real Nix: Debian's nix-bin builds the hosts'
// nixosConfigurations (plain derivations, no nixpkgs) into a store of
// their own, and the nixos driver's nix builder sets real profiles.

// Configurations that evaluate to different systems (comments alone would
// not: Nix builds the same store path for them).
const (
	nixV1 = "{ services.openssh.enable = true; services.tailscale.enable = true; }\n"
	nixV2 = "{ services.openssh.enable = true; services.tailscale.enable = true; system.version = 2; }\n"
)

// needNix skips without Nix, and fails when CONVOY_REQUIRE_NIX=1 (CI).
func needNix(t *testing.T) { sandboxtest.NeedNix(t) }

// generations lists the host profile's generations as nix-env does.
func generations(t *testing.T, h *sandbox.Host) []string {
	t.Helper()
	gens, err := h.Generations()
	if err != nil {
		t.Fatal(err)
	}
	return gens
}

// bootCheck runs `convoy boot-check` for host as the boot-time oneshot.
func (r *rig) bootCheck(host string) result {
	r.t.Helper()
	h := r.fleet.Hosts[host]
	ctx, cancel := context.WithTimeout(r.t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, convoyBin, "boot-check", "--config", h.Config)
	cmd.Env = append(childEnv(), h.NixEnv()...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	res := result{args: cmd.Args[1:], code: exitCodeOf(err), stdout: out.String(), stderr: errb.String()}
	r.t.Logf("$ convoy boot-check %s → exit %d", host, res.code)
	return res
}

// Seed Tests 3 and 6 on Nix: each upgrade adds a generation, listed by
// nix-env --list-generations; both hosts upgrade at once to one commit.
func TestNixUpgradesAddGenerations(t *testing.T) {
	needNix(t)
	t.Parallel()
	r := newRig(t, []string{"sorrow", "torment"}, sandbox.Options{Nix: true})
	r.startWorker("sorrow")
	r.startWorker("torment")
	for i, cfg := range []string{nixV1, nixV2} {
		c := r.commit(cfg, "change")
		sum := r.upgrade(exitOK, "--all", "--wait", "--timeout", "90s")
		for _, host := range []string{"sorrow", "torment"} {
			h := r.fleet.Hosts[host]
			if got := sum.result(host); got != "upgrade.succeeded" {
				t.Fatalf("upgrade %d on %s: %s", i+1, host, got)
			}
			if gens := generations(t, h); len(gens) != i+1 || !strings.Contains(gens[i], "(current)") {
				t.Fatalf("%s after upgrade %d: generations %q", host, i+1, gens)
			}
			if head, _ := r.head(host); head != c {
				t.Fatalf("%s HEAD %s, want %s", host, head, c)
			}
			sw := find(t, r.facts(host, sum.Upgrade), "switch.succeeded")
			if sw.Generation != i+1 || sw.Result != sandboxtest.RunningSystem(t, h) || !strings.HasSuffix(sw.Result, "-nixos-system-"+host) {
				t.Fatalf("%s switch.succeeded: generation %d result %s; profile at %s", host, sw.Generation, sw.Result, sandboxtest.RunningSystem(t, h))
			}
			if acts := h.Activations(); len(acts) != i+1 || acts[i] != "switch "+sw.Result {
				t.Fatalf("%s activations %q", host, acts)
			}
		}
	}
	st := r.waitStatus("sorrow", "generation 2", func(s hostStatus) bool { return s.Generation == 2 })
	if st.Result != sandboxtest.RunningSystem(t, r.fleet.Hosts["sorrow"]) {
		t.Fatalf("status result %s", st.Result)
	}
}

// Seed Test 4 on Nix: the syntax error fails the build with Nix's own
// message; no generation is added; both repos are back.
func TestNixSyntaxErrorFailsTheBuild(t *testing.T) {
	needNix(t)
	t.Parallel()
	r := newRig(t, []string{"torment"}, sandbox.Options{Nix: true})
	r.startWorker("torment")
	h := r.fleet.Hosts["torment"]
	r.commit(nixV1, "v1")
	r.upgrade(exitOK, "torment", "--wait", "--timeout", "90s")
	oldC, oldS := r.head("torment")
	r.commitSecrets("wifi: rotated\n", "rotate")
	r.commit("{\n  this is a syntax error that will break the build;\n  services.openssh.enable = true;\n}\n", "break the build")
	sum := r.upgrade(exitFailed, "torment", "--wait", "--timeout", "90s")
	facts := r.facts("torment", sum.Upgrade)
	wantKinds(t, facts, "upgrade.started", "pull.succeeded", "build.failed", "rollback.succeeded", "upgrade.failed")
	bf := find(t, facts, "build.failed")
	if !strings.Contains(bf.Output, "error: syntax error, unexpected ID") || bf.ExitCode == nil || *bf.ExitCode != 1 {
		t.Fatalf("build.failed lacks Nix's error: exit %v output %q", bf.ExitCode, bf.Output)
	}
	if gens := generations(t, h); len(gens) != 1 {
		t.Fatalf("a failed build added a generation: %q", gens)
	}
	if c, s := r.head("torment"); c != oldC || s != oldS {
		t.Fatalf("repos at %s/%s, want %s/%s", c, s, oldC, oldS)
	}
}

// A failed post-switch health check returns the profile to the previous
// generation and activates it.
func TestNixHealthFailureReturnsToThePreviousGeneration(t *testing.T) {
	needNix(t)
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{Nix: true, HealthChecks: []string{"! grep -q broken-at-runtime configuration.nix"}})
	r.startWorker("sorrow")
	h := r.fleet.Hosts["sorrow"]
	r.commit(nixV1, "v1")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "90s")
	good := sandboxtest.RunningSystem(t, h)
	r.commit("{ services.openssh.enable = true; broken-at-runtime = true; }\n", "sshd will not come up")
	sum := r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "90s")
	facts := r.facts("sorrow", sum.Upgrade)
	wantKinds(t, facts, "upgrade.started", "pull.succeeded", "build.succeeded", "switch.succeeded", "health.failed", "rollback.succeeded", "upgrade.failed")
	if rb := find(t, facts, "rollback.succeeded"); rb.Generation != 1 || rb.Result != good {
		t.Fatalf("rollback.succeeded: generation %d result %s, want 1 %s", rb.Generation, rb.Result, good)
	}
	if cur := sandboxtest.RunningSystem(t, h); cur != good {
		t.Fatalf("profile at %s, want %s", cur, good)
	}
	if acts := h.Activations(); acts[len(acts)-1] != "switch "+good {
		t.Fatalf("the previous generation was not activated: %q", acts)
	}
}

// Seed Test 5 (golden pinned after a validated boot) and Test 11, which
// the seed never ran: a generation whose boot check fails twice ends with
// the golden generation current and the boot default, and the golden
// store path survives nix-collect-garbage -d.
func TestNixGoldenPinAndBootFallback(t *testing.T) {
	needNix(t)
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{Nix: true})
	h := r.fleet.Hosts["sorrow"]
	r.startWorker("sorrow")
	r.commit(nixV1, "v1")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "90s")
	golden := sandboxtest.RunningSystem(t, h)

	// Test 5: reboot; the boot check validates and pins.
	r.stopWorker("sorrow")
	res := r.bootCheck("sorrow")
	wantExit(t, res, exitOK)
	if !strings.Contains(res.stdout, "pinned as golden") {
		t.Fatalf("boot-check did not pin: %s", res)
	}
	root := filepath.Join(h.GCRoots(), "convoy-golden")
	if link, err := os.Readlink(root); err != nil || link != golden {
		t.Fatalf("gcroot %s -> %q (%v), want the store path %s itself", root, link, err, golden)
	}
	r.waitStatus("sorrow", "golden pinned", func(s hostStatus) bool { return s.Golden == golden })
	show := r.convoy("golden", "show", "sorrow")
	wantExit(t, show, exitOK)
	if !strings.Contains(show.stdout, "golden generation 1 "+golden) {
		t.Fatalf("golden show: %s", show)
	}

	// A new generation whose boots fail.
	r.startWorker("sorrow")
	r.commit(nixV2, "v2")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "90s")
	bad := sandboxtest.RunningSystem(t, h)
	// A pin request for a generation that never passed a boot check is refused.
	pin := r.convoy("golden", "pin", "sorrow", "--timeout", "30s")
	wantExit(t, pin, exitFailed)
	if !strings.Contains(pin.stdout, "has not passed a boot check") {
		t.Fatalf("golden pin of an unvalidated generation: %s", pin)
	}
	r.stopWorker("sorrow")
	if err := h.FailService("sshd.service"); err != nil {
		t.Fatal(err)
	}
	res = r.bootCheck("sorrow")
	wantExit(t, res, exitFailed)
	if cur := sandboxtest.RunningSystem(t, h); cur != bad {
		t.Fatalf("one failed boot already moved the profile to %s", cur)
	}
	// The old generation's link goes, as nix-collect-garbage -d does on
	// /nix/var/nix/profiles; the golden path is rooted by its own gcroot.
	if _, err := h.Nix("nix-env", "-p", h.Profile(), "--delete-generations", "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Nix("nix-collect-garbage", "-d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(golden); err != nil {
		t.Fatalf("nix-collect-garbage -d collected the golden system: %v", err)
	}
	res = r.bootCheck("sorrow")
	wantExit(t, res, exitFailed)
	if !strings.Contains(res.stdout, "golden "+golden+" is now current") {
		t.Fatalf("second failed boot: %s", res)
	}
	if cur := sandboxtest.RunningSystem(t, h); cur != golden {
		t.Fatalf("profile at %s, want golden %s", cur, golden)
	}
	if acts := h.Activations(); acts[len(acts)-1] != "boot "+golden {
		t.Fatalf("golden is not the boot default: activations %q", acts)
	}
	var failed, restored int
	for _, l := range r.history("sorrow", "--type", "boot,golden") {
		switch l.kind() {
		case "boot.failed":
			failed++
		case "golden.restored":
			restored++
			if f := l.fact(t); f.Result != golden {
				t.Fatalf("golden.restored names %s, want %s", f.Result, golden)
			}
		}
	}
	if failed != 2 || restored != 1 {
		t.Fatalf("history: %d boot.failed and %d golden.restored, want 2 and 1", failed, restored)
	}
	// The worker comes back on the golden system and refuses the bad commit.
	h.FailService("")
	r.startWorker("sorrow")
	sum := r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "60s")
	if f := find(t, r.facts("sorrow", sum.Upgrade), "upgrade.rejected"); !strings.Contains(f.Reason, "fell back to the golden generation") {
		t.Fatalf("re-deploying the commit that failed its boots: %q", f.Reason)
	}
}

// A boot with the bus down: boot-check's facts wait in the outbox, and the
// worker publishes them, once, when it starts and the bus is back.
func TestNixBootCheckWithTheBusDown(t *testing.T) {
	needNix(t)
	t.Parallel()
	r := newRig(t, []string{"torment"}, sandbox.Options{Nix: true})
	h := r.fleet.Hosts["torment"]
	r.startWorker("torment")
	r.commit(nixV1, "v1")
	r.upgrade(exitOK, "torment", "--wait", "--timeout", "90s")
	running := sandboxtest.RunningSystem(t, h)
	r.stopWorker("torment")
	r.stopServer(syscall.SIGTERM)

	res := r.bootCheck("torment")
	wantExit(t, res, exitOK)
	if !strings.Contains(res.stdout, "events wait in the outbox") {
		t.Fatalf("boot-check with the bus down: %s", res)
	}
	if link, _ := os.Readlink(filepath.Join(h.GCRoots(), "convoy-golden")); link != running {
		t.Fatalf("the pin waits for nothing: gcroot -> %q, want %s", link, running)
	}
	queued, _ := filepath.Glob(filepath.Join(h.StateDir, "outbox", "*.json"))
	if len(queued) != 2 {
		t.Fatalf("outbox holds %d events, want boot.validated and golden.pinned", len(queued))
	}

	r.startServer()
	r.startWorker("torment")
	r.waitStatus("torment", "golden from the outbox", func(s hostStatus) bool { return s.Golden == running })
	counts := map[string]int{}
	for _, l := range r.history("torment", "--type", "boot,golden") {
		counts[l.kind()]++
	}
	if counts["boot.validated"] != 1 || counts["golden.pinned"] != 1 {
		t.Fatalf("after the bus came back: %v, want one boot.validated and one golden.pinned", counts)
	}
	if left, _ := filepath.Glob(filepath.Join(h.StateDir, "outbox", "*.json")); len(left) != 0 {
		t.Fatalf("outbox still holds %v", left)
	}
}
