package dashboard_test

import (
	"bytes"
	"context"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/projections/dashboard"
)

// fleet appends facts to the bus exactly as workers do (events.New with
// the worker's source, on the host's fact subjects; requests as the CLI
// appends them) and runs the real projector over them.
type fleet struct {
	t    *testing.T
	c    *bus.Conn
	view *projections.Fleet
}

func newFleet(t *testing.T) *fleet {
	t.Helper()
	_, c := bustest.Start(t)
	p, err := projections.NewProjector(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	view, err := projections.OpenFleet(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{t: t, c: c, view: view}
}

func (f *fleet) fact(host, id string, k events.Kind, fact events.Fact) {
	f.t.Helper()
	e, err := events.New(k, host, "convoy/worker/"+host, fact)
	if err != nil {
		f.t.Fatal(err)
	}
	e.UpgradeID = id
	subj, err := events.HostSubject(host, k)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.c.Append(f.t.Context(), subj, e, nil); err != nil {
		f.t.Fatal(err)
	}
}

// request appends an upgrade request for host and returns its id.
func (f *fleet) request(host string) string {
	f.t.Helper()
	e, err := events.New(events.UpgradeRequested, host, "convoy/cli", events.UpgradeRequest{})
	if err != nil {
		f.t.Fatal(err)
	}
	subj, err := events.RequestSubject(host, events.UpgradeRequested)
	if err != nil {
		f.t.Fatal(err)
	}
	e.UpgradeID = e.ID
	if _, err := f.c.Append(f.t.Context(), subj, e, nil); err != nil {
		f.t.Fatal(err)
	}
	return e.ID
}

func (f *fleet) caughtUp() {
	f.t.Helper()
	bustest.Eventually(f.t, 10*time.Second, "the projector to catch up", func() bool {
		lag, err := f.view.Lag(f.t.Context())
		return err == nil && lag == 0
	})
}

const (
	oldCommit = "3f9c2a71d0e84b5c9a6f1e2d3c4b5a69788796a5"
	newCommit = "b41d9e07c3a25f68e1d0c9b8a7f6e5d4c3b2a190"
	system    = "/nix/store/8xk2m1q9r0a7lz3c5v6b4n2p1w0y9t8s-nixos-system-%s-25.05"
	// xss is in a failed build's output and a reason: the page must
	// show it as text, and the script must never run.
	xss = `<script>document.title="pwned";window.pwned=true</script>`
)

func ptr[T any](v T) *T { return &v }

func sys(host string) string { return strings.Replace(system, "%s", host, 1) }

// started appends what a worker appends when it starts.
func (f *fleet) started(host string, gen int, tags ...string) {
	f.fact(host, "", events.WorkerStarted, events.Fact{Version: "v0.9.0", Commit: oldCommit, Result: sys(host), Generation: gen, Tags: tags})
	f.fact(host, "", events.GoldenPinned, events.Fact{Result: sys(host), Generation: gen})
}

// succeed runs a whole successful upgrade for host.
func (f *fleet) succeed(host string, gen int, reboot bool) string {
	id := f.request(host)
	f.fact(host, id, events.UpgradeStarted, events.Fact{})
	f.fact(host, id, events.HooksSucceeded, events.Fact{DurationMS: 120})
	f.fact(host, id, events.PullSucceeded, events.Fact{OldCommit: oldCommit, NewCommit: newCommit, Commit: newCommit, DurationMS: 830})
	f.fact(host, id, events.BuildSucceeded, events.Fact{Commit: newCommit, Result: sys(host) + "-new", DurationMS: 94_300})
	f.fact(host, id, events.ValidationPassed, events.Fact{DurationMS: 410})
	f.fact(host, id, events.SwitchSucceeded, events.Fact{Commit: newCommit, Result: sys(host) + "-new", Generation: gen + 1, RebootRequired: reboot, DurationMS: 6_200})
	f.fact(host, id, events.HealthPassed, events.Fact{DurationMS: 2_050})
	f.fact(host, id, events.UpgradeSucceeded, events.Fact{Commit: newCommit, Result: sys(host) + "-new", Generation: gen + 1, RebootRequired: reboot})
	return id
}

// failBuild runs an upgrade of host whose build fails with output.
func (f *fleet) failBuild(host, output string) string {
	id := f.request(host)
	f.fact(host, id, events.UpgradeStarted, events.Fact{})
	f.fact(host, id, events.HooksSucceeded, events.Fact{DurationMS: 95})
	f.fact(host, id, events.PullSucceeded, events.Fact{OldCommit: oldCommit, NewCommit: newCommit, Commit: newCommit, DurationMS: 640})
	f.fact(host, id, events.BuildFailed, events.Fact{Commit: newCommit, Command: []string{"nix", "build"}, ExitCode: ptr(1), DurationMS: 12_900, Output: output, Reason: "nix build exited with status 1", Log: "/var/lib/convoy/logs/build.log"})
	f.fact(host, id, events.RollbackSucceeded, events.Fact{Commit: oldCommit, Stage: "build", DurationMS: 300})
	f.fact(host, id, events.UpgradeFailed, events.Fact{Commit: oldCommit, Stage: "build", Reason: "build failed: nix build exited with status 1; rolled back to " + oldCommit[:8]})
	return id
}

func newServer(t *testing.T, f *fleet) *httptest.Server {
	t.Helper()
	d, err := dashboard.New(t.Context(), dashboard.Config{Conn: f.c})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(d)
	// The event streams end with their requests' base context.
	ctx, cancel := context.WithCancel(context.Background())
	srv.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	srv.Start()
	t.Cleanup(func() { cancel(); srv.Close() })
	return srv
}

// tab is a headless chromium tab.
type tab struct {
	t   *testing.T
	ctx context.Context
}

// browser starts headless chromium, or skips the test when there is none
// (it fails instead with CONVOY_REQUIRE_BROWSER=1).
func browser(t *testing.T) tab {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "chromium-headless-shell", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		msg := "no chromium on PATH (Debian: apt-get install chromium), so the dashboard's browser test did not run"
		if os.Getenv("CONVOY_REQUIRE_BROWSER") == "1" {
			t.Fatal(msg + "; CONVOY_REQUIRE_BROWSER=1 requires it")
		}
		t.Skip(msg)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		// The only page it opens is the test's own, and a container
		// often has no user namespaces for chromium's sandbox.
		chromedp.NoSandbox,
		chromedp.WindowSize(1400, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	// The first run starts the browser, for the life of ctx: no timeout
	// here, one per step below.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return tab{t: t, ctx: ctx}
}

// stepTimeout bounds one step of the browser test: a wait for something
// that never shows fails instead of hanging.
const stepTimeout = 30 * time.Second

// do runs steps in the tab and fails the test on an error.
func (b tab) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatal(err)
	}
}

// run runs one action in b and returns its value.
func run[T any](b tab, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

func TestDashboardInABrowser(t *testing.T) {
	f := newFleet(t)
	hosts := map[string][]string{"web-1": {"web", "canary"}, "web-2": {"web"}, "db-1": {"db"}, "ci-1": nil}
	for h, tags := range hosts {
		f.started(h, 41, tags...)
	}
	f.succeed("web-1", 41, false)
	f.succeed("web-2", 41, true)
	failed := f.failBuild("db-1", "building '/nix/store/1c9w…-nixos-system-db-1.drv'...\nerror: syntax error, unexpected '<'\n       at /etc/nixos/hosts/db-1.nix:12:5:\n           11|   services.nginx.virtualHosts.\"db\".extraConfig = ''\n           12|     "+xss+"\n")
	ci := f.request("ci-1")
	f.fact("ci-1", ci, events.UpgradeStarted, events.Fact{})
	f.fact("ci-1", ci, events.PullSucceeded, events.Fact{OldCommit: oldCommit, NewCommit: newCommit, Commit: newCommit, DurationMS: 700})
	f.caughtUp()
	srv := newServer(t, f)
	b := browser(t)

	b.do(chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(`#live.on`))
	if title := run(b, chromedp.Title()); title != "Fleet · convoy" {
		t.Fatalf("title %q", title)
	}
	if reason := run(b, chromedp.Text(`tr[data-host="db-1"] .reason-text`)); !strings.Contains(reason, "build failed: nix build exited with status 1") {
		t.Fatalf("the failed host's reason is %q", reason)
	}
	// A reload would lose this mark.
	run(b, chromedp.Evaluate[bool](`window.notReloaded = true`))

	// An upgrade started now shows on the open page, without a reload.
	live := f.request("web-2")
	f.fact("web-2", live, events.UpgradeStarted, events.Fact{})
	f.fact("web-2", live, events.HooksSucceeded, events.Fact{DurationMS: 80})
	f.fact("web-2", live, events.PullSucceeded, events.Fact{OldCommit: newCommit, NewCommit: newCommit, Commit: newCommit, DurationMS: 500})
	b.do(chromedp.WaitVisible(`tr[data-host="web-2"][data-state="upgrading"]`))
	if !run(b, chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Fatal("the page was reloaded to show the upgrade")
	}
	stage := run(b, chromedp.Text(`tr[data-host="web-2"] td:nth-child(4)`))
	count := run(b, chromedp.Text(`[data-count="upgrading"]`))
	if stage != "pull" || count != "2" {
		t.Fatalf("web-2's stage is %q and %s host(s) count as upgrading; want pull and 2", stage, count)
	}
	savePNG(t, "dashboard.png", run(b, chromedp.FullScreenshot(100)))

	// It fails with a reason that is markup: shown as text, never run.
	f.fact("web-2", live, events.BuildFailed, events.Fact{ExitCode: ptr(1), Output: xss, Reason: xss})
	f.fact("web-2", live, events.UpgradeFailed, events.Fact{Stage: "build", Reason: "build failed: " + xss})
	b.do(chromedp.WaitVisible(`tr[data-host="web-2"][data-state="failed"]`))
	if reason := run(b, chromedp.Text(`tr[data-host="web-2"] .reason-text`)); reason != "build failed: "+xss {
		t.Fatalf("web-2's reason shows as %q, want the text %q", reason, "build failed: "+xss)
	}
	if run(b, chromedp.Evaluate[bool](`window.pwned === true || document.querySelector("main script") !== null`)) {
		t.Fatal("a script from the bus is in the fleet page")
	}
	if title := run(b, chromedp.Title()); title != "Fleet · convoy" {
		t.Fatalf("a script from the bus ran: the title is %q", title)
	}

	// The failed host's page shows the build's output as text.
	b.do(chromedp.Navigate(srv.URL+"/hosts/db-1"), chromedp.WaitVisible(`details.output pre`))
	output := run(b, chromedp.Text(`details.output pre`))
	heading := run(b, chromedp.Text(`h1`))
	if !strings.Contains(output, xss) || !strings.HasPrefix(heading, "db-1") {
		t.Fatalf("db-1's page: heading %q, output %q", heading, output)
	}
	if run(b, chromedp.Evaluate[bool](`window.pwned === true || document.querySelector("main script") !== null`)) {
		t.Fatal("a script from the bus is in the host page")
	}
	if title := run(b, chromedp.Title()); title != "db-1 · convoy" {
		t.Fatalf("a script from the bus ran on the host page: the title is %q", title)
	}

	b.do(chromedp.Navigate(srv.URL+"/upgrades/"+failed), chromedp.WaitVisible(`section.upgrade`))
	if h := run(b, chromedp.Text(`section.upgrade header`)); !strings.Contains(h, "db-1") || !strings.Contains(h, "failed") {
		t.Fatalf("the upgrade page shows %q", h)
	}
}

// savePNG checks that b is a non-empty PNG and writes it under the
// test's temp dir, and into CONVOY_SCREENSHOT_DIR when that is set (how
// docs/dashboard.png is made).
func savePNG(t *testing.T, name string, b []byte) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if r := img.Bounds(); r.Dx() < 100 || r.Dy() < 100 {
		t.Fatalf("screenshot is %v", r)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("CONVOY_SCREENSHOT_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// get returns the status and body of a GET.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b)
}

func TestDashboardPages(t *testing.T) {
	f := newFleet(t)
	f.started("web-1", 7)
	ok := f.succeed("web-1", 7, false)
	f.started("db-1", 3)
	bad := f.failBuild("db-1", xss)
	f.caughtUp()
	srv := newServer(t, f)
	for _, tc := range []struct {
		path string
		code int
		want []string
	}{
		{"/", 200, []string{`id="host-web-1"`, `id="host-db-1"`, "build failed: nix build exited with status 1"}},
		{"/hosts/db-1", 200, []string{"&lt;script&gt;document.title=", "12.9s", "generation 3", "/var/lib/convoy/logs/build.log"}},
		{"/hosts/web-1", 200, []string{"1m34s", "generation 8"}},
		{"/upgrades/" + ok, 200, []string{"web-1", "succeeded"}},
		{"/upgrades/" + bad, 200, []string{"db-1", "failed", "&lt;script&gt;"}},
		{"/hosts/nobody", 404, []string{"No such host", `no host &#34;nobody&#34;`}},
		{"/hosts/Not_A_Host", 404, []string{"No such host"}},
		{"/upgrades/" + events.NewID(), 404, []string{"No such upgrade", "No host has a request or fact"}},
		{"/upgrades/nope", 404, []string{"not an upgrade id"}},
		{"/rollouts/" + events.NewID(), 404, []string{"No such rollout"}},
		{"/nowhere", 404, []string{"No such page"}},
		{"/static/live.js", 200, []string{"EventSource"}},
	} {
		code, body := get(t, srv.URL+tc.path)
		if code != tc.code {
			t.Errorf("%s: %d, want %d\n%s", tc.path, code, tc.code, body)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: no %q in\n%s", tc.path, w, body)
			}
		}
		if strings.Contains(body, "<script>document") {
			t.Errorf("%s: the output from the bus is in the page unescaped", tc.path)
		}
	}
}
