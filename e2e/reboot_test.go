package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
	"github.com/convoy-fleet/convoy/workers/sandbox/sandboxtest"
)

// A rollout whose canary needs a reboot for a new kernel: the worker
// reboots it (the test's reboot command records that it ran), the wave
// waits for the boot check after the reboot, and only then does the next
// wave start. The machine's "reboot" is played by the test: the worker is
// stopped, the booted system becomes the new one, and convoy boot-check
// runs, as a NixOS host's boot does.
func TestRolloutWaitsForTheRebootOfItsHost(t *testing.T) {
	needNix(t)
	t.Parallel()
	r := newRig(t, []string{"sorrow", "torment"}, sandbox.Options{Nix: true, Tags: map[string][]string{"sorrow": {"canary"}}})
	h := r.fleet.Hosts["sorrow"]
	dir := t.TempDir()
	booted := filepath.Join(dir, "booted-system")
	ran := filepath.Join(dir, "reboots")
	script := filepath.Join(dir, "reboot")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho reboot >> "+ran+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "[system]\n", fmt.Sprintf("[system]\nbooted_system = %q\n", booted), 1) +
		fmt.Sprintf("\n[reboot]\nallow = true\ncommand = [%q]\n", script)
	if err := os.WriteFile(h.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"sorrow", "torment"} {
		r.startWorker(host)
	}
	// The hosts run a first system, booted.
	r.commit("{ services.openssh.enable = true; kernel = \"6.1\"; }\n", "v1")
	r.upgrade(exitOK, "--all", "--wait", "--timeout", "90s")
	if err := os.Symlink(sandboxtest.RunningSystem(t, h), booted); err != nil {
		t.Fatal(err)
	}

	c := r.commit("{ services.openssh.enable = true; kernel = \"6.6\"; }\n", "a new kernel")
	res := r.convoy("rollout", "start", "--rev", c, "--wave", "tag=canary", "--wave", "all")
	wantExit(t, res, exitOK)
	id := strings.Fields(res.stdout)[0]
	eventually(t, 90*time.Second, "sorrow's reboot", func() bool { b, _ := os.ReadFile(ran); return len(b) > 0 })
	// Rebooting: the wave waits for the boot check, torment gets nothing.
	time.Sleep(time.Second)
	if n := len(r.history("torment", "--type", "upgrade.requested")); n != 1 {
		t.Fatalf("torment got %d requests before sorrow's boot check, want only the first upgrade's", n)
	}
	if st := r.convoy("rollout", "status", id); !strings.Contains(st.stdout, "wave 1") || strings.Contains(st.stdout, "succeeded") {
		t.Fatalf("rollout status while the canary reboots: %s", st)
	}
	// The boot: the worker stops, the new system is booted, the boot
	// check validates it, the worker starts.
	r.stopWorker("sorrow")
	if err := os.Remove(booted); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sandboxtest.RunningSystem(t, h), booted); err != nil {
		t.Fatal(err)
	}
	wantExit(t, r.bootCheck("sorrow"), exitOK)
	r.startWorker("sorrow")
	wantExit(t, convoy(t, 3*time.Minute, "--nats", r.url, "rollout", "status", id, "--wait"), exitOK)
	wantKinds(t, r.rolloutEvents(id), "rollout.requested", "rollout.started", "rollout.wave.started", "rollout.wave.succeeded",
		"rollout.wave.started", "rollout.wave.succeeded", "rollout.succeeded")
	if b, _ := os.ReadFile(ran); strings.Count(string(b), "reboot\n") != 1 {
		t.Fatalf("the reboot command ran %q, want once", b)
	}
	if head, _ := r.head("torment"); head != c {
		t.Fatalf("torment is on %s, want %s", head, c)
	}
}
