package alerts_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections/alerts"
)

// A server whose disk goes low, then full, then back to ok raises one
// bus.storage alert per level it enters, however many checks see it, and
// none while it is ok.
func TestAlertBusStorageOncePerLevel(t *testing.T) {
	_, c := bustest.Start(t)
	var mu sync.Mutex
	since := time.Now().Add(-time.Minute)
	cur := bus.Storage{Server: "convoy-0", DataDir: "/var/lib/convoy/bus", Level: bus.StorageOK, MinFree: 256 << 20, Since: since}
	set := func(l bus.StorageLevel) {
		mu.Lock()
		defer mu.Unlock()
		since = since.Add(time.Second)
		cur.Level, cur.Since, cur.Free = l, since, 1<<20
	}
	storage := func(context.Context) ([]bus.Storage, error) {
		mu.Lock()
		defer mu.Unlock()
		return []bus.Storage{cur}, nil
	}
	var sent []alerts.Alert
	sink := alerts.SinkFunc(func(ctx context.Context, a alerts.Alert) error {
		mu.Lock()
		defer mu.Unlock()
		sent = append(sent, a)
		return nil
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(sent)
	}
	cfg := parse(t, `
[alerts]
check_every = "20ms"
[[alerts.sink]]
type = "command"
command = ["true"]
`)
	start(t, c, cfg, alerts.Options{Sinks: map[string]alerts.Sink{"command": sink}, Storage: storage})
	time.Sleep(100 * time.Millisecond) // several checks of an ok disk
	if n := count(); n != 0 {
		t.Fatalf("%d alerts while the disk is ok", n)
	}
	set(bus.StorageLow)
	bustest.Eventually(t, 10*time.Second, "the low disk's alert", func() bool { return count() == 1 })
	set(bus.StorageFull)
	bustest.Eventually(t, 10*time.Second, "the full disk's alert", func() bool { return count() == 2 })
	set(bus.StorageOK)
	time.Sleep(100 * time.Millisecond) // several checks again
	if n := count(); n != 2 {
		t.Fatalf("%d alerts, want one per level entered (2)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, want := range []string{"new requests are refused", "every append is refused"} {
		a := sent[i]
		if a.Kind != alerts.BusStorage || a.Severity != "critical" || !strings.Contains(a.Summary, "the bus's storage is full on convoy-0: free space in /var/lib/convoy/bus") || !strings.Contains(a.Summary, want) {
			t.Errorf("alert %d: %+v", i, a)
		}
	}
	if sent[0].ID == sent[1].ID {
		t.Errorf("the low and the full disk share the id %s", sent[0].ID)
	}
}

// A sink's errors, which the alerts log, name its host but not the
// secret path of its URL.
func TestAlertSinkErrorsHideTheURLPath(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer down.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // refuses connections
	for _, base := range []string{down.URL, gone.URL} {
		for _, typ := range []string{alerts.SinkWebhook, alerts.SinkNtfy} {
			s, err := alerts.NewSink(alerts.SinkConfig{Type: typ, Name: "x", URL: base + "/hooks/T0SECRET/B0SECRET"}, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			e, _ := events.New(events.UpgradeFailed, "sorrow", "test", events.Fact{})
			err = s.Send(t.Context(), alerts.Alert{ID: e.ID, Kind: e.Kind(), Host: "sorrow", Event: e})
			if err == nil || strings.Contains(err.Error(), "SECRET") || !strings.Contains(err.Error(), strings.TrimPrefix(base, "http://")) {
				t.Errorf("%s to %s: error %v: want the host, not the path", typ, base, err)
			}
		}
	}
}
