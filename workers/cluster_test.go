package workers_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// The same worker against a 3-node cluster with the stream at 3 replicas:
// losing the stream leader mid-upgrade loses no acknowledged event and the
// upgrade completes.
func TestClusterLeaderLossMidUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	servers, c := bustest.StartCluster(t, 3)
	f, err := sandbox.New(t.TempDir(), []string{"sorrow"}, sandbox.Options{ValidationChecks: []string{"sleep 2"}})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{conn: c, fleet: f}
	r.start(t, "sorrow")
	if _, err := f.Commit("{ v = 2; }\n", "v2"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	id, sent, err := producers.Upgrade(ctx, c, producers.Request{Hosts: []string{"sorrow"}})
	if err != nil {
		t.Fatal(err)
	}
	// Kill the stream leader while validation runs.
	bustest.Expect(t, c, "sorrow", events.BuildSucceeded)
	leader, replicas, err := c.StreamLeader(ctx)
	if err != nil || leader == "" {
		t.Fatalf("stream leader %q: %v", leader, err)
	}
	if replicas != 3 {
		t.Fatalf("stream has %d replicas, want 3", replicas)
	}
	for _, s := range servers {
		if s.Name() == leader {
			s.Shutdown()
		}
	}
	var kinds []events.Kind
	ends, err := producers.Wait(ctx, c, id, sent, func(st bus.Stored) { kinds = append(kinds, st.Event.Kind()) })
	if err != nil {
		t.Fatalf("wait after losing leader %s: %v (facts so far %v)", leader, err, kinds)
	}
	if ends["sorrow"] != events.UpgradeSucceeded {
		t.Fatalf("upgrade ended %s, facts %v", ends["sorrow"], kinds)
	}
	want := []events.Kind{events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.ValidationPassed, events.SwitchSucceeded, events.UpgradeSucceeded}
	if !slices.Equal(kinds, want) {
		t.Fatalf("facts after leader loss %v, want each once: %v", kinds, want)
	}
	if head, _, _ := f.Hosts["sorrow"].Head(); head == "" {
		t.Fatal("no HEAD")
	}
}
