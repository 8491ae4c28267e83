package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
)

// A durable reader gets each message until its fn accepts it, and a new
// reader with the same name goes on after the last accepted one.
func TestConsumeRedeliversUntilAcceptedAndResumes(t *testing.T) {
	srv, c := bustest.Start(t)
	ctx := t.Context()
	for range 3 {
		if err := appendFact(ctx, c, "sorrow", events.UpgradeFailed); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var seen []uint64
	fails := 1
	read := func(ctx context.Context, conn *bus.Conn, stopAt uint64) error {
		return conn.Consume(ctx, "test-reader", []string{events.AllHostFacts}, bus.From{}, func(st bus.Stored) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, st.Seq)
			if st.Seq == 2 && fails > 0 {
				fails--
				return errors.New("sink down")
			}
			if st.Seq == stopAt {
				return bus.ErrStop
			}
			return nil
		})
	}
	if err := read(ctx, c, 2); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if got := seen; len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 2 {
		t.Fatalf("first reader saw %v, want [1 2 2] (2 refused once, then accepted)", got)
	}
	seen = nil
	mu.Unlock()
	// Another connection, the same name: it starts after 2.
	other := bustest.Connect(t, srv.ClientURL())
	if err := read(ctx, other, 3); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != 3 {
		t.Fatalf("second reader saw %v, want [3]", seen)
	}
	// Ended by its context, it says so.
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := read(cctx, other, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("consume with nothing to read until the deadline: %v", err)
	}
}
