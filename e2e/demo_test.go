package e2e

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The README's first command: convoy demo runs the two upgrades, prints
// where its dashboard is, and exits 0.
func TestDemo(t *testing.T) {
	t.Parallel()
	res := convoy(t, 3*time.Minute, "demo", "--no-nix")
	wantExit(t, res, exitOK)
	for _, want := range []string{"the dashboard is on http://127.0.0.1:", "upgrade.succeeded", "upgrade.failed", "back at the last good commit", "convoy demo --http 127.0.0.1:9426 --stay"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, res.stdout)
		}
	}
}

// convoy demo --stay keeps the dashboard and /metrics up after the demo:
// a user sees the two hosts and the demo's upgrades there, until Ctrl-C.
func TestDemoStaysForTheDashboard(t *testing.T) {
	t.Parallel()
	web := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	p := startProc(t, "demo", "demo", "--no-nix", "--http", web, "--stay")
	eventually(t, 3*time.Minute, "the demo to finish and stay", func() bool {
		return strings.Contains(p.stdout.String(), "The demo is done; the dashboard stays on http://"+web+"/") || p.exited()
	})
	if p.exited() {
		t.Fatalf("the demo exited with %d:\n%s\n%s", p.code, p.stdout.String(), p.stderr.String())
	}
	get := func(path string) string {
		t.Helper()
		code, body := webGet(t, web, path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", path, code, body)
		}
		return body
	}
	page := get("/")
	for _, h := range []string{"sorrow", "torment"} {
		if !strings.Contains(page, `id="host-`+h+`"`) {
			t.Errorf("the dashboard has no row of %s:\n%s", h, page)
		}
	}
	// The demo's upgrades: one succeeds on both hosts, one fails on both.
	metrics := get("/metrics")
	for _, want := range []string{`convoy_upgrades_total{result="succeeded"} 2`, `convoy_upgrades_total{result="failed"} 2`, `convoy_host_info{commit=`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(metrics, "convoy_"))
		}
	}
	if code := p.stop(syscall.SIGINT, 30*time.Second); code != exitOK {
		t.Errorf("Ctrl-C: exit %d, want 0:\n%s", code, p.stderr.String())
	}
}
