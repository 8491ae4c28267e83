package simfleet_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/workers/simfleet"
)

// Simulated hosts join through the worker's own code and upgrade as a
// host whose commands succeed: the first upgrade succeeds, the same
// commit again is already current, a new commit succeeds again.
func TestFleetJoinsAndUpgrades(t *testing.T) {
	srv, conn := bustest.Start(t)
	const n = 12
	joins := 0
	f, err := simfleet.Start(t.Context(), simfleet.Options{URL: srv.ClientURL(), Hosts: n, Dir: t.TempDir(), Concurrency: 5, Version: "test",
		OnJoin: func(string, int) { joins++ }})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = f.Close(context.Background())
		}
	})
	hosts := f.Hosts()
	if len(hosts) != n || hosts[0] != "h00001" || hosts[n-1] != "h00012" {
		t.Fatalf("hosts %v", hosts)
	}
	if j := f.Joined(); len(j) != n || joins != n {
		t.Fatalf("%d hosts joined, %d OnJoin calls; want %d", len(j), joins, n)
	}
	started := bustest.Expect(t, conn, "h00003", events.WorkerStarted)
	if fact, _ := started.Event.Fact(); fact.Commit != simfleet.Commit || fact.Version != "test" {
		t.Fatalf("worker.started: %+v", fact)
	}

	upgrade := func(rev string) map[string]events.Kind {
		t.Helper()
		id, sent, err := producers.Upgrade(t.Context(), conn, producers.Request{Hosts: hosts, Rev: rev, By: "test"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		ends, err := producers.Wait(ctx, conn, id, sent, func(bus.Stored) {})
		if err != nil {
			t.Fatal(err)
		}
		return ends
	}
	for _, round := range []struct {
		rev  string
		want events.Kind
	}{
		{"", events.UpgradeSucceeded},
		{"", events.UpgradeSkipped},
		{"0123456789abcdef0123456789abcdef01234567", events.UpgradeSucceeded},
	} {
		for h, k := range upgrade(round.rev) {
			if k != round.want {
				t.Fatalf("rev %q on %s: %s, want %s", round.rev, h, k, round.want)
			}
		}
	}
	want := []events.Kind{events.WorkerStarted,
		events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.SwitchSucceeded, events.UpgradeSucceeded,
		events.UpgradeStarted, events.UpgradeSkipped,
		events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.SwitchSucceeded, events.UpgradeSucceeded}
	if got := bustest.Kinds(t, conn, "h00007"); !slices.Equal(got, want) {
		t.Fatalf("facts of h00007:\n got %v\nwant %v", got, want)
	}
	end := bustest.Expect(t, conn, "h00007", events.UpgradeSucceeded)
	if fact, _ := end.Event.Fact(); fact.Commit != "0123456789abcdef0123456789abcdef01234567" || fact.Result != "/simfleet/h00007/system-0123456789ab" || fact.PreviousResult != "/simfleet/h00007/system-5afe5afe5afe" {
		t.Fatalf("the last upgrade.succeeded: %+v", fact)
	}

	closed = true
	if err := f.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if ks := bustest.Kinds(t, conn, h); ks[len(ks)-1] != events.WorkerStopped {
			t.Fatalf("%s did not stop cleanly: %v", h, ks)
		}
	}
}
