package events_test

import (
	"testing"

	"github.com/convoy-fleet/convoy/events"
)

func BenchmarkDecode(b *testing.B) {
	msg, err := readFile("fact.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	e, _ := events.New(events.BuildSucceeded, "sorrow", "convoy/worker/sorrow", events.Fact{Commit: "2a79fe5f6cc6", Result: "/nix/store/x-nixos-system-sorrow"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Encode(e); err != nil {
			b.Fatal(err)
		}
	}
}
