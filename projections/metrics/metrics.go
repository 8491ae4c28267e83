package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers/rollout"
	"github.com/convoy-fleet/convoy/projections"
)

// Config is what New needs.
type Config struct {
	Conn *bus.Conn
	// Fleet is the status view the host gauges are read from.
	Fleet *projections.Fleet
	// Version is convoy's version, the version label of convoy_build_info.
	Version string
	// ScrapeTimeout bounds the reads of one scrape (default
	// DefaultScrapeTimeout).
	ScrapeTimeout time.Duration
	// Logger (default: discard) logs Run's read errors before it retries.
	Logger *slog.Logger
}

// DefaultScrapeTimeout bounds the reads of one scrape.
const DefaultScrapeTimeout = 10 * time.Second

// retryAfter is how long Run waits after a read error before it follows
// the stream again.
const retryAfter = time.Second

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.Conn == nil {
		errs = append(errs, errors.New("metrics: no bus connection"))
	}
	if c.Fleet == nil {
		errs = append(errs, errors.New("metrics: no status view"))
	}
	if c.ScrapeTimeout < 0 {
		errs = append(errs, fmt.Errorf("metrics: scrape timeout %s is negative", c.ScrapeTimeout))
	}
	return errors.Join(errs...)
}

// Results are the values of the result label of convoy_upgrades_total
// and convoy_host_last_upgrade_timestamp_seconds: the outcome of the
// upgrade's terminal fact.
var Results = []string{"succeeded", "failed", "skipped", "rejected", "aborted"}

// timed are the kinds whose duration_ms convoy_stage_duration_seconds
// observes, under their stage.
var timed = map[events.Kind]bool{
	events.HooksSucceeded: true, events.HooksFailed: true,
	events.PullSucceeded: true, events.PullFailed: true,
	events.BuildSucceeded: true, events.BuildFailed: true,
	events.ValidationPassed: true, events.ValidationFailed: true,
	events.SwitchSucceeded: true, events.SwitchFailed: true,
	events.HealthPassed: true, events.HealthFailed: true,
	events.RollbackSucceeded: true, events.RollbackFailed: true,
	events.BootValidated: true,
}

// StageBuckets are the upper bounds, in seconds, of the buckets of
// convoy_stage_duration_seconds: from a hook that takes a moment to a
// build of half an hour and more.
var StageBuckets = []float64{0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// Metrics is convoy's metrics on a private registry.
type Metrics struct {
	conn    *bus.Conn
	fleet   *projections.Fleet
	log     *slog.Logger
	timeout time.Duration
	reg     *prometheus.Registry

	upgrades *prometheus.CounterVec
	stages   *prometheus.HistogramVec

	mu   sync.Mutex
	next uint64 // the first stream sequence Run has not counted
}

// New returns the metrics of the fleet cfg names, registered on a
// registry of their own. The counters count the facts stored after New
// returns.
func New(ctx context.Context, cfg Config) (*Metrics, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	last, err := cfg.Conn.LastSeq(ctx)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	if cfg.ScrapeTimeout == 0 {
		cfg.ScrapeTimeout = DefaultScrapeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{
		conn: cfg.Conn, fleet: cfg.Fleet, log: cfg.Logger, timeout: cfg.ScrapeTimeout,
		reg:  prometheus.NewRegistry(),
		next: last + 1,
		upgrades: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "convoy_upgrades_total",
			Help: "Upgrades ended since this process started, by the outcome of their terminal fact (result).",
		}, []string{"result"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "convoy_stage_duration_seconds",
			Help:    "Duration of the pipeline stages (and boot checks) that ended since this process started, from the duration_ms of their facts.",
			Buckets: StageBuckets,
		}, []string{"stage"}),
	}
	for _, r := range Results {
		m.upgrades.WithLabelValues(r)
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "convoy_build_info",
		Help:        "Always 1: the version of convoy serving these metrics and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": cfg.Version, "goversion": runtime.Version()},
	})
	build.Set(1)
	if err := m.Register(m.upgrades, m.stages, build, fleetCollector{m}); err != nil {
		return nil, err
	}
	return m, nil
}

// Register adds collectors to the registry Handler serves, each as
// prometheus.Registry.Register does (a name registered twice is an
// error).
func (m *Metrics) Register(cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			return fmt.Errorf("metrics: register: %w", err)
		}
	}
	return nil
}

// Registry returns the private registry, for tests and for gathering
// without HTTP.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus' exposition formats (for
// /metrics). A scrape whose reads of the fleet fail is answered with HTTP
// 500 and the error.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

// Run counts the host facts stored after New returned, in stream order,
// until ctx ends; then it returns nil. After a read error it logs, waits a
// second and goes on after the last fact it counted, so it counts each
// fact once. It is the execute half of a run group part; cancel ctx to
// interrupt it. Run once at a time.
func (m *Metrics) Run(ctx context.Context) error {
	for {
		m.mu.Lock()
		from := m.next
		m.mu.Unlock()
		err := m.conn.Follow(ctx, []string{events.AllHostFacts}, bus.From{Seq: from}, func(st bus.Stored) error {
			m.count(st)
			return nil
		})
		if ctx.Err() != nil {
			return nil
		}
		m.log.Warn("metrics: following the stream failed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retryAfter):
		}
	}
}

// count folds one stored fact into the counters.
func (m *Metrics) count(st bus.Stored) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st.Seq < m.next {
		return
	}
	m.next = st.Seq + 1
	if st.Err != nil {
		return
	}
	k := st.Event.Kind()
	if !k.IsTerminal() && !timed[k] {
		return
	}
	f, err := st.Event.Fact()
	if err != nil {
		return
	}
	if timed[k] {
		m.stages.WithLabelValues(k.Stage()).Observe(float64(f.DurationMS) / 1000)
	}
	if k.IsTerminal() && f.Stage != "golden" { // a refused pin is no upgrade
		m.upgrades.WithLabelValues(k.Outcome()).Inc()
	}
}

// fleetCollector reads the fleet gauges at scrape time.
type fleetCollector struct{ m *Metrics }

var (
	descHostInfo = prometheus.NewDesc("convoy_host_info",
		"Always 1: a host of the status view, its state, the config commit it runs and its tags (comma-separated).",
		[]string{"host", "state", "commit", "tags"}, nil)
	descLastUpgrade = prometheus.NewDesc("convoy_host_last_upgrade_timestamp_seconds",
		"When the host's last upgrade ended (its terminal fact's time), with that fact's outcome as result.",
		[]string{"host", "result"}, nil)
	descLastSuccess = prometheus.NewDesc("convoy_host_last_success_timestamp_seconds",
		"When the host's newest upgrade.succeeded was written.",
		[]string{"host"}, nil)
	descWorkerUp = prometheus.NewDesc("convoy_host_worker_up",
		"1 if the status view has the host's worker online, 0 if offline (after worker.stopped) or never started.",
		[]string{"host"}, nil)
	descReboot = prometheus.NewDesc("convoy_host_reboot_required",
		"1 if the system the host runs takes full effect only after a reboot (another kernel, initrd or modules).",
		[]string{"host"}, nil)
	descGolden = prometheus.NewDesc("convoy_host_golden_generation",
		"The system profile generation pinned as the host's golden generation.",
		[]string{"host"}, nil)
	descLag = prometheus.NewDesc("convoy_projector_lag_events",
		"How many stream sequences the status view is behind the stream.",
		nil, nil)
	descRollout = prometheus.NewDesc("convoy_rollout_state",
		"Always 1: a rollout on the bus and its state (requested, running, paused, succeeded, halted, aborted).",
		[]string{"rollout", "state"}, nil)
)

func (fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHostInfo, descLastUpgrade, descLastSuccess, descWorkerUp, descReboot, descGolden, descLag, descRollout} {
		ch <- d
	}
}

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.m.timeout)
	defer cancel()
	sts, err := c.m.fleet.All(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descHostInfo, err)
		return
	}
	for _, s := range sts {
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{s.Host}, labels...)...)
		}
		gauge(descHostInfo, 1, s.State, s.Commit, strings.Join(s.Tags, ","))
		if !s.LastEnded.IsZero() {
			gauge(descLastUpgrade, seconds(s.LastEnded), events.Kind(s.LastResult).Outcome())
		}
		if !s.LastSucceeded.IsZero() {
			gauge(descLastSuccess, seconds(s.LastSucceeded))
		}
		gauge(descWorkerUp, bool01(s.Worker == "online"))
		gauge(descReboot, bool01(s.RebootRequired))
		if s.Golden != "" {
			gauge(descGolden, float64(s.GoldenGeneration))
		}
	}
	lag, err := c.m.fleet.Lag(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descLag, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(lag))
	rs, err := rollout.List(ctx, c.m.conn)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descRollout, err)
		return
	}
	for _, r := range rs {
		ch <- prometheus.MustNewConstMetric(descRollout, prometheus.GaugeValue, 1, r.ID, r.State())
	}
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func bool01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
