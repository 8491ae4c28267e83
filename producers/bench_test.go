package producers_test

import (
	"fmt"
	"testing"

	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
)

func benchHosts(n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%05d", i)
	}
	return hosts
}

// BenchmarkUpgrade requests an upgrade of 1,000 hosts: with a new id
// (convoy upgrade h1 … h1000), with an id the caller gave (the upgrade
// index is read first), and, as the floor, the same requests appended one
// by one, each waiting for its ack.
func BenchmarkUpgrade(b *testing.B) {
	_, c := bustest.Start(b)
	hosts := benchHosts(1000)
	report := func(b *testing.B) {
		b.ReportMetric(float64(len(hosts)*b.N)/b.Elapsed().Seconds(), "requests/s")
	}
	b.Run("id=new", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := producers.Upgrade(b.Context(), c, producers.Request{Hosts: hosts, By: "bench"}); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	b.Run("id=given", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := producers.Upgrade(b.Context(), c, producers.Request{Hosts: hosts, ID: events.NewID(), By: "bench"}); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	b.Run("raw=sync-appends", func(b *testing.B) {
		for b.Loop() {
			id := events.NewID()
			for _, h := range hosts {
				e, _ := events.New(events.UpgradeRequested, h, "bench", events.UpgradeRequest{})
				e.UpgradeID = id
				subj, _ := events.RequestSubject(h, events.UpgradeRequested)
				if _, err := c.AppendID(b.Context(), subj, e, producers.RequestMsgID(h, id), nil); err != nil {
					b.Fatal(err)
				}
			}
		}
		report(b)
	})
}
