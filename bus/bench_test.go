package bus_test

import (
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
)

// BenchmarkAppendGuarded is one worker fact: a publish to the embedded
// server with the expected-sequence guard, fsynced before the ack.
func BenchmarkAppendGuarded(b *testing.B) {
	_, c := bustest.Start(b)
	subj, _ := events.HostSubject("sorrow", events.WorkerStarted)
	var last uint64
	b.ReportAllocs()
	for b.Loop() {
		e, _ := events.New(events.WorkerStarted, "sorrow", "bench", events.Fact{})
		seq, err := c.Append(b.Context(), subj, e, &bus.Expect{Filter: events.HostFacts("sorrow"), Seq: last})
		if err != nil {
			b.Fatal(err)
		}
		last = seq
	}
}
