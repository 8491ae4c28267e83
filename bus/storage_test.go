package bus_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
)

// A reserve larger than any disk puts the guard at "full" at once: every
// append is refused with the server's sentence, nothing is stored, and a
// request on StorageSubject says why. No disk is filled: the e2e test
// (TestFullDiskIsLoudAndSurvivable) does that on a tmpfs.
func TestStorageGuardRefusesBelowTheFloor(t *testing.T) {
	dir := t.TempDir()
	srv, err := bus.StartServer(bus.ServerConfig{DataDir: dir, Listen: "127.0.0.1:0", MinFree: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	c := bustest.Connect(t, srv.ClientURL())
	if err := c.Provision(t.Context()); err != nil {
		t.Fatal(err)
	}
	levels := make(chan bus.StorageLevel, 4)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- srv.WatchStorage(ctx, time.Hour, func(_, cur bus.Storage) { levels <- cur.Level })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	if l := <-levels; l != bus.StorageFull {
		t.Fatalf("level %s, want full", l)
	}
	st := srv.Storage()
	if st.DataDir == "" || st.Free == 0 || st.Level != bus.StorageFull {
		t.Fatalf("Storage() = %+v", st)
	}
	for _, k := range []events.Kind{events.UpgradeRequested, events.BuildFailed} {
		e, err := events.New(k, "sorrow", "test", events.Fact{})
		if err != nil {
			t.Fatal(err)
		}
		subj, _ := events.HostSubject("sorrow", k)
		if k.IsRequest() {
			subj, _ = events.RequestSubject("sorrow", k)
		}
		_, err = c.Append(t.Context(), subj, e, nil)
		if !errors.Is(err, bus.ErrStorageFull) || !strings.Contains(err.Error(), "the bus's storage is full on "+srv.Name()+": free space in "+st.DataDir) {
			t.Fatalf("append %s: %v, want the bus's storage is full", k, err)
		}
	}
	if seq, err := c.LastSeq(t.Context()); err != nil || seq != 0 {
		t.Fatalf("last seq %d, %v: a refused append was stored", seq, err)
	}
	got, err := bus.QueryStorage(t.Context(), c)
	if err != nil || len(got) != 1 || got[0].Level != bus.StorageFull || got[0].Server != srv.Name() {
		t.Fatalf("QueryStorage = %+v, %v", got, err)
	}
}

// Below MinFree but above the floor only new requests are refused: facts
// of running upgrades are stored.
func TestStorageGuardLowRefusesRequestsOnly(t *testing.T) {
	dir := t.TempDir()
	// The floor (MinFree/8) below the free space, MinFree above it.
	srv, err := bus.StartServer(bus.ServerConfig{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	free := srvFree(t, srv)
	srv.Shutdown()
	srv, err = bus.StartServer(bus.ServerConfig{DataDir: dir, Listen: "127.0.0.1:0", MinFree: free * 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	c := bustest.Connect(t, srv.ClientURL())
	if err := c.Provision(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	levels := make(chan bus.StorageLevel, 4)
	done := make(chan error, 1)
	go func() { done <- srv.WatchStorage(ctx, time.Hour, func(_, cur bus.Storage) { levels <- cur.Level }) }()
	t.Cleanup(func() { cancel(); <-done })
	if l := <-levels; l != bus.StorageLow {
		t.Fatalf("level %s, want low", l)
	}
	req, _ := events.New(events.UpgradeRequested, "sorrow", "test", events.Fact{})
	rsubj, _ := events.RequestSubject("sorrow", events.UpgradeRequested)
	if _, err := c.Append(t.Context(), rsubj, req, nil); !errors.Is(err, bus.ErrStorageFull) || !strings.Contains(err.Error(), "new requests are refused") {
		t.Fatalf("request: %v, want refused", err)
	}
	f, _ := events.New(events.BuildFailed, "sorrow", "test", events.Fact{})
	fsubj, _ := events.HostSubject("sorrow", events.BuildFailed)
	if _, err := c.Append(t.Context(), fsubj, f, nil); err != nil {
		t.Fatalf("fact refused below --min-free: %v", err)
	}
}

func srvFree(t *testing.T, srv *bus.Server) uint64 {
	t.Helper()
	var fs syscall.Statfs_t
	if err := syscall.Statfs(srv.Storage().DataDir, &fs); err != nil {
		t.Fatal(err)
	}
	return fs.Bavail * uint64(fs.Bsize)
}
