package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
)

// lockedBuffer is a buffer a running command writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// statusFleet is a bus with a projector and three hosts, written as
// their workers write them: sorrow upgraded, torment's build failed, and
// gloom's worker stopped. It returns the bus URL and the connection.
func statusFleet(t *testing.T) (string, *bus.Conn) {
	t.Helper()
	srv, c := bustest.Start(t)
	p, err := projections.NewProjector(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	leases, err := c.Bucket(t.Context(), bus.LeasesBucket)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"sorrow", "torment", "gloom"} {
		appendFacts(t, c, h, "", events.Fact{Commit: "c0"}, events.WorkerStarted)
		// A live worker holds its lease (gloom's stops below).
		if _, err := leases.Put(t.Context(), h, []byte(`{"owner":"test"}`)); err != nil {
			t.Fatal(err)
		}
	}
	appendFacts(t, c, "sorrow", events.NewID(), events.Fact{Commit: "c1"}, events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.SwitchSucceeded, events.UpgradeSucceeded)
	appendFacts(t, c, "torment", events.NewID(), events.Fact{Commit: "c1", Stage: "build", Reason: "exit status 1"}, events.UpgradeStarted, events.PullSucceeded, events.BuildFailed, events.RollbackSucceeded, events.UpgradeFailed)
	appendFacts(t, c, "gloom", "", events.Fact{}, events.WorkerStopped)
	caughtUpView(t, c)
	return srv.ClientURL(), c
}

// appendFacts appends host's facts of kinds, each with f, under upgrade
// id (none: "").
func appendFacts(t *testing.T, c *bus.Conn, host, id string, f events.Fact, kinds ...events.Kind) {
	t.Helper()
	for _, k := range kinds {
		e, err := events.New(k, host, "convoy/worker/"+host, f)
		if err != nil {
			t.Fatal(err)
		}
		e.UpgradeID = id
		subj, _ := events.HostSubject(host, k)
		if _, err := c.Append(t.Context(), subj, e, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func caughtUpView(t *testing.T, c *bus.Conn) {
	t.Helper()
	fleet, err := projections.OpenFleet(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 30*time.Second, "the view to catch up", func() bool {
		lag, err := fleet.Lag(t.Context())
		return err == nil && lag == 0
	})
}

// runConvoy runs the CLI as a user would and returns its exit code and
// outputs.
func runConvoy(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb strings.Builder
	code := run(t.Context(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestStatusOneline(t *testing.T) {
	url, _ := statusFleet(t)
	code, out, errOut := runConvoy(t, "--nats", url, "status", "--format", "oneline")
	if want := "convoy: 3 hosts, 2 ok, 1 failed (torment), 1 offline (gloom)\n"; code != exitOK || out != want {
		t.Fatalf("status --format oneline: exit %d\n got %q\nwant %q\n%s", code, out, want, errOut)
	}
	code, out, _ = runConvoy(t, "--nats", url, "status", "--format", "oneline", "sorrow")
	if want := "convoy: 1 host, 1 ok\n"; code != exitOK || out != want {
		t.Fatalf("status sorrow --format oneline: exit %d, got %q, want %q", code, out, want)
	}
	// --json still prints the rows, and does not mix with another format.
	code, out, _ = runConvoy(t, "--nats", url, "status", "--json")
	var rows []projections.Status
	if err := json.Unmarshal([]byte(out), &rows); code != exitOK || err != nil || len(rows) != 3 {
		t.Fatalf("status --json: exit %d, %v: %s", code, err, out)
	}
	if code, _, errOut := runConvoy(t, "--nats", url, "status", "--json", "--format", "oneline"); code != exitUsage || !strings.Contains(errOut, "give one") {
		t.Fatalf("--json --format oneline: exit %d: %s", code, errOut)
	}
	if code, _, errOut := runConvoy(t, "--nats", url, "status", "--format", "yaml"); code != exitUsage || !strings.Contains(errOut, "table, json or oneline") {
		t.Fatalf("--format yaml: exit %d: %s", code, errOut)
	}
}

func TestOnelineSummary(t *testing.T) {
	var sts []projections.Status
	for i, st := range []string{"idle", "failed", "failed", "failed", "failed", "upgrading", "queued", "unknown"} {
		sts = append(sts, projections.Status{Host: "h" + string(rune('a'+i)), State: st})
	}
	sts[0].RebootRequired = true
	want := "convoy: 8 hosts, 1 ok, 4 failed (hb, hc, hd, +1), 1 upgrading, 1 queued, 1 unknown, 1 reboot required"
	if got := oneline(sts); got != want {
		t.Fatalf("oneline:\n got %q\nwant %q", got, want)
	}
	if got := oneline(nil); got != "convoy: no hosts" {
		t.Fatalf("oneline(nil) = %q", got)
	}
}

// watchStatus runs `convoy status --watch ARGS` until the returned stop
// is called, which returns its exit code.
func watchStatus(t *testing.T, url string, out, errOut io.Writer, args ...string) (stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"--nats", url, "status", "--watch", "--interval", "10ms"}, args...), out, errOut)
	}()
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() { cancel(); code = <-done })
		return code
	}
	t.Cleanup(func() { stop() })
	return stop
}

// --watch --format oneline prints a line now and a new one at each
// change of the view, and nothing while the view stays the same; Ctrl-C
// (the context) ends it with exit 0.
func TestStatusWatchOneline(t *testing.T) {
	url, c := statusFleet(t)
	var out, errOut lockedBuffer
	stop := watchStatus(t, url, &out, &errOut, "--format", "oneline")
	first := "convoy: 3 hosts, 2 ok, 1 failed (torment), 1 offline (gloom)\n"
	bustest.Eventually(t, 30*time.Second, "the first line", func() bool { return out.String() != "" })
	if out.String() != first {
		t.Fatalf("first output %q, want %q", out.String(), first)
	}
	appendFacts(t, c, "sorrow", events.NewID(), events.Fact{}, events.UpgradeStarted)
	second := "convoy: 3 hosts, 1 ok, 1 failed (torment), 1 upgrading, 1 offline (gloom)\n"
	bustest.Eventually(t, 30*time.Second, "a line for sorrow upgrading", func() bool { return out.String() != first })
	// The view is caught up and nothing else changes: no line is repeated.
	caughtUpView(t, c)
	if code := stop(); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if got := out.String(); got != first+second {
		t.Fatalf("output:\n%s\nwant:\n%s%s", got, first, second)
	}
}

// --watch prints the table again when a host changes, on a pipe one
// table after the other.
func TestStatusWatchTable(t *testing.T) {
	url, c := statusFleet(t)
	var out, errOut lockedBuffer
	stop := watchStatus(t, url, &out, &errOut, "sorrow")
	bustest.Eventually(t, 30*time.Second, "the table", func() bool { return strings.Contains(out.String(), "sorrow") })
	appendFacts(t, c, "sorrow", events.NewID(), events.Fact{}, events.UpgradeStarted)
	bustest.Eventually(t, 30*time.Second, "sorrow upgrading", func() bool { return strings.Contains(out.String(), "upgrading") })
	if code := stop(); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	tables := strings.Split(strings.TrimSpace(out.String()), "\n\n")
	if len(tables) != 2 || !strings.HasPrefix(tables[0], "HOST") || !strings.Contains(tables[0], "idle") || !strings.Contains(tables[1], "upgrading") {
		t.Fatalf("want two tables, idle then upgrading:\n%s", out.String())
	}
	if !strings.Contains(errOut.String(), "Ctrl-C") {
		t.Fatalf("stderr: %q", errOut.String())
	}
	// A host the view has never seen ends --watch as it ends status.
	if code, _, errOut := runConvoy(t, "--nats", url, "status", "--watch", "nobody"); code != exitUsage || !strings.Contains(errOut, "unknown host") {
		t.Fatalf("status --watch nobody: exit %d: %s", code, errOut)
	}
}
