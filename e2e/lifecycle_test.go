package e2e

// The bus and the processes around it: restarts, a worker that starts
// before the bus, a bus convoy has not provisioned, waiting with a timeout.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// The server stops (cleanly, or killed) and starts again on the same data
// dir: history and status are as they were, and the worker, which kept
// running, serves the next upgrade without being restarted.
func TestServerRestartKeepsHistoryAndStatus(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, []string{"sorrow"}, sandbox.Options{ValidationChecks: []string{"true"}})
			w := r.startWorker("sorrow")
			c1 := r.commit(configV1, "enable tailscale")
			sum := r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
			r.waitStatus("sorrow", "upgrade.succeeded on "+c1, func(s hostStatus) bool {
				return s.LastUpgrade == sum.Upgrade && s.LastResult == "upgrade.succeeded" && s.Commit == c1
			})
			statusBefore := r.settledStatus()
			historyBefore := r.history("sorrow")

			code := r.stopServer(sig)
			if sig == syscall.SIGTERM && code != 0 {
				t.Fatalf("server exited with %d after SIGTERM, want 0", code)
			}
			res := r.convoy("status")
			wantExit(t, res, exitUnreachable)
			if w.exited() {
				t.Fatalf("the worker exited (%d) when the bus went away", w.code)
			}

			r.startServer()
			if got := r.history("sorrow"); !sameEvents(got, historyBefore) {
				t.Fatalf("history changed across the restart:\nbefore %v\nafter  %v", kinds(historyBefore), kinds(got))
			}
			if got := r.settledStatus(); got != statusBefore {
				t.Fatalf("status changed across the restart:\nbefore %s\nafter  %s", statusBefore, got)
			}

			// The same worker process reconnects by itself.
			c2 := r.commit(configV2, "v2")
			sum = r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
			wantKinds(t, r.facts("sorrow", sum.Upgrade), "upgrade.started", "pull.succeeded", "build.succeeded", "validation.passed", "switch.succeeded", "upgrade.succeeded")
			if head, _ := r.head("sorrow"); head != c2 {
				t.Fatalf("HEAD %s, want %s", head, c2)
			}
			r.waitStatus("sorrow", "idle on "+c2, func(s hostStatus) bool { return s.State == "idle" && s.Commit == c2 })
			if n := strings.Count(w.stderr.String(), "worker started"); n != 1 || w.exited() {
				t.Fatalf("the worker restarted (started %d times, exited %v)", n, w.exited())
			}
		})
	}
}

// sameEvents reports whether a and b list the same stored events.
func sameEvents(a, b []histLine) bool {
	return slices.EqualFunc(a, b, func(x, y histLine) bool {
		return x.Seq == y.Seq && x.Subject == y.Subject && x.Event != nil && y.Event != nil && x.Event.ID == y.Event.ID
	})
}

// A worker started before the bus (boot order) says it retries, and
// serves once the server is up.
func TestWorkerStartedBeforeServer(t *testing.T) {
	t.Parallel()
	r := newRigNoServer(t, []string{"sorrow"}, sandbox.Options{})
	w := r.spawnWorker("sorrow")
	// Let the retries space out, as at boot, before the server comes.
	eventually(t, 30*time.Second, "the worker to log that it retries", func() bool {
		return strings.Count(w.stderr.String(), "bus not reachable") >= 4 || w.exited()
	})
	if !strings.Contains(w.stderr.String(), "retrying in") {
		t.Fatalf("the worker does not say it retries:\n%s", w.stderr.String())
	}
	if w.exited() {
		t.Fatalf("the worker gave up with exit %d instead of waiting for the bus:\n%s", w.code, w.stderr.String())
	}
	r.startServer()
	eventually(t, 30*time.Second, "the worker to start", func() bool {
		return strings.Contains(w.stderr.String(), "worker started") || w.exited()
	})
	if w.exited() {
		// The server accepts connections ~50ms before it has created the
		// stream and buckets; a worker whose retry lands in that window
		// exits. TestWorkerOnUnprovisionedBus shows it deterministically.
		mustHold(t, !strings.Contains(w.stderr.String(), "provisioned the bus"),
			"a worker that connects before `convoy server` has provisioned the stream exits instead of waiting", lastLine(w.stderr.String()))
		t.Fatalf("the worker exited with %d:\n%s", w.code, w.stderr.String())
	}
	c := r.commit(configV1, "enable tailscale")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
}

// A bus that is up but not (yet) provisioned by convoy: an external NATS
// server, as the design allows, or `convoy server` in the moment between
// accepting connections and creating the stream. The worker must wait or
// provision (Provision is idempotent and "safe to call from every process
// at start"), not exit.
func TestWorkerOnUnprovisionedBus(t *testing.T) {
	t.Parallel()
	r := newRigNoServer(t, []string{"sorrow"}, sandbox.Options{})
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: filepath.Join(t.TempDir(), "js"), NoSigs: true, NoLog: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	h := r.fleet.Hosts["sorrow"]
	args := []string{"worker", "--nats", ns.ClientURL(), "--config", h.Config}
	if isRoot() {
		args = append(args, "--allow-root")
	}
	w := startProc(t, "worker sorrow", args...)
	// Give it the time a retry or a provisioning takes.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && !w.exited() && !strings.Contains(w.stderr.String(), "worker started") {
		time.Sleep(25 * time.Millisecond)
	}
	if strings.Contains(w.stderr.String(), "bus not reachable") {
		t.Fatalf("the worker did not connect to %s:\n%s", ns.ClientURL(), w.stderr.String())
	}
	mustHold(t, !w.exited(), "the worker exits when the bus has no CONVOY stream or buckets yet",
		"exit ", w.code, ": ", strings.TrimSpace(w.stderr.String()))
}

// The global --nats (convoy --nats URL worker ...) overrides the config
// file's nats, as the command-level flag does and as the usage says:
// "Global: --nats URL".
func TestWorkerGlobalNatsFlag(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	// Point the config at a port where nothing listens.
	h := r.fleet.Hosts["sorrow"]
	dead := "nats://127.0.0.1:" + strconv.Itoa(freePort(t))
	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.Config, []byte(strings.Replace(string(b), r.url, dead, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"command flag", []string{"worker", "--nats", r.url, "--config", h.Config}},
		{"global flag", []string{"--nats", r.url, "worker", "--config", h.Config}},
	} {
		args := tc.args
		if isRoot() {
			args = append(args, "--allow-root")
		}
		w := startProc(t, "worker sorrow ("+tc.name+")", args...)
		eventually(t, 20*time.Second, "worker ("+tc.name+") to start or retry", func() bool {
			s := w.stderr.String()
			return strings.Contains(s, "worker started") || strings.Contains(s, "bus not reachable") || w.exited()
		})
		started := strings.Contains(w.stderr.String(), "worker started")
		if tc.name == "global flag" {
			mustHold(t, started, "`convoy --nats URL worker` ignores the global --nats when the config sets nats", w.stderr.String())
		}
		if !started {
			t.Fatalf("%s: the worker did not use --nats %s:\n%s", tc.name, r.url, w.stderr.String())
		}
		if code := w.stop(syscall.SIGTERM, 15*time.Second); code != 0 {
			t.Fatalf("%s: worker exited %d", tc.name, code)
		}
	}
}

// `upgrade --wait --timeout` gives up with exit 3 while no worker serves
// the host; the request stays queued, and waiting again with its id picks
// it up once the worker runs, without a second request.
func TestUpgradeWaitTimesOut(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	c := r.commit(configV1, "enable tailscale")
	start := time.Now()
	res := r.convoy("upgrade", "sorrow", "--wait", "--timeout", "1s")
	wantExit(t, res, exitTimeout)
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("--timeout 1s took %s", took)
	}
	if !strings.Contains(res.stderr, "timed out") {
		t.Fatalf("no word of the timeout: %s", res)
	}
	id := upgradeIDIn(t, res)
	r.waitStatus("sorrow", "queued", func(s hostStatus) bool { return s.State == "queued" && s.Requested == id })

	r.startWorker("sorrow")
	sum := r.upgrade(exitOK, "sorrow", "--id", id, "--wait", "--timeout", "60s")
	if sum.Upgrade != id || sum.result("sorrow") != "upgrade.succeeded" {
		t.Fatalf("waiting again on %s: %+v", id, sum)
	}
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
	requested, started := 0, 0
	for _, l := range r.history("sorrow") {
		if l.upgradeID() == id {
			switch l.kind() {
			case "upgrade.requested":
				requested++
			case "upgrade.started":
				started++
			}
		}
	}
	if requested != 1 || started != 1 {
		t.Fatalf("upgrade %s: %d requests and %d starts, want 1 and 1", id, requested, started)
	}
}

// A second worker started for a host that has one (a copied config, a
// re-imaged machine with the old one still up) is detected and stops with
// a clear error; the running worker goes on.
func TestSecondWorkerForHostIsRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	first := r.startWorker("sorrow")
	h := r.fleet.Hosts["sorrow"]
	// Its own state dir, or the state dir lock would stop it first.
	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(t.TempDir(), "convoy.toml")
	if err := os.WriteFile(config, []byte(strings.Replace(string(b), h.StateDir, h.StateDir+"-copy", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"worker", "--config", config}
	if isRoot() {
		args = append(args, "--allow-root")
	}
	second := startProc(t, "second worker sorrow", args...)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && !second.exited() {
		time.Sleep(25 * time.Millisecond)
	}
	mustHold(t, second.exited(), "a second worker for a host starts unhindered; the first one is stopped at its next fact",
		lastLine(second.stderr.String()))
	if second.code == 0 || !strings.Contains(second.stderr.String(), "another worker") {
		t.Fatalf("the second worker exited %d without a clear error:\n%s", second.code, second.stderr.String())
	}
	if first.exited() {
		t.Fatalf("the first worker exited (%d):\n%s", first.code, first.stderr.String())
	}
	c := r.commit(configV1, "v1")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "20s")
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
}

// Tags in a worker's config put its host in a group that status shows
// and filters by, and that upgrade selects.
func TestTagsSelectHosts(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow", "torment"}, sandbox.Options{Tags: map[string][]string{"sorrow": {"canary", "web"}, "torment": {"web"}}})
	r.startWorker("sorrow")
	r.startWorker("torment")
	r.waitStatus("torment", "tags known", func(s hostStatus) bool { return len(s.Tags) == 1 })
	res := r.convoy("status", "--tag", "canary", "--json")
	wantExit(t, res, exitOK)
	var sts []hostStatus
	if err := json.Unmarshal([]byte(res.stdout), &sts); err != nil || len(sts) != 1 || sts[0].Host != "sorrow" || strings.Join(sts[0].Tags, ",") != "canary,web" {
		t.Fatalf("status --tag canary: %v %s", err, res)
	}
	if res := r.convoy("status", "--tag", "db"); !strings.Contains(res.stdout, `no host has tag "db"`) {
		t.Fatalf("status --tag db: %s", res)
	}
	c := r.commit(configV1, "v1")
	sum := r.upgrade(exitOK, "--tag", "canary", "--wait", "--timeout", "60s")
	if len(sum.Hosts) != 1 || sum.result("sorrow") != "upgrade.succeeded" {
		t.Fatalf("upgrade --tag canary: %+v", sum)
	}
	if head, _ := r.head("torment"); head == c {
		t.Fatal("torment, not tagged canary, was upgraded")
	}
	wantExit(t, r.convoy("upgrade", "--tag", "db"), exitUsage)
	wantExit(t, r.convoy("upgrade", "--tag", "Bad_Tag"), exitUsage)
	wantExit(t, r.convoy("upgrade", "--tag", "web", "--all"), exitUsage)
}
