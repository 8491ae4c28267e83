package e2e

// Mistakes a user makes: each is refused with the right exit code and a
// message that says what is wrong, never a stack trace.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// wantMessage fails unless stderr has every one of parts.
func wantMessage(t *testing.T, res result, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(res.stderr, p) {
			t.Fatalf("stderr does not say %q: %s", p, res)
		}
	}
}

// deadURL is a bus address where nothing listens.
func deadURL(t *testing.T) string { return "nats://127.0.0.1:" + strconv.Itoa(freePort(t)) }

// workerArgs is `worker --config FILE`, with --allow-root when CI runs us
// as root.
func workerArgs(config string) []string {
	args := []string{"worker", "--config", config}
	if isRoot() {
		args = append(args, "--allow-root")
	}
	return args
}

// editConfig rewrites the worker config of host with edit.
func editConfig(t *testing.T, h *sandbox.Host, edit func(string) string) {
	t.Helper()
	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.Config, []byte(edit(string(b))), 0o644); err != nil {
		t.Fatal(err)
	}
}

// lineOf returns the 1-based line of the first line of file that starts
// with prefix.
func lineOf(t *testing.T, file, prefix string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			return i + 1
		}
	}
	t.Fatalf("no line starting with %q in %s", prefix, file)
	return 0
}

func TestBadInput(t *testing.T) {
	t.Parallel()

	t.Run("usage errors", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, []string{"sorrow"}, sandbox.Options{})
		for _, tc := range []struct {
			args []string
			says []string
		}{
			{[]string{"upgrade", "Sorrow_1"}, []string{`invalid host name "Sorrow_1"`, "lower-case letters, digits and '-'"}},
			{[]string{"upgrade", "sorrow", "-torment"}, []string{"flag provided but not defined: -torment"}},
			{[]string{"upgrade", "sorrow", "bad.host"}, []string{`invalid host name "bad.host"`}},
			{[]string{"upgrade", strings.Repeat("a", 64)}, []string{"longer than 63 characters"}},
			{[]string{"upgrade", "sorrow", "sorrow"}, []string{`host "sorrow" named twice`}},
			{[]string{"upgrade"}, []string{"name hosts or use --all"}},
			{[]string{"upgrade", "sorrow", "--all"}, []string{"name hosts or use --all"}},
			{[]string{"upgrade", "--all"}, []string{"no worker has started yet"}},
			{[]string{"upgrade", "sorrow", "--id", "42"}, []string{`invalid id "42"`, "ULID"}},
			{[]string{"status", "Sorrow_1"}, []string{`invalid host name "Sorrow_1"`}},
			{[]string{"status", "torment"}, []string{`unknown host "torment"`}},
			{[]string{"history", "Sorrow_1"}, []string{`invalid host name "Sorrow_1"`}},
			{[]string{"history", "sorrow", "torment"}, []string{"at most one host"}},
			{[]string{"history", "--upgrade", "yesterday's"}, []string{"--upgrade", "ULID"}},
			{[]string{"history", "--since", "yesterday"}, []string{"--since", "RFC 3339"}},
			{[]string{"projections", "refresh"}, []string{"convoy projections rebuild"}},
			{[]string{"upgrades", "sorrow"}, []string{`unknown command "upgrades"`}},
			{[]string{"worker"}, []string{"--config FILE is required"}},
			{[]string{"server", "--listen", "0.0.0.0:4222"}, []string{"beyond loopback", "--tls-cert"}},
		} {
			res := r.convoy(tc.args...)
			wantExit(t, res, exitUsage)
			wantMessage(t, res, tc.says...)
		}
		// None of it reached the bus.
		if lines := r.history(); len(lines) != 0 {
			t.Fatalf("refused input reached the bus: %v", kinds(lines))
		}
	})

	t.Run("invalid host name without a bus", func(t *testing.T) {
		t.Parallel()
		// Input is checked "before it reaches the bus": no need to wait
		// for one to say the name is wrong.
		start := time.Now()
		res := convoy(t, 30*time.Second, "--nats", deadURL(t), "upgrade", "Sorrow_1")
		noStackTrace(t, res)
		mustHold(t, res.code == exitUsage, "`upgrade` dials the bus (5s, exit 4) before it validates host names and --id",
			"exit ", res.code, " after ", time.Since(start).Round(time.Millisecond), ": ", lastLine(res.stderr))
		wantMessage(t, res, `invalid host name "Sorrow_1"`)
	})

	t.Run("unknown config key", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct{ key, line, after string }{
			{"upgrade.validation_check", `validation_check = ["true"]`, `timeout = "2m"`},
			{"system.bulid", `bulid = ["true"]`, `current = `},
			{"hots", `hots = "sorrow"`, `host = `},
		} {
			f, err := sandbox.New(t.TempDir(), []string{"sorrow"}, sandbox.Options{NATS: deadURL(t)})
			if err != nil {
				t.Fatal(err)
			}
			h := f.Hosts["sorrow"]
			editConfig(t, h, func(s string) string {
				i := strings.Index(s, tc.after)
				j := i + strings.IndexByte(s[i:], '\n') + 1
				return s[:j] + tc.line + "\n" + s[j:]
			})
			res := convoy(t, 30*time.Second, workerArgs(h.Config)...)
			wantExit(t, res, exitUsage)
			wantMessage(t, res, fmt.Sprintf("line %d: unknown key %q", lineOf(t, h.Config, tc.line), tc.key), h.Config)
		}
	})

	t.Run("invalid config values", func(t *testing.T) {
		t.Parallel()
		f, err := sandbox.New(t.TempDir(), []string{"sorrow"}, sandbox.Options{NATS: deadURL(t), OnValidationFailure: "pray"})
		if err != nil {
			t.Fatal(err)
		}
		h := f.Hosts["sorrow"]
		editConfig(t, h, func(s string) string { return strings.Replace(s, `timeout = "2m"`, `timeout = "soon"`, 1) })
		res := convoy(t, 30*time.Second, workerArgs(h.Config)...)
		wantExit(t, res, exitUsage)
		wantMessage(t, res, `duration "soon"`)
		editConfig(t, h, func(s string) string { return strings.Replace(s, `timeout = "soon"`, `timeout = "2m"`, 1) })
		res = convoy(t, 30*time.Second, workerArgs(h.Config)...)
		wantExit(t, res, exitUsage)
		wantMessage(t, res, `upgrade.on_validation_failure "pray": want rollback, notify or ignore`)
	})

	t.Run("missing repo path", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, []string{"sorrow"}, sandbox.Options{})
		h := r.fleet.Hosts["sorrow"]
		missing := h.Repo + "-not-cloned"
		editConfig(t, h, func(s string) string {
			return strings.Replace(s, fmt.Sprintf("path = %q", h.Repo), fmt.Sprintf("path = %q", missing), 1)
		})
		res := r.convoy(workerArgs(h.Config)...)
		wantExit(t, res, exitUsage)
		wantMessage(t, res, "repo.path "+missing, "not a git checkout", "clone the repo there first")
	})

	t.Run("missing repo path without a bus", func(t *testing.T) {
		t.Parallel()
		// A config mistake is reported at once, even when the bus is
		// not up yet (a worker at boot).
		f, err := sandbox.New(t.TempDir(), []string{"sorrow"}, sandbox.Options{NATS: deadURL(t)})
		if err != nil {
			t.Fatal(err)
		}
		h := f.Hosts["sorrow"]
		editConfig(t, h, func(s string) string {
			return strings.Replace(s, fmt.Sprintf("path = %q", h.Repo), fmt.Sprintf("path = %q", h.Repo+"-not-cloned"), 1)
		})
		res, ok := convoyWithin(t, 8*time.Second, workerArgs(h.Config)...)
		mustHold(t, ok, "`worker` checks the repo paths only after it reached the bus: with the bus down it retries for ever instead of exiting 2", lastLine(res.stderr))
		wantExit(t, res, exitUsage)
		wantMessage(t, res, "not a git checkout")
	})

	t.Run("bus unreachable", func(t *testing.T) {
		t.Parallel()
		url := deadURL(t)
		for _, args := range [][]string{{"status"}, {"history", "sorrow"}, {"upgrade", "sorrow", "--wait"}, {"projections", "rebuild"}} {
			t.Run(args[0], func(t *testing.T) {
				t.Parallel()
				res := convoy(t, 30*time.Second, append([]string{"--nats", url}, args...)...)
				wantExit(t, res, exitUnreachable)
				wantMessage(t, res, "bus unreachable at "+url, "convoy server")
			})
		}
	})

	t.Run("root", func(t *testing.T) {
		t.Parallel()
		if !isRoot() {
			t.Skip("runs only as root")
		}
		f, err := sandbox.New(t.TempDir(), []string{"sorrow"}, sandbox.Options{NATS: deadURL(t)})
		if err != nil {
			t.Fatal(err)
		}
		res := convoy(t, 30*time.Second, "worker", "--config", f.Hosts["sorrow"].Config)
		wantExit(t, res, exitUsage)
		wantMessage(t, res, "refusing to run as root", "--allow-root")
	})
}
