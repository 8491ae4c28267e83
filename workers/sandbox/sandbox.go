// Package sandbox builds a throwaway fleet on the local disk: a bare
// nix-config remote (and a secrets remote), one checkout per host, and a
// worker config per host that uses the command driver. The demo, the
// end-to-end tests and the worker tests all run on it, with real git.
package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Fleet is a sandbox fleet under Dir.
type Fleet struct {
	Dir     string
	Remote  string // bare nix-config repo
	Secrets string // bare secrets repo
	Work    string // the operator's clone, where changes are made
	SecWork string
	Hosts   map[string]*Host
}

// Host is one host's checkouts and config.
type Host struct {
	Name       string
	Repo       string // checkout of Remote
	SecretRepo string // checkout of Secrets
	StateDir   string
	// System is the file the command driver's switch writes: what the
	// host "runs".
	System string
	Config string // path of the worker's TOML config
}

// Options shape the worker configs.
type Options struct {
	NATS                string
	PreUpdateHooks      []string
	ValidationChecks    []string
	OnValidationFailure string
	HealthChecks        []string
	Timeout             string
	// Nix makes the fleet a real Nix one: the remote holds a flake whose
	// nixosConfigurations.<host> build with Nix, and the hosts use the
	// nixos driver with the nix builder, a profile and gcroots of their
	// own, and the golden generation. See NixEnv.
	Nix bool
	// RepoExtra is added to the [repo] table verbatim.
	RepoExtra string
	// Extra is appended to every config verbatim.
	Extra string
	// Tags gives hosts their tags (the top-level tags key).
	Tags map[string][]string
	// AllowRolloutRollback sets upgrade.allow_rollout_rollback.
	AllowRolloutRollback bool
}

// Git runs git in dir and returns its trimmed stdout.
func Git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_AUTHOR_NAME=convoy", "GIT_AUTHOR_EMAIL=convoy@example.invalid",
		"GIT_COMMITTER_NAME=convoy", "GIT_COMMITTER_EMAIL=convoy@example.invalid",
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		// Tests may hand a host's checkout to another user.
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=safe.directory", "GIT_CONFIG_VALUE_0=*")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s in %s: %w: %s", strings.Join(args, " "), dir, err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// The command driver of the sandbox: the build refuses a config with a
// syntax error the way Nix would, and otherwise "builds" the config into
// a result file named by commit; switch records the result as the
// running system; current prints it.
const (
	buildScript = `set -e
if grep -q 'syntax error' configuration.nix; then
  echo "error: syntax error, unexpected ID, expecting '.' or '='" >&2
  echo "       at configuration.nix" >&2
  exit 1
fi
mkdir -p "$CONVOY_STATE_DIR/results"
out="$CONVOY_STATE_DIR/results/system-$(git rev-parse --short HEAD)"
cp configuration.nix "$out"
echo "building the system configuration..."
echo "$out"`
	switchScript  = `test -f "$CONVOY_RESULT" && printf '%s\n' "$CONVOY_RESULT" > "$SANDBOX_SYSTEM"`
	currentScript = `cat "$SANDBOX_SYSTEM" 2>/dev/null || true`
)

// New creates the remotes with an initial commit and one checkout, state
// dir and config per host.
func New(dir string, hosts []string, o Options) (*Fleet, error) {
	f := &Fleet{Dir: dir, Remote: filepath.Join(dir, "remote", "nix-config.git"), Secrets: filepath.Join(dir, "remote", "nix-secrets.git"),
		Work: filepath.Join(dir, "operator", "nix-config"), SecWork: filepath.Join(dir, "operator", "nix-secrets"), Hosts: map[string]*Host{}}
	for _, r := range []struct{ bare, work, file, content string }{
		{f.Remote, f.Work, "configuration.nix", "{ services.openssh.enable = true; }\n"},
		{f.Secrets, f.SecWork, "secrets.yaml", "wifi: initial\n"},
	} {
		if err := os.MkdirAll(r.bare, 0o755); err != nil {
			return nil, err
		}
		if _, err := Git(r.bare, "init", "--quiet", "--bare", "--initial-branch=main"); err != nil {
			return nil, err
		}
		if _, err := Git(dir, "clone", "--quiet", r.bare, r.work); err != nil {
			return nil, err
		}
		if _, err := Git(r.work, "checkout", "--quiet", "-B", "main"); err != nil {
			return nil, err
		}
		if err := commitFile(r.work, r.file, r.content, "initial"); err != nil {
			return nil, err
		}
	}
	if o.Nix {
		if err := HaveNix(); err != nil {
			return nil, err
		}
		if err := commitFile(f.Work, "flake.nix", flakeFor(hosts), "flake: nixosConfigurations for every host"); err != nil {
			return nil, err
		}
	}
	for _, name := range hosts {
		h := &Host{Name: name, Repo: filepath.Join(dir, name, "nix-config"), SecretRepo: filepath.Join(dir, name, "nix-secrets"),
			StateDir: filepath.Join(dir, name, "state"), System: filepath.Join(dir, name, "system"), Config: filepath.Join(dir, name, "convoy.toml")}
		for _, c := range [][2]string{{f.Remote, h.Repo}, {f.Secrets, h.SecretRepo}} {
			if _, err := Git(dir, "clone", "--quiet", c[0], c[1]); err != nil {
				return nil, err
			}
		}
		dirs := []string{filepath.Dir(h.Profile()), h.GCRoots()}
		if o.Nix {
			for _, d := range []string{"store", "var", "log", "cache"} {
				dirs = append(dirs, filepath.Join(h.nixDir(), d))
			}
		}
		for _, d := range dirs {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return nil, err
			}
		}
		if err := os.WriteFile(h.Config, []byte(h.config(o)), 0o644); err != nil {
			return nil, err
		}
		f.Hosts[name] = h
	}
	return f, nil
}

func tomlList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func (h *Host) config(o Options) string {
	onFail := o.OnValidationFailure
	if onFail == "" {
		onFail = "rollback"
	}
	timeout := o.Timeout
	if timeout == "" {
		timeout = "2m"
	}
	env := "SANDBOX_SYSTEM=" + h.System
	var b strings.Builder
	fmt.Fprintf(&b, "host = %q\n", h.Name)
	if tags := o.Tags[h.Name]; len(tags) > 0 {
		fmt.Fprintf(&b, "tags = %s\n", tomlList(tags))
	}
	if o.NATS != "" {
		fmt.Fprintf(&b, "nats = %q\n", o.NATS)
	}
	fmt.Fprintf(&b, "state_dir = %q\n\n[repo]\npath = %q\n%s\n[secrets]\npath = %q\n\n", h.StateDir, h.Repo, o.RepoExtra, h.SecretRepo)
	fmt.Fprintf(&b, "[upgrade]\npre_update_hooks = %s\nvalidation_checks = %s\non_validation_failure = %q\nhealth_checks = %s\ntimeout = %q\n\n",
		tomlList(o.PreUpdateHooks), tomlList(o.ValidationChecks), onFail, tomlList(o.HealthChecks), timeout)
	if o.AllowRolloutRollback {
		b.WriteString("allow_rollout_rollback = true\n\n")
	}
	if o.Nix {
		b.WriteString(h.nixConfig())
	} else {
		fmt.Fprintf(&b, "[system]\ndriver = \"command\"\nbuild = %s\nswitch = %s\ncurrent = %s\n",
			tomlList([]string{"sh", "-c", buildScript}),
			tomlList([]string{"env", env, "sh", "-c", switchScript}),
			tomlList([]string{"env", env, "sh", "-c", currentScript}))
	}
	b.WriteString(o.Extra)
	return b.String()
}

func commitFile(work, file, content, msg string, commitArgs ...string) error {
	if err := os.WriteFile(filepath.Join(work, file), []byte(content), 0o644); err != nil {
		return err
	}
	if _, err := Git(work, "add", file); err != nil {
		return err
	}
	if _, err := Git(work, append(commitArgs, "commit", "--quiet", "-m", msg)...); err != nil {
		return err
	}
	_, err := Git(work, "push", "--quiet", "origin", "main")
	return err
}

// Commit writes configuration.nix in the operator's clone, commits and
// pushes, and returns the new commit.
func (f *Fleet) Commit(content, msg string) (string, error) {
	if err := commitFile(f.Work, "configuration.nix", content, msg); err != nil {
		return "", err
	}
	return Git(f.Work, "rev-parse", "HEAD")
}

// CommitSigned commits and pushes configuration.nix signed with the SSH
// private key at key, as `git commit -S` with gpg.format=ssh does.
func (f *Fleet) CommitSigned(content, msg, key string) (string, error) {
	if err := commitFile(f.Work, "configuration.nix", content, msg, "-c", "gpg.format=ssh", "-c", "user.signingkey="+key, "-c", "commit.gpgsign=true"); err != nil {
		return "", err
	}
	return Git(f.Work, "rev-parse", "HEAD")
}

// CommitSecrets does the same in the secrets repo.
func (f *Fleet) CommitSecrets(content, msg string) (string, error) {
	if err := commitFile(f.SecWork, "secrets.yaml", content, msg); err != nil {
		return "", err
	}
	return Git(f.SecWork, "rev-parse", "HEAD")
}

// Head returns a host's checked-out config and secrets commits.
func (h *Host) Head() (config, secrets string, err error) {
	if config, err = Git(h.Repo, "rev-parse", "HEAD"); err != nil {
		return
	}
	secrets, err = Git(h.SecretRepo, "rev-parse", "HEAD")
	return
}

// Running returns what the host's system runs: the profile's store path
// in a Nix fleet, else the last result the command driver switched to.
func (h *Host) Running() string {
	if p, err := filepath.EvalSymlinks(h.Profile()); err == nil {
		return p
	}
	b, _ := os.ReadFile(h.System)
	return strings.TrimSpace(string(b))
}
