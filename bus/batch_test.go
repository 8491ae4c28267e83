package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
)

func statusBucket(t *testing.T, c *bus.Conn) *bus.Bucket {
	t.Helper()
	b, err := c.Bucket(t.Context(), bus.StatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = fmt.Sprintf("host.h%05d", i)
	}
	return ks
}

// counter is a value ModifyMany folds in tests.
type counter struct{ N int }

func increment(_ string, v *counter) (bool, error) {
	v.N++
	return true, nil
}

// More keys than one batched get may name, some missing, one deleted and
// one deleted then written again: GetMany returns exactly the live ones.
func TestGetManyReadsLiveKeysInBatches(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	b := statusBucket(t, c)
	ks := keys(1500)
	if err := bus.ModifyMany(ctx, b, ks, increment); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, ks[7], 0); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, ks[8], 0); err != nil {
		t.Fatal(err)
	}
	// A deleted key is written at its delete marker's revision.
	if err := bus.ModifyMany(ctx, b, ks[8:9], increment); err != nil {
		t.Fatal(err)
	}
	for _, maxBytes := range []int{0, 5000} { // whole answers, and answers in pieces
		bus.SetGetMaxBytes(b, maxBytes)
		got, err := bus.GetManyJSON[counter](ctx, b, append([]string{"host.nobody"}, ks...))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(ks)-1 {
			t.Fatalf("max bytes %d: %d entries, want %d", maxBytes, len(got), len(ks)-1)
		}
		for i, k := range ks {
			v, ok := got[k]
			if i == 7 {
				if ok {
					t.Fatalf("deleted key %s returned: %+v", k, v)
				}
				continue
			}
			if !ok || v.N != 1 {
				t.Fatalf("max bytes %d: %s = %+v (%v), want N 1", maxBytes, k, v, ok)
			}
		}
	}
	none, err := b.GetMany(ctx, []string{"host.nobody", "host.nothing"})
	if err != nil || len(none) != 0 {
		t.Fatalf("missing keys: %v %v", none, err)
	}
}

func TestAllReadsLiveKeysUnderFilter(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	b := statusBucket(t, c)
	ks := keys(300)
	if err := bus.ModifyMany(ctx, b, append([]string{"meta.checkpoint"}, ks...), increment); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, ks[0], 0); err != nil {
		t.Fatal(err)
	}
	got, err := b.All(ctx, "host.*")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ks)-1 || got[0].Key != ks[1] || got[len(got)-1].Key != ks[len(ks)-1] {
		t.Fatalf("All: %d entries from %v, want %d sorted from %s", len(got), got[0].Key, len(ks)-1, ks[1])
	}
	empty, err := b.All(ctx, "nothing.*")
	if err != nil || len(empty) != 0 {
		t.Fatalf("All of nothing: %v %v", empty, err)
	}
}

// Writers that fold the same keys at once lose no fold: every conflict is
// read and folded again.
func TestModifyManyConvergesUnderConcurrentWriters(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	b := statusBucket(t, c)
	ks := keys(200)
	const writers, rounds = 4, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for range rounds {
				if err := bus.ModifyMany(ctx, b, ks, increment); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got, err := bus.GetManyJSON[counter](ctx, b, ks)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range ks {
		if got[k].N != writers*rounds {
			t.Fatalf("%s = %d, want %d", k, got[k].N, writers*rounds)
		}
	}
}

// A fold that changes nothing, or changes the value back to the bytes
// stored, writes nothing.
func TestModifyManySkipsUnchangedValues(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	b := statusBucket(t, c)
	ks := keys(3)
	if err := bus.ModifyMany(ctx, b, ks, increment); err != nil {
		t.Fatal(err)
	}
	before, _ := b.GetMany(ctx, ks)
	same := func(_ string, v *counter) (bool, error) { return true, nil }
	none := func(_ string, v *counter) (bool, error) { v.N = 99; return false, nil }
	for _, fold := range []func(string, *counter) (bool, error){same, none} {
		if err := bus.ModifyMany(ctx, b, ks, fold); err != nil {
			t.Fatal(err)
		}
	}
	after, _ := b.GetMany(ctx, ks)
	for _, k := range ks {
		if after[k].Revision != before[k].Revision {
			t.Fatalf("%s rewritten: revision %d, was %d", k, after[k].Revision, before[k].Revision)
		}
	}
	failing := errors.New("fold failed")
	if err := bus.ModifyMany(ctx, b, ks, func(string, *counter) (bool, error) { return false, failing }); !errors.Is(err, failing) {
		t.Fatalf("fold error: got %v", err)
	}
}

func TestAppendAllDedupesAndReportsEachEvent(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	var out []bus.Outgoing
	for i := range 1200 { // more than the pipeline holds at once
		h := "h" + strconv.Itoa(i%3)
		e := fact(t, h, events.WorkerStarted)
		subj, _ := events.HostSubject(h, e.Kind())
		out = append(out, bus.Outgoing{Subject: subj, Event: e})
	}
	out = append(out, bus.Outgoing{Subject: "nowhere.stored", Event: fact(t, "h0", events.WorkerStarted)})
	first := c.AppendAll(ctx, out)
	again := c.AppendAll(ctx, out)
	for i := range out[:1200] {
		if first[i].Err != nil || again[i].Err != nil {
			t.Fatalf("event %d: %v / %v", i, first[i].Err, again[i].Err)
		}
		if first[i].Seq != uint64(i+1) || again[i].Seq != first[i].Seq {
			t.Fatalf("event %d stored at %d, again at %d; want %d both times", i, first[i].Seq, again[i].Seq, i+1)
		}
	}
	if first[1200].Err == nil {
		t.Fatal("an event on a subject no stream stores was acknowledged")
	}
	if got := bustest.Kinds(t, c, "h1"); len(got) != 400 {
		t.Fatalf("h1 has %d facts, want 400", len(got))
	}
	// A context that ends stops the appends and says so for each.
	done, cancel := context.WithCancel(ctx)
	cancel()
	for i, a := range c.AppendAll(done, out[:3]) {
		if !errors.Is(a.Err, context.Canceled) {
			t.Fatalf("event %d after cancel: %v", i, a.Err)
		}
	}
}
