package e2e

// What the worker does with the requests it gets: once per id, the newest
// of a queue, nothing for what is deployed, refusals with the reason.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// count returns how many of host's events are of kind k for upgrade id.
func (r *rig) count(host, id, k string) int {
	r.t.Helper()
	n := 0
	for _, l := range r.history(host) {
		if l.upgradeID() == id && l.kind() == k {
			n++
		}
	}
	return n
}

// Retrying `upgrade --id` (a script, a flaky terminal) runs the upgrade
// once and reports the first run's result with the same exit code.
func TestDuplicateRequestIDRunsOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	r.startWorker("sorrow")

	for _, tc := range []struct {
		content, result string
		code            int
	}{
		{configV1, "upgrade.succeeded", exitOK},
		{configBroken, "upgrade.failed", exitFailed},
	} {
		r.commit(tc.content, "change")
		id := ulid.Make().String()
		first := r.convoy("upgrade", "sorrow", "--id", id, "--wait", "--timeout", "60s")
		wantExit(t, first, tc.code)
		if !strings.Contains(first.stdout, tc.result) {
			t.Fatalf("first run does not show %s: %s", tc.result, first)
		}
		r.settledStatus() // the upgrade index has the result
		headBefore, _ := r.head("sorrow")

		second := r.convoy("upgrade", "sorrow", "--id", id, "--wait", "--timeout", "60s")
		wantExit(t, second, tc.code)
		if !strings.Contains(second.stdout, tc.result) || !strings.Contains(second.stdout, "earlier, same id") {
			t.Fatalf("second run does not report the earlier %s: %s", tc.result, second)
		}
		third := r.upgrade(tc.code, "sorrow", "--id", id)
		if len(third.Hosts) != 1 || !third.Hosts[0].Already || third.Hosts[0].Result != tc.result {
			t.Fatalf("upgrade --json with a used id: %+v; want already_done with %s", third, tc.result)
		}

		if n := r.count("sorrow", id, "upgrade.requested"); n != 1 {
			t.Fatalf("%d requests stored for %s, want 1", n, id)
		}
		if n := r.count("sorrow", id, "upgrade.started"); n != 1 {
			t.Fatalf("upgrade %s started %d times, want 1", id, n)
		}
		if head, _ := r.head("sorrow"); head != headBefore {
			t.Fatalf("the repeated request moved HEAD from %s to %s", headBefore, head)
		}
	}
}

// Requests queued while the worker was down are coalesced: the newest
// runs, the older ones end skipped (superseded) without starting.
func TestQueuedRequestsAreCoalesced(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	r.startWorker("sorrow")
	r.commit(configV1, "v1")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	r.stopWorker("sorrow")
	r.waitStatus("sorrow", "worker offline", func(s hostStatus) bool { return s.Worker == "offline" })

	c := r.commit(configV2, "v2")
	var ids []string
	for range 3 {
		sum := r.upgrade(exitOK, "sorrow")
		if sum.result("sorrow") != "" {
			t.Fatalf("a request without a worker already has a result: %+v", sum)
		}
		ids = append(ids, sum.Upgrade)
	}
	r.waitStatus("sorrow", "queued", func(s hostStatus) bool { return s.State == "queued" && s.Requested == ids[2] })

	r.startWorker("sorrow")
	for _, id := range ids[:2] {
		facts := r.facts("sorrow", id)
		wantKinds(t, facts, "upgrade.skipped")
		if f := find(t, facts, "upgrade.skipped"); !strings.Contains(f.Reason, "superseded") {
			t.Fatalf("upgrade %s skipped with reason %q, want superseded", id, f.Reason)
		}
	}
	wantKinds(t, r.facts("sorrow", ids[2]), "upgrade.started", "pull.succeeded", "build.succeeded", "switch.succeeded", "upgrade.succeeded")
	started := 0
	for _, id := range ids {
		started += r.count("sorrow", id, "upgrade.started")
	}
	if started != 1 {
		t.Fatalf("%d of the 3 queued upgrades started, want 1", started)
	}
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
	st := r.waitStatus("sorrow", "idle", func(s hostStatus) bool { return s.LastUpgrade == ids[2] && s.State == "idle" })
	if st.Commit != c || st.Requested != "" || st.LastResult != "upgrade.succeeded" {
		t.Fatalf("status: %+v; want idle on %s, nothing queued", st, c)
	}
	// Waiting on a superseded id tells the user so, and it is no failure.
	res := r.convoy("upgrade", "sorrow", "--id", ids[0], "--wait", "--timeout", "30s")
	wantExit(t, res, exitOK)
	if !strings.Contains(res.stdout, "upgrade.skipped") || !strings.Contains(res.stdout, "superseded") {
		t.Fatalf("waiting on a superseded upgrade: %s", res)
	}
}

// An upgrade with nothing new is skipped as already current; a secrets
// change alone is something new.
func TestAlreadyCurrentIsSkipped(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	r.startWorker("sorrow")
	h := r.fleet.Hosts["sorrow"]
	c := r.commit(configV1, "v1")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	running := h.Running()

	sum := r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	if got := sum.result("sorrow"); got != "upgrade.skipped" || !strings.Contains(sum.Hosts[0].Reason, "already current") {
		t.Fatalf("second upgrade: %+v; want upgrade.skipped, already current", sum)
	}
	wantKinds(t, r.facts("sorrow", sum.Upgrade), "upgrade.started", "upgrade.skipped")
	if head, _ := r.head("sorrow"); head != c || h.Running() != running {
		t.Fatalf("a skipped upgrade changed the host: HEAD %s running %q", head, h.Running())
	}
	st := r.waitStatus("sorrow", "skipped", func(s hostStatus) bool { return s.LastUpgrade == sum.Upgrade })
	if st.State != "idle" || st.LastResult != "upgrade.skipped" || st.Commit != c || !strings.Contains(st.LastReason, "already current") {
		t.Fatalf("status: %+v; want idle, upgrade.skipped (already current) on %s", st, c)
	}

	s := r.commitSecrets("wifi: rotated\n", "rotate")
	sum = r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	if got := sum.result("sorrow"); got != "upgrade.succeeded" {
		t.Fatalf("a secrets change: %+v; want upgrade.succeeded", sum)
	}
	if _, sec := r.head("sorrow"); sec != s {
		t.Fatalf("secrets HEAD %s, want %s", sec, s)
	}
}

// A --rev the worker cannot deploy is refused with the reason, before
// anything is built.
func TestRevRejected(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	r.startWorker("sorrow")
	h := r.fleet.Hosts["sorrow"]
	c1 := r.commit(configV1, "v1")
	c2 := r.commit(configV2, "v2")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	running := h.Running()

	// A commit on another branch, pushed to the same remote.
	w := r.fleet.Work
	r.git(w, "checkout", "--quiet", "-b", "experiment")
	side := r.commit(configV3, "an experiment")
	r.git(w, "push", "--quiet", "origin", "experiment")
	r.git(w, "checkout", "--quiet", "main")

	reject := func(rev string, want ...string) {
		t.Helper()
		sum := r.upgrade(exitFailed, "sorrow", "--rev", rev, "--wait", "--timeout", "60s")
		if sum.result("sorrow") != "upgrade.rejected" {
			t.Fatalf("--rev %s: %+v, want upgrade.rejected", rev, sum)
		}
		facts := r.facts("sorrow", sum.Upgrade)
		wantKinds(t, facts, "upgrade.started", "upgrade.rejected")
		reason := find(t, facts, "upgrade.rejected").Reason
		ok := false
		for _, w := range want {
			ok = ok || strings.Contains(reason, w)
		}
		if !ok {
			t.Fatalf("--rev %s rejected with reason %q; want it to say one of %q", rev, reason, want)
		}
		if head, _ := r.head("sorrow"); head != c2 || h.Running() != running {
			t.Fatalf("--rev %s changed the host: HEAD %s running %q", rev, head, h.Running())
		}
		st := r.waitStatus("sorrow", "rejected", func(s hostStatus) bool { return s.LastUpgrade == sum.Upgrade })
		if st.LastResult != "upgrade.rejected" || st.LastReason != reason || st.Commit != c2 {
			t.Fatalf("status after --rev %s: %+v", rev, st)
		}
	}
	reject("deadbeefdeadbeefdeadbeefdeadbeefdeadbeef", "unknown revision")
	reject("no-such-branch", "unknown revision")
	pwned := filepath.Join(t.TempDir(), "pwned")
	reject("--upload-pack=touch "+pwned, "unknown revision")
	if _, err := os.Stat(pwned); err == nil {
		t.Fatal("a --rev was run as a command")
	}
	// The worker fetches only the tracked branch, so it does not know it.
	reject(side, "unknown revision", "not a commit on the tracked branch")
	reject("origin/experiment", "unknown revision", "not a commit on the tracked branch")
	// Once the checkout has it (someone ran git fetch), it is still not
	// on the tracked branch.
	r.git(h.Repo, "fetch", "--quiet", "origin", "experiment:refs/remotes/origin/experiment")
	reject(side, "not a commit on the tracked branch")
	reject("origin/experiment", "not a commit on the tracked branch")
	// An ancestor of the deployed commit is a downgrade.
	reject(c1, "downgrade refused")

	for _, l := range r.history("sorrow") {
		if k := l.kind(); strings.HasPrefix(k, "build.") && l.fact(t).Commit != c2 {
			t.Fatalf("something else than %s was built: seq %d %s", c2, l.Seq, k)
		}
	}
}

// Garbage on a host's request subject is refused with the reason, and the
// worker goes on serving.
func TestMalformedRequestIsRejected(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	w := r.startWorker("sorrow")

	nc, err := nats.Connect(r.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	forged := ulid.Make().String()
	payloads := [][]byte{
		[]byte("\x00\xffthis is not an event"),
		[]byte(`{"type":"convoy.upgrade.requested","subject":"sorrow"}`),
		// Well formed, but for another host.
		fmt.Appendf(nil, `{"specversion":"1.0","id":%q,"source":"mallory","type":"convoy.upgrade.requested","subject":"torment","time":%q,"upgradeid":%q,"data":{}}`,
			forged, time.Now().UTC().Format(time.RFC3339Nano), forged),
	}
	for _, p := range payloads {
		if _, err := js.Publish(t.Context(), "convoy.req.sorrow.upgrade", p); err != nil {
			t.Fatal(err)
		}
	}

	var rejected []fact
	eventually(t, 30*time.Second, "three upgrade.rejected", func() bool {
		rejected = rejected[:0]
		for _, l := range r.history("sorrow") {
			if l.kind() == "upgrade.rejected" {
				rejected = append(rejected, l.fact(t))
			}
		}
		return len(rejected) >= 3
	})
	for i, f := range rejected[:2] {
		if !strings.Contains(f.Reason, "malformed") {
			t.Fatalf("rejection %d: reason %q does not say the request was malformed", i, f.Reason)
		}
	}
	if !strings.Contains(rejected[2].Reason, `"torment"`) {
		t.Fatalf("a request for torment on sorrow's subject: reason %q", rejected[2].Reason)
	}
	// history shows the undecodable messages as such.
	undecodable := 0
	for _, l := range r.history("sorrow") {
		if l.Subject == "convoy.req.sorrow.upgrade" && l.Event == nil && l.Error != "" {
			undecodable++
		}
	}
	if undecodable != 2 {
		t.Fatalf("history shows %d undecodable requests, want 2", undecodable)
	}
	if w.exited() {
		t.Fatalf("the worker exited (%d)", w.code)
	}

	c := r.commit(configV1, "v1")
	r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
	r.waitStatus("sorrow", "idle on "+c, func(s hostStatus) bool { return s.State == "idle" && s.Commit == c })
}

// A worker killed while the notification of its request is on its way
// handles the request after restart, once; and a request stored while the
// worker is down is handled when it comes back.
func TestRequestSurvivesAKilledNotification(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	w := r.startWorker("sorrow")
	nc, err := nats.Connect(r.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	killed := make(chan struct{})
	sub, err := nc.Subscribe(bus.LiveRequests("sorrow"), func(*nats.Msg) {
		_ = syscall.Kill(w.cmd.Process.Pid, syscall.SIGKILL)
		close(killed)
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	r.commit(configV1, "v1")
	first := upgradeIDIn(t, r.convoy("upgrade", "sorrow"))
	<-killed
	_ = sub.Unsubscribe()
	w.stop(syscall.SIGKILL, 5*time.Second)

	// While it is down, another commit and request.
	c2 := r.commit(configV2, "v2")
	second := upgradeIDIn(t, r.convoy("upgrade", "sorrow", "--rev", c2))
	r.startWorker("sorrow")
	for _, id := range []string{first, second} {
		fs := r.facts("sorrow", id)
		if n := r.count("sorrow", id, "upgrade.started") + r.count("sorrow", id, "upgrade.skipped"); n != 1 {
			t.Fatalf("upgrade %s started or was skipped %d times: %v", id, n, kinds(fs))
		}
		if n := len(fs); !isTerminal(fs[n-1].kind()) {
			t.Fatalf("upgrade %s did not end: %v", id, kinds(fs))
		}
	}
	r.waitStatus("sorrow", "on "+c2, func(s hostStatus) bool { return s.Commit == c2 && s.State == "idle" })
}
