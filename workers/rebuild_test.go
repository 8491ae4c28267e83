package workers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// goldenCommand is the command driver with a golden generation, so the
// boot check and its fallback run on a sandbox host: the pin and the
// fallback only record what they would do.
type goldenCommand struct {
	Driver
	mu     sync.Mutex
	golden string
}

func (d *goldenCommand) Golden() string { d.mu.Lock(); defer d.mu.Unlock(); return d.golden }
func (d *goldenCommand) Pin(ctx context.Context, run Exec, path string) (CmdResult, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.golden = path
	return CmdResult{}, nil
}
func (d *goldenCommand) RestoreGolden(ctx context.Context, run Exec) (string, int, CmdResult, error) {
	return d.Golden(), 1, CmdResult{}, nil
}
func (d *goldenCommand) Booted(ctx context.Context, run Exec) (string, error) {
	return d.Current(ctx, run)
}
func (d *goldenCommand) generation() int         { return 0 }
func (d *goldenCommand) generationOf(string) int { return 0 }

// stateRig is one sandbox host with a real worker, real git and an
// embedded bus.
type stateRig struct {
	srv     *bus.Server
	conn    *bus.Conn
	fleet   *sandbox.Fleet
	host    *sandbox.Host
	cfg     *Config
	driver  *goldenCommand
	failing string // the file whose presence fails the boot check
	logs    *syncBuffer
	stop    func()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newStateRig(t *testing.T) *stateRig {
	t.Helper()
	srv, c := bustest.Start(t)
	dir := t.TempDir()
	failing := filepath.Join(dir, "services-fail")
	extra := fmt.Sprintf("\n[golden]\nenable = true\nvalidate_services = [\"sshd\"]\nservice_check = [\"sh\", \"-c\", \"test ! -e %s\", \"--\"]\n", failing)
	f, err := sandbox.New(filepath.Join(dir, "fleet"), []string{"sorrow"}, sandbox.Options{Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	p, err := projections.NewProjector(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	h := f.Hosts["sorrow"]
	cfg, err := LoadConfig(h.Config)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := NewDriver(cfg)
	return &stateRig{srv: srv, conn: c, fleet: f, host: h, cfg: cfg, driver: &goldenCommand{Driver: d}, failing: failing, logs: &syncBuffer{}, stop: func() {}}
}

func (r *stateRig) options(c *bus.Conn) Options {
	return Options{Config: r.cfg, Conn: c, Driver: r.driver, Logger: slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
}

// start runs the worker until stop.
func (r *stateRig) start(t *testing.T) {
	t.Helper()
	w, err := New(r.options(r.conn))
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := events.HostSubject("sorrow", events.WorkerStarted)
	before, _ := r.conn.Last(t.Context(), subj)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	bustest.Eventually(t, time.Minute, "worker.started", func() bool {
		st, err := r.conn.Last(t.Context(), subj)
		return err == nil && st.Seq > before.Seq
	})
}

// upgrade requests rev and returns its terminal fact.
func (r *stateRig) upgrade(t *testing.T, rev string) (events.Kind, events.Fact) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	id, sent, err := producers.Upgrade(ctx, r.conn, producers.Request{Hosts: []string{"sorrow"}, Rev: rev})
	if err != nil {
		t.Fatal(err)
	}
	var end bus.Stored
	if _, err := producers.Wait(ctx, r.conn, id, sent, func(s bus.Stored) {
		if s.Event.Kind().IsTerminal() {
			end = s
		}
	}); err != nil {
		t.Fatalf("wait for %s: %v", id, err)
	}
	f, _ := end.Event.Fact()
	return end.Event.Kind(), f
}

func (r *stateRig) commit(t *testing.T, v string) string {
	t.Helper()
	c, err := r.fleet.Commit("{ v = \""+v+"\"; }\n", v)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// bootCheck runs boot-check, with the services failing or not.
func (r *stateRig) bootCheck(t *testing.T, fail bool) BootResult {
	t.Helper()
	os.Remove(r.failing)
	if fail {
		os.WriteFile(r.failing, nil, 0o600)
	}
	br, err := BootCheck(t.Context(), r.options(r.conn))
	if fail != (err != nil) {
		t.Fatalf("boot check (fail %v): %v", fail, err)
	}
	return br
}

func (r *stateRig) statePath() string { return filepath.Join(r.host.StateDir, "state.json") }

func (r *stateRig) readState(t *testing.T) localState {
	t.Helper()
	b, err := os.ReadFile(r.statePath())
	if err != nil {
		t.Fatal(err)
	}
	var s localState
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("state.json: %v: %s", err, b)
	}
	return s
}

func (r *stateRig) asides(t *testing.T) []string {
	m, _ := filepath.Glob(r.statePath() + ".damaged-*")
	return m
}

// compareRebuilt checks the rebuilt state against the file it replaced,
// field by field: what the facts carry is equal; of the recent ids and
// validated systems, which the facts carry the newest of, the rebuilt
// ones are the old ones' newest.
func compareRebuilt(t *testing.T, got, old localState) {
	t.Helper()
	for _, f := range []struct{ name, got, want string }{
		{"deployed", got.Deployed, old.Deployed},
		{"deployed_secrets", got.DeployedSecrets, old.DeployedSecrets},
		{"quarantined", got.Quarantined, old.Quarantined},
		{"boot_failed", got.BootFailed, old.BootFailed},
	} {
		if f.got != f.want {
			t.Errorf("%s: rebuilt %q, was %q", f.name, f.got, f.want)
		}
	}
	if got.Position != old.Position || got.BootFailures != old.BootFailures {
		t.Errorf("position %d, boot_failures %d: was %d, %d", got.Position, got.BootFailures, old.Position, old.BootFailures)
	}
	if got.InFlight != nil || (got.PendingReboot == nil) != (old.PendingReboot == nil) {
		t.Errorf("in_flight %+v, pending_reboot %+v: was %+v, %+v", got.InFlight, got.PendingReboot, old.InFlight, old.PendingReboot)
	}
	for _, l := range []struct {
		name      string
		got, want []string
	}{{"recent", got.Recent, old.Recent}, {"validated", got.Validated, old.Validated}} {
		if len(l.got) == 0 || len(l.want) == 0 || l.got[len(l.got)-1] != l.want[len(l.want)-1] {
			t.Errorf("%s: rebuilt %v, was %v (want the same newest)", l.name, l.got, l.want)
			continue
		}
		for _, x := range l.got {
			if !slices.Contains(l.want, x) {
				t.Errorf("%s: rebuilt %v has %s, which was not in %v", l.name, l.got, x, l.want)
			}
		}
	}
}

// A deleted, truncated, garbled or wrongly shaped state.json between
// upgrades is rebuilt from the host's facts (the damaged one kept aside);
// the rebuilt state keeps refusing the quarantined commit and a
// downgrade, remembers the boot failures, and the next upgrade runs.
func TestStateRebuiltFromFacts(t *testing.T) {
	r := newStateRig(t)
	r.start(t)
	c1 := r.commit(t, "v1")
	if k, f := r.upgrade(t, ""); k != events.UpgradeSucceeded {
		t.Fatalf("upgrade 1: %s %s", k, f.Reason)
	}
	r.stop()
	r.bootCheck(t, false) // validated and pinned golden
	r.start(t)
	c2 := r.commit(t, "v2")
	if k, f := r.upgrade(t, ""); k != events.UpgradeSucceeded {
		t.Fatalf("upgrade 2: %s %s", k, f.Reason)
	}
	r.stop()
	// c2's system fails its boot checks twice: the host falls back to
	// golden and c2 is quarantined; then one more failure is counted.
	r.bootCheck(t, true)
	if br := r.bootCheck(t, true); br.Restored == "" {
		t.Fatal("no fallback to golden")
	}
	r.bootCheck(t, true)
	if s := r.readState(t); s.Quarantined != c2 || s.BootFailures != 1 || s.Deployed != c2 || s.DeployedSecrets == "" {
		t.Fatalf("before any damage: %+v", s)
	}

	damages := []struct {
		name   string
		damage func(path string, b []byte) error
	}{
		{"deleted", func(p string, _ []byte) error { return os.Remove(p) }},
		{"truncated", func(p string, b []byte) error { return os.WriteFile(p, b[:len(b)/2], 0o600) }},
		{"garbled", func(p string, b []byte) error {
			g := slices.Clone(b)
			for i := 0; i < len(g); i += 7 {
				g[i] ^= 0x5a
			}
			return os.WriteFile(p, g, 0o600)
		}},
		{"wrong shape", func(p string, _ []byte) error {
			return os.WriteFile(p, []byte(`{"deployed": "not a commit", "recent": ["x"]}`), 0o600)
		}},
		{"emptied", func(p string, _ []byte) error { return os.WriteFile(p, nil, 0o600) }},
	}
	for i, d := range damages {
		b, err := os.ReadFile(r.statePath())
		if err != nil {
			t.Fatal(err)
		}
		old := r.readState(t)
		asides := len(r.asides(t))
		if err := d.damage(r.statePath(), b); err != nil {
			t.Fatal(err)
		}
		r.start(t)
		compareRebuilt(t, r.readState(t), old)
		wantAsides := asides + 1
		if d.name == "deleted" {
			wantAsides = asides
		}
		if got := r.asides(t); len(got) != wantAsides {
			t.Errorf("%s: %d damaged files kept aside, want %d", d.name, len(got), wantAsides)
		} else if d.name != "deleted" {
			slices.Sort(got)
			if kept, _ := os.ReadFile(got[len(got)-1]); d.name != "emptied" && len(kept) == 0 {
				t.Errorf("%s: the damaged file kept aside is empty", d.name)
			}
		}
		want := "state.json was damaged; rebuilt from this host's facts on the bus"
		if d.name == "deleted" {
			want = "state.json was missing; rebuilt from this host's facts on the bus"
		}
		if n := strings.Count(r.logs.String(), want); n == 0 {
			t.Errorf("%s: the log does not say %q:\n%s", d.name, want, r.logs.String())
		}
		if k, f := r.upgrade(t, c2); k != events.UpgradeRejected || !strings.Contains(f.Reason, "failed its boot checks") {
			t.Errorf("%s: the quarantined commit: %s %q, want rejected", d.name, k, f.Reason)
		}
		if k, f := r.upgrade(t, c1); k != events.UpgradeRejected || !strings.Contains(f.Reason, "downgrade refused") {
			t.Errorf("%s: a downgrade: %s %q, want rejected", d.name, k, f.Reason)
		}
		next := r.commit(t, fmt.Sprint("fix", i))
		if k, f := r.upgrade(t, ""); k != events.UpgradeSucceeded || f.Commit != next {
			t.Fatalf("%s: the next upgrade: %s %q", d.name, k, f.Reason)
		}
		r.stop()
	}
}

// With the bus unreachable too, a damaged state.json stops the worker
// and boot-check with today's message, and stays where it is.
func TestStateDamagedAndBusDownRefusesToStart(t *testing.T) {
	r := newStateRig(t)
	if err := os.MkdirAll(r.host.StateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	garbage := []byte(`{"deployed": "0123`)
	if err := os.WriteFile(r.statePath(), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	r.srv.Shutdown()
	w, err := New(r.options(r.conn))
	if err != nil {
		t.Fatal(err)
	}
	err = w.Run(t.Context())
	check := func(what string, err error) {
		t.Helper()
		for _, want := range []string{"state " + r.statePath() + " is corrupt", "move it aside to start afresh", "the bus is unreachable too"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v, want %q", what, err, want)
			}
		}
	}
	check("worker", err)
	_, err = BootCheck(t.Context(), r.options(nil))
	check("boot-check", err)
	if b, _ := os.ReadFile(r.statePath()); !bytes.Equal(b, garbage) || len(r.asides(t)) != 0 {
		t.Errorf("state.json was changed or moved: %q", b)
	}
}

// A damaged outbox entry is kept aside and reported; the others are
// published, once.
func TestStateOutboxDamagedEntryKeptAside(t *testing.T) {
	_, c := bustest.Start(t)
	w := testWorker(t, c, "torment")
	logs := &syncBuffer{}
	w.log = slog.New(slog.NewTextHandler(logs, nil))
	ctx := t.Context()
	w.queueOnly = true
	var ids []string
	for _, k := range []events.Kind{events.BootFailed, events.BootFailed, events.GoldenRestored, events.WorkerStarted} {
		if err := w.emit(ctx, "", k, events.Fact{}); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(w.out.dir)
	for _, e := range ents {
		ids = append(ids, e.Name())
	}
	slices.Sort(ids)
	// The second entry truncated; the fourth claims another host's subject.
	b, _ := os.ReadFile(filepath.Join(w.out.dir, ids[1]))
	os.WriteFile(filepath.Join(w.out.dir, ids[1]), b[:len(b)/3], 0o600)
	b, _ = os.ReadFile(filepath.Join(w.out.dir, ids[3]))
	os.WriteFile(filepath.Join(w.out.dir, ids[3]), bytes.ReplaceAll(b, []byte("convoy.host.torment."), []byte("convoy.host.sorrow.")), 0o600)
	w.queueOnly = false
	if err := w.syncSeq(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := w.flushOutbox(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := bustest.Kinds(t, c, "torment"); !slices.Equal(got, []events.Kind{events.BootFailed, events.GoldenRestored}) {
		t.Fatalf("published %v, want the good boot.failed and golden.restored once", got)
	}
	if got := bustest.Kinds(t, c, "sorrow"); len(got) != 0 {
		t.Fatalf("published on another host: %v", got)
	}
	for _, n := range []string{ids[1], ids[3]} {
		if _, err := os.Stat(filepath.Join(w.out.dir, damagedDir, n)); err != nil {
			t.Errorf("damaged entry %s not kept aside: %v", n, err)
		}
		if !strings.Contains(logs.String(), "damaged outbox entry kept aside, not published") || !strings.Contains(logs.String(), n) {
			t.Errorf("damaged entry %s not reported:\n%s", n, logs.String())
		}
	}
	if left, _ := filepath.Glob(filepath.Join(w.out.dir, "*.json")); len(left) != 0 {
		t.Errorf("left in the outbox: %v", left)
	}
}
