package workers_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// upgradeLogs lists a host's upgrade logs (those named by an upgrade id).
func upgradeLogs(t *testing.T, stateDir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(stateDir, "logs", "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	for _, p := range m {
		if events.ValidateID(strings.TrimSuffix(filepath.Base(p), ".log")) == nil {
			logs = append(logs, p)
		}
	}
	return logs
}

// A hook that prints 50 MB leaves a 10 MB log (the default max_size)
// with the head, a marker and the tail; the worker does not hold the
// output in memory; and after each upgrade the worker keeps only the
// newest logs.keep logs.
func TestLogWorkerCapsAndPrunesUpgradeLogs(t *testing.T) {
	const out = 50_000_000
	hook := fmt.Sprintf(`echo FIRST-OUTPUT; yes convoy-log-line | head -c %d; echo; echo LAST-OUTPUT`, out)
	r := newRig(t, sandbox.Options{PreUpdateHooks: []string{hook}, Extra: "\n[logs]\nkeep = 2\n"}, "sorrow")
	r.start(t, "sorrow")
	h := r.fleet.Hosts["sorrow"]
	var first string
	for i := range 3 {
		if _, err := r.fleet.Commit(fmt.Sprintf("{ v = %d; }\n", i), fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		got := r.upgrade(t, "sorrow", "")
		runtime.ReadMemStats(&after)
		if got[len(got)-1] != events.UpgradeSucceeded {
			t.Fatalf("upgrade %d: %v", i, got)
		}
		// Everything in this process (bus, projector, worker) together
		// allocates far less than the output that went through.
		if grew := after.TotalAlloc - before.TotalAlloc; grew > out/2 {
			t.Errorf("upgrade %d allocated %d bytes for %d bytes of output: the output is held in memory", i, grew, out)
		}
		logs := upgradeLogs(t, h.StateDir)
		if i == 0 {
			first = logs[0]
			checkLog(t, first, 10_000_000)
		}
		if want := min(i+1, 2); len(logs) != want {
			t.Fatalf("after upgrade %d: %d logs, want %d", i, len(logs), want)
		}
	}
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Fatalf("the oldest log is still there: %v", err)
	}
}

func checkLog(t *testing.T, path string, limit int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > limit || len(b) < limit*9/10 {
		t.Errorf("log %s is %d bytes, want about %d", path, len(b), limit)
	}
	for _, want := range []string{"FIRST-OUTPUT\nconvoy-log-line\n", "bytes of output dropped here", "convoy-log-line\n\nLAST-OUTPUT\n# exit 0"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("log %s lacks %q", path, want)
		}
	}
	first, marker, last := bytes.Index(b, []byte("\nFIRST-OUTPUT\n")), bytes.Index(b, []byte("\n# convoy: ")), bytes.Index(b, []byte("\nLAST-OUTPUT\n"))
	if first < 0 || first > marker || marker > last {
		t.Errorf("not head, marker, tail: first output at %d, marker at %d, last output at %d", first, marker, last)
	}
}
