package workers

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
)

func testWorker(t *testing.T, c *bus.Conn, host string) *Worker {
	t.Helper()
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	if err := os.MkdirAll(filepath.Join(repo, ".git"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseConfig([]byte(`host = "` + host + `"
state_dir = "` + filepath.Join(dir, "state") + `"
[repo]
path = "` + repo + `"
[system]
build = ["true"]
switch = ["true"]
current = ["true"]
`))
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(Options{Config: cfg, Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	lock, err := w.open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	return w
}

// An event stored by the bus whose ack the worker never saw (its context
// ended first) must not make the worker think a second worker wrote it.
func TestLostAckIsAdoptedNotMistakenForASecondWorker(t *testing.T) {
	_, c := bustest.Start(t)
	w := testWorker(t, c, "sorrow")
	ctx := t.Context()
	if err := w.emit(ctx, "", events.WorkerStarted, events.Fact{}); err != nil {
		t.Fatal(err)
	}
	// Simulate: the event went to the outbox and the bus stored it, but
	// the worker never learnt its sequence.
	lost, _ := events.New(events.UpgradeSucceeded, "sorrow", w.source, events.Fact{})
	subj, _ := events.HostSubject("sorrow", events.UpgradeSucceeded)
	if err := w.out.put(subj, lost); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Append(ctx, subj, lost, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.emit(ctx, "", events.WorkerStopped, events.Fact{}); err != nil {
		t.Fatalf("emit after a lost ack: %v", err)
	}
	if w.out.has(lost.ID) {
		t.Fatal("the adopted event is still in the outbox")
	}
	// Restarting publishes nothing twice.
	if err := w.flushOutbox(ctx); err != nil {
		t.Fatal(err)
	}
	if got := bustest.Kinds(t, c, "sorrow"); len(got) != 3 {
		t.Fatalf("stored %v, want worker.started, upgrade.succeeded, worker.stopped once each", got)
	}

	// A fact written by someone else is a second worker.
	other, _ := events.New(events.WorkerStarted, "sorrow", "convoy/worker/sorrow", events.Fact{})
	if _, err := c.Append(ctx, subj, other, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.emit(ctx, "", events.WorkerStopped, events.Fact{}); !errors.Is(err, ErrSecondWorker) {
		t.Fatalf("emit after another writer: %v, want ErrSecondWorker", err)
	}
}

// Events emitted while the bus is unreachable wait in the outbox and are
// published once, in order, when it is back.
func TestOutboxPublishesQueuedEventsOnceInOrder(t *testing.T) {
	_, c := bustest.Start(t)
	w := testWorker(t, c, "torment")
	ctx := t.Context()
	w.queueOnly = true // the bus is unreachable: emit only queues
	for _, k := range []events.Kind{events.BootFailed, events.GoldenRestored} {
		if err := w.emit(ctx, "", k, events.Fact{}); err != nil {
			t.Fatal(err)
		}
	}
	w.queueOnly = false
	if err := w.syncSeq(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := w.flushOutbox(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := bustest.Kinds(t, c, "torment")
	if len(got) != 2 || got[0] != events.BootFailed || got[1] != events.GoldenRestored {
		t.Fatalf("published %v", got)
	}
}
