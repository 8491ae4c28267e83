package workers_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// sshKey makes an ed25519 key pair and returns the private key's path and
// the public key line.
func sshKey(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	key := filepath.Join(dir, name)
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return key, strings.TrimSpace(string(pub))
}

// results counts the builds the sandbox's command driver ran.
func results(h *sandbox.Host) int {
	ents, _ := os.ReadDir(filepath.Join(h.StateDir, "results"))
	return len(ents)
}

func TestForgedTargetsAreRejectedWithoutABuild(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	keys := t.TempDir()
	trusted, trustedPub := sshKey(t, keys, "trusted")
	stranger, _ := sshKey(t, keys, "stranger")
	signers := filepath.Join(keys, "allowed_signers")
	if err := os.WriteFile(signers, []byte("ops@example.invalid "+trustedPub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, sandbox.Options{RepoExtra: "verify_commits = true\nallowed_signers = \"" + signers + "\"\n"}, "sorrow")
	r.start(t, "sorrow")
	h := r.fleet.Hosts["sorrow"]

	good1, err := r.fleet.CommitSigned("{ v = 1; }\n", "signed 1", trusted)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.upgrade(t, "sorrow", ""); got[len(got)-1] != events.UpgradeSucceeded {
		t.Fatalf("a commit signed by an allowed key: %v", got)
	}
	good2, err := r.fleet.CommitSigned("{ v = 2; }\n", "signed 2", trusted)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.upgrade(t, "sorrow", good2); got[len(got)-1] != events.UpgradeSucceeded {
		t.Fatalf("second signed commit: %v", got)
	}
	builds := results(h)

	// A commit on another branch of the same remote.
	if _, err := sandbox.Git(r.fleet.Work, "checkout", "--quiet", "-b", "evil"); err != nil {
		t.Fatal(err)
	}
	offBranch, err := r.fleet.CommitSigned("{ evil = true; }\n", "evil", trusted)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.Git(r.fleet.Work, "push", "--quiet", "origin", "evil"); err != nil {
		t.Fatal(err)
	}
	if _, err := sandbox.Git(r.fleet.Work, "checkout", "--quiet", "main"); err != nil {
		t.Fatal(err)
	}
	// The host has the object (say, fetched by hand): it must still refuse.
	if _, err := sandbox.Git(h.Repo, "fetch", "--quiet", "origin", "evil"); err != nil {
		t.Fatal(err)
	}
	// An unsigned commit, then one signed by a key nobody allowed.
	unsigned, err := r.fleet.Commit("{ v = 3; }\n", "unsigned")
	if err != nil {
		t.Fatal(err)
	}
	strange, err := r.fleet.CommitSigned("{ v = 4; }\n", "stranger", stranger)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, rev, why string }{
		{"not on the branch", offBranch, "not a commit on the tracked branch"},
		{"older commit", good1, "downgrade refused"},
		{"unsigned", unsigned, "signature not verified"},
		{"unknown key", strange, "signature not verified"},
		{"names nothing", "no-such-ref", "unknown revision"},
		{"option injection", "--upload-pack=touch /tmp/pwned", "unknown revision"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := r.upgrade(t, "sorrow", tc.rev)
			if !slices.Equal(got, []events.Kind{events.UpgradeStarted, events.UpgradeRejected}) {
				t.Fatalf("facts %v, want upgrade.started, upgrade.rejected", got)
			}
			last := lastFact(t, r.conn, "sorrow")
			f, _ := last.Event.Fact()
			if !strings.Contains(f.Reason, tc.why) {
				t.Fatalf("reason %q does not say %q", f.Reason, tc.why)
			}
			if c, _, _ := h.Head(); c != good2 {
				t.Fatalf("HEAD moved to %s", c)
			}
		})
	}
	if n := results(h); n != builds {
		t.Fatalf("%d builds ran for refused targets", n-builds)
	}
}

func lastFact(t *testing.T, c *bus.Conn, host string) bus.Stored {
	t.Helper()
	st, err := c.Last(t.Context(), events.HostFacts(host))
	if err != nil {
		t.Fatal(err)
	}
	return st
}
