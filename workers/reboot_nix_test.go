package workers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers"
	"github.com/convoy-fleet/convoy/workers/sandbox"
	"github.com/convoy-fleet/convoy/workers/sandbox/sandboxtest"
)

// clock is a fake clock the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

// local returns 2026-12-<day> hh:mm in local time; the 5th is a Saturday.
func local(t *testing.T, day int, hhmm string) time.Time {
	t.Helper()
	tm, err := time.ParseInLocation("2006-01-02 15:04", fmt.Sprintf("2026-12-%02d %s", day, hhmm), time.Local)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// factsOf returns the data of host's facts of kind k, oldest first.
func factsOf(t *testing.T, c *bus.Conn, host string, k events.Kind) []events.Fact {
	t.Helper()
	var fs []events.Fact
	err := c.Replay(context.Background(), []string{events.HostFacts(host)}, bus.From{}, func(s bus.Stored) error {
		if s.Event.Kind() == k {
			f, err := s.Event.Fact()
			if err != nil {
				return err
			}
			fs = append(fs, f)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// newestFact is the newest fact of kind k.
func newestFact(t *testing.T, c *bus.Conn, host string, k events.Kind) events.Fact {
	t.Helper()
	fs := factsOf(t, c, host, k)
	if len(fs) == 0 {
		t.Fatalf("no %s", k)
	}
	return fs[len(fs)-1]
}

// pendingReboot reads the pending reboot's result from state.json.
func pendingReboot(t *testing.T, h *sandbox.Host) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.StateDir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Pending *struct {
			Result string `json:"result"`
		} `json:"pending_reboot"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Pending == nil {
		return ""
	}
	return s.Pending.Result
}

func TestNixRebootOnlyInsideTheWindow(t *testing.T) {
	sandboxtest.NeedNix(t)
	t.Parallel()
	r := newRig(t, sandbox.Options{Nix: true}, "sorrow")
	h := r.fleet.Hosts["sorrow"]
	dir := t.TempDir()
	booted := filepath.Join(dir, "booted-system") // a link, as /run/booted-system is
	ran := filepath.Join(dir, "reboots")
	script := filepath.Join(dir, "reboot")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho reboot >> "+ran+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	reboots := func() int {
		b, _ := os.ReadFile(ran)
		return strings.Count(string(b), "reboot\n")
	}
	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(b), "[system]\n", fmt.Sprintf("[system]\nbooted_system = %q\n", booted), 1) +
		fmt.Sprintf("\n[reboot]\nallow = true\nwindow = \"Sat 02:00-05:00\"\ncommand = [%q]\n", script)
	if err := os.WriteFile(h.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: local(t, 4, "12:00")} // Friday noon: outside
	start := func() {
		r.startWith(t, "sorrow", func(o *workers.Options) { o.Now, o.RebootCheck = clk.Now, 20*time.Millisecond })
	}
	upgrade := func(config string) events.Fact {
		t.Helper()
		if _, err := r.fleet.Commit(config, "change"); err != nil {
			t.Fatal(err)
		}
		if got := r.upgrade(t, "sorrow", ""); got[len(got)-1] != events.UpgradeSucceeded {
			t.Fatalf("upgrade: %v", got)
		}
		sw, up := newestFact(t, r.conn, "sorrow", events.SwitchSucceeded), newestFact(t, r.conn, "sorrow", events.UpgradeSucceeded)
		if sw.RebootRequired != up.RebootRequired {
			t.Fatalf("switch.succeeded says reboot_required %v, upgrade.succeeded %v", sw.RebootRequired, up.RebootRequired)
		}
		return up
	}
	// settle gives the worker many window checks.
	settle := func() { time.Sleep(300 * time.Millisecond) }

	start()
	// No booted system yet: nothing to compare with, no reboot.
	if f := upgrade("{ services.openssh.enable = true; kernel = \"6.1\"; }\n"); f.RebootRequired || f.RebootPending {
		t.Fatal("reboot required without a booted system")
	}
	first := sandboxtest.RunningSystem(t, h)
	if err := os.Symlink(first, booted); err != nil {
		t.Fatal(err)
	}
	// Same kernel, another system: no reboot.
	if f := upgrade("{ services.openssh.enable = true; kernel = \"6.1\"; services.tailscale.enable = true; }\n"); f.RebootRequired {
		t.Fatal("reboot required for a system with the booted kernel")
	}

	// A new kernel outside the window: pending, not rebooted.
	f := upgrade("{ services.openssh.enable = true; kernel = \"6.6\"; }\n")
	second := sandboxtest.RunningSystem(t, h)
	if !f.RebootRequired || !f.RebootPending || f.Result != second {
		t.Fatalf("upgrade.succeeded after a kernel change (reboots allowed): %+v", f)
	}
	settle()
	if n := reboots(); n != 0 || len(factsOf(t, r.conn, "sorrow", events.RebootStarted)) != 0 {
		t.Fatalf("rebooted %d times outside the window", n)
	}
	if p := pendingReboot(t, h); p != second {
		t.Fatalf("pending reboot %q, want %s", p, second)
	}

	// The pending reboot survives a restart; the window opens.
	r.stopAll(t)
	started := len(factsOf(t, r.conn, "sorrow", events.WorkerStarted))
	start()
	bustest.Eventually(t, 10*time.Second, "worker.started", func() bool {
		return len(factsOf(t, r.conn, "sorrow", events.WorkerStarted)) > started
	})
	if ws := newestFact(t, r.conn, "sorrow", events.WorkerStarted); !ws.RebootRequired || ws.Result != second {
		t.Fatalf("worker.started on a system that needs a reboot: %+v", ws)
	}
	settle()
	if n := reboots(); n != 0 {
		t.Fatalf("rebooted %d times outside the window after a restart", n)
	}
	clk.set(local(t, 5, "03:00"))
	bustest.Eventually(t, 10*time.Second, "the reboot command", func() bool { return reboots() == 1 })
	rs := factsOf(t, r.conn, "sorrow", events.RebootStarted)
	if len(rs) != 1 || rs[0].Result != second || !strings.Contains(rs[0].Reason, "kernel") || !strings.Contains(rs[0].Reason, "Sat 02:00-05:00") {
		t.Fatalf("reboot.started: %+v", rs)
	}
	settle()
	if n := reboots(); n != 1 {
		t.Fatalf("the reboot command ran %d times in one window, want 1", n)
	}

	// The boot check after the reboot ends it.
	r.stopAll(t)
	if err := os.Remove(booted); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(second, booted); err != nil {
		t.Fatal(err)
	}
	wcfg, err := workers.LoadConfig(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	if br, err := workers.BootCheck(t.Context(), workers.Options{Config: wcfg, Conn: r.conn, Env: r.env("sorrow")}); err != nil || !br.Validated || br.Result != second {
		t.Fatalf("boot check: %+v %v", br, err)
	}
	if p := pendingReboot(t, h); p != "" {
		t.Fatalf("pending reboot %q after the boot check", p)
	}

	// Inside the window, a new kernel reboots right after its upgrade.
	start()
	clk.set(local(t, 5, "03:30"))
	if f := upgrade("{ services.openssh.enable = true; kernel = \"6.7\"; }\n"); !f.RebootRequired {
		t.Fatal("no reboot required for kernel 6.7")
	}
	bustest.Eventually(t, 10*time.Second, "the second reboot", func() bool { return reboots() == 2 })

	// A newer upgrade back to the booted kernel clears a pending reboot.
	clk.set(local(t, 6, "12:00")) // Sunday
	f = upgrade("{ services.openssh.enable = true; kernel = \"6.8\"; }\n")
	if !f.RebootRequired {
		t.Fatal("no reboot required for kernel 6.8")
	}
	// state.json is saved just after the terminal fact is stored.
	bustest.Eventually(t, 10*time.Second, "a pending reboot for kernel 6.8", func() bool { return pendingReboot(t, h) == f.Result })
	if f := upgrade("{ services.openssh.enable = true; kernel = \"6.6\"; system.version = 3; }\n"); f.RebootRequired {
		t.Fatal("reboot required for the booted kernel")
	}
	bustest.Eventually(t, 10*time.Second, "no pending reboot after an upgrade that needs none", func() bool { return pendingReboot(t, h) == "" })
	clk.set(local(t, 12, "03:00")) // next Saturday
	settle()
	if n := reboots(); n != 2 {
		t.Fatalf("the reboot command ran %d times, want 2", n)
	}
}
