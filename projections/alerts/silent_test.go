package alerts_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/projections/alerts"
)

// A worker that dies without worker.stopped (its lease expires) is
// alerted offline once, also across a restart of the alerts; a live
// worker, which renews its lease, never is; and nothing is judged while
// the leases bucket is younger than its TTL (a bus that just started).
func TestAlertSilentWorkerOnce(t *testing.T) {
	const ttl = 2 * time.Second
	_, c := bustest.StartLeaseTTL(t, ttl)
	born := time.Now()
	ctx := t.Context()
	p, err := projections.NewProjector(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(ctx)
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = p.Run(pctx) }()
	t.Cleanup(func() { stop(); <-pdone })

	leases, err := c.Bucket(ctx, bus.LeasesBucket)
	if err != nil {
		t.Fatal(err)
	}
	// sorrow's worker lives: it renews its lease every ttl/3; torment's
	// died at once, without a word.
	renew := func() {
		if _, err := leases.Put(ctx, "sorrow", []byte(`{"owner":"test"}`)); err != nil && ctx.Err() == nil {
			t.Error(err)
		}
	}
	renew()
	rctx, stopRenew := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-tick.C:
				renew()
			}
		}
	})
	t.Cleanup(func() { stopRenew(); wg.Wait() })
	appendFact(t, c, "sorrow", events.WorkerStarted, events.Fact{})
	appendFact(t, c, "torment", events.WorkerStarted, events.Fact{})

	var mu sync.Mutex
	var sent []alerts.Alert
	sink := alerts.SinkFunc(func(ctx context.Context, a alerts.Alert) error {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, a)
		return nil
	})
	offline := func() []alerts.Alert {
		mu.Lock()
		defer mu.Unlock()
		var out []alerts.Alert
		for _, a := range sent {
			if a.Kind == alerts.WorkerOffline {
				out = append(out, a)
			}
		}
		return out
	}
	cfg := parse(t, `
[alerts]
offline_after = "100ms"
check_every = "50ms"
[[alerts.sink]]
type = "command"
command = ["true"]
`)
	opts := alerts.Options{Sinks: map[string]alerts.Sink{"command": sink}, Storage: func(context.Context) ([]bus.Storage, error) { return nil, nil }}
	ctx1, stop1 := context.WithCancel(ctx)
	a1, err := alerts.New(ctx1, c, cfg, slog.New(slog.DiscardHandler), opts)
	if err != nil {
		t.Fatal(err)
	}
	done1 := make(chan struct{})
	go func() { defer close(done1); _ = a1.Run(ctx1) }()
	time.Sleep(time.Until(born.Add(ttl)) - 200*time.Millisecond)
	if got := offline(); len(got) != 0 {
		t.Fatalf("alerted before the leases bucket was %s old: %+v", ttl, got)
	}
	bustest.Eventually(t, 10*time.Second, "torment's silence", func() bool { return len(offline()) > 0 })
	time.Sleep(300 * time.Millisecond) // more rounds of the check
	stop1()
	<-done1

	// The alerts restart: nothing new.
	start(t, c, cfg, opts)
	time.Sleep(300 * time.Millisecond)
	got := offline()
	if len(got) != 1 || got[0].Host != "torment" || !strings.Contains(got[0].Summary, "silent") {
		t.Fatalf("offline alerts %+v, want one, torment's silence", got)
	}
	var od alerts.OfflineData
	if err := got[0].Event.DecodeData(&od); err != nil || od.Stopped != "" || od.LastSeen.IsZero() {
		t.Errorf("its data %+v (%v)", od, err)
	}
}
