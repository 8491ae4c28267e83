package projections_test

import (
	"fmt"
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
)

// BenchmarkApply folds one upgrade's facts into a host's row: the
// projector's per-event work apart from its KV round trip.
func BenchmarkApply(b *testing.B) {
	var sts []bus.Stored
	for i, k := range []events.Kind{events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.SwitchSucceeded, events.UpgradeSucceeded} {
		e, _ := events.New(k, "sorrow", "bench", events.Fact{Commit: fmt.Sprint(i)})
		sts = append(sts, bus.Stored{Seq: uint64(i + 1), Event: e})
	}
	b.ReportAllocs()
	for b.Loop() {
		var s projections.Status
		for _, st := range sts {
			projections.Apply(&s, st)
		}
	}
}
