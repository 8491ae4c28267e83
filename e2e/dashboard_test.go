package e2e

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// `convoy server --http` serves the dashboard with each host's status
// after real upgrades by real workers: one succeeds, one fails the build
// and rolls back; the host and upgrade pages tell them apart.
func TestServerServesTheDashboard(t *testing.T) {
	t.Parallel()
	hosts := []string{"sorrow", "torment"}
	r := baseRig(t)
	web := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	r.serverArgs = []string{"--http", web}
	r.startServerAnyPort()
	r.makeFleet(hosts, sandbox.Options{ValidationChecks: []string{"true"}})
	if out := r.server.stdout.String(); !strings.Contains(out, "dashboard on http://"+web+"/") {
		t.Fatalf("the server does not say where the dashboard is:\n%s", out)
	}
	for _, h := range hosts {
		r.startWorker(h)
	}
	good := r.commit(configV1, "v1")
	r.upgrade(exitOK, "--all", "--wait", "--timeout", "60s")
	r.commit(configBroken, "broken")
	res := r.upgrade(exitFailed, "torment", "--wait", "--timeout", "60s")
	r.waitStatus("torment", "failed", func(s hostStatus) bool { return s.State == "failed" })
	r.waitStatus("sorrow", "idle", func(s hostStatus) bool { return s.State == "idle" })

	get := func(path string) (int, string) { t.Helper(); return webGet(t, web, path) }
	row := func(page, host string) string {
		m := regexp.MustCompile(`(?s)<tr id="host-` + host + `".*?</tr>`).FindString(page)
		if m == "" {
			t.Fatalf("no row of %s on the fleet page:\n%s", host, page)
		}
		return m
	}
	eventually(t, 30*time.Second, "the dashboard to show both ends", func() bool {
		_, page := get("/")
		return strings.Contains(page, `id="host-torment" data-host="torment" data-state="failed"`) &&
			strings.Contains(page, `id="host-sorrow" data-host="sorrow" data-state="idle"`)
	})
	code, page := get("/")
	if code != 200 {
		t.Fatalf("GET /: %d", code)
	}
	if s := row(page, "sorrow"); !strings.Contains(s, good[:8]) || !strings.Contains(s, ">succeeded<") || !strings.Contains(s, "online") {
		t.Errorf("sorrow's row does not show its good upgrade to %s:\n%s", good[:8], s)
	}
	if s := row(page, "torment"); !strings.Contains(s, ">failed<") || !strings.Contains(s, "(build)") || !strings.Contains(s, good[:8]) {
		t.Errorf("torment's row does not show a failed build, back on %s:\n%s", good[:8], s)
	}
	code, page = get("/hosts/torment")
	if code != 200 || !strings.Contains(page, "Output of build.failed") || !strings.Contains(page, "stage-failed") {
		t.Errorf("torment's page (%d) has no failed build with its output:\n%s", code, page)
	}
	id := res.Upgrade
	if code, page = get("/upgrades/" + id); code != 200 || !strings.Contains(page, "torment") || strings.Contains(page, "sorrow") {
		t.Errorf("the page of upgrade %s (%d) is not torment's alone:\n%s", id, code, page)
	}
	if code, page = get("/hosts/ghost"); code != 404 || !strings.Contains(page, "No such host") {
		t.Errorf("an unknown host: %d\n%s", code, page)
	}
	if code, page = get("/healthz"); code != 200 || !strings.Contains(page, `"bus":"connected"`) {
		t.Errorf("/healthz: %d %s", code, page)
	}
}
