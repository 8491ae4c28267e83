package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// The worker as the seed's fix made it: a normal user, with sudo allowed
// for the switch alone. The test makes that user and that sudoers rule.
func TestWorkerRunsUnprivilegedWithSudoForTheSwitchOnly(t *testing.T) {
	if !isRoot() {
		t.Skip("needs root to create a user and a sudoers rule")
	}
	for _, tool := range []string{"useradd", "userdel", "sudo"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CONVOY_REQUIRE_SUDO") == "1" {
				t.Fatalf("CONVOY_REQUIRE_SUDO=1 but %s is not installed", tool)
			}
			t.Skipf("%s is not installed (apt-get install sudo); CONVOY_REQUIRE_SUDO=1 makes this a failure", tool)
		}
	}
	t.Parallel()
	name := fmt.Sprintf("convoy-e2e-%d", os.Getpid())
	home := t.TempDir()
	if out, err := exec.Command("useradd", "--system", "--home-dir", home, "--shell", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	// A validation check proves sudo grants nothing but the switch.
	r := newRig(t, []string{"sorrow"}, sandbox.Options{ValidationChecks: []string{"! sudo -n true 2>/dev/null"}})
	h := r.fleet.Hosts["sorrow"]
	// The system lives where only root may write; the switch is a script
	// root owns, the one command the user may run through sudo.
	sys := filepath.Join(r.dir, "system-root")
	if err := os.Mkdir(sys, 0o755); err != nil {
		t.Fatal(err)
	}
	switchScript := filepath.Join(sys, "switch")
	if err := os.WriteFile(switchScript, []byte("#!/bin/sh\nset -e\ntest \"$(id -u)\" = 0\nprintf '%s\\n' \"$1\" > "+filepath.Join(sys, "current")+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sudoers := "/etc/sudoers.d/" + name
	if err := os.WriteFile(sudoers, []byte(name+" ALL=(root) NOPASSWD: "+switchScript+" *\n"), 0o440); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(sudoers) })

	b, err := os.ReadFile(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(b)
	i := strings.Index(cfg, "[system]")
	cfg = cfg[:i] + fmt.Sprintf(`[system]
driver = "command"
build = ["sh", "-c", "out=$CONVOY_STATE_DIR/result-$(git rev-parse --short HEAD); id -u > $out; echo $out"]
switch = ["sh", "-c", "sudo -n %s \"$CONVOY_RESULT\""]
current = ["sh", "-c", "cat %s 2>/dev/null || true"]
`, switchScript, filepath.Join(sys, "current"))
	if err := os.WriteFile(h.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The user owns its checkouts and state; everything above them only
	// needs to be passable.
	for _, d := range []string{filepath.Dir(h.Repo), r.dir, filepath.Dir(r.dir)} {
		os.Chmod(d, 0o755)
	}
	if err := filepath.Walk(filepath.Dir(h.Repo), func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(h.Config, 0o644)
	os.Chmod(r.fleet.Remote, 0o755)
	filepath.Walk(r.fleet.Dir+"/remote", func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			os.Chmod(p, fi.Mode()|0o555)
		}
		return nil
	})

	// Not root, so no --allow-root. The user's git trusts the root-owned
	// remote (git clears GIT_CONFIG_* for a local remote's upload-pack, so
	// it goes in the user's global config).
	gitconfig := filepath.Join(home, ".gitconfig")
	if err := os.WriteFile(gitconfig, []byte("[safe]\n\tdirectory = *\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(home, 0o755)
	os.Lchown(gitconfig, uid, gid)
	env := []string{"HOME=" + home, "USER=" + name}
	w := startProcAs(t, "worker sorrow as "+name, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, env, "worker", "--config", h.Config)
	r.workers["sorrow"] = w
	r.waitWorker("sorrow", w)

	c := r.commit(configV1, "v1")
	sum := r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	if got := sum.result("sorrow"); got != "upgrade.succeeded" {
		t.Fatalf("upgrade as %s: %s", name, got)
	}
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
	sw := find(t, r.facts("sorrow", sum.Upgrade), "switch.succeeded")
	built, err := os.ReadFile(sw.Result)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(built)) != u.Uid {
		t.Fatalf("the build ran as uid %s, want the worker's %s", strings.TrimSpace(string(built)), u.Uid)
	}
	cur := filepath.Join(sys, "current")
	fi, err := os.Stat(cur)
	if err != nil {
		t.Fatalf("the switch did not run as root: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
		t.Fatalf("%s is owned by uid %d; the switch must run as root through sudo", cur, st.Uid)
	}
	if got, _ := os.ReadFile(cur); strings.TrimSpace(string(got)) != sw.Result {
		t.Fatalf("the system runs %q, want %s", got, sw.Result)
	}
}
