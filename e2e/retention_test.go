package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// retainedFrom matches what `convoy history` says of the retained history.
var retainedFrom = regexp.MustCompile(`retained history: (?:from sequence (\d+)|empty, next sequence (\d+))`)

// firstRetained returns the stream's first retained sequence as history
// reports it (the next sequence when every event aged out).
func (r *rig) firstRetained() uint64 {
	r.t.Helper()
	res := r.convoy("history", "--json", "--type", "upgrade.succeeded")
	wantExit(r.t, res, exitOK)
	m := retainedFrom.FindStringSubmatch(res.stderr)
	if m == nil {
		r.t.Fatalf("history does not say where the retained history starts: %s", res)
	}
	n, _ := strconv.ParseUint(m[1]+m[2], 10, 64)
	return n
}

// With a short --retain, the oldest events age out of the stream; a
// rebuild of a damaged view then starts from the projector's snapshot and
// gives the same status, and history says where the retained history starts. A worker
// whose last fact aged out goes on appending (its guard is not a second
// writer).
func TestRetentionKeepsStatusAcrossRebuild(t *testing.T) {
	t.Parallel()
	hosts := []string{"sorrow", "torment"}
	r := baseRig(t)
	r.serverArgs = []string{"--retain", "3s"}
	r.startServerAnyPort()
	r.makeFleet(hosts, sandbox.Options{ValidationChecks: []string{"true"}})
	for _, h := range hosts {
		r.startWorker(h)
	}
	r.commit(configV1, "v1")
	r.upgrade(exitOK, "--all", "--wait", "--timeout", "60s")
	r.commit(configBroken, "broken")
	r.upgrade(exitFailed, "torment", "--wait", "--timeout", "60s")
	last := r.firstRetained()
	eventually(t, 60*time.Second, "every event so far to age out", func() bool {
		res := r.convoy("history", "--json")
		m := retainedFrom.FindStringSubmatch(res.stderr)
		return m != nil && m[2] != ""
	})
	// A new upgrade of a host whose facts all aged out.
	r.commit(configV2, "v2")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	before := r.settledStatus()
	for _, want := range []string{`"upgrade.failed"`, `"upgrade.succeeded"`, `"torment"`} {
		if !strings.Contains(before, want) {
			t.Fatalf("the status has no %s; the scenario did not happen:\n%s", want, before)
		}
	}
	if first := r.firstRetained(); first <= last {
		t.Fatalf("history says the retained history starts at %d: nothing aged out", first)
	}
	// The live view is damaged: a rebuild must not start from it, but
	// from the snapshot and the retained events.
	damageStatusView(t, r.url)
	res := r.convoy("projections", "rebuild")
	wantExit(t, res, exitOK)
	if after := r.settledStatus(); after != before {
		t.Fatalf("status after a rebuild from a stream whose first events aged out differs:\nbefore %s\nafter  %s", before, after)
	}
}
