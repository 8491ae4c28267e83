package producers

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// Log keys of the git watcher.
const (
	logCommit  = "commit"
	logUpgrade = "upgrade"
	logHosts   = "hosts"
	logRetry   = "retry_in"
	logForge   = "forge"
	logRemote  = "remote"
	logBranch  = "branch"
)

// GitWatch requests an upgrade of its hosts to each new tip of a branch of
// the config repo's remote. It asks the remote with `git ls-remote` every
// Every, and at once when poked (by a verified push webhook). Every commit
// has one upgrade id (CommitID), so two watchers, or a restart, request a
// commit once per host: the bus deduplicates a request by its id, and
// Upgrade does not send again a request whose upgrade has ended.
//
// At start the watcher requests the current tip: if that commit was
// requested before, the request is not stored twice; if it was not, the
// hosts upgrade to it (or skip it when they are already on it).
type GitWatch struct {
	// Remote is the URL (or path) of the config repo, as git takes it.
	Remote string
	// Branch is the tracked branch; default "main".
	Branch string
	// Every is the polling period; default 30s, at least 1s. It also
	// bounds the back-off after a failure.
	Every time.Duration
	// Hosts returns the hosts to upgrade: a fixed list (HostList) or the
	// fleet view's served hosts. Required.
	Hosts func(context.Context) ([]string, error)
	// Start, if set, is what a new tip starts instead of an upgrade of
	// Hosts (convoy git-watch --wave starts a rollout). It must start
	// each commit once however often it is called.
	Start func(ctx context.Context, commit string) error
	// Window, if set, is when a new tip is acted on (local time); a tip
	// that moves outside it waits for it.
	Window events.Window
	// LsRemote returns the commit at the tip of branch on remote. Nil
	// means `git ls-remote` (LsRemote); tests pass a func.
	LsRemote func(ctx context.Context, remote, branch string) (string, error)
	// Log receives one line per request, failure and back-off. Nil
	// discards.
	Log *slog.Logger

	pokeOnce sync.Once
	poke     chan struct{}
}

// DefaultGitWatchEvery is how often the watcher asks the remote.
const DefaultGitWatchEvery = 30 * time.Second

// Validate reports every problem with the watcher at once.
func (g *GitWatch) Validate() error {
	var errs []error
	switch {
	case g.Remote == "":
		errs = append(errs, errors.New("--remote URL is required"))
	case strings.HasPrefix(g.Remote, "-"):
		errs = append(errs, fmt.Errorf("--remote %q: a URL cannot start with '-'", g.Remote))
	}
	if b := g.branch(); strings.HasPrefix(b, "-") || strings.ContainsAny(b, " \t\n\r:?*[\\^~") || strings.Contains(b, "..") {
		errs = append(errs, fmt.Errorf("--branch %q: not a branch name", b))
	}
	if g.Every < 0 || (g.Every > 0 && g.Every < time.Second) {
		errs = append(errs, fmt.Errorf("--every %s: at least 1s", g.Every))
	}
	if g.Hosts == nil && g.Start == nil {
		errs = append(errs, errors.New("a git watcher needs its hosts"))
	}
	return errors.Join(errs...)
}

func (g *GitWatch) branch() string {
	if g.Branch == "" {
		return "main"
	}
	return g.Branch
}

func (g *GitWatch) every() time.Duration {
	if g.Every == 0 {
		return DefaultGitWatchEvery
	}
	return g.Every
}

func (g *GitWatch) pokes() chan struct{} {
	g.pokeOnce.Do(func() { g.poke = make(chan struct{}, 1) })
	return g.poke
}

// Poke makes the watcher ask the remote now instead of at the next tick.
// It never blocks; pokes that come while one is pending are one poke. Safe
// for concurrent use, before or during Run.
func (g *GitWatch) Poke() {
	select {
	case g.pokes() <- struct{}{}:
	default:
	}
}

// CommitID is the upgrade id of a commit: a ULID whose time is 0 (the id
// names a commit, not a moment, and its leading zeros show that) and whose
// 80 bits of randomness are the start of SHA-256("convoy git-watch " +
// commit), the same on every watcher.
func CommitID(commit string) string {
	sum := sha256.Sum256([]byte("convoy git-watch " + strings.ToLower(commit)))
	var id ulid.ULID
	_ = id.SetEntropy(sum[:10]) // 10 bytes: cannot fail; the time stays 0
	return id.String()
}

// Run watches the remote until ctx ends, and returns nil then. A remote
// that cannot be read, or a request that cannot be stored, is logged and
// tried again after a back-off from 1s doubling up to Every; nothing is
// requested meanwhile. A poke cuts any wait short.
func (g *GitWatch) Run(ctx context.Context, c *bus.Conn) error {
	if err := g.Validate(); err != nil {
		return err
	}
	ls := g.LsRemote
	if ls == nil {
		ls = LsRemote
	}
	log := g.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With(logRemote, RedactURL(g.Remote), logBranch, g.branch())
	every := g.every()
	firstBackoff := min(time.Second, every)
	backoff := firstBackoff
	var last string // the last tip whose request is stored
	var wait time.Duration
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-g.pokes():
			t.Stop()
		}
		tip, err := ls(ctx, g.Remote, g.branch())
		if err == nil && tip != last && !g.Window.Contains(time.Now()) {
			log.Info("git-watch: a new commit waits for the window", logCommit, tip, "window", g.Window.String())
			wait = min(every, time.Minute)
			continue
		}
		if err == nil && tip != last {
			err = g.request(ctx, c, tip, log)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			log.Warn("git-watch: nothing requested; trying again", logRetry, backoff, "err", err)
			wait, backoff = backoff, min(2*backoff, every)
			continue
		}
		last, wait, backoff = tip, every, firstBackoff
	}
}

func (g *GitWatch) request(ctx context.Context, c *bus.Conn, commit string, log *slog.Logger) error {
	if g.Start != nil {
		if err := g.Start(ctx, commit); err != nil {
			return fmt.Errorf("start for %s: %w", commit, err)
		}
		log.Info("git-watch: started", logCommit, commit)
		return nil
	}
	hosts, err := g.Hosts(ctx)
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		return errors.New("no hosts to upgrade: no worker has started yet, so the fleet is empty")
	}
	id := CommitID(commit)
	_, sent, err := Upgrade(ctx, c, Request{Hosts: hosts, Rev: commit, ID: id, By: "git-watch"})
	if err != nil {
		return fmt.Errorf("request upgrade %s to %s: %w", id, commit, err)
	}
	done := 0
	for _, s := range sent {
		if s.Done != nil {
			done++
		}
	}
	log.Info("git-watch: upgrade requested", logCommit, commit, logUpgrade, id, logHosts, len(sent), "already_ended", done)
	return nil
}

// LsRemote returns the commit at the tip of branch on remote, from `git
// ls-remote`, run without a shell and with GIT_TERMINAL_PROMPT=0 so that
// a remote asking for a password fails instead of waiting. It gives up
// after 30s.
func LsRemote(ctx context.Context, remote, branch string) (string, error) {
	if strings.HasPrefix(remote, "-") || strings.HasPrefix(branch, "-") {
		return "", fmt.Errorf("refusing remote %q branch %q: starts with '-'", remote, branch)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ref := "refs/heads/" + branch
	cmd := exec.CommandContext(ctx, "git", "ls-remote", "--exit-code", "--", remote, ref)
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=true", "LC_ALL=C")
	cmd.WaitDelay = time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 2 {
			return "", fmt.Errorf("git ls-remote %s: no branch %s", RedactURL(remote), branch)
		}
		msg := strings.ReplaceAll(lastLine(errb.String()), remote, RedactURL(remote))
		return "", fmt.Errorf("git ls-remote %s: %w: %s", RedactURL(remote), err, msg)
	}
	for line := range strings.Lines(out.String()) {
		commit, name, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if ok && name == ref && isCommitHex(commit) {
			return strings.ToLower(commit), nil
		}
	}
	return "", fmt.Errorf("git ls-remote %s: no branch %s in its answer", RedactURL(remote), branch)
}

func isCommitHex(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// RedactURL hides a password or token in a URL's user info, for logs.
func RedactURL(remote string) string {
	u, err := url.Parse(remote)
	if err != nil || u.User == nil {
		return remote
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	} else if u.Scheme == "http" || u.Scheme == "https" {
		u.User = url.User("xxxxx") // a token as the user name
	}
	return u.String()
}

// MaxWebhookBody is the largest webhook body accepted; a larger one gets
// 413. Push payloads are a few KiB to a few hundred.
const MaxWebhookBody = 1 << 20

// ErrWebhookUnsigned is returned by VerifyWebhook when the request carries
// none of the signature or token headers it knows.
var ErrWebhookUnsigned = errors.New("no signature or token header (X-Hub-Signature-256, X-Gitea-Signature, X-Forgejo-Signature, X-Gitlab-Token)")

// ErrWebhookBadSignature is returned by VerifyWebhook when a signature or
// token does not match the secret.
var ErrWebhookBadSignature = errors.New("signature or token does not match the secret")

// webhookCheck is how one forge proves a push: a header, and whether it
// holds a hex HMAC-SHA256 of the body (after prefix) or the secret itself.
var webhookChecks = []struct {
	forge, header, prefix string
	token                 bool
}{
	{forge: "github", header: "X-Hub-Signature-256", prefix: "sha256="},
	{forge: "forgejo", header: "X-Forgejo-Signature"},
	{forge: "gitea", header: "X-Gitea-Signature"},
	{forge: "gitlab", header: "X-Gitlab-Token", token: true},
}

// VerifyWebhook checks a push webhook's signature or token against secret
// in constant time and returns the forge it names. Every known header the
// request carries must verify (Forgejo sends its own and Gitea's), and at
// least one must be there.
func VerifyWebhook(h http.Header, body, secret []byte) (forge string, err error) {
	if len(secret) == 0 {
		return "", errors.New("no webhook secret")
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	want := mac.Sum(nil)
	for _, c := range webhookChecks {
		v, present := h[http.CanonicalHeaderKey(c.header)]
		if !present {
			continue
		}
		if len(v) != 1 {
			return "", fmt.Errorf("%s: %w", c.header, ErrWebhookBadSignature)
		}
		var ok bool
		if c.token {
			// Hash both sides so that the comparison takes the same time
			// whatever the lengths.
			a, b := sha256.Sum256([]byte(v[0])), sha256.Sum256(secret)
			ok = subtle.ConstantTimeCompare(a[:], b[:]) == 1
		} else {
			got, err := hex.DecodeString(strings.TrimPrefix(v[0], c.prefix))
			ok = err == nil && strings.HasPrefix(v[0], c.prefix) && hmac.Equal(got, want)
		}
		if !ok {
			return "", fmt.Errorf("%s: %w", c.header, ErrWebhookBadSignature)
		}
		if forge == "" {
			forge = c.forge
		}
	}
	if forge == "" {
		return "", ErrWebhookUnsigned
	}
	return forge, nil
}

// WebhookHandler answers push webhooks on POST: 413 for a body over
// MaxWebhookBody, 401 (and one log line) for a bad or missing signature,
// 400 for a body that is not JSON, else it calls poke and answers 202. It
// never reads a commit from the payload: poke makes the watcher ask the
// remote.
func WebhookHandler(secret []byte, poke func(), log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST a push webhook", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxWebhookBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, fmt.Sprintf("body over %d bytes", MaxWebhookBody), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "cannot read the body", http.StatusBadRequest)
			return
		}
		forge, err := VerifyWebhook(r.Header, body, secret)
		if err != nil {
			log.Warn("git-watch: webhook refused", "from", r.RemoteAddr, "err", err)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		if !json.Valid(body) {
			http.Error(w, "the body is not JSON (set the webhook's content type to application/json)", http.StatusBadRequest)
			return
		}
		log.Info("git-watch: webhook received; asking the remote", logForge, forge)
		poke()
		w.WriteHeader(http.StatusAccepted)
	})
}
