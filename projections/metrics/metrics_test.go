package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/producers/rollout"
	"github.com/convoy-fleet/convoy/projections"
	"github.com/convoy-fleet/convoy/projections/metrics"
	"github.com/convoy-fleet/convoy/workers"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// rig is a bus with a projector, a sandbox fleet (real git, the command
// driver) and the metrics under test, already running.
type rig struct {
	conn  *bus.Conn
	fleet *sandbox.Fleet
	view  *projections.Fleet
	m     *metrics.Metrics
	srv   *httptest.Server
}

func newRig(t *testing.T, hosts ...string) *rig {
	t.Helper()
	_, c := bustest.Start(t)
	f, err := sandbox.New(t.TempDir(), hosts, sandbox.Options{Tags: map[string][]string{"sorrow": {"canary", "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	background(t, func(ctx context.Context) error {
		p, err := projections.NewProjector(ctx, c)
		if err != nil {
			return err
		}
		return p.Run(ctx)
	})
	view, err := projections.OpenFleet(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(t.Context(), metrics.Config{Conn: c, Fleet: view, Version: "v9.9.9-test"})
	if err != nil {
		t.Fatal(err)
	}
	background(t, m.Run)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	return &rig{conn: c, fleet: f, view: view, m: m, srv: srv}
}

// background runs fn until the test ends.
func background(t *testing.T, fn func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = fn(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// start runs host's worker; the returned func stops it (worker.stopped).
func (r *rig) start(t *testing.T, host string) (stop func()) {
	t.Helper()
	cfg, err := workers.LoadConfig(r.fleet.Hosts[host].Config)
	if err != nil {
		t.Fatal(err)
	}
	w, err := workers.New(workers.Options{Config: cfg, Conn: r.conn, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker %s: %v", host, err)
		}
	}
	t.Cleanup(stop)
	bustest.Expect(t, r.conn, host, events.WorkerStarted)
	return stop
}

// upgrade asks host for the branch tip and waits for its terminal fact.
func (r *rig) upgrade(t *testing.T, host string) events.Kind {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	id, sent, err := producers.Upgrade(ctx, r.conn, producers.Request{Hosts: []string{host}})
	if err != nil {
		t.Fatal(err)
	}
	var last events.Kind
	if _, err := producers.Wait(ctx, r.conn, id, sent, func(s bus.Stored) { last = s.Event.Kind() }); err != nil {
		t.Fatalf("wait for %s on %s: %v", id, host, err)
	}
	return last
}

// appendFact appends a fact for host as its worker would write it.
func appendFact(t *testing.T, c *bus.Conn, host string, k events.Kind, f events.Fact) {
	t.Helper()
	e, err := events.New(k, host, "convoy/worker/"+host, f)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := events.HostSubject(host, k)
	if _, err := c.Append(t.Context(), subj, e, nil); err != nil {
		t.Fatal(err)
	}
}

// scrape GETs /metrics and parses it with Prometheus' text parser.
func (r *rig) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(r.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %s: %s", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// series returns the family's series by their labels, written
// "k=v,k=v" in label-name order.
func series(mfs map[string]*dto.MetricFamily, name string) map[string]*dto.Metric {
	out := map[string]*dto.Metric{}
	mf := mfs[name]
	if mf == nil {
		return out
	}
	for _, m := range mf.GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(ls)
		out[strings.Join(ls, ",")] = m
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	}
	return -1
}

const broken = "{ services.openssh.enable = true; syntax error\n}\n"

// The fleet's metrics, scraped over HTTP and parsed, say what the status
// view's rows (what `convoy status --json` prints) say, for a host that
// upgraded, one that failed, one whose worker stopped, and one with a
// golden generation that needs a reboot; the counters count the upgrades
// that ended while the metrics ran.
func TestScrapeMatchesTheStatusView(t *testing.T) {
	r := newRig(t, "sorrow", "torment", "gloom")
	r.start(t, "sorrow")
	r.start(t, "torment")
	stopGloom := r.start(t, "gloom")
	stopGloom()
	bustest.Expect(t, r.conn, "gloom", events.WorkerStopped)

	if _, err := r.fleet.Commit("{ services.openssh.enable = true; # v2\n}\n", "v2"); err != nil {
		t.Fatal(err)
	}
	if k := r.upgrade(t, "sorrow"); k != events.UpgradeSucceeded {
		t.Fatalf("sorrow: %s", k)
	}
	if k := r.upgrade(t, "sorrow"); k != events.UpgradeSkipped {
		t.Fatalf("sorrow again: %s", k)
	}
	if _, err := r.fleet.Commit(broken, "broken"); err != nil {
		t.Fatal(err)
	}
	if k := r.upgrade(t, "torment"); k != events.UpgradeFailed {
		t.Fatalf("torment: %s", k)
	}
	// hammer runs the nixos driver: its worker started on a system that
	// needs a reboot, and its boot check pinned generation 7 as golden
	// (the facts its worker and boot check write).
	const sys = "/nix/store/0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d-nixos-system-hammer-26.05"
	appendFact(t, r.conn, "hammer", events.WorkerStarted, events.Fact{Version: "v9.9.9-test", Commit: "c0ffee", Result: sys, RebootRequired: true})
	appendFact(t, r.conn, "hammer", events.GoldenPinned, events.Fact{Result: sys, Generation: 7})
	id, err := rollout.Start(t.Context(), r.conn, events.RolloutPlan{Rev: "main", Waves: []events.RolloutWave{{Spec: "all", Hosts: []string{"sorrow"}}}})
	if err != nil {
		t.Fatal(err)
	}

	bustest.Eventually(t, 30*time.Second, "the view to catch up", func() bool {
		lag, err := r.view.Lag(t.Context())
		return err == nil && lag == 0
	})
	rows, err := r.view.All(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("status rows: %+v", rows)
	}
	// The counters follow the stream on their own: wait for the last
	// terminal fact to be counted, then scrape once for everything.
	var mfs map[string]*dto.MetricFamily
	bustest.Eventually(t, 30*time.Second, "the counters to count 3 upgrades", func() bool {
		mfs = r.scrape(t)
		total := 0.0
		for _, m := range series(mfs, "convoy_upgrades_total") {
			total += value(m)
		}
		return total == 3
	})

	info := series(mfs, "convoy_host_info")
	if len(info) != len(rows) {
		t.Errorf("convoy_host_info has %d series, the view %d rows: %v", len(info), len(rows), info)
	}
	for _, s := range rows {
		h := "host=" + s.Host
		key := "commit=" + s.Commit + "," + h + ",state=" + s.State + ",tags=" + strings.Join(s.Tags, ",")
		if m := info[key]; m == nil || value(m) != 1 {
			t.Errorf("convoy_host_info{%s} missing; have %v", key, keys(info))
		}
		up := 0.0
		if s.Worker == "online" {
			up = 1
		}
		checkGauge(t, mfs, "convoy_host_worker_up", h, up)
		reboot := 0.0
		if s.RebootRequired {
			reboot = 1
		}
		checkGauge(t, mfs, "convoy_host_reboot_required", h, reboot)
		if s.LastEnded.IsZero() {
			checkAbsent(t, mfs, "convoy_host_last_upgrade_timestamp_seconds", h)
		} else {
			checkGauge(t, mfs, "convoy_host_last_upgrade_timestamp_seconds", h+",result="+strings.TrimPrefix(s.LastResult, "upgrade."), unix(s.LastEnded))
		}
		if s.LastSucceeded.IsZero() {
			checkAbsent(t, mfs, "convoy_host_last_success_timestamp_seconds", h)
		} else {
			checkGauge(t, mfs, "convoy_host_last_success_timestamp_seconds", h, unix(s.LastSucceeded))
		}
		if s.Golden == "" {
			checkAbsent(t, mfs, "convoy_host_golden_generation", h)
		} else {
			checkGauge(t, mfs, "convoy_host_golden_generation", h, float64(s.GoldenGeneration))
		}
	}

	// The rows are what the scenario made them, so the checks above
	// checked something.
	byHost := map[string]projections.Status{}
	for _, s := range rows {
		byHost[s.Host] = s
	}
	if s := byHost["torment"]; s.State != projections.StateFailed || s.LastResult != "upgrade.failed" || !s.LastSucceeded.IsZero() {
		t.Errorf("torment row: %+v", s)
	}
	if s := byHost["sorrow"]; s.LastResult != "upgrade.skipped" || s.LastSucceeded.IsZero() || !s.LastSucceeded.Before(s.LastEnded) {
		t.Errorf("sorrow row: %+v", s)
	}
	if s := byHost["gloom"]; s.Worker != "offline" {
		t.Errorf("gloom row: %+v", s)
	}
	if s := byHost["hammer"]; !s.RebootRequired || s.GoldenGeneration != 7 {
		t.Errorf("hammer row: %+v", s)
	}
	checkGauge(t, mfs, "convoy_host_worker_up", "host=gloom", 0)
	checkGauge(t, mfs, "convoy_host_worker_up", "host=sorrow", 1)
	checkGauge(t, mfs, "convoy_host_reboot_required", "host=hammer", 1)
	checkGauge(t, mfs, "convoy_host_golden_generation", "host=hammer", 7)
	checkGauge(t, mfs, "convoy_host_last_upgrade_timestamp_seconds", "host=torment,result=failed", unix(byHost["torment"].LastEnded))

	for result, want := range map[string]float64{"succeeded": 1, "skipped": 1, "failed": 1, "rejected": 0, "aborted": 0} {
		checkGauge(t, mfs, "convoy_upgrades_total", "result="+result, want)
	}
	if got := mfs["convoy_upgrades_total"].GetType(); got != dto.MetricType_COUNTER {
		t.Errorf("convoy_upgrades_total is a %s", got)
	}

	// Each stage's histogram holds the durations its facts carry.
	want := map[string][]int64{}
	for _, h := range []string{"sorrow", "torment"} {
		_ = r.conn.Replay(t.Context(), []string{events.HostFacts(h)}, bus.From{}, func(st bus.Stored) error {
			f, _ := st.Event.Fact()
			switch st.Event.Kind().Stage() {
			case "pull", "build", "switch", "rollback":
				want[st.Event.Kind().Stage()] = append(want[st.Event.Kind().Stage()], f.DurationMS)
			}
			return nil
		})
	}
	// sorrow: pull, build, switch; torment: pull, build, rollback; the
	// skipped upgrade ends in its pull stage without a pull fact.
	if len(want["build"]) != 2 || len(want["pull"]) != 2 || len(want["switch"]) != 1 || len(want["rollback"]) != 1 {
		t.Fatalf("stage facts on the bus: %v", want)
	}
	hist := series(mfs, "convoy_stage_duration_seconds")
	for stage, ds := range want {
		m := hist["stage="+stage]
		if m == nil || m.GetHistogram() == nil {
			t.Errorf("no histogram for stage %s: %v", stage, keys(hist))
			continue
		}
		var sum float64
		for _, d := range ds {
			sum += float64(d) / 1000
		}
		if h := m.GetHistogram(); h.GetSampleCount() != uint64(len(ds)) || !near(h.GetSampleSum(), sum) {
			t.Errorf("stage %s: count %d sum %g, want %d and %g", stage, h.GetSampleCount(), h.GetSampleSum(), len(ds), sum)
		}
	}

	checkGauge(t, mfs, "convoy_projector_lag_events", "", 0)
	checkGauge(t, mfs, "convoy_rollout_state", "rollout="+id+",state=requested", 1)
	checkGauge(t, mfs, "convoy_build_info", "goversion="+runtime.Version()+",version=v9.9.9-test", 1)
}

// Only facts stored after New are counted; a refused pin is no upgrade.
func TestCountersStartAtNew(t *testing.T) {
	_, c := bustest.Start(t)
	view, err := projections.OpenFleet(t.Context(), c)
	if err != nil {
		t.Fatal(err)
	}
	appendFact(t, c, "sorrow", events.UpgradeFailed, events.Fact{Stage: "build", Reason: "before"})
	m, err := metrics.New(t.Context(), metrics.Config{Conn: c, Fleet: view, Version: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	background(t, m.Run)
	appendFact(t, c, "sorrow", events.UpgradeRejected, events.Fact{Stage: "golden", Reason: "pin refused"})
	appendFact(t, c, "sorrow", events.BuildSucceeded, events.Fact{DurationMS: 1500})
	appendFact(t, c, "sorrow", events.UpgradeSucceeded, events.Fact{})
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)
	r := &rig{srv: srv}
	var mfs map[string]*dto.MetricFamily
	bustest.Eventually(t, 30*time.Second, "upgrade.succeeded to be counted", func() bool {
		mfs = r.scrape(t)
		m := series(mfs, "convoy_upgrades_total")["result=succeeded"]
		return m != nil && value(m) == 1
	})
	checkGauge(t, mfs, "convoy_upgrades_total", "result=failed", 0)
	checkGauge(t, mfs, "convoy_upgrades_total", "result=rejected", 0)
	h := series(mfs, "convoy_stage_duration_seconds")["stage=build"].GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 1.5 {
		t.Fatalf("build histogram: %v", h)
	}
}

func checkGauge(t *testing.T, mfs map[string]*dto.MetricFamily, name, labels string, want float64) {
	t.Helper()
	all := series(mfs, name)
	m := all[labels]
	if m == nil {
		t.Errorf("%s{%s} missing; have %v", name, labels, keys(all))
		return
	}
	if got := value(m); !near(got, want) {
		t.Errorf("%s{%s} = %g, want %g", name, labels, got, want)
	}
}

func checkAbsent(t *testing.T, mfs map[string]*dto.MetricFamily, name, labels string) {
	t.Helper()
	for k := range series(mfs, name) {
		if strings.Contains(","+k+",", ","+labels+",") {
			t.Errorf("%s{%s} is present, want none for this host", name, k)
		}
	}
}

func keys(m map[string]*dto.Metric) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func near(a, b float64) bool {
	d := a - b
	return d < 1e-3 && d > -1e-3
}
