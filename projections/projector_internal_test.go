package projections

import (
	"fmt"
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
)

// A batch costs one write per host row and per upgrade record, and one
// checkpoint after them.
func TestWriteWritesEachRowOncePerBatch(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	var ids []string
	for i := range 5 {
		id := events.NewID()
		ids = append(ids, id)
		for _, k := range []events.Kind{events.UpgradeRequested, events.UpgradeStarted, events.PullSucceeded, events.BuildSucceeded, events.SwitchSucceeded, events.UpgradeSucceeded} {
			e, _ := events.New(k, "sorrow", "test", events.Fact{Commit: fmt.Sprint("c", i)})
			e.UpgradeID = id
			subj, _ := events.HostSubject("sorrow", k)
			if k.IsRequest() {
				subj, _ = events.RequestSubject("sorrow", k)
			}
			if _, err := c.Append(ctx, subj, e, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	p, err := NewProjector(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	var b batch
	if err := c.Replay(ctx, projected, bus.From{}, func(st bus.Stored) error { b.add(st); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := p.write(ctx, &b); err != nil {
		t.Fatal(err)
	}
	row, err := p.status.Get(ctx, hostKey("sorrow"))
	if err != nil {
		t.Fatal(err)
	}
	cp, err := p.status.Get(ctx, checkpointKey)
	if err != nil {
		t.Fatal(err)
	}
	// The status bucket's revisions count its writes: the row, then the
	// checkpoint.
	if row.Revision != 1 || cp.Revision != 2 || string(cp.Value) != "30" {
		t.Fatalf("30 events of one host written as row revision %d, checkpoint %s at revision %d; want 1, and 30 at 2", row.Revision, cp.Value, cp.Revision)
	}
	recs, err := p.index.Records(ctx, ids[4], []string{"sorrow"})
	if err != nil || recs["sorrow"].Terminal != string(events.UpgradeSucceeded) || recs["sorrow"].FirstSeq != 25 || recs["sorrow"].LastSeq != 30 {
		t.Fatalf("upgrade record: %+v %v", recs, err)
	}
}
