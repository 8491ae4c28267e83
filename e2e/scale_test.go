package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/workers/simfleet"
)

// scaleHosts join one server in TestScaleHostsJoinAndUpgrade: more than
// the 1,000 consumers nats-server allows a stream unless told otherwise,
// so a design with a durable consumer per host cannot pass it.
const scaleHosts = 1200

// 1,200 simulated hosts (the real worker code, one connection each) join
// one convoy server, each receives and completes one upgrade, and at that
// size history and upgrade --wait still work.
func TestScaleHostsJoinAndUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skipf("-short: %d simulated hosts take a while", scaleHosts)
	}
	if raceEnabled {
		t.Skipf("the race detector allows 8,128 goroutines at once, fewer than %d hosts with a connection each need", scaleHosts)
	}
	r := baseRig(t)
	r.startServerAnyPort()
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()
	start := time.Now()
	// The workers' warnings say why a host is stuck (a consumer it cannot
	// create, say); a failure shows the first of them.
	var warnings syncBuffer
	t.Cleanup(func() {
		if t.Failed() {
			w := strings.SplitN(warnings.String(), "\n", 21)
			t.Logf("the simulated workers' first warnings:\n%s", strings.Join(w[:min(20, len(w))], "\n"))
		}
	})
	log := slog.New(slog.NewTextHandler(&warnings, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fleet, err := simfleet.Start(ctx, simfleet.Options{URL: r.url, Hosts: scaleHosts, Dir: t.TempDir(), Version: "scale-test", Logger: log})
	if err != nil {
		t.Fatalf("%d hosts joining: %v", scaleHosts, err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := fleet.Close(cctx); err != nil {
			t.Errorf("stopping the simulated hosts: %v", err)
		}
	})
	t.Logf("%d hosts joined in %s (%d goroutines in the test)", scaleHosts, time.Since(start).Round(time.Millisecond), runtime.NumGoroutine())

	conn, err := bus.Connect(ctx, bus.ConnectConfig{URL: r.url, Name: "scale test"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hosts := fleet.Hosts()
	id, sent, err := producers.Upgrade(ctx, conn, producers.Request{Hosts: hosts, By: "scale test"})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer wcancel()
	ends, err := producers.Wait(wctx, conn, id, sent, func(bus.Stored) {})
	var missing, failed []string
	for _, h := range hosts {
		switch k, ok := ends[h]; {
		case !ok:
			missing = append(missing, h)
		case k != events.UpgradeSucceeded:
			failed = append(failed, fmt.Sprintf("%s: %s", h, k))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d hosts did not end upgrade %s (%v), the first: %v", len(missing), len(hosts), id, err, missing[:min(5, len(missing))])
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(failed) > 0 {
		t.Fatalf("%d hosts did not succeed: %v", len(failed), failed[:min(5, len(failed))])
	}
	t.Logf("every host upgraded, %s after the first joined", time.Since(start).Round(time.Millisecond))

	// History and upgrade --wait read through consumers of their own:
	// the hosts must not have taken every one the server allows.
	last := hosts[len(hosts)-1]
	var kinds []string
	for _, l := range r.history(last) {
		if l.upgradeID() == id {
			kinds = append(kinds, l.kind())
		}
	}
	if !slices.Contains(kinds, "upgrade.requested") || !slices.Contains(kinds, "upgrade.succeeded") {
		t.Fatalf("history %s: upgrade %s shows %v", last, id, kinds)
	}
	const next = "0123456789abcdef0123456789abcdef01234567"
	sum := r.upgrade(exitOK, last, "--rev", next, "--wait", "--timeout", "1m")
	if got := sum.result(last); got != "upgrade.succeeded" {
		t.Fatalf("upgrade %s --rev %s --wait: %s", last, next, got)
	}
	s := r.waitStatus(last, "at "+next, func(s hostStatus) bool { return s.Commit == next })
	if s.State != "idle" || s.LastResult != "upgrade.succeeded" {
		t.Fatalf("status of %s after upgrade --wait: %+v", last, s)
	}
}
