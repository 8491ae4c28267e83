package simfleet

import (
	"context"
	"testing"
)

// The simulated host answers the commands of a pull, a build and a
// switch as git and the command driver would, from its own state.
func TestSystemAnswers(t *testing.T) {
	const other = "0123456789abcdef0123456789abcdef01234567"
	s := newSystem("h00001")
	steps := []struct {
		argv     []string
		env      []string
		wantOut  string
		wantCode int
	}{
		{[]string{"git", "rev-parse", "--verify", "HEAD^{commit}"}, nil, Commit, 0},
		{[]string{"git", "rev-parse", "--verify", "refs/remotes/origin/main^{commit}"}, nil, Commit, 0},
		{[]string{"git", "rev-parse", "--verify", "--quiet", "--end-of-options", other + "^{commit}"}, nil, other, 0},
		{[]string{"git", "rev-parse", "--verify", "--quiet", "--end-of-options", "v1.0^{commit}"}, nil, "", 1},
		{[]string{"git", "status", "--porcelain", "--untracked-files=no"}, nil, "", 0},
		{[]string{"git", "merge-base", "--is-ancestor", Commit, "refs/remotes/origin/main"}, nil, "", 0},
		{[]string{"git", "merge-base", "--is-ancestor", Commit, Commit}, nil, "", 0},
		{[]string{"git", "merge-base", "--is-ancestor", other, Commit}, nil, "", 1},
		{currentArgv, nil, "", 0},
		{[]string{"git", "reset", "--hard", "--quiet", other}, nil, "", 0},
		{[]string{"git", "rev-parse", "--verify", "HEAD^{commit}"}, nil, other, 0},
		{buildArgv, nil, "/simfleet/h00001/system-0123456789ab", 0},
		{switchArgv, []string{"CONVOY_RESULT=/simfleet/h00001/system-0123456789ab"}, "", 0},
		{currentArgv, nil, "/simfleet/h00001/system-0123456789ab", 0},
		{[]string{"sh", "-c", "a hook"}, nil, "", 0},
	}
	for _, st := range steps {
		res := s.exec(context.Background(), "/repo", st.argv, st.env...)
		if res.LastLine != st.wantOut || res.ExitCode != st.wantCode || (res.Err != nil) != (st.wantCode != 0) {
			t.Errorf("%q: last line %q, exit %d, err %v; want %q, exit %d", st.argv, res.LastLine, res.ExitCode, res.Err, st.wantOut, st.wantCode)
		}
	}
}
