package workers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// gitRepo is one tracked checkout. All git runs through Exec, so it is
// logged, timed out and killed like every other command.
type gitRepo struct {
	name string // "repo" or "secrets", for messages
	cfg  RepoConfig
	run  Exec
}

// ErrNotOnBranch is wrapped when a requested revision is not a commit
// reachable from the tracked branch of the tracked remote.
var ErrNotOnBranch = errors.New("not a commit on the tracked branch")

// ErrUnsigned is wrapped when verify_commits is on and the target commit
// has no good signature from an allowed key.
var ErrUnsigned = errors.New("commit signature not verified")

// ErrBadRev is wrapped when a requested revision names nothing.
var ErrBadRev = errors.New("unknown revision")

var gitEnv = []string{"GIT_TERMINAL_PROMPT=0", "GIT_ASKPASS=true", "LC_ALL=C"}

func (g *gitRepo) git(ctx context.Context, args ...string) (string, error) {
	res := g.run(ctx, g.cfg.Path, append([]string{"git"}, args...), gitEnv...)
	if res.Err != nil {
		return res.Tail, fmt.Errorf("git %s in %s: %w: %s", args[0], g.cfg.Path, res.Err, errorLine(res.Tail))
	}
	return strings.TrimSpace(res.Tail), nil
}

// check reports whether the checkout exists and is a git work tree.
func (g *gitRepo) check() error {
	if _, err := os.Stat(filepath.Join(g.cfg.Path, ".git")); err != nil {
		return fmt.Errorf("%s.path %s: not a git checkout (%w); clone the repo there first", g.name, g.cfg.Path, err)
	}
	return nil
}

func (g *gitRepo) trackingRef() string {
	return "refs/remotes/" + g.cfg.Remote + "/" + g.cfg.Branch
}

// head returns the checked-out commit.
func (g *gitRepo) head(ctx context.Context) (string, error) {
	return g.git(ctx, "rev-parse", "--verify", "HEAD^{commit}")
}

// fetch updates the tracking ref of the tracked branch.
func (g *gitRepo) fetch(ctx context.Context) error {
	_, err := g.git(ctx, "fetch", "--no-tags", "--", g.cfg.Remote, "+refs/heads/"+g.cfg.Branch+":"+g.trackingRef())
	return err
}

// clean refuses a work tree with local changes or local commits that the
// tracked branch does not have: resetting would lose them.
func (g *gitRepo) clean(ctx context.Context, head string) error {
	st, err := g.git(ctx, "status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return err
	}
	if st != "" {
		return fmt.Errorf("%s %s has uncommitted changes (%s); commit and push or discard them, convoy will not overwrite them", g.name, g.cfg.Path, firstLine(st))
	}
	if ok, err := g.isAncestor(ctx, head, g.trackingRef()); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("%s %s: HEAD %s has commits that %s/%s does not; push or drop them, convoy will not overwrite them", g.name, g.cfg.Path, short(head), g.cfg.Remote, g.cfg.Branch)
	}
	return nil
}

// resolve turns a requested revision into a commit on the tracked branch.
// An empty rev means the tip of the branch.
func (g *gitRepo) resolve(ctx context.Context, rev string) (string, error) {
	if rev == "" {
		return g.git(ctx, "rev-parse", "--verify", g.trackingRef()+"^{commit}")
	}
	if err := checkRev(rev); err != nil {
		return "", err
	}
	c, err := g.git(ctx, "rev-parse", "--verify", "--quiet", "--end-of-options", rev+"^{commit}")
	if err != nil || c == "" {
		return "", fmt.Errorf("%w %q in %s (fetched %s/%s)", ErrBadRev, rev, g.name, g.cfg.Remote, g.cfg.Branch)
	}
	ok, err := g.isAncestor(ctx, c, g.trackingRef())
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("%q (%s) is %w %s/%s", rev, short(c), ErrNotOnBranch, g.cfg.Remote, g.cfg.Branch)
	}
	return c, nil
}

// checkRev refuses revision strings that could be read as options or are
// not plausible revisions, before they reach git.
func checkRev(rev string) error {
	if len(rev) > 256 || strings.HasPrefix(rev, "-") || strings.ContainsAny(rev, " \t\n\r\x00") || strings.Contains(rev, "..") {
		return fmt.Errorf("%w %q: want a commit id or a ref on the tracked branch", ErrBadRev, rev)
	}
	return nil
}

func (g *gitRepo) isAncestor(ctx context.Context, a, b string) (bool, error) {
	res := g.run(ctx, g.cfg.Path, []string{"git", "merge-base", "--is-ancestor", a, b}, gitEnv...)
	switch res.ExitCode {
	case 0:
		return true, nil
	case 1:
		return false, nil
	}
	return false, fmt.Errorf("git merge-base in %s: %w", g.cfg.Path, res.Err)
}

// reset checks out commit, moving the current branch to it.
func (g *gitRepo) reset(ctx context.Context, commit string) error {
	_, err := g.git(ctx, "reset", "--hard", "--quiet", commit)
	return err
}

func short(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

// verify checks the commit's SSH signature against the allowed signers.
func (g *gitRepo) verify(ctx context.Context, commit string) error {
	if !g.cfg.VerifyCommits {
		return nil
	}
	res := g.run(ctx, g.cfg.Path, []string{"git", "-c", "gpg.format=ssh", "-c", "gpg.ssh.allowedSignersFile=" + g.cfg.AllowedSigners,
		"verify-commit", "--", commit}, gitEnv...)
	if res.Err != nil {
		why := strings.TrimSpace(lastLine(res.Tail))
		if why == "" {
			why = "no signature"
		}
		return fmt.Errorf("%w: %s %s: %s (only commits signed by a key in %s are deployed)", ErrUnsigned, g.name, short(commit), why, g.cfg.AllowedSigners)
	}
	return nil
}
