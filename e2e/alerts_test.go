package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// alertHook is a webhook sink that refuses (503) while refusing is set,
// and counts what it accepted by Idempotency-Key.
type alertHook struct {
	srv *httptest.Server

	mu       sync.Mutex
	refusing bool
	tried    map[string]int
	accepted map[string]int
	types    map[string]string // id -> CloudEvent type
}

func newAlertHook(t *testing.T) *alertHook {
	h := &alertHook{refusing: true, tried: map[string]int{}, accepted: map[string]int{}, types: map[string]string{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e struct {
			ID, Type, Subject string
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &e)
		id := r.Header.Get("Idempotency-Key")
		h.mu.Lock()
		defer h.mu.Unlock()
		h.tried[id]++
		if h.refusing || id != e.ID {
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		h.accepted[id]++
		h.types[id] = e.Type + " " + e.Subject
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *alertHook) refuse(v bool) { h.mu.Lock(); h.refusing = v; h.mu.Unlock() }

func (h *alertHook) triedN(id string) int { h.mu.Lock(); defer h.mu.Unlock(); return h.tried[id] }

func (h *alertHook) acceptedN(id string) int { h.mu.Lock(); defer h.mu.Unlock(); return h.accepted[id] }

// acceptedOf returns the ids accepted with a CloudEvent type and subject.
func (h *alertHook) acceptedOf(typeSubject string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for id, ts := range h.types {
		if ts == typeSubject {
			ids = append(ids, id)
		}
	}
	return ids
}

// startAlerts starts `convoy alerts` with an [alerts] config whose only
// sink is the hook, and waits until it reads the stream.
func (r *rig) startAlerts(hook *alertHook, extra string) *proc {
	r.t.Helper()
	cfg := filepath.Join(r.dir, "alerts.toml")
	if _, err := os.Stat(cfg); err != nil {
		content := "[alerts]\n" + extra + `
[[alerts.sink]]
type = "webhook"
url = "` + hook.srv.URL + `"
timeout = "2s"
retry_for = "10m"
`
		if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
			r.t.Fatal(err)
		}
	}
	p := startProc(r.t, "alerts", "--nats", r.url, "alerts", "--config", cfg)
	eventually(r.t, 30*time.Second, "convoy alerts to run", func() bool {
		return strings.Contains(p.stderr.String(), "convoy alerts running") || p.exited()
	})
	if p.exited() {
		r.t.Fatalf("convoy alerts exited with %d:\n%s", p.code, p.stderr.String())
	}
	return p
}

// eventID returns the id of host's newest fact of kind.
func (r *rig) eventID(host, kind string) string {
	r.t.Helper()
	id := ""
	for _, l := range r.history(host) {
		if l.kind() == kind {
			id = l.Event.ID
		}
	}
	if id == "" {
		r.t.Fatalf("no %s of %s in the history", kind, host)
	}
	return id
}

// A failing upgrade is alerted exactly once though convoy alerts is
// killed (SIGKILL) while the webhook still refuses it, and restarted; a
// host whose worker stops is alerted offline once.
func TestAlertsOnceAcrossKillAndOffline(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	hook := newAlertHook(t)
	alerts := r.startAlerts(hook, "offline_after = \"1s\"\n")
	r.startWorker("sorrow")
	r.commit(configBroken, "break the build")
	r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "60s")
	failed := r.eventID("sorrow", "upgrade.failed")
	eventually(t, 30*time.Second, "the webhook tried "+failed, func() bool { return hook.triedN(failed) > 0 })
	if code := alerts.stop(syscall.SIGKILL, time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("convoy alerts exited %d, want killed", code)
	}
	if n := hook.acceptedN(failed); n != 0 {
		t.Fatalf("accepted %d times before the kill", n)
	}
	hook.refuse(false)
	r.startAlerts(hook, "")
	eventually(t, 60*time.Second, "the restarted convoy alerts to deliver "+failed, func() bool { return hook.acceptedN(failed) > 0 })

	// The worker stops: one offline alert.
	r.stopWorker("sorrow")
	eventually(t, 60*time.Second, "sorrow alerted offline", func() bool { return len(hook.acceptedOf("convoy.worker.offline sorrow")) > 0 })
	// Back, and failing again: the episode ended, and the alert of this
	// second failure, after many rounds of the offline check, shows that
	// neither the first failure nor the offline episode was sent again.
	r.startWorker("sorrow")
	r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "60s")
	again := r.eventID("sorrow", "upgrade.failed")
	eventually(t, 60*time.Second, "the second failure delivered", func() bool { return hook.acceptedN(again) > 0 })
	if n := hook.acceptedN(failed); n != 1 {
		t.Errorf("the first upgrade.failed was accepted %d times", n)
	}
	if ids := hook.acceptedOf("convoy.worker.offline sorrow"); len(ids) != 1 || hook.acceptedN(ids[0]) != 1 {
		t.Errorf("offline alerts: %q", ids)
	}
}

// A golden fallback (two failed boots on real Nix) is alerted once per
// fact, though convoy alerts is killed while the webhook refuses and then
// restarted.
func TestAlertsGoldenFallbackOnceAcrossKill(t *testing.T) {
	needNix(t)
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{Nix: true})
	h := r.fleet.Hosts["sorrow"]
	hook := newAlertHook(t)
	alerts := r.startAlerts(hook, "offline_after = \"1h\"\n")
	r.startWorker("sorrow")
	r.commit(nixV1, "v1")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "90s")
	r.stopWorker("sorrow")
	wantExit(t, r.bootCheck("sorrow"), exitOK) // pins v1 as golden
	r.startWorker("sorrow")
	r.commit(nixV2, "v2")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "90s")
	r.stopWorker("sorrow")
	if err := h.FailService("sshd.service"); err != nil {
		t.Fatal(err)
	}
	wantExit(t, r.bootCheck("sorrow"), exitFailed)
	wantExit(t, r.bootCheck("sorrow"), exitFailed) // falls back to golden
	restored := r.eventID("sorrow", "golden.restored")
	var bootFailed []string
	for _, l := range r.history("sorrow", "--type", "boot") {
		if l.kind() == "boot.failed" {
			bootFailed = append(bootFailed, l.Event.ID)
		}
	}
	if len(bootFailed) != 2 {
		t.Fatalf("boot.failed facts: %q", bootFailed)
	}
	// The first alert is being refused; golden.restored waits behind it.
	eventually(t, 30*time.Second, "the webhook tried "+bootFailed[0], func() bool { return hook.triedN(bootFailed[0]) > 0 })
	alerts.stop(syscall.SIGKILL, time.Second)
	hook.refuse(false)
	r.startAlerts(hook, "")
	eventually(t, 90*time.Second, "golden.restored delivered", func() bool { return hook.acceptedN(restored) > 0 })
	// A later fact's alert shows nothing before it is sent again.
	h.FailService("")
	r.startWorker("sorrow")
	r.commit("{\n  this is a syntax error that will break the build;\n  services.openssh.enable = true;\n}\n", "break the build")
	r.upgrade(exitFailed, "sorrow", "--wait", "--timeout", "90s")
	failed := r.eventID("sorrow", "upgrade.failed")
	eventually(t, 60*time.Second, "the later failure delivered", func() bool { return hook.acceptedN(failed) > 0 })
	for _, id := range append(bootFailed, restored, failed) {
		if n := hook.acceptedN(id); n != 1 {
			t.Errorf("alert %s accepted %d times", id, n)
		}
	}
}
