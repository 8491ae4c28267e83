package projections_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
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

// The benchmarks below read a stream of benchHosts hosts that start their
// workers and upgrade all at once: each step of the upgrade (requested,
// started, ..., succeeded) reaches every host before the next one does,
// so consecutive events are of different hosts, as in a fleet-wide
// upgrade. That is the projector's worst case: a batch of events touches
// as many rows as it has events.
const (
	benchHosts = 2000
	benchSteps = 10 // events per host: 20,000 in all
)

var benchUpgrade = []events.Kind{
	events.WorkerStarted, events.UpgradeRequested, events.UpgradeStarted, events.HooksSucceeded, events.PullSucceeded,
	events.BuildSucceeded, events.ValidationPassed, events.SwitchSucceeded, events.HealthPassed, events.UpgradeSucceeded,
}

// fleetStream starts a server and fills its stream; it returns the
// connection and the number of events.
func fleetStream(b *testing.B) (*bus.Conn, int) {
	b.Helper()
	_, c := bustest.Start(b)
	id := events.NewID()
	var out []bus.Outgoing
	for _, k := range benchUpgrade[:benchSteps] {
		for h := range benchHosts {
			host := fmt.Sprintf("h%05d", h)
			var e events.Event
			var subj string
			if k.IsRequest() {
				e, _ = events.New(k, host, "bench", events.UpgradeRequest{})
				subj, _ = events.RequestSubject(host, k)
			} else {
				e, _ = events.New(k, host, "bench", events.Fact{Commit: "c1", Result: "/nix/store/r1", Generation: 2})
				subj, _ = events.HostSubject(host, k)
			}
			if k != events.WorkerStarted {
				e.UpgradeID = id
			}
			out = append(out, bus.Outgoing{Subject: subj, Event: e})
		}
	}
	for _, a := range c.AppendAll(b.Context(), out) {
		if a.Err != nil {
			b.Fatal(a.Err)
		}
	}
	return c, len(out)
}

// BenchmarkReplay is the floor the projector and the rebuild are measured
// against: one ordered replay of the stream that does nothing with it.
func BenchmarkReplay(b *testing.B) {
	c, n := fleetStream(b)
	var took time.Duration
	for b.Loop() {
		took += replay(b, c)
	}
	b.ReportMetric(float64(n*b.N)/took.Seconds(), "events/s")
}

// replay replays the whole stream, doing nothing, and returns how long it
// took.
func replay(b *testing.B, c *bus.Conn) time.Duration {
	start := time.Now()
	if err := c.Replay(b.Context(), projected, bus.From{}, func(bus.Stored) error { return nil }); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

var projected = []string{events.AllHostFacts, events.AllRequests}

// measured adds up the time f took and the time a raw replay of the same
// stream took just before it, and reports both rates and their ratio: on
// a shared machine, a ratio of neighbours is steadier than two separate
// benchmarks.
type measured struct {
	events       int
	took, replay time.Duration
}

func (m *measured) run(b *testing.B, c *bus.Conn, n int, f func()) {
	b.StopTimer()
	m.replay += replay(b, c)
	b.StartTimer()
	start := time.Now()
	f()
	m.took += time.Since(start)
	m.events += n
}

func (m *measured) report(b *testing.B) {
	b.ReportMetric(float64(m.events)/m.took.Seconds(), "events/s")
	b.ReportMetric(float64(m.events)/m.replay.Seconds(), "replay-events/s")
	b.ReportMetric(m.replay.Seconds()/m.took.Seconds(), "x-replay")
}

// onFreshStreams calls f once per iteration with a projector on a stream
// filled for it, and reports f's events/s beside a raw replay's.
func onFreshStreams(b *testing.B, f func(*bus.Conn, *projections.Projector)) {
	var m measured
	for range b.N {
		b.StopTimer()
		c, n := fleetStream(b)
		p, err := projections.NewProjector(b.Context(), c)
		if err != nil {
			b.Fatal(err)
		}
		m.run(b, c, n, func() { f(c, p) })
	}
	m.report(b)
}

// BenchmarkProjector is a projector catching up on the whole stream into
// an empty view.
func BenchmarkProjector(b *testing.B) {
	onFreshStreams(b, func(c *bus.Conn, p *projections.Projector) {
		fleet, err := projections.OpenFleet(b.Context(), c)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(b.Context())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		for {
			lag, err := fleet.Lag(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			if lag == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkRebuild is projections rebuild over the whole stream, when the
// view is already right (what an operator usually runs it on) and when it
// is empty (every row written).
func BenchmarkRebuild(b *testing.B) {
	b.Run("view=right", func(b *testing.B) {
		c, n := fleetStream(b)
		p, err := projections.NewProjector(b.Context(), c)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Rebuild(b.Context()); err != nil {
			b.Fatal(err)
		}
		var m measured
		b.ResetTimer()
		for range b.N {
			m.run(b, c, n, func() {
				if _, err := p.Rebuild(b.Context()); err != nil {
					b.Fatal(err)
				}
			})
		}
		m.report(b)
	})
	b.Run("view=empty", func(b *testing.B) {
		onFreshStreams(b, func(_ *bus.Conn, p *projections.Projector) {
			if _, err := p.Rebuild(b.Context()); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkFleet reads the status of 10,000 hosts: all of them (convoy
// status), 1,000 named ones (convoy upgrade h1 … h1000), and, for
// comparison, all of them one get per host. Every host holds its lease,
// and the leases bucket is old enough for the reads to judge liveness
// (it waits leaseTTL before it measures).
func BenchmarkFleet(b *testing.B) {
	const leaseTTL = 20 * time.Second
	_, c := bustest.StartLeaseTTL(b, leaseTTL)
	born := time.Now()
	ctx := b.Context()
	status, err := c.Bucket(ctx, bus.StatusBucket)
	if err != nil {
		b.Fatal(err)
	}
	hosts := make([]string, 10000)
	keys := make([]string, len(hosts))
	for i := range hosts {
		hosts[i] = fmt.Sprintf("h%05d", i)
		keys[i] = "host." + hosts[i]
	}
	err = bus.ModifyMany(ctx, status, keys, func(k string, s *projections.Status) (bool, error) {
		*s = projections.Status{Host: k[len("host."):], State: projections.StateIdle, Commit: "4f2a9c1e", Result: "/nix/store/abcdef-nixos-system", Generation: 12, Worker: "online", WorkerSeen: time.Now(), Updated: time.Now(), Seq: 1}
		return true, nil
	})
	if err != nil {
		b.Fatal(err)
	}
	fleet, err := projections.OpenFleet(ctx, c)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(time.Until(born.Add(leaseTTL)))
	leases, err := c.Bucket(ctx, bus.LeasesBucket)
	if err != nil {
		b.Fatal(err)
	}
	// renew writes every host's lease, as the workers do every TTL/3.
	renew := func(b *testing.B) {
		err := bus.ModifyMany(ctx, leases, hosts, func(string, *struct{ Owner string }) (bool, error) { return true, nil })
		if err != nil {
			b.Fatal(err)
		}
	}
	renew(b)
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			sts, err := fleet.All(ctx)
			if err != nil || len(sts) != len(hosts) || sts[0].Worker != projections.WorkerOnline {
				b.Fatalf("%d rows, %v", len(sts), err)
			}
		}
	})
	b.Run("named=1000", func(b *testing.B) {
		renew(b)
		for b.Loop() {
			if sts, err := fleet.Hosts(ctx, hosts[:1000]); err != nil || len(sts) != 1000 {
				b.Fatalf("%d rows, %v", len(sts), err)
			}
		}
	})
	b.Run("get-per-host", func(b *testing.B) {
		renew(b)
		for b.Loop() {
			for _, h := range hosts {
				if _, err := fleet.Host(ctx, h); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
