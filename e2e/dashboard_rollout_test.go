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

// The rollout page shows a real rollout's waves in order, each with its
// hosts, their results and its progress; the fleet page links it.
func TestDashboardShowsARollout(t *testing.T) {
	t.Parallel()
	hosts := []string{"ash", "birch", "cedar"}
	r := baseRig(t)
	web := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	r.serverArgs = []string{"--http", web}
	r.startServerAnyPort()
	r.makeFleet(hosts, sandbox.Options{Tags: map[string][]string{"birch": {"canary"}}})
	for _, h := range hosts {
		r.startWorker(h)
	}
	for _, h := range hosts {
		r.waitStatus(h, "worker seen", func(s hostStatus) bool { return s.Worker != "" })
	}
	c := r.commit(configV1, "v1")
	res := convoy(t, 2*time.Minute, "--nats", r.url, "rollout", "start", "--rev", c,
		"--wave", "tag=canary", "--wave", "all", "--bake", "0s", "--wait")
	wantExit(t, res, exitOK)
	id := strings.Fields(res.stdout)[0]

	get := func(path string) (int, string) { t.Helper(); return webGet(t, web, path) }
	code, page := get("/rollouts/" + id)
	if code != 200 {
		t.Fatalf("GET /rollouts/%s: %d\n%s", id, code, page)
	}
	if !strings.Contains(page, `badge rollout-succeeded">succeeded<`) || !strings.Contains(page, "2 of 2 started") {
		t.Errorf("the rollout is not shown succeeded with both waves started:\n%s", page)
	}
	waves := regexp.MustCompile(`(?s)<section class="wave.*?</section>`).FindAllString(page, -1)
	if len(waves) != 2 {
		t.Fatalf("%d waves on the page, want 2:\n%s", len(waves), page)
	}
	for i, want := range [][]string{{"birch"}, {"ash", "cedar"}} {
		w := waves[i]
		if !strings.Contains(w, "Wave "+strconv.Itoa(i+1)) || !strings.Contains(w, `badge wave-done">done<`) {
			t.Errorf("wave %d is not shown done:\n%s", i+1, w)
		}
		done := strconv.Itoa(len(want))
		if !strings.Contains(w, done+" / "+done+" done · "+done+" succeeded · 0 failed") {
			t.Errorf("wave %d's progress is not %s of %s succeeded:\n%s", i+1, done, done, w)
		}
		for _, h := range hosts {
			in := strings.Contains(w, `href="/hosts/`+h+`"`)
			if in != strings.Contains(strings.Join(want, " "), h) {
				t.Errorf("wave %d: host %s shown %t, want the wave to hold %v:\n%s", i+1, h, in, want, w)
			}
		}
	}
	if _, fleet := get("/"); !strings.Contains(fleet, `href="/rollouts/`+id+`"`) {
		t.Errorf("the fleet page does not link the rollout %s:\n%s", id, fleet)
	}
}
