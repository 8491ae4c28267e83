package simfleet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/convoy-fleet/convoy/workers"
)

// Commit is the commit every simulated host has checked out when it
// starts, and the one its tracked branch points at.
const Commit = "5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe"

// The argv of the simulated command driver. No process runs them: the
// host's Exec recognises them.
var (
	buildArgv   = []string{"simfleet", "build"}
	switchArgv  = []string{"simfleet", "switch"}
	currentArgv = []string{"simfleet", "current"}
)

// system is one simulated host's checkout and system: what git and the
// command driver would read and change. The worker runs one command at a
// time, but the mutex keeps a reader in a test safe.
type system struct {
	host string
	mu   sync.Mutex
	head string // the checked-out commit
	// current is the result the last switch activated ("" before one).
	current string
}

func newSystem(host string) *system { return &system{host: host, head: Commit} }

// exec is the host's workers.Exec: it answers every command at once.
func (s *system) exec(_ context.Context, _ string, argv []string, env ...string) workers.CmdResult {
	start := time.Now()
	out, code := s.answer(argv, env)
	res := workers.CmdResult{Argv: argv, ExitCode: code, Tail: out, LastLine: lastLine(out), Duration: time.Since(start)}
	if code != 0 {
		res.Err = fmt.Errorf("%s: exit status %d", argv[0], code)
	}
	return res
}

// answer returns what the command would print and its exit code.
func (s *system) answer(argv []string, env []string) (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(argv) > 1 && argv[0] == "git":
		return s.git(argv[1:])
	case slices.Equal(argv, buildArgv):
		return "building the system configuration (simulated)\n" + s.result() + "\n", 0
	case slices.Equal(argv, switchArgv):
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, "CONVOY_RESULT="); ok {
				s.current = v
			}
		}
		return "", 0
	case slices.Equal(argv, currentArgv):
		if s.current == "" {
			return "", 0
		}
		return s.current + "\n", 0
	}
	return "", 0 // hooks and checks: none are configured; succeed
}

// result is what building the checked-out commit produces.
func (s *system) result() string {
	return "/simfleet/" + s.host + "/system-" + s.head[:12]
}

// git answers the git commands the worker's pull stage runs.
func (s *system) git(args []string) (string, int) {
	switch args[0] {
	case "rev-parse":
		rev, _ := strings.CutSuffix(args[len(args)-1], "^{commit}")
		switch {
		case rev == "HEAD":
			return s.head + "\n", 0
		case strings.HasPrefix(rev, "refs/remotes/"):
			return Commit + "\n", 0
		case isCommit(rev):
			return rev + "\n", 0
		}
		return "", 1 // an unknown name: git rev-parse --verify --quiet
	case "merge-base":
		// --is-ancestor A B: every commit is on the tracked branch, and no
		// commit is an ancestor of another, so a new one is no downgrade.
		a, b := args[len(args)-2], args[len(args)-1]
		if a == b || !isCommit(b) {
			return "", 0
		}
		return "", 1
	case "reset":
		s.head = args[len(args)-1]
	}
	return "", 0 // fetch, status --porcelain (clean), reset, verify-commit
}

// isCommit reports whether s is a full commit id.
func isCommit(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
