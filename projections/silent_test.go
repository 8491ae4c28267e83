package projections_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
)

// A worker online by its facts is online while it holds its lease and
// silent once the lease is gone; a worker that said worker.stopped stays
// offline; every read of the fleet says the same. No worker is silent
// before the leases bucket is as old as its TTL (a bus that just started
// has no lease until the workers renew theirs).
func TestFleetShowsASilentWorker(t *testing.T) {
	const ttl = 4 * time.Second
	born := time.Now() // before the bucket: its age is at most time.Since(born)
	_, c := bustest.StartLeaseTTL(t, ttl)
	ctx := t.Context()
	for _, h := range []string{"sorrow", "torment", "gloom"} {
		e, _ := events.New(events.WorkerStarted, h, "test", events.Fact{})
		subj, _ := events.HostSubject(h, events.WorkerStarted)
		if _, err := c.Append(ctx, subj, e, nil); err != nil {
			t.Fatal(err)
		}
	}
	e, _ := events.New(events.WorkerStopped, "gloom", "test", events.Fact{})
	subj, _ := events.HostSubject("gloom", events.WorkerStopped)
	if _, err := c.Append(ctx, subj, e, nil); err != nil {
		t.Fatal(err)
	}
	leases, err := c.Bucket(ctx, bus.LeasesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leases.Put(ctx, "sorrow", []byte(`{"owner":"test"}`)); err != nil {
		t.Fatal(err)
	}
	runProjector(t, c)
	fleet, err := projections.OpenFleet(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	caughtUp(t, fleet)

	want := map[string]string{"sorrow": projections.WorkerOnline, "torment": projections.WorkerOnline, "gloom": projections.WorkerOffline}
	// check reports how each read of the fleet differs from want.
	check := func(want map[string]string) (diffs []string) {
		t.Helper()
		all, err := fleet.All(ctx)
		if err != nil {
			t.Fatal(err)
		}
		named, err := fleet.Hosts(ctx, []string{"sorrow", "torment", "gloom"})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range all {
			one, err := fleet.Host(ctx, s.Host)
			if err != nil {
				t.Fatal(err)
			}
			if s.Worker != want[s.Host] || one.Worker != want[s.Host] || named[s.Host].Worker != want[s.Host] {
				diffs = append(diffs, fmt.Sprintf("%s: All says %q, Host %q, Hosts %q; want %q", s.Host, s.Worker, one.Worker, named[s.Host].Worker, want[s.Host]))
			}
		}
		return diffs
	}
	young := check(want) // torment's missing lease means nothing yet
	if time.Since(born) >= ttl {
		t.Fatalf("the setup took %s, longer than the leases' TTL (%s): raise the TTL", time.Since(born), ttl)
	}
	if young != nil {
		t.Fatalf("a bus younger than its leases' TTL: %v", young)
	}
	time.Sleep(time.Until(born.Add(ttl)))
	if _, err := leases.Put(ctx, "sorrow", []byte(`{"owner":"test"}`)); err != nil {
		t.Fatal(err) // renewed, as a live worker does every ttl/3
	}
	want["torment"] = projections.WorkerSilent
	var diffs []string
	bustest.Eventually(t, 5*time.Second, "torment silent", func() bool { diffs = check(want); return diffs == nil })

	// The worker dies: its lease goes (expires, here deleted).
	if err := leases.Delete(ctx, "sorrow", 0); err != nil {
		t.Fatal(err)
	}
	want["sorrow"] = projections.WorkerSilent
	if diffs = check(want); diffs != nil {
		t.Fatal(diffs)
	}
}
