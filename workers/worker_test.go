package workers_test

import (
	"context"
	"log/slog"
	"os"
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
	"github.com/convoy-fleet/convoy/workers"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

type rig struct {
	conn  *bus.Conn
	fleet *sandbox.Fleet
	nix   bool // workers run Nix in their host's private store
	stops []func()
}

// env is the extra environment of host's worker.
func (r *rig) env(host string) []string {
	if r.nix {
		return r.fleet.Hosts[host].NixEnv()
	}
	return nil
}

// stopAll stops every worker started so far.
func (r *rig) stopAll(t *testing.T) {
	t.Helper()
	for _, stop := range r.stops {
		stop()
	}
	r.stops = nil
}

func newRig(t *testing.T, o sandbox.Options, hosts ...string) *rig {
	t.Helper()
	_, c := bustest.Start(t)
	f, err := sandbox.New(t.TempDir(), hosts, o)
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
	return &rig{conn: c, fleet: f, nix: o.Nix}
}

// start runs a worker for host until the test ends.
func (r *rig) start(t *testing.T, host string) { r.startWith(t, host, nil) }

// startWith is start with the options changed by opts (nil: none).
func (r *rig) startWith(t *testing.T, host string, opts func(*workers.Options)) {
	t.Helper()
	cfg, err := workers.LoadConfig(r.fleet.Hosts[host].Config)
	if err != nil {
		t.Fatal(err)
	}
	o := workers.Options{Config: cfg, Conn: r.conn, Env: r.env(host), Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if opts != nil {
		opts(&o)
	}
	w, err := workers.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker %s: %v", host, err)
			}
		})
	}
	r.stops = append(r.stops, stop)
	t.Cleanup(stop)
	bustest.Expect(t, r.conn, host, events.WorkerStarted)
}

// upgrade requests an upgrade and waits for its facts.
func (r *rig) upgrade(t *testing.T, host, rev string) []events.Kind {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	id, sent, err := producers.Upgrade(ctx, r.conn, producers.Request{Hosts: []string{host}, Rev: rev})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []events.Kind
	if _, err := producers.Wait(ctx, r.conn, id, sent, func(s bus.Stored) { kinds = append(kinds, s.Event.Kind()) }); err != nil {
		t.Fatalf("wait for %s: %v (got %v)", id, err, kinds)
	}
	return kinds
}

func TestUpgradeSucceedsAndRecordsEveryStage(t *testing.T) {
	r := newRig(t, sandbox.Options{ValidationChecks: []string{"test -f configuration.nix"}, HealthChecks: []string{"true"}, PreUpdateHooks: []string{"true"}}, "sorrow")
	r.start(t, "sorrow")
	c1, err := r.fleet.Commit("{ services.openssh.enable = true; # v2\n}\n", "v2")
	if err != nil {
		t.Fatal(err)
	}
	got := r.upgrade(t, "sorrow", "")
	want := []events.Kind{events.UpgradeStarted, events.HooksSucceeded, events.PullSucceeded, events.BuildSucceeded, events.ValidationPassed, events.SwitchSucceeded, events.HealthPassed, events.UpgradeSucceeded}
	if !slices.Equal(got, want) {
		t.Fatalf("facts:\n got %v\nwant %v", got, want)
	}
	h := r.fleet.Hosts["sorrow"]
	head, _, _ := h.Head()
	if head != c1 {
		t.Fatalf("HEAD %s, want %s", head, c1)
	}
	if run := h.Running(); run == "" {
		t.Fatal("nothing switched")
	}
	// The same commit again is already current.
	if got := r.upgrade(t, "sorrow", ""); got[len(got)-1] != events.UpgradeSkipped {
		t.Fatalf("second upgrade: %v, want upgrade.skipped", got)
	}
}

func TestBuildFailureRollsBackBothRepos(t *testing.T) {
	r := newRig(t, sandbox.Options{}, "torment")
	r.start(t, "torment")
	h := r.fleet.Hosts["torment"]
	oldC, oldS, _ := h.Head()
	if _, err := r.fleet.CommitSecrets("wifi: changed\n", "secrets"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.fleet.Commit("{ this is a syntax error that will break the build; }\n", "broken"); err != nil {
		t.Fatal(err)
	}
	got := r.upgrade(t, "torment", "")
	want := []events.Kind{events.UpgradeStarted, events.PullSucceeded, events.BuildFailed, events.RollbackSucceeded, events.UpgradeFailed}
	if !slices.Equal(got, want) {
		t.Fatalf("facts:\n got %v\nwant %v", got, want)
	}
	c, s, _ := h.Head()
	if c != oldC || s != oldS {
		t.Fatalf("after rollback HEADs are %s/%s, want %s/%s", c, s, oldC, oldS)
	}
	if h.Running() != "" {
		t.Fatalf("a failed build switched the system to %q", h.Running())
	}
	st := bustest.Expect(t, r.conn, "torment", events.BuildFailed)
	f, _ := st.Event.Fact()
	if f.ExitCode == nil || *f.ExitCode != 1 || !strings.Contains(f.Output, "syntax error") {
		t.Fatalf("build.failed carries exit %v output %q; want exit 1 and the error text", f.ExitCode, f.Output)
	}
}

func TestRevNotOnBranchIsRejected(t *testing.T) {
	r := newRig(t, sandbox.Options{}, "sorrow")
	r.start(t, "sorrow")
	got := r.upgrade(t, "sorrow", "deadbeefdeadbeef")
	if got[len(got)-1] != events.UpgradeRejected {
		t.Fatalf("facts %v, want upgrade.rejected", got)
	}
}
