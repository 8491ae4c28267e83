package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// `convoy projections rebuild` recomputes the fleet status from the stream
// and gets what the live projector has, field for field.
func TestProjectionsRebuildKeepsStatus(t *testing.T) {
	t.Parallel()
	hosts := []string{"sorrow", "torment"}
	r := newRig(t, hosts, sandbox.Options{ValidationChecks: []string{"true"}})
	for _, h := range hosts {
		r.startWorker(h)
	}
	eventually(t, 30*time.Second, "both hosts in the fleet view", func() bool {
		sts, _, _ := r.status()
		return len(sts) == 2
	})

	// A history with every kind of ending: success, failure with
	// rollback, skip, rejection, and a worker that went offline.
	c1 := r.commit(configV1, "v1")
	r.upgrade(exitOK, "--all", "--wait", "--timeout", "60s")
	r.commitSecrets("wifi: rotated\n", "rotate")
	r.commit(configBroken, "broken")
	r.upgrade(exitFailed, "torment", "--wait", "--timeout", "60s")
	r.upgrade(exitFailed, "sorrow", "--rev", "no-such-rev", "--wait", "--timeout", "60s")
	r.upgrade(exitOK, "sorrow", "--rev", c1, "--wait", "--timeout", "60s") // secrets moved: not current
	r.upgrade(exitOK, "sorrow", "--rev", c1, "--wait", "--timeout", "60s") // already current
	r.upgrade(exitOK, "ghost")                                             // a host with no worker: queued for ever
	r.stopWorker("torment")
	r.waitStatus("torment", "worker offline", func(s hostStatus) bool { return s.Worker == "offline" })

	before := r.settledStatus()
	for _, want := range []string{`"upgrade.skipped"`, `"upgrade.failed"`, `"offline"`, `"secrets_commit"`, `"queued"`} {
		if !strings.Contains(before, want) {
			t.Fatalf("the status has no %s; the scenario did not happen:\n%s", want, before)
		}
	}
	res := r.convoy("projections", "rebuild")
	wantExit(t, res, exitOK)
	if !strings.Contains(res.stdout, "rebuilt the status of 3 host(s)") {
		t.Fatalf("rebuild output: %s", res)
	}
	if after := r.settledStatus(); after != before {
		t.Fatalf("status after rebuild differs:\nbefore %s\nafter  %s", before, after)
	}

	// A damaged view (a row rewritten, one missing, one for a host that
	// never was, a checkpoint far behind) is put back as it was.
	damageStatusView(t, r.url)
	if _, raw, _ := r.status(); raw == before {
		t.Fatal("the damage did not show in convoy status")
	}
	wantExit(t, r.convoy("projections", "rebuild"), exitOK)
	if after := r.settledStatus(); after != before {
		t.Fatalf("status after rebuilding a damaged view differs:\nbefore %s\nafter  %s", before, after)
	}

	// The live projector goes on after a rebuild.
	c2 := r.commit(configV2, "v2")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	r.waitStatus("sorrow", "idle on "+c2, func(s hostStatus) bool { return s.State == "idle" && s.Commit == c2 })
	before = r.settledStatus()
	wantExit(t, r.convoy("projections", "rebuild"), exitOK)
	if after := r.settledStatus(); after != before {
		t.Fatalf("status after the second rebuild differs:\nbefore %s\nafter  %s", before, after)
	}
}

// damageStatusView writes into the status bucket as a careless program
// with the server's access could.
func damageStatusView(t *testing.T, url string) {
	t.Helper()
	c := bustest.Connect(t, url)
	status, err := c.Bucket(t.Context(), bus.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"host.sorrow":     `{"host":"sorrow","state":"failed","commit":"0000000","seq":1}`,
		"host.phantom":    `{"host":"phantom","state":"idle","seq":2}`,
		"meta.checkpoint": "1",
	} {
		if _, err := status.Put(t.Context(), k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := status.Delete(t.Context(), "host.torment", 0); err != nil {
		t.Fatal(err)
	}
}
