package producers_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
)

func TestScheduleNext(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no tzdata")
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		s        producers.Schedule
		now, out string
	}{
		{producers.Schedule{Every: time.Hour}, "2026-11-22T03:59:59Z", "2026-11-22T04:00:00Z"},
		{producers.Schedule{Every: time.Hour}, "2026-11-22T04:00:00Z", "2026-11-22T05:00:00Z"},
		{producers.Schedule{Every: 15 * time.Minute}, "2026-11-22T04:07:00Z", "2026-11-22T04:15:00Z"},
		{producers.Schedule{Daily: "04:00", Location: time.UTC}, "2026-11-22T03:00:00Z", "2026-11-22T04:00:00Z"},
		{producers.Schedule{Daily: "04:00", Location: time.UTC}, "2026-11-22T04:00:00Z", "2026-11-23T04:00:00Z"},
		{producers.Schedule{Daily: "04:00", Location: berlin}, "2026-11-22T02:30:00Z", "2026-11-22T03:00:00Z"},
		{producers.Schedule{Daily: "02:30", Location: berlin}, "2026-03-28T12:00:00Z", "2026-03-29T01:30:00Z"}, // the night clocks go forward
	} {
		if got := tc.s.Next(at(tc.now)); !got.Equal(at(tc.out)) {
			t.Errorf("%+v after %s: %s, want %s", tc.s, tc.now, got.UTC().Format(time.RFC3339), tc.out)
		}
	}
	if (&producers.Schedule{Every: time.Hour}).Validate() == nil {
		t.Error("a schedule without hosts accepted")
	}
	for _, bad := range []producers.Schedule{{}, {Every: time.Hour, Daily: "04:00"}, {Daily: "25:00"}, {Daily: "4"}, {Every: time.Millisecond}} {
		bad.Hosts = producers.HostList("sorrow")
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestSlotIDIsTheSameOnEveryScheduler(t *testing.T) {
	slot := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	a, b := producers.SlotID(slot), producers.SlotID(slot.In(time.FixedZone("x", 3600)))
	if a != b || events.ValidateID(a) != nil {
		t.Fatalf("slot ids %s and %s", a, b)
	}
	if producers.SlotID(slot.Add(time.Hour)) == a {
		t.Fatal("two slots share an id")
	}
}

// Two schedulers, as on two machines for availability, request each slot
// once per host.
func TestTwoSchedulersRequestEachSlotOnce(t *testing.T) {
	_, c := bustest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3500*time.Millisecond)
	defer cancel()
	var mu sync.Mutex
	slots := map[string]bool{}
	var wg sync.WaitGroup
	for range 2 {
		s := &producers.Schedule{Every: time.Second, Hosts: producers.HostList("sorrow", "torment"),
			OnRequest: func(_ time.Time, id string, _ []producers.Sent, err error) {
				if err != nil {
					t.Errorf("request: %v", err)
				}
				mu.Lock()
				slots[id] = true
				mu.Unlock()
			}}
		wg.Go(func() { _ = s.Run(ctx, c, nil) })
	}
	wg.Wait()
	perID := map[string]int{}
	err := c.Replay(t.Context(), []string{events.AllRequests}, bus.From{}, func(st bus.Stored) error {
		perID[st.Event.UpgradeID]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) < 2 {
		t.Fatalf("%d slots in 3.5s of a 1s schedule", len(slots))
	}
	for id := range slots {
		if perID[id] != 2 {
			t.Errorf("slot %s: %d requests, want one per host (2)", id, perID[id])
		}
	}
}
