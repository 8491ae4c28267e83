package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// `convoy server --config FILE` takes its flags from the file (http) and
// sends the alerts of its [alerts] section: a failed upgrade reaches the
// webhook once, and /metrics counts it for the sink.
func TestServerConfigSendsAlerts(t *testing.T) {
	t.Parallel()
	hook := newAlertHook(t)
	hook.refuse(false)
	r := baseRig(t)
	web := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	cfg := filepath.Join(r.dir, "server.toml")
	content := `http = "` + web + `"
min_free = "1MiB"

[alerts]
[[alerts.sink]]
name = "ops"
type = "webhook"
url = "` + hook.srv.URL + `"
`
	if err := os.WriteFile(cfg, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	r.serverArgs = []string{"--config", cfg}
	r.startServerAnyPort()
	if out := r.server.stdout.String(); !strings.Contains(out, "dashboard on http://"+web+"/") {
		t.Fatalf("the server did not take http from its config:\n%s", out)
	}
	r.makeFleet([]string{"torment"}, sandbox.Options{ValidationChecks: []string{"true"}})
	r.startWorker("torment")
	r.commit(configBroken, "broken")
	r.upgrade(exitFailed, "torment", "--wait", "--timeout", "60s")
	id := r.eventID("torment", "upgrade.failed")
	eventually(t, 30*time.Second, "the failed upgrade's alert", func() bool { return hook.acceptedN(id) > 0 })

	if _, b := webGet(t, web, "/metrics"); !strings.Contains(b, `convoy_alerts_sent_total{sink="ops"} 1`) {
		t.Errorf("/metrics does not count the alert sent to ops:\n%s", grepLines(b, "convoy_alerts"))
	}
	if n := hook.acceptedN(id); n != 1 {
		t.Errorf("the alert of %s was accepted %d times", id, n)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
