package projections_test

import (
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
)

func TestRebootRequiredFollowsTheFacts(t *testing.T) {
	var s projections.Status
	seq := uint64(0)
	apply := func(k events.Kind, f events.Fact) {
		t.Helper()
		e, err := events.New(k, "sorrow", "test", f)
		if err != nil {
			t.Fatal(err)
		}
		seq++
		if !projections.Apply(&s, bus.Stored{Seq: seq, Event: e}) {
			t.Fatalf("%s not applied", k)
		}
	}
	for _, step := range []struct {
		kind events.Kind
		fact events.Fact
		want bool
	}{
		{events.WorkerStarted, events.Fact{Result: "r1"}, false},
		{events.SwitchSucceeded, events.Fact{Result: "r2", RebootRequired: true}, true},
		{events.UpgradeSucceeded, events.Fact{Result: "r2", RebootRequired: true}, true},
		{events.RebootStarted, events.Fact{Result: "r2"}, true},
		{events.BootValidated, events.Fact{Result: "r1"}, true}, // booted another system
		{events.BootValidated, events.Fact{Result: "r2"}, false},
		{events.SwitchSucceeded, events.Fact{Result: "r3", RebootRequired: true}, true},
		{events.RollbackSucceeded, events.Fact{Result: "r2"}, false}, // back to the booted one
		{events.SwitchSucceeded, events.Fact{Result: "r3", RebootRequired: true}, true},
		{events.WorkerStopped, events.Fact{}, true},
		{events.WorkerStarted, events.Fact{Result: "r3"}, false}, // the worker found r3 booted
		{events.SwitchSucceeded, events.Fact{Result: "r4", RebootRequired: true}, true},
		{events.BootFailed, events.Fact{Result: "r4"}, false},
	} {
		apply(step.kind, step.fact)
		if s.RebootRequired != step.want {
			t.Fatalf("after %s %+v: reboot_required %v, want %v", step.kind, step.fact, s.RebootRequired, step.want)
		}
	}
	if s.Stage == "reboot" {
		t.Fatal("reboot.started became the row's stage")
	}
}
