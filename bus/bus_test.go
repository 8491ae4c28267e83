package bus_test

import (
	"context"
	"errors"
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
)

func fact(t *testing.T, host string, k events.Kind) events.Event {
	t.Helper()
	e, err := events.New(k, host, "test", events.Fact{})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestAppendDedupesByID(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	e := fact(t, "sorrow", events.WorkerStarted)
	subj, _ := events.HostSubject("sorrow", e.Kind())
	s1, err := c.Append(ctx, subj, e, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c.Append(ctx, subj, e, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Fatalf("retried append stored twice: seq %d and %d", s1, s2)
	}
	if got := bustest.Kinds(t, c, "sorrow"); len(got) != 1 {
		t.Fatalf("stored %d events, want 1", len(got))
	}
}

func TestAppendExpectDetectsSecondWriter(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	filter := events.HostFacts("sorrow")
	subj, _ := events.HostSubject("sorrow", events.WorkerStarted)
	seq, err := c.Append(ctx, subj, fact(t, "sorrow", events.WorkerStarted), &bus.Expect{Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	// Another host's facts do not disturb the guard.
	other, _ := events.HostSubject("torment", events.WorkerStarted)
	if _, err := c.Append(ctx, other, fact(t, "torment", events.WorkerStarted), nil); err != nil {
		t.Fatal(err)
	}
	// A writer that still believes the host has no facts conflicts.
	_, err = c.Append(ctx, subj, fact(t, "sorrow", events.WorkerStarted), &bus.Expect{Filter: filter, Seq: 0})
	var ce *bus.ConflictError
	if !errors.As(err, &ce) || ce.Actual != seq {
		t.Fatalf("second writer: got %v, want a ConflictError at %d", err, seq)
	}
	// A retry of the last event itself (lost ack) succeeds.
	e := fact(t, "sorrow", events.UpgradeStarted)
	s1, err := c.Append(ctx, subj, e, &bus.Expect{Filter: filter, Seq: seq})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c.Append(ctx, subj, e, &bus.Expect{Filter: filter, Seq: seq})
	if err != nil || s2 != s1 {
		t.Fatalf("retry after lost ack: seq %d err %v, want %d", s2, err, s1)
	}
}

func TestReplayStopsAtEndAndFilters(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	for _, h := range []string{"sorrow", "torment", "sorrow"} {
		subj, _ := events.HostSubject(h, events.WorkerStarted)
		if _, err := c.Append(ctx, subj, fact(t, h, events.WorkerStarted), nil); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	err := c.Replay(ctx, []string{events.HostFacts("sorrow")}, bus.From{}, func(s bus.Stored) error {
		seqs = append(seqs, s.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 3 {
		t.Fatalf("replay sorrow: seqs %v, want [1 3]", seqs)
	}
	n := 0
	if err := c.Replay(ctx, []string{events.HostFacts("nobody")}, bus.From{}, func(bus.Stored) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("empty replay: n=%d err=%v", n, err)
	}
	if _, err := c.Last(ctx, events.HostFacts("nobody")); !errors.Is(err, bus.ErrNotFound) {
		t.Fatalf("last of nothing: %v, want ErrNotFound", err)
	}
}

func TestStreamRefusesDeleteAndPurge(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	subj, _ := events.HostSubject("sorrow", events.WorkerStarted)
	if _, err := c.Append(ctx, subj, fact(t, "sorrow", events.WorkerStarted), nil); err != nil {
		t.Fatal(err)
	}
	s, err := c.JetStream().Stream(ctx, bus.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, 1); err == nil {
		t.Fatal("delete of an event succeeded; the stream must deny deletes")
	}
	if err := s.Purge(ctx); err == nil {
		t.Fatal("purge succeeded; the stream must deny purges")
	}
	if err := c.Provision(context.Background()); err != nil {
		t.Fatalf("provision is not idempotent: %v", err)
	}
}

func TestConnectUnreachable(t *testing.T) {
	_, err := bus.Connect(t.Context(), bus.ConnectConfig{URL: "nats://127.0.0.1:1", MaxWait: 300e6})
	if !errors.Is(err, bus.ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
}
