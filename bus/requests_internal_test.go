package bus

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/events"
)

// start runs an embedded server and a provisioned connection (bustest
// cannot be imported here: it imports this package).
func start(t *testing.T) *Conn {
	t.Helper()
	srv, err := StartServer(ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	c, err := Connect(t.Context(), ConnectConfig{URL: srv.ClientURL(), MaxWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := c.Provision(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}

func request(t *testing.T, c *Conn, host string, k events.Kind) uint64 {
	t.Helper()
	e, err := events.New(k, host, "test", events.UpgradeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	e.UpgradeID = e.ID
	subj, _ := events.RequestSubject(host, k)
	seq, err := c.Append(t.Context(), subj, e, nil)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func next(t *testing.T, r *Requests) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := r.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Err != nil || st.Event.Host() != "sorrow" {
		t.Fatalf("handed out %+v", st)
	}
	return st.Seq
}

func consumers(t *testing.T, c *Conn) int {
	t.Helper()
	s, err := c.stream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// Requests stored before the reader starts are read through a catch-up
// consumer, later ones arrive live; each is handed out once, in order,
// from the position given, and no consumer is left behind.
func TestRequestsCatchUpThenLive(t *testing.T) {
	c := start(t)
	handled := request(t, c, "sorrow", events.UpgradeRequested)
	request(t, c, "torment", events.UpgradeRequested)
	a := request(t, c, "sorrow", events.PinRequested)
	b := request(t, c, "sorrow", events.UpgradeRequested)
	r, err := c.Requests(t.Context(), "sorrow", handled)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := []uint64{next(t, r), next(t, r)}; got[0] != a || got[1] != b {
		t.Fatalf("caught up %v, want %d %d", got, a, b)
	}
	if n := consumers(t, c); n != 0 {
		t.Fatalf("%d consumers after the catch-up, want 0", n)
	}
	if r.stale {
		t.Fatal("still catching up")
	}
	live := request(t, c, "sorrow", events.UpgradeRequested)
	pin := request(t, c, "sorrow", events.PinRequested)
	if got := []uint64{next(t, r), next(t, r)}; got[0] != live || got[1] != pin {
		t.Fatalf("live %v, want %d %d", got, live, pin)
	}
	if len(r.queue) != 0 {
		t.Fatalf("the live requests came through a catch-up: %d queued", len(r.queue))
	}
}

// A request whose notification was lost is found: the next one's
// predecessor is not the last one handed out, so the reader catches up.
func TestRequestsFindALostNotification(t *testing.T) {
	c := start(t)
	r, err := c.Requests(t.Context(), "sorrow", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	first := request(t, c, "sorrow", events.UpgradeRequested)
	if got := next(t, r); got != first {
		t.Fatalf("got %d, want %d", got, first)
	}
	// Lose the notification of the second request.
	if err := r.sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	lost := request(t, c, "sorrow", events.UpgradeRequested)
	if r.sub, err = c.nc.ChanSubscribe(LiveRequests("sorrow"), r.live); err != nil {
		t.Fatal(err)
	}
	_ = c.nc.Flush()
	third := request(t, c, "sorrow", events.UpgradeRequested)
	if got := []uint64{next(t, r), next(t, r)}; got[0] != lost || got[1] != third {
		t.Fatalf("after a lost notification: %v, want %d %d", got, lost, third)
	}
}

// A reconnect makes the reader look for what it missed.
func TestRequestsCatchUpAfterReconnect(t *testing.T) {
	c := start(t)
	r, err := c.Requests(t.Context(), "sorrow", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.sub.Unsubscribe(); err != nil { // as if disconnected
		t.Fatal(err)
	}
	missed := request(t, c, "sorrow", events.UpgradeRequested)
	c.onReconnect()
	if got := next(t, r); got != missed {
		t.Fatalf("got %d, want %d", got, missed)
	}
}

// Provision drops the per-host durable consumers hosts used to read
// their requests through, and keeps every other consumer.
func TestProvisionDropsLegacyWorkerConsumers(t *testing.T) {
	c := start(t)
	for _, name := range []string{"worker-sorrow", "alerts"} {
		if _, err := c.js.CreateOrUpdateConsumer(t.Context(), StreamName, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Provision(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.js.Consumer(t.Context(), StreamName, "worker-sorrow"); err == nil {
		t.Fatal("worker-sorrow is still there")
	}
	if _, err := c.js.Consumer(t.Context(), StreamName, "alerts"); err != nil {
		t.Fatalf("alerts was dropped: %v", err)
	}
}
