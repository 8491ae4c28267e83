package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// requestsOf counts the upgrade.requested of host under upgrade id.
func (r *rig) requestsOf(host, id string) int {
	r.t.Helper()
	n := 0
	for _, l := range r.history(host) {
		if l.kind() == "upgrade.requested" && l.upgradeID() == id {
			n++
		}
	}
	return n
}

// startGitWatch starts `convoy git-watch` and waits until it follows the
// remote.
func (r *rig) startGitWatch(name string, args ...string) *proc {
	r.t.Helper()
	p := startProc(r.t, name, append([]string{"--nats", r.url, "git-watch", "--remote", r.fleet.Remote}, args...)...)
	eventually(r.t, 10*time.Second, name+" to start", func() bool { return strings.Contains(p.stdout.String(), "following ") || p.exited() })
	if p.exited() {
		r.t.Fatalf("%s exited with %d:\n%s", name, p.code, p.stderr.String())
	}
	return p
}

// A push to the remote upgrades the selected host by itself: the watcher
// polls the remote. A second watcher on the same remote adds no request.
func TestGitWatchPollingUpgradesOnPush(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow", "torment"}, sandbox.Options{})
	r.startWorker("sorrow")
	r.startWorker("torment")
	start := r.git(r.fleet.Work, "rev-parse", "HEAD")
	w1 := r.startGitWatch("git-watch 1", "--every", "1s", "sorrow")
	w2 := r.startGitWatch("git-watch 2", "--every", "1s", "sorrow")
	// At start each watcher requests the tip the hosts are already on.
	r.facts("sorrow", producers.CommitID(start))

	c := r.commit(configV2, "v2")
	id := producers.CommitID(c)
	fs := r.facts("sorrow", id)
	if last := fs[len(fs)-1]; last.kind() != "upgrade.succeeded" || last.fact(t).Commit != c {
		t.Fatalf("upgrade %s on sorrow ended %s on %q, want upgrade.succeeded on %s", id, last.kind(), last.fact(t).Commit, c)
	}
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("sorrow is on %s, want %s", head, c)
	}
	for _, w := range []*proc{w1, w2} {
		eventually(t, 10*time.Second, w.name+" to log its request of "+c, func() bool { return strings.Contains(w.stderr.String(), "upgrade="+id) })
	}
	// Both watchers asked; each commit was requested once of sorrow, and
	// torment, not selected, got nothing.
	for _, commit := range []string{start, c} {
		if n := r.requestsOf("sorrow", producers.CommitID(commit)); n != 1 {
			t.Fatalf("commit %s requested %d times of sorrow, want once", commit, n)
		}
	}
	for _, l := range r.history("torment") {
		if l.kind() == "upgrade.requested" {
			t.Fatalf("torment was not selected but got %s", l.upgradeID())
		}
	}
}

func signGitHub(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// A signed webhook makes the watcher look at once: with --every 1h only
// the webhook can explain the request. A bad signature gets 401 and starts
// nothing; a body that is not JSON gets 400, one too large 413.
func TestGitWatchWebhook(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	r.startWorker("sorrow")
	secret := []byte("correct horse battery staple")
	secretFile := filepath.Join(r.dir, "webhook-secret")
	if err := os.WriteFile(secretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	w := r.startGitWatch("git-watch", "--every", "1h", "--listen", addr, "--webhook-secret-file", secretFile, "--all")
	start := r.git(r.fleet.Work, "rev-parse", "HEAD")
	r.facts("sorrow", producers.CommitID(start))

	post := func(body []byte, sig string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "http://"+addr+"/webhook", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		if sig != "" {
			req.Header.Set("X-Hub-Signature-256", sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	c := r.commit(configV2, "v2")
	id := producers.CommitID(c)
	// A payload naming a commit is not trusted: the watcher asks the remote.
	body := []byte(`{"ref":"refs/heads/main","after":"0123456789012345678901234567890123456789"}`)
	for _, tc := range []struct {
		what string
		body []byte
		sig  string
		code int
	}{
		{"no signature", body, "", http.StatusUnauthorized},
		{"a wrong secret", body, signGitHub([]byte("guess"), body), http.StatusUnauthorized},
		{"a signature of another body", body, signGitHub(secret, []byte(`{}`)), http.StatusUnauthorized},
		{"a body that is not JSON", []byte("payload=x"), signGitHub(secret, []byte("payload=x")), http.StatusBadRequest},
		{"a body over 1 MiB", bytes.Repeat([]byte(" "), 1<<20+1), "", http.StatusRequestEntityTooLarge},
	} {
		if got := post(tc.body, tc.sig); got != tc.code {
			t.Fatalf("%s: answered %d, want %d", tc.what, got, tc.code)
		}
	}
	time.Sleep(2 * time.Second)
	if n := r.requestsOf("sorrow", id); n != 0 {
		t.Fatalf("a refused webhook started upgrade %s", id)
	}
	if n := strings.Count(w.stderr.String(), "webhook refused"); n != 3 {
		t.Fatalf("want one log line per bad signature (3), got %d:\n%s", n, w.stderr.String())
	}

	sent := time.Now()
	if got := post(body, signGitHub(secret, body)); got != http.StatusAccepted {
		t.Fatalf("a signed webhook: answered %d, want 202", got)
	}
	// A generous bound, not a benchmark: the request is stored well under
	// 1 s on an idle machine; history's own runs take part of this.
	eventually(t, 5*time.Second, "the webhook's request of "+c, func() bool { return r.requestsOf("sorrow", id) == 1 })
	t.Logf("push webhook to stored request: under %s", time.Since(sent).Round(time.Millisecond))
	fs := r.facts("sorrow", id)
	if last := fs[len(fs)-1]; last.kind() != "upgrade.succeeded" || last.fact(t).Commit != c {
		t.Fatalf("upgrade %s ended %s on %q, want upgrade.succeeded on %s", id, last.kind(), last.fact(t).Commit, c)
	}
}

// Bad input is a usage error before anything runs.
func TestGitWatchBadInput(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"git-watch", "--all"}, "--remote URL is required"},
		{[]string{"git-watch", "--remote", "--upload-pack=touch /tmp/pwned", "--all"}, "cannot start with '-'"},
		{[]string{"git-watch", "--remote", "/srv/git/nix.git", "--branch", "-x", "--all"}, "not a branch name"},
		{[]string{"git-watch", "--remote", "/srv/git/nix.git"}, "name hosts or use --all"},
		{[]string{"git-watch", "--remote", "/srv/git/nix.git", "--listen", "127.0.0.1:0", "--all"}, "--listen needs --webhook-secret-file"},
		{[]string{"git-watch", "--remote", "/srv/git/nix.git", "--listen", "127.0.0.1:0", "--webhook-secret-file", secret, "--all"}, "is empty"},
		{[]string{"git-watch", "--remote", "/srv/git/nix.git", "Not_A_Host!"}, "Not_A_Host!"},
	} {
		res := convoy(t, 10*time.Second, tc.args...)
		wantExit(t, res, exitUsage)
		if !strings.Contains(res.stderr, tc.says) {
			t.Errorf("%v: want %q in:\n%s", tc.args, tc.says, res.stderr)
		}
	}
}

// A remote that is down is logged and tried again; nothing is requested,
// and the watcher goes on when it is back.
func TestGitWatchRemoteDown(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow"}, sandbox.Options{})
	r.startWorker("sorrow")
	moved := r.fleet.Remote + ".away"
	if err := os.Rename(r.fleet.Remote, moved); err != nil {
		t.Fatal(err)
	}
	w := r.startGitWatch("git-watch", "--every", "2s", "--all")
	eventually(t, 10*time.Second, "two failed tries logged", func() bool {
		return strings.Count(w.stderr.String(), "nothing requested; trying again") >= 2
	})
	for _, l := range r.history("sorrow") {
		if l.kind() == "upgrade.requested" {
			t.Fatalf("a request while the remote was down: %s", l.upgradeID())
		}
	}
	if err := os.Rename(moved, r.fleet.Remote); err != nil {
		t.Fatal(err)
	}
	c := r.commit(configV2, "v2")
	fs := r.facts("sorrow", producers.CommitID(c))
	if last := fs[len(fs)-1]; last.kind() != "upgrade.succeeded" {
		t.Fatalf("after the remote came back: %v", kinds(fs))
	}
}

// With --wave, a push starts a rollout of the new commit; two watchers
// start it once.
func TestGitWatchStartsARollout(t *testing.T) {
	t.Parallel()
	r := newRolloutRig(t)
	r.startGitWatch("git-watch 1", "--every", "1s", "--wave", "tag=canary", "--wave", "all")
	r.startGitWatch("git-watch 2", "--every", "1s", "--wave", "tag=canary", "--wave", "all")
	c := r.commit(configV1, "v1")
	id := producers.CommitID(c)
	eventually(t, 30*time.Second, "the watchers to start rollout "+id, func() bool { return r.convoy("rollout", "status", id).code == exitOK })
	st := convoy(t, 2*time.Minute, "--nats", r.url, "rollout", "status", id, "--wait")
	wantExit(t, st, exitOK)
	evs := r.rolloutEvents(id)
	wantKinds(t, evs, "rollout.requested", "rollout.started", "rollout.wave.started", "rollout.wave.succeeded",
		"rollout.wave.started", "rollout.wave.succeeded", "rollout.succeeded")
	for _, h := range []string{"birch", "ash", "cedar", "elm", "oak"} {
		if head, _ := r.head(h); head != c {
			t.Fatalf("%s is on %s, want %s", h, head, c)
		}
	}
}
