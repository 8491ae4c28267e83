package e2e

import (
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// fullDisk is the sentence every client gets while the bus's disk is full.
const fullDisk = "the bus's storage is full on "

// tmpfs mounts a small tmpfs for a data dir, or skips without root
// (fails with CONVOY_REQUIRE_ROOT=1, as in CI).
func tmpfs(t *testing.T, size string) string {
	t.Helper()
	if !isRoot() {
		if os.Getenv("CONVOY_REQUIRE_ROOT") != "" {
			t.Fatal("CONVOY_REQUIRE_ROOT is set but the test does not run as root (it mounts a tmpfs)")
		}
		t.Skip("mounting a small tmpfs needs root; run as root (CI sets CONVOY_REQUIRE_ROOT=1)")
	}
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a file in dir until statfs says at most leave bytes are
// free (leave 0: until the disk is full).
func fill(t *testing.T, dir string, leave uint64) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "filler-")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		var fs syscall.Statfs_t
		if err := syscall.Statfs(dir, &fs); err != nil {
			t.Fatal(err)
		}
		free := fs.Bavail * uint64(fs.Bsize)
		if free <= leave {
			return f.Name()
		}
		n := min(uint64(len(buf)), free-leave)
		if _, err := f.Write(buf[:n]); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return f.Name()
			}
			t.Fatal(err)
		}
	}
}

// A full disk is loud and survivable: the server notices, every client
// refused names the full disk instead of timing out, the worker keeps its
// facts in the outbox meanwhile, and once space is freed the server takes
// appends again without a restart and the outboxed facts are stored
// once. With a reserve (--min-free) the guard refuses before JetStream
// ever fails a write; without one, a write fails for lack of space and
// the server restarts JetStream in process when space returns.
func TestFullDiskIsLoudAndSurvivable(t *testing.T) {
	for _, tc := range []struct {
		name, minFree string
		leave         uint64 // free space to leave when filling to full
	}{
		{"reserve", "8MiB", 512 << 10},
		{"no reserve: a write fails", "0", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			disk := tmpfs(t, "40m")
			gate := filepath.Join(t.TempDir(), "go")
			r := baseRig(t)
			r.data = filepath.Join(disk, "bus")
			web := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
			r.serverArgs = []string{"--min-free", tc.minFree, "--http", web}
			r.startServerAnyPort()
			r.makeFleet([]string{"sorrow"}, sandbox.Options{HealthChecks: []string{"while [ ! -e " + sh(gate) + " ]; do sleep 0.05; done"}})
			if err := os.WriteFile(gate, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			w := r.startWorker("sorrow")
			r.commit(configV1, "v1")
			r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")

			// An upgrade stops in its health check, its switch stored.
			if err := os.Remove(gate); err != nil {
				t.Fatal(err)
			}
			c2 := r.commit(configV2, "v2")
			id := upgradeIDIn(t, r.convoy("upgrade", "sorrow", "--rev", c2))
			eventually(t, 60*time.Second, "the upgrade to switch", func() bool {
				return slices.ContainsFunc(r.history("sorrow", "--upgrade", id), func(l histLine) bool { return l.kind() == "switch.succeeded" })
			})

			// The disk fills up.
			filler := fill(t, disk, tc.leave)
			if tc.minFree == "0" {
				// Nothing refuses before JetStream fails a write: the
				// health check's fact is that write.
				if err := os.WriteFile(gate, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 60*time.Second, "status to report the full disk", func() bool {
				res := r.convoy("status")
				return strings.Contains(res.stderr, "bus storage FULL: "+fullDisk)
			})
			if !strings.Contains(r.server.stderr.String(), fullDisk) || !strings.Contains(r.server.stderr.String(), r.data) {
				t.Fatalf("the server did not log the full disk with its data dir:\n%s", r.server.stderr.String())
			}
			// A health check fails, naming the disk.
			if code, body := webGet(t, web, "/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"storage":"full"`) || !strings.Contains(body, r.data) {
				t.Fatalf("/healthz on a full disk: %d %s", code, body)
			}
			// Clients are refused at once, with the reason.
			res := r.convoy("upgrade", "sorrow", "--rev", c2)
			if res.code == exitOK || !strings.Contains(res.stderr, fullDisk+serverName(r)) || !strings.Contains(res.stderr, "free space in "+r.data) {
				t.Fatalf("an upgrade request on a full disk: %s", res)
			}
			// The worker's facts wait in its outbox, and its log says why.
			if err := os.WriteFile(gate, nil, 0o644); err != nil && !errors.Is(err, os.ErrExist) {
				t.Fatal(err)
			}
			eventually(t, 60*time.Second, "the worker to wait for the full disk", func() bool {
				return strings.Contains(w.stderr.String(), fullDisk)
			})
			outbox := filepath.Join(r.fleet.Hosts["sorrow"].StateDir, "outbox")
			if n := entries(t, outbox); n == 0 {
				t.Fatalf("the worker's outbox is empty while the disk is full:\n%s", w.stderr.String())
			}

			// Space returns: no restart of anything.
			if err := os.Remove(filler); err != nil {
				t.Fatal(err)
			}
			s := r.waitStatus("sorrow", "the upgrade to succeed", func(s hostStatus) bool {
				return s.LastUpgrade == id && s.LastResult == "upgrade.succeeded"
			})
			if !strings.HasPrefix(c2, s.Commit) && s.Commit != c2 {
				t.Fatalf("sorrow runs %s, want %s", s.Commit, c2)
			}
			facts := r.facts("sorrow", id)
			ks := kinds(facts)
			seen := map[string]bool{}
			for _, k := range ks {
				if seen[k] {
					t.Fatalf("%s stored twice: %v", k, ks)
				}
				seen[k] = true
			}
			if ks[len(ks)-1] != "upgrade.succeeded" {
				t.Fatalf("facts %v: want upgrade.succeeded last", ks)
			}
			if n := entries(t, outbox); n != 0 {
				t.Fatalf("%d fact(s) still in the outbox", n)
			}
			if res := r.convoy("status"); strings.Contains(res.stderr, "bus storage") {
				t.Fatalf("status still reports the disk: %s", res)
			}
			if code, body := webGet(t, web, "/healthz"); code != http.StatusOK || !strings.Contains(body, `"storage":"ok"`) {
				t.Fatalf("/healthz once space is back: %d %s", code, body)
			}
			// A JetStream restart loses the memory bucket of the workers'
			// leases: the server makes it again.
			c := bustest.Connect(t, r.url)
			eventually(t, 30*time.Second, "the leases bucket to be there", func() bool {
				b, err := c.Bucket(t.Context(), bus.LeasesBucket)
				if err != nil {
					return false
				}
				_, _, err = b.Age(t.Context())
				return err == nil
			})
			r.upgrade(exitOK, "sorrow", "--rev", c2, "--wait", "--timeout", "60s")
			if r.server.exited() {
				t.Fatalf("the server exited: %s", r.server.stderr.String())
			}
		})
	}
}

func entries(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if !strings.HasSuffix(e.Name(), ".tmp") {
			n++
		}
	}
	return n
}

// serverName is the name convoy server gives itself without --name.
func serverName(r *rig) string {
	_, port, _ := net.SplitHostPort(r.listen)
	return "convoy-" + port
}
