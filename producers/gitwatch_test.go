package producers_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
)

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func TestVerifyWebhook(t *testing.T) {
	const secret, body = "s3cret", `{"ref":"refs/heads/main"}`
	good, wrong := sign(secret, body), sign("other", body)
	for _, tc := range []struct {
		name    string
		headers map[string]string
		forge   string
		err     error
	}{
		{"github good", map[string]string{"X-Hub-Signature-256": "sha256=" + good}, "github", nil},
		{"github bad", map[string]string{"X-Hub-Signature-256": "sha256=" + good[:63] + "0"}, "", producers.ErrWebhookBadSignature},
		{"github wrong secret", map[string]string{"X-Hub-Signature-256": "sha256=" + wrong}, "", producers.ErrWebhookBadSignature},
		{"github without the prefix", map[string]string{"X-Hub-Signature-256": good}, "", producers.ErrWebhookBadSignature},
		{"github not hex", map[string]string{"X-Hub-Signature-256": "sha256=zz"}, "", producers.ErrWebhookBadSignature},
		{"gitea good", map[string]string{"X-Gitea-Signature": good}, "gitea", nil},
		{"gitea bad", map[string]string{"X-Gitea-Signature": "00"}, "", producers.ErrWebhookBadSignature},
		{"gitea wrong secret", map[string]string{"X-Gitea-Signature": wrong}, "", producers.ErrWebhookBadSignature},
		{"forgejo good", map[string]string{"X-Forgejo-Signature": good, "X-Gitea-Signature": good}, "forgejo", nil},
		{"forgejo wrong secret", map[string]string{"X-Forgejo-Signature": wrong}, "", producers.ErrWebhookBadSignature},
		{"forgejo good but gitea's bad", map[string]string{"X-Forgejo-Signature": good, "X-Gitea-Signature": wrong}, "", producers.ErrWebhookBadSignature},
		{"gitlab good", map[string]string{"X-Gitlab-Token": secret}, "gitlab", nil},
		{"gitlab wrong secret", map[string]string{"X-Gitlab-Token": "other"}, "", producers.ErrWebhookBadSignature},
		{"gitlab empty", map[string]string{"X-Gitlab-Token": ""}, "", producers.ErrWebhookBadSignature},
		{"missing", map[string]string{"X-GitHub-Event": "push"}, "", producers.ErrWebhookUnsigned},
		{"the old sha1 header only", map[string]string{"X-Hub-Signature": "sha1=" + good[:40]}, "", producers.ErrWebhookUnsigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tc.headers {
				h.Set(k, v)
			}
			forge, err := producers.VerifyWebhook(h, []byte(body), []byte(secret))
			if forge != tc.forge || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("got %q, %v; want %q, %v", forge, err, tc.forge, tc.err)
			}
		})
	}
	if _, err := producers.VerifyWebhook(http.Header{"X-Gitlab-Token": {""}}, nil, nil); err == nil {
		t.Fatal("an empty secret verified an empty token")
	}
}

func TestWebhookHandler(t *testing.T) {
	const secret = "s3cret"
	json := `{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}`
	big := `{"pad":"` + strings.Repeat("x", producers.MaxWebhookBody) + `"}`
	for _, tc := range []struct {
		name, method, body, sig string
		code                    int
		poked                   bool
	}{
		{"signed push", http.MethodPost, json, sign(secret, json), http.StatusAccepted, true},
		{"bad signature", http.MethodPost, json, sign("other", json), http.StatusUnauthorized, false},
		{"no signature", http.MethodPost, json, "", http.StatusUnauthorized, false},
		{"signed but not JSON", http.MethodPost, "payload=%7B%7D", sign(secret, "payload=%7B%7D"), http.StatusBadRequest, false},
		{"too large", http.MethodPost, big, sign(secret, big), http.StatusRequestEntityTooLarge, false},
		{"GET", http.MethodGet, "", "", http.StatusMethodNotAllowed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			poked := false
			h := producers.WebhookHandler([]byte(secret), func() { poked = true }, slog.New(slog.NewTextHandler(&logs, nil)))
			req := httptest.NewRequest(tc.method, "/", strings.NewReader(tc.body))
			if tc.sig != "" {
				req.Header.Set("X-Hub-Signature-256", "sha256="+tc.sig)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code || poked != tc.poked {
				t.Fatalf("answered %d, poked %v; want %d, %v: %s", rec.Code, poked, tc.code, tc.poked, rec.Body)
			}
			if tc.code == http.StatusUnauthorized && strings.Count(logs.String(), "\n") != 1 {
				t.Fatalf("want one log line for a refused webhook, got:\n%s", logs.String())
			}
		})
	}
}

func TestCommitID(t *testing.T) {
	a := "3f786850e387550fdab836ed7e6dc881de23001b"
	b := "89e6c98d92887913cadf06b2adb97f26cde4849b"
	id := producers.CommitID(a)
	if err := events.ValidateID(id); err != nil {
		t.Fatal(err)
	}
	if producers.CommitID(a) != id || producers.CommitID(strings.ToUpper(a)) != id {
		t.Fatal("the same commit has two ids")
	}
	if producers.CommitID(b) == id {
		t.Fatal("two commits have one id")
	}
	if producers.CommitID(a) == producers.SlotID(time.Unix(0, 0)) {
		t.Fatal("a commit's id is a schedule slot's")
	}
}

func TestGitWatchValidate(t *testing.T) {
	hosts := producers.HostList("sorrow")
	for i, bad := range []*producers.GitWatch{
		&producers.GitWatch{Hosts: hosts},
		&producers.GitWatch{Remote: "--upload-pack=touch /tmp/x", Hosts: hosts},
		&producers.GitWatch{Remote: "/srv/git/nix-config.git", Branch: "-x", Hosts: hosts},
		&producers.GitWatch{Remote: "/srv/git/nix-config.git", Branch: "a..b", Hosts: hosts},
		&producers.GitWatch{Remote: "/srv/git/nix-config.git", Every: time.Millisecond, Hosts: hosts},
		&producers.GitWatch{Remote: "/srv/git/nix-config.git"},
	} {
		if bad.Validate() == nil {
			t.Errorf("case %d: %s %s accepted", i, bad.Remote, bad.Branch)
		}
	}
	if _, err := producers.LsRemote(t.Context(), "--upload-pack=true", "main"); err == nil {
		t.Error("LsRemote ran a remote that is an option")
	}
	g := producers.GitWatch{Remote: "https://forge.example/ops/nix-config.git", Hosts: hosts}
	if err := g.Validate(); err != nil {
		t.Error(err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://oauth2:glpat-123@gitlab.example/ops/nix.git": "https://oauth2:xxxxx@gitlab.example/ops/nix.git",
		"https://ghp_123@github.com/ops/nix.git":              "https://xxxxx@github.com/ops/nix.git",
		"ssh://git@forge.example/ops/nix.git":                 "ssh://git@forge.example/ops/nix.git",
		"/srv/git/nix-config.git":                             "/srv/git/nix-config.git",
	} {
		if got := producers.RedactURL(in); got != want {
			t.Errorf("%s: %s, want %s", in, got, want)
		}
	}
}

// requests returns the upgrade ids requested of host so far, in order.
func requests(t *testing.T, c *bus.Conn, host string) []string {
	t.Helper()
	subj, _ := events.RequestSubject(host, events.UpgradeRequested)
	var ids []string
	if err := c.Replay(context.Background(), []string{subj}, bus.From{}, func(s bus.Stored) error {
		ids = append(ids, s.Event.UpgradeID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ids
}

// A fake remote: the test moves its tip or takes it down.
type fakeRemote struct {
	mu    sync.Mutex
	tip   string
	down  bool
	calls atomic.Int32
}

func (f *fakeRemote) set(tip string, down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tip, f.down = tip, down
}

func (f *fakeRemote) lsRemote(context.Context, string, string) (string, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return "", errors.New("ssh: connect to host forge.example port 22: Connection refused")
	}
	return f.tip, nil
}

func TestGitWatchRequestsEachTipOnce(t *testing.T) {
	_, c := bustest.Start(t)
	a := "3f786850e387550fdab836ed7e6dc881de23001b"
	b := "89e6c98d92887913cadf06b2adb97f26cde4849b"
	remote := &fakeRemote{tip: a}
	var logs syncLog
	// Two watchers on one remote, with a long period: only pokes move them.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var watchers []*producers.GitWatch
	for range 2 {
		g := &producers.GitWatch{Remote: "/srv/git/nix-config.git", Every: time.Hour, Hosts: producers.HostList("sorrow", "torment"),
			LsRemote: remote.lsRemote, Log: slog.New(slog.NewTextHandler(&logs, nil))}
		watchers = append(watchers, g)
		wg.Go(func() { _ = g.Run(ctx, c) })
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	bustest.Eventually(t, 10*time.Second, "the tip at start requested", func() bool { return len(requests(t, c, "torment")) == 1 })

	remote.set(b, true)
	for _, g := range watchers {
		g.Poke()
	}
	bustest.Eventually(t, 10*time.Second, "the remote's failure logged", func() bool { return strings.Contains(logs.String(), "Connection refused") })
	remote.set(b, false)
	// The back-off after a failure is 1s, so b is requested without a poke.
	bustest.Eventually(t, 10*time.Second, "the new tip requested", func() bool { return len(requests(t, c, "sorrow")) == 2 })
	before := remote.calls.Load()
	for _, g := range watchers {
		g.Poke()
	}
	bustest.Eventually(t, 10*time.Second, "the pokes answered", func() bool { return remote.calls.Load() >= before+2 })
	time.Sleep(200 * time.Millisecond)
	for _, h := range []string{"sorrow", "torment"} {
		got := requests(t, c, h)
		if want := []string{producers.CommitID(a), producers.CommitID(b)}; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("%s: requested %v, want %v (each commit once, in order)", h, got, want)
		}
	}
}

func TestGitWatchRemoteDownRequestsNothing(t *testing.T) {
	remote := &fakeRemote{down: true}
	var logs syncLog
	hosts := atomic.Int32{}
	g := &producers.GitWatch{Remote: "/srv/git/nix-config.git", Every: 2 * time.Second,
		Hosts:    func(context.Context) ([]string, error) { hosts.Add(1); return []string{"sorrow"}, nil },
		LsRemote: remote.lsRemote, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx, cancel := context.WithTimeout(t.Context(), 3500*time.Millisecond)
	defer cancel()
	if err := g.Run(ctx, nil); err != nil { // no bus: nothing may be requested
		t.Fatal(err)
	}
	// Tries at 0, 1s, 3s (back-off 1s, then 2s: capped at Every).
	if n := remote.calls.Load(); n != 3 {
		t.Errorf("asked the remote %d times in 3.5s, want 3 (back-off 1s, 2s)", n)
	}
	if hosts.Load() != 0 {
		t.Error("asked for hosts while the remote was down")
	}
	if n := strings.Count(logs.String(), "Connection refused"); n != 3 {
		t.Errorf("want one line per failed try, got:\n%s", logs.String())
	}
}

type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
