package dashboard_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/projections/dashboard"
)

// An open fleet page is told when a worker falls silent (its lease
// expires without worker.stopped, which writes no row), and gets
// keep-alive comments while nothing happens.
func TestDashboardStreamShowsASilentWorker(t *testing.T) {
	const ttl = 3 * time.Second
	born := time.Now()
	_, c := bustest.StartLeaseTTL(t, ttl)
	ctx := t.Context()
	p, err := projections.NewProjector(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	pctx, stop := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { defer close(pdone); _ = p.Run(pctx) }()
	t.Cleanup(func() { stop(); <-pdone })
	e, _ := events.New(events.WorkerStarted, "sorrow", "convoy/worker/sorrow", events.Fact{})
	subj, _ := events.HostSubject("sorrow", events.WorkerStarted)
	if _, err := c.Append(ctx, subj, e, nil); err != nil {
		t.Fatal(err)
	}
	fleet, err := projections.OpenFleet(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 10*time.Second, "sorrow in the view", func() bool {
		_, err := fleet.Host(ctx, "sorrow")
		return err == nil
	})

	d, err := dashboard.New(ctx, dashboard.Config{Conn: c, LivenessEvery: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(d)
	base, cancel := context.WithCancel(context.Background())
	srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	srv.Start()
	t.Cleanup(func() { cancel(); srv.Close() })

	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var first, silent, keepAlive bool
	deadline := time.After(20 * time.Second)
	for !(first && silent && keepAlive) {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the stream ended")
			}
			switch {
			case strings.HasPrefix(l, "data: ") && strings.Contains(l, `data-worker=\"online\"`):
				first = true
			case strings.HasPrefix(l, "data: ") && strings.Contains(l, `data-worker=\"silent\"`):
				if !first && time.Since(born) < ttl {
					t.Fatal("silent before the leases bucket was as old as its TTL")
				}
				if !first {
					t.Fatalf("the setup took %s, longer than the leases' TTL (%s): raise the TTL", time.Since(born), ttl)
				}
				silent = true
			case l == ": keep-alive":
				keepAlive = true
			}
		case <-deadline:
			t.Fatalf("after 20s: online row %t, silent row %t, keep-alive %t", first, silent, keepAlive)
		}
	}
}
