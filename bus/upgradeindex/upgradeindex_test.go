package upgradeindex_test

import (
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
)

// A record is written when it starts, changes or ends, not when a fact
// of a running upgrade only moves LastSeq; once ended, LastSeq is exact.
func TestApplyWritesARecordWhenItChanges(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	x, err := upgradeindex.Open(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Bucket(ctx, bus.UpgradesBucket)
	if err != nil {
		t.Fatal(err)
	}
	id := events.NewID()
	key := bus.UpgradeKey("sorrow", id)
	var revs []uint64
	var last uint64
	for _, k := range []events.Kind{events.UpgradeRequested, events.UpgradeStarted, events.BuildSucceeded, events.UpgradeSucceeded} {
		e, _ := events.New(k, "sorrow", "test", events.Fact{Commit: "c1"})
		e.UpgradeID = id
		subj, _ := events.HostSubject("sorrow", k)
		if k.IsRequest() {
			subj, _ = events.RequestSubject("sorrow", k)
		}
		seq, err := c.Append(ctx, subj, e, nil)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := c.Get(ctx, seq)
		if err := x.Apply(ctx, []upgradeindex.HostEvent{{Host: "sorrow", Stored: st}}); err != nil {
			t.Fatal(err)
		}
		ent, err := b.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		revs, last = append(revs, ent.Revision), seq
	}
	if revs[0] != revs[1] || revs[1] != revs[2] || revs[3] == revs[2] {
		t.Fatalf("revisions after requested, started, built, succeeded: %v; want the first three equal, then a new one", revs)
	}
	rec, err := x.Get(ctx, "sorrow", id)
	if err != nil || !rec.Ended() || rec.FirstSeq != 1 || rec.LastSeq != last || rec.Commit != "c1" {
		t.Fatalf("record: %+v %v", rec, err)
	}
}
