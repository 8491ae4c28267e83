package workers_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers"
	"github.com/convoy-fleet/convoy/workers/sandbox"
	"github.com/convoy-fleet/convoy/workers/sandbox/sandboxtest"
)

// generations lists the host profile's generations as nix-env does.
func generations(t *testing.T, h *sandbox.Host) []string {
	t.Helper()
	gens, err := h.Generations()
	if err != nil {
		t.Fatal(err)
	}
	return gens
}

func TestNixUpgradeAddsAGenerationPerUpgrade(t *testing.T) {
	sandboxtest.NeedNix(t)
	t.Parallel()
	r := newRig(t, sandbox.Options{Nix: true}, "sorrow")
	r.start(t, "sorrow")
	h := r.fleet.Hosts["sorrow"]
	for i, cfg := range []string{"{ services.openssh.enable = true; networking.hostName = \"sorrow\"; }\n", "{ services.openssh.enable = true; services.tailscale.enable = true; }\n"} {
		if _, err := r.fleet.Commit(cfg, "change"); err != nil {
			t.Fatal(err)
		}
		if got := r.upgrade(t, "sorrow", ""); got[len(got)-1] != events.UpgradeSucceeded {
			t.Fatalf("upgrade %d: %v", i+1, got)
		}
		if n := len(generations(t, h)); n != i+1 {
			t.Fatalf("after upgrade %d the profile has %d generations, want %d", i+1, n, i+1)
		}
	}
	sw := bustest.Expect(t, r.conn, "sorrow", events.SwitchSucceeded)
	f, _ := sw.Event.Fact()
	if f.Generation != 2 || f.Result != sandboxtest.RunningSystem(t, h) || !strings.Contains(f.Result, "-nixos-system-sorrow") {
		t.Fatalf("switch.succeeded: generation %d result %s; profile at %s", f.Generation, f.Result, sandboxtest.RunningSystem(t, h))
	}
	if acts := h.Activations(); len(acts) != 2 || acts[1] != "switch "+f.Result {
		t.Fatalf("activations %q", acts)
	}
}

func TestNixSyntaxErrorFailsTheBuild(t *testing.T) {
	sandboxtest.NeedNix(t)
	t.Parallel()
	r := newRig(t, sandbox.Options{Nix: true}, "torment")
	r.start(t, "torment")
	h := r.fleet.Hosts["torment"]
	if got := r.upgrade(t, "torment", ""); got[len(got)-1] != events.UpgradeSucceeded {
		t.Fatalf("first upgrade: %v", got)
	}
	oldC, oldS, _ := h.Head()
	if _, err := r.fleet.CommitSecrets("wifi: rotated\n", "rotate"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.fleet.Commit("{\n  this is a syntax error that will break the build;\n  services.openssh.enable = true;\n}\n", "break it"); err != nil {
		t.Fatal(err)
	}
	got := r.upgrade(t, "torment", "")
	if !slices.Equal(got, []events.Kind{events.UpgradeStarted, events.PullSucceeded, events.BuildFailed, events.RollbackSucceeded, events.UpgradeFailed}) {
		t.Fatalf("facts %v", got)
	}
	bf := bustest.Expect(t, r.conn, "torment", events.BuildFailed)
	f, _ := bf.Event.Fact()
	if !strings.Contains(f.Output, "syntax error") || f.ExitCode == nil || *f.ExitCode != 1 {
		t.Fatalf("build.failed lacks Nix's error: exit %v output %q", f.ExitCode, f.Output)
	}
	if n := len(generations(t, h)); n != 1 {
		t.Fatalf("a failed build added a generation: %d", n)
	}
	if c, s, _ := h.Head(); c != oldC || s != oldS {
		t.Fatalf("repos at %s/%s, want %s/%s", c, s, oldC, oldS)
	}
}

func TestNixHealthFailureReturnsToThePreviousGeneration(t *testing.T) {
	sandboxtest.NeedNix(t)
	t.Parallel()
	r := newRig(t, sandbox.Options{Nix: true, HealthChecks: []string{"! grep -q broken-service configuration.nix"}}, "sorrow")
	r.start(t, "sorrow")
	h := r.fleet.Hosts["sorrow"]
	if got := r.upgrade(t, "sorrow", ""); got[len(got)-1] != events.UpgradeSucceeded {
		t.Fatalf("first upgrade: %v", got)
	}
	good := sandboxtest.RunningSystem(t, h)
	if _, err := r.fleet.Commit("{ services.broken-service.enable = true; }\n", "break health"); err != nil {
		t.Fatal(err)
	}
	got := r.upgrade(t, "sorrow", "")
	if !slices.Equal(got, []events.Kind{events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.SwitchSucceeded, events.HealthFailed, events.RollbackSucceeded, events.UpgradeFailed}) {
		t.Fatalf("facts %v", got)
	}
	if cur := sandboxtest.RunningSystem(t, h); cur != good {
		t.Fatalf("profile at %s after rollback, want %s", cur, good)
	}
	rb := bustest.Expect(t, r.conn, "sorrow", events.RollbackSucceeded)
	f, _ := rb.Event.Fact()
	if f.Generation != 1 || f.Result != good {
		t.Fatalf("rollback.succeeded says generation %d %s, want 1 %s", f.Generation, f.Result, good)
	}
	acts := h.Activations()
	if acts[len(acts)-1] != "switch "+good {
		t.Fatalf("the previous generation was not activated: %q", acts)
	}
}

func TestBootCheckPinsGoldenAndFallsBackAfterRepeatedFailures(t *testing.T) {
	sandboxtest.NeedNix(t)
	t.Parallel()
	r := newRig(t, sandbox.Options{Nix: true}, "sorrow")
	h := r.fleet.Hosts["sorrow"]
	cfg, err := workers.LoadConfig(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	bootCheck := func() (workers.BootResult, error) {
		return workers.BootCheck(t.Context(), workers.Options{Config: cfg, Conn: r.conn, Env: r.env("sorrow")})
	}
	r.start(t, "sorrow")
	if got := r.upgrade(t, "sorrow", ""); got[len(got)-1] != events.UpgradeSucceeded {
		t.Fatalf("first upgrade: %v", got)
	}
	golden := sandboxtest.RunningSystem(t, h)
	r.stopAll(t)

	// A validated boot pins the running generation.
	br, err := bootCheck()
	if err != nil || !br.Validated || !br.Pinned {
		t.Fatalf("boot check: %+v %v", br, err)
	}
	if link, _ := os.Readlink(filepath.Join(h.GCRoots(), workers.GoldenRootName)); link != golden {
		t.Fatalf("golden root points at %q, want the store path %s", link, golden)
	}

	// A new generation whose boots fail twice falls back to golden.
	r.start(t, "sorrow")
	if _, err := r.fleet.Commit("{ services.openssh.enable = true; version = 2; }\n", "v2"); err != nil {
		t.Fatal(err)
	}
	if got := r.upgrade(t, "sorrow", ""); got[len(got)-1] != events.UpgradeSucceeded {
		t.Fatalf("second upgrade: %v", got)
	}
	bad := sandboxtest.RunningSystem(t, h)
	r.stopAll(t)
	if err := h.FailService("sshd.service"); err != nil {
		t.Fatal(err)
	}
	br, err = bootCheck()
	if err == nil || br.Failures != 1 || br.Restored != "" {
		t.Fatalf("first failed boot: %+v %v", br, err)
	}
	// Collect garbage: the old generation links go, the golden path stays
	// (while an unrooted path, to show the collector ran, goes).
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, []byte("not rooted"), 0o644); err != nil {
		t.Fatal(err)
	}
	unrooted, err := h.Nix("nix-store", "--add", junk)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Nix("nix-env", "-p", h.Profile(), "--delete-generations", "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Nix("nix-collect-garbage", "-d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(golden); err != nil {
		t.Fatalf("the golden store path was collected: %v", err)
	}
	if _, err := os.Stat(unrooted); err == nil {
		t.Fatalf("garbage collection did not run: %s survived", unrooted)
	}
	br, err = bootCheck()
	if err == nil || br.Failures != 2 || br.Restored != golden {
		t.Fatalf("second failed boot: %+v %v", br, err)
	}
	if cur := sandboxtest.RunningSystem(t, h); cur != golden {
		t.Fatalf("profile at %s, want golden %s (bad was %s)", cur, golden, bad)
	}
	acts := h.Activations()
	if acts[len(acts)-1] != "boot "+golden {
		t.Fatalf("golden was not made the boot default: %q", acts)
	}
	ks := bustest.Kinds(t, r.conn, "sorrow")
	for _, k := range []events.Kind{events.BootValidated, events.GoldenPinned, events.BootFailed, events.GoldenRestored} {
		if !slices.Contains(ks, k) {
			t.Fatalf("no %s among %v", k, ks)
		}
	}
}
