// Package bustest starts a real embedded nats-server for tests, never a mock.
package bustest

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// Start starts an embedded server on a free loopback port with its data in
// a temp dir, connects, provisions, and stops everything at cleanup.
func Start(t testing.TB) (*bus.Server, *bus.Conn) {
	t.Helper()
	return StartLeaseTTL(t, 0)
}

// StartLeaseTTL is Start with the workers' leases outliving their last
// renewal by ttl (0: bus.LeaseTTL), so that a test sees a silent worker
// within seconds.
func StartLeaseTTL(t testing.TB, ttl time.Duration) (*bus.Server, *bus.Conn) {
	t.Helper()
	srv, err := bus.StartServer(bus.ServerConfig{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(srv.Shutdown)
	c, err := bus.Connect(context.Background(), bus.ConnectConfig{URL: srv.ClientURL(), MaxWait: 5 * time.Second, LeaseTTL: ttl})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Close)
	if err := c.Provision(context.Background()); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return srv, c
}

// Connect connects to url and closes the connection at cleanup.
func Connect(t testing.TB, url string) *bus.Conn {
	t.Helper()
	c, err := bus.Connect(context.Background(), bus.ConnectConfig{URL: url, MaxWait: 5 * time.Second})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Eventually polls cond every 20ms until it is true or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kinds returns the kinds of host's facts stored so far, in order.
func Kinds(t testing.TB, c *bus.Conn, host string) []events.Kind {
	t.Helper()
	var ks []events.Kind
	err := c.Replay(context.Background(), []string{events.HostFacts(host)}, bus.From{}, func(s bus.Stored) error {
		ks = append(ks, s.Event.Kind())
		return nil
	})
	if err != nil {
		t.Fatalf("replay %s: %v", host, err)
	}
	return ks
}

// Expect waits until host has a fact of kind k (after any already
// matched) and returns it: an event-expectation helper in the style of
// tailscale's eventbustest.
func Expect(t testing.TB, c *bus.Conn, host string, k events.Kind) bus.Stored {
	t.Helper()
	var found bus.Stored
	Eventually(t, 30*time.Second, string(k)+" from "+host, func() bool {
		ok := false
		_ = c.Replay(context.Background(), []string{events.HostFacts(host)}, bus.From{}, func(s bus.Stored) error {
			if s.Event.Kind() == k {
				found, ok = s, true
			}
			return nil
		})
		return ok
	})
	return found
}

// StartCluster starts n embedded servers on loopback as one JetStream
// cluster, connects to all of them, provisions with n replicas, and
// returns the servers and the connection.
func StartCluster(t testing.TB, n int) ([]*bus.Server, *bus.Conn) {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = FreePort(t)
	}
	routes := make([]string, n)
	for i, p := range ports {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	servers := make([]*bus.Server, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			srv, err := bus.StartServer(bus.ServerConfig{
				DataDir: t.TempDir(), Listen: "127.0.0.1:0", Name: fmt.Sprintf("n%d", i+1), ReadyTimeout: 30 * time.Second,
				Cluster: &bus.ClusterConfig{Name: "convoy", Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes},
			})
			servers[i] = srv
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("start cluster: %v", err)
		}
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Shutdown()
		}
	})
	urls := make([]string, n)
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	c, err := bus.Connect(context.Background(), bus.ConnectConfig{URL: strings.Join(urls, ","), Replicas: n, MaxWait: 30 * time.Second})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(c.Close)
	Eventually(t, 60*time.Second, "the cluster to provision", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.Provision(ctx) == nil
	})
	return servers, c
}

// FreePort returns a loopback port nobody listens on right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
