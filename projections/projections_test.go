package projections_test

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
)

// history appends a scripted upgrade history for host.
func appendUpgrade(t *testing.T, c *bus.Conn, host string, kinds []events.Kind, f events.Fact) string {
	t.Helper()
	id := events.NewID()
	req, _ := events.New(events.UpgradeRequested, host, "test", events.UpgradeRequest{})
	req.UpgradeID = id
	subj, _ := events.RequestSubject(host, events.UpgradeRequested)
	if _, err := c.Append(t.Context(), subj, req, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range kinds {
		e, _ := events.New(k, host, "test", f)
		e.UpgradeID = id
		subj, _ := events.HostSubject(host, k)
		if _, err := c.Append(t.Context(), subj, e, nil); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

func runProjector(t *testing.T, c *bus.Conn) {
	t.Helper()
	runProjectorBatch(t, c, projections.DefaultMaxBatch)
}

// runProjectorBatch runs a projector whose batches hold at most maxBatch
// events.
func runProjectorBatch(t *testing.T, c *bus.Conn, maxBatch int) {
	t.Helper()
	p, err := projections.NewProjector(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	p.MaxBatch = maxBatch
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func caughtUp(t *testing.T, f *projections.Fleet) {
	t.Helper()
	bustest.Eventually(t, 10*time.Second, "projection to catch up", func() bool {
		lag, err := f.Lag(t.Context())
		return err == nil && lag == 0
	})
}

func TestStatusFollowsUpgradesAndRebuildsIdentically(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	ok := []events.Kind{events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.SwitchSucceeded, events.UpgradeSucceeded}
	appendUpgrade(t, c, "sorrow", []events.Kind{events.WorkerStarted}, events.Fact{Commit: "c0"})
	appendUpgrade(t, c, "sorrow", ok, events.Fact{Commit: "c1", Result: "/nix/store/r1", Generation: 4})
	failID := appendUpgrade(t, c, "torment", []events.Kind{events.UpgradeStarted, events.PullSucceeded, events.BuildFailed, events.RollbackSucceeded, events.UpgradeFailed}, events.Fact{Commit: "c0", Stage: "build", Reason: "build failed"})

	runProjector(t, c)
	fleet, err := projections.OpenFleet(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	caughtUp(t, fleet)
	s, err := fleet.Host(ctx, "sorrow")
	if err != nil {
		t.Fatal(err)
	}
	if s.State != projections.StateIdle || s.Commit != "c1" || s.Result != "/nix/store/r1" || s.Generation != 4 || s.LastResult != "upgrade.succeeded" {
		t.Fatalf("sorrow: %+v", s)
	}
	tm, _ := fleet.Host(ctx, "torment")
	if tm.State != projections.StateFailed || tm.LastFailed != "build" || tm.LastUpgrade != failID || tm.Commit != "c0" {
		t.Fatalf("torment: %+v", tm)
	}
	before, err := fleet.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := projections.NewProjector(ctx, c)
	n, err := p.Rebuild(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 14 {
		t.Fatalf("rebuild read %d events, want 14", n)
	}
	after, _ := fleet.All(ctx)
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("rebuild changed the view:\nbefore %+v\nafter  %+v", before, after)
	}
	index, err := upgradeindex.Open(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := index.Get(ctx, "torment", failID)
	if err != nil || rec.Terminal != "upgrade.failed" || rec.FirstSeq == 0 {
		t.Fatalf("upgrade index: %+v %v", rec, err)
	}
}

func TestApplyIsIdempotentAndSkipsUnknowns(t *testing.T) {
	e, _ := events.New(events.SwitchSucceeded, "sorrow", "test", events.Fact{Commit: "c1", Result: "r1"})
	var s projections.Status
	if !projections.Apply(&s, bus.Stored{Seq: 5, Event: e}) {
		t.Fatal("not applied")
	}
	snapshot := s
	if projections.Apply(&s, bus.Stored{Seq: 5, Event: e}) || projections.Apply(&s, bus.Stored{Seq: 3, Event: e}) {
		t.Fatal("an event at or below the row's sequence was applied again")
	}
	future, _ := events.New(events.Kind("canary.promoted"), "sorrow", "test", nil)
	if projections.Apply(&s, bus.Stored{Seq: 6, Event: future}) {
		t.Fatal("an unknown kind was applied")
	}
	if !reflect.DeepEqual(s, snapshot) {
		t.Fatalf("row changed: %+v", s)
	}
}

func TestHistoryByUpgradeReadsOnlyThatUpgrade(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	kinds := []events.Kind{events.UpgradeStarted, events.UpgradeSucceeded}
	a := appendUpgrade(t, c, "sorrow", kinds, events.Fact{})
	b := appendUpgrade(t, c, "torment", kinds, events.Fact{})
	appendUpgrade(t, c, "sorrow", kinds, events.Fact{})
	runProjector(t, c)
	fleet, _ := projections.OpenFleet(ctx, c)
	caughtUp(t, fleet)
	for _, id := range []string{a, b} {
		var got []events.Kind
		err := fleet.History(ctx, projections.Query{Upgrade: id}, func(st bus.Stored) error {
			if st.Event.UpgradeID != id {
				t.Errorf("history of %s returned an event of %s", id, st.Event.UpgradeID)
			}
			got = append(got, st.Event.Kind())
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("history of %s: %v, want request, started, succeeded", id, got)
		}
	}
	var builds int
	_ = fleet.History(ctx, projections.Query{Host: "sorrow", Kinds: []events.Kind{"upgrade"}}, func(bus.Stored) error { builds++; return nil })
	if builds != 6 {
		t.Fatalf("sorrow upgrade.* events: %d, want 6", builds)
	}
}

// A damaged view (a row rewritten, one missing, one for a host the stream
// never had, a stale checkpoint) is replaced by exactly the view folded
// from the stream.
func TestRebuildRestoresADamagedView(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	ok := []events.Kind{events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.SwitchSucceeded, events.UpgradeSucceeded}
	appendUpgrade(t, c, "sorrow", ok, events.Fact{Commit: "c1", Result: "/nix/store/r1"})
	appendUpgrade(t, c, "torment", []events.Kind{events.UpgradeStarted, events.BuildFailed, events.UpgradeFailed}, events.Fact{Stage: "build"})
	appendUpgrade(t, c, "wrath", ok, events.Fact{Commit: "c2"})
	runProjector(t, c)
	fleet, err := projections.OpenFleet(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	caughtUp(t, fleet)

	want, last := foldStream(t, c)
	if len(want) != 3 {
		t.Fatalf("fold: %d hosts", len(want))
	}

	status, err := c.Bucket(ctx, bus.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	damage := map[string]string{
		"host.sorrow":     `{"host":"sorrow","state":"failed","commit":"wrong","seq":999999}`,
		"host.phantom":    `{"host":"phantom","state":"idle","seq":3}`,
		"meta.checkpoint": "2",
	}
	for k, v := range damage {
		if _, err := status.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := status.Delete(ctx, "host.torment", 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := fleet.All(ctx); reflect.DeepEqual(got, statuses(want)) {
		t.Fatal("the damage did not change the view")
	}

	p, err := projections.NewProjector(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := fleet.All(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, statuses(want)) {
		t.Fatalf("after rebuild:\n got %+v\nwant %+v", got, statuses(want))
	}
	if cp, err := fleet.Checkpoint(ctx); err != nil || cp != last {
		t.Fatalf("checkpoint %d (%v), want %d", cp, err, last)
	}
}

// foldStream returns what the stream folds to, computed here, and the
// last sequence read.
func foldStream(t *testing.T, c *bus.Conn) (map[string]*projections.Status, uint64) {
	t.Helper()
	want := map[string]*projections.Status{}
	var last uint64
	err := c.Replay(t.Context(), []string{events.AllHostFacts, events.AllRequests}, bus.From{}, func(st bus.Stored) error {
		last = st.Seq
		h := st.Event.Host()
		if want[h] == nil {
			want[h] = &projections.Status{Host: h}
		}
		projections.Apply(want[h], st)
		return nil
	})
	if err != nil {
		t.Fatalf("fold: %v", err)
	}
	return want, last
}

// statuses returns the rows sorted by host, as Fleet.All does.
// statuses is what Fleet reads of the fold m on a bus younger than its
// leases' TTL (no worker is judged silent yet).
func statuses(m map[string]*projections.Status) []projections.Status {
	var out []projections.Status
	for _, h := range slices.Sorted(maps.Keys(m)) {
		out = append(out, *m[h])
	}
	return out
}

// Two projectors with different batch sizes, following a stream appended
// to while they run, leave the view and the index the stream folds to.
// (That a conflict is read and folded again is bus's test: here the
// other projector would make up for a lost write.)
func TestConcurrentProjectorsConverge(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	runProjectorBatch(t, c, 3)
	runProjectorBatch(t, c, projections.DefaultMaxBatch)
	ok := []events.Kind{events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.SwitchSucceeded, events.UpgradeSucceeded}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[string]bool{}
	for g := range 4 {
		wg.Go(func() {
			for i := range 6 {
				id := appendUpgrade(t, c, fmt.Sprintf("h%d", (g+i)%5), ok, events.Fact{Commit: fmt.Sprint("c", g, i)})
				mu.Lock()
				ids[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fleet, err := projections.OpenFleet(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := foldStream(t, c)
	bustest.Eventually(t, 10*time.Second, "both projectors to write the fold", func() bool {
		got, err := fleet.All(ctx)
		return err == nil && reflect.DeepEqual(got, statuses(want))
	})
	index, err := upgradeindex.Open(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	wantRecs := map[string]*upgradeindex.Record{}
	err = c.Replay(ctx, []string{events.AllHostFacts, events.AllRequests}, bus.From{}, func(st bus.Stored) error {
		id := st.Event.UpgradeID
		if wantRecs[id] == nil {
			wantRecs[id] = &upgradeindex.Record{}
		}
		wantRecs[id].Fold(st)
		return nil
	})
	if err != nil || len(wantRecs) != len(ids) {
		t.Fatalf("fold: %v, %d upgrades, want %d", err, len(wantRecs), len(ids))
	}
	for id := range ids {
		recs, err := index.ByID(ctx, id)
		if err != nil || len(recs) != 1 || recs[0] != *wantRecs[id] || recs[0].Terminal != string(events.UpgradeSucceeded) {
			t.Fatalf("upgrade %s: %+v %v, want %+v", id, recs, err, *wantRecs[id])
		}
	}
}
