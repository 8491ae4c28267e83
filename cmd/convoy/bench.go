package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/projections"
)

type benchCmd struct{ env *env }

// benchReport is what one run of convoy bench measured. Its JSON names are
// a stable contract for scripts; a figure the run could not measure is
// null (the server's memory with --nats, the real worker with
// --real-upgrades 0).
type benchReport struct {
	Hosts          int    `json:"hosts"`
	Server         string `json:"server"`
	SimulatedHosts string `json:"simulated_hosts"`
	HostsStateDirs string `json:"hosts_state_dirs"`

	RawSyncPublishPerS  float64 `json:"raw_sync_publish_per_s"`
	RawAsyncPublishPerS float64 `json:"raw_async_publish_per_s"`
	RawReplayEvents     int     `json:"raw_replay_events"`
	RawReplayPerS       float64 `json:"raw_replay_per_s"`

	JoinS         float64 `json:"join_s"`
	JoinHostsPerS float64 `json:"join_hosts_per_s"`

	FanoutS            float64 `json:"fanout_s"`
	FanoutRequestsPerS float64 `json:"fanout_requests_per_s"`

	UpgradesSucceeded  int     `json:"upgrades_succeeded"`
	PipelineFacts      int     `json:"pipeline_facts"`
	PipelineS          float64 `json:"pipeline_s"`
	PipelineFactsPerS  float64 `json:"pipeline_facts_per_s"`
	PipelineVsRawAsync float64 `json:"pipeline_vs_raw_async"`

	ProjectorLagSamples int     `json:"projector_lag_samples"`
	ProjectorLagP50Ms   float64 `json:"projector_lag_p50_ms"`
	ProjectorLagP99Ms   float64 `json:"projector_lag_p99_ms"`
	ProjectorLagMaxMs   float64 `json:"projector_lag_max_ms"`

	StatusFleetMs float64 `json:"status_fleet_ms"`
	StatusHostMs  float64 `json:"status_host_ms"`
	HistoryHostMs float64 `json:"history_host_ms"`
	HistoryEvents int     `json:"history_host_events"`

	RebuildEvents      int     `json:"rebuild_events"`
	RebuildS           float64 `json:"rebuild_s"`
	RebuildPerS        float64 `json:"rebuild_per_s"`
	RebuildVsRawReplay float64 `json:"rebuild_vs_raw_replay"`

	ServerRSSIdleMiB *float64 `json:"server_rss_idle_mib"`
	ServerRSSEndMiB  *float64 `json:"server_rss_end_mib"`

	RealUpgrades          int      `json:"real_upgrades"`
	WorkerOverheadP50Ms   *float64 `json:"worker_overhead_p50_ms"`
	WorkerOverheadP99Ms   *float64 `json:"worker_overhead_p99_ms"`
	RequestToStartedP99Ms *float64 `json:"request_to_started_p99_ms"`
	WorkerCommandTimeFrom string   `json:"worker_command_time_from"`
	KeptDir               string   `json:"kept_dir,omitempty"`
	KeptHostsDir          string   `json:"kept_hosts_dir,omitempty"`
}

// What the report says of the simulated hosts and of the real worker's
// command time, in the table and the JSON alike.
const (
	simulatedNote   = "simulated hosts run the worker's own code, but skip git and run no-op commands (a no-op Exec), in child processes at nice 10 (they stand for machines of their own)"
	commandTimeNote = "the wall time of every command it ran (git, build, switch, current, checks), measured around each"
)

// rawFor is how long each raw publish measurement runs.
const rawFor = 2 * time.Second

func (c *benchCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("bench", "bench [--hosts N] [--real-upgrades K] [--json] [--keep] [--nats URL]",
		example{"measure convoy with 1,000 simulated hosts against a fresh convoy server in a temp dir", "convoy bench"},
		example{"10,000 simulated hosts, as JSON (progress goes to stderr)", "convoy bench --hosts 10000 --json"},
		example{"against a NATS kept for benchmarking, never your fleet's: its stream keeps the simulated hosts for good (only this flag counts, not CONVOY_NATS_URL)", "convoy bench --nats nats://bench.example.org:4222 --hosts 2000"},
	)
	hosts := fs.Int("hosts", 1000, "how many simulated hosts (h00001, h00002, …)")
	realUps := fs.Int("real-upgrades", 20, "how many times the one real worker upgrades (0: not at all)")
	asJSON := fs.Bool("json", false, "print the figures as JSON")
	keep := fs.Bool("keep", false, "keep the temp dirs (server data, the hosts' state) and print their paths")
	join := fs.Int("join-concurrency", 64, "how many simulated hosts join at once")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long (exit 3)")
	verbose := fs.Bool("v", false, "show the real worker's warnings, not only its errors")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	var errs []error
	if *hosts < 1 || *hosts > 99999 {
		errs = append(errs, fmt.Errorf("--hosts %d: want 1 to 99999", *hosts))
	}
	if *realUps < 0 {
		errs = append(errs, fmt.Errorf("--real-upgrades %d: must not be negative", *realUps))
	}
	if *join < 1 {
		errs = append(errs, fmt.Errorf("--join-concurrency %d: want at least 1", *join))
	}
	if err := errors.Join(errs...); err != nil {
		return usageErr(err)
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelWarn
	}
	b := &bench{env: c.env, hosts: *hosts, realUps: *realUps, join: *join,
		log: slog.New(slog.NewTextHandler(c.env.stderr, &slog.HandlerOptions{Level: level}))}
	b.r.Hosts, b.r.RealUpgrades, b.r.SimulatedHosts, b.r.WorkerCommandTimeFrom = *hosts, *realUps, simulatedNote, commandTimeNote
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	err := b.run(rctx)
	b.close(*keep)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return fmt.Errorf("interrupted; what the bench started is stopped: %w", err)
		case errors.Is(rctx.Err(), context.DeadlineExceeded):
			return timeoutErr(fmt.Errorf("gave up after --timeout %s: %w", *timeout, err))
		}
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(c.env.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(b.r); err != nil {
			return err
		}
	} else if err := printBench(c.env.stdout, b.r); err != nil {
		return err
	}
	if b.r.UpgradesSucceeded != b.hosts {
		return failedErr(fmt.Errorf("%d of %d simulated upgrades did not succeed, so the pipeline figures are not those of a fleet upgrade", b.hosts-b.r.UpgradesSucceeded, b.hosts))
	}
	return nil
}

// bench is one run: its temp dirs, the bus, the simulated fleet and the
// report it fills, step by step.
type bench struct {
	env            *env
	hosts, realUps int
	join           int
	log            *slog.Logger // the workers'
	dir            string       // the server's data, the real worker's sandbox
	hostsDir       string       // the simulated hosts' state dirs
	server         *childServer // nil with --nats
	url            string
	conn           *bus.Conn
	view           *projections.Fleet
	raw            *rawClient
	sim            *hostProcs
	r              benchReport
}

func (b *bench) progress(format string, a ...any) {
	fmt.Fprintf(b.env.stderr, "bench: "+format+"\n", a...)
}

// counter returns a func to call as each of total things happens: it
// reports how many have, every two seconds and at the last one. Calls
// must come from one goroutine.
func (b *bench) counter(what string, total int) func() {
	n, start, shown := 0, time.Now(), time.Now()
	return func() {
		n++
		if n == total || time.Since(shown) >= 2*time.Second {
			b.progress("%d of %d %s (%s)", n, total, what, time.Since(start).Round(100*time.Millisecond))
			shown = time.Now()
		}
	}
}

func (b *bench) run(ctx context.Context) error {
	if err := b.makeDirs(); err != nil {
		return err
	}
	if err := b.startBus(ctx); err != nil {
		return err
	}
	for _, step := range []func(context.Context) error{b.rawFloor, b.joinHosts, b.fleetUpgrade, b.reads, b.realWorker, b.rebuild} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	b.r.ServerRSSEndMiB = b.rss()
	return nil
}

// makeDirs makes the temp dir and the simulated hosts' dir: on tmpfs when
// there is one, since each real host writes its state to a disk of its
// own, not to the disk the server fsyncs to.
func (b *bench) makeDirs() error {
	var err error
	if b.dir, err = os.MkdirTemp("", "convoy-bench-"); err != nil {
		return err
	}
	var fs syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if syscall.Statfs("/dev/shm", &fs) == nil && fs.Type == tmpfsMagic {
		if b.hostsDir, err = os.MkdirTemp("/dev/shm", "convoy-bench-hosts-"); err == nil {
			b.r.HostsStateDirs = "tmpfs " + b.hostsDir + ": a real host's state-file fsyncs go to its own disk, not the server's"
			return nil
		}
	}
	b.hostsDir = filepath.Join(b.dir, "hosts")
	b.r.HostsStateDirs = "disk " + b.hostsDir + " (no tmpfs at /dev/shm): the hosts' fsyncs share the server's disk"
	return os.MkdirAll(b.hostsDir, 0o700)
}

// startBus starts the child server, unless --nats names a bus, and
// connects. Only the flag counts, not CONVOY_NATS_URL, so that the bench
// never writes its hosts to a fleet's bus by accident.
func (b *bench) startBus(ctx context.Context) error {
	if b.env.given["nats"] {
		b.url = b.env.nats
		b.r.Server = "the NATS at " + b.url + " (--nats; its memory is not this bench's to read)"
	} else {
		data := filepath.Join(b.dir, "bus")
		b.progress("starting convoy server (a child process) with its data in %s", data)
		s, err := startChildServer(ctx, data, b.env.stderr)
		if err != nil {
			return err
		}
		b.server, b.url = s, s.url
		b.r.Server = fmt.Sprintf("convoy server, a child process (pid %d) on %s, fsync always", s.pid(), s.url)
	}
	var err error
	b.conn, err = bus.Connect(ctx, bus.ConnectConfig{URL: b.url, Name: "convoy bench", MaxWait: 10 * time.Second, NKeyFile: b.env.nkey, CAFile: b.env.tlsCA})
	if err != nil {
		return err
	}
	if b.view, err = projections.OpenFleet(ctx, b.conn); err != nil {
		return err
	}
	b.raw, err = dialRaw(b.url, b.env.nkey, b.env.tlsCA)
	return err
}

// rss is the child server's resident memory, nil with --nats.
func (b *bench) rss() *float64 {
	if b.server == nil {
		return nil
	}
	mib, err := rssMiB(b.server.pid())
	if err != nil {
		b.progress("server memory not read: %v", err)
		return nil
	}
	return ptr(round(mib, 1))
}

func (b *bench) rawFloor(ctx context.Context) error {
	b.progress("raw floor: one publisher for %s waiting for each ack, then %s pipelined", rawFor, rawFor)
	syncRate, asyncRate, err := b.raw.publishRates(ctx, rawFor)
	if err != nil {
		return err
	}
	b.r.RawSyncPublishPerS, b.r.RawAsyncPublishPerS = round(syncRate, 0), round(asyncRate, 0)
	return nil
}

func (b *bench) joinHosts(ctx context.Context) error {
	b.progress("%d simulated hosts joining, %d at a time; %s", b.hosts, b.join, simulatedNote)
	start := time.Now()
	joined := b.counter("hosts joined", b.hosts)
	n := 0
	sim, err := startSimHosts(ctx, b.url, b.hostsDir, b.hosts, b.join, func(total int) {
		for ; n < total; n++ {
			joined()
		}
	})
	if err != nil {
		return err
	}
	b.sim = sim
	d := time.Since(start)
	b.r.JoinS, b.r.JoinHostsPerS = round(d.Seconds(), 3), round(float64(b.hosts)/d.Seconds(), 0)
	if err := waitCaughtUp(ctx, b.conn); err != nil {
		return err
	}
	b.r.ServerRSSIdleMiB = b.rss()
	return nil
}

// fleetUpgrade requests an upgrade of every simulated host at once, waits
// for each one's terminal fact, and samples the projector's lag from the
// first request until the view has caught up.
func (b *bench) fleetUpgrade(ctx context.Context) error {
	hosts := b.sim.Hosts()
	lag := sampleLag(ctx, b.conn, b.view, 100*time.Millisecond)
	b.progress("requesting an upgrade of all %d hosts", len(hosts))
	start := time.Now()
	id, sent, err := producers.Upgrade(ctx, b.conn, producers.Request{Hosts: hosts, By: "convoy bench"})
	if err != nil {
		lag()
		return err
	}
	fanout := time.Since(start)
	b.r.FanoutS, b.r.FanoutRequestsPerS = round(fanout.Seconds(), 3), round(float64(len(sent))/fanout.Seconds(), 0)
	b.progress("%d requests in %s; waiting for every host's terminal fact", len(sent), fanout.Round(time.Millisecond))
	first := sent[0].Seq
	for _, s := range sent {
		first = min(first, s.Seq)
	}
	req, err := b.conn.Get(ctx, first)
	if err != nil {
		lag()
		return err
	}
	var last time.Time
	facts, ended := 0, b.counter("upgrades ended", len(hosts))
	ends, err := producers.Wait(ctx, b.conn, id, sent, func(st bus.Stored) {
		facts++
		if st.Event.Kind().IsTerminal() {
			last = st.Stored
			ended()
		}
	})
	if err == nil {
		b.progress("waiting for the status view to catch up")
		err = waitCaughtUp(ctx, b.conn)
	}
	samples := lag()
	if err != nil {
		return err
	}
	for _, k := range ends {
		if k == events.UpgradeSucceeded {
			b.r.UpgradesSucceeded++
		}
	}
	d := last.Sub(req.Stored)
	b.r.PipelineFacts, b.r.PipelineS = facts, round(d.Seconds(), 3)
	b.r.PipelineFactsPerS = round(float64(facts)/d.Seconds(), 0)
	b.r.PipelineVsRawAsync = round(b.r.PipelineFactsPerS/b.r.RawAsyncPublishPerS, 2)
	b.r.ProjectorLagSamples = len(samples)
	b.r.ProjectorLagP50Ms, b.r.ProjectorLagP99Ms = ms(percentile(samples, 0.50)), ms(percentile(samples, 0.99))
	b.r.ProjectorLagMaxMs = ms(percentile(samples, 1))
	return nil
}

// sampleLag samples, every period until the returned func is called, how
// far in time the status view's checkpoint is behind the newest stored
// event; that func returns the samples.
func sampleLag(ctx context.Context, conn *bus.Conn, view *projections.Fleet, period time.Duration) func() []time.Duration {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan []time.Duration)
	go func() {
		var samples []time.Duration
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			if d, err := lagNow(ctx, conn, view); err == nil {
				samples = append(samples, d)
			}
			select {
			case <-ctx.Done():
				done <- samples
				return
			case <-t.C:
			}
		}
	}()
	return func() []time.Duration { cancel(); return <-done }
}

// lagNow is the stored time of the newest event minus that of the last
// one the status view applied; 0 when the view has caught up.
func lagNow(ctx context.Context, conn *bus.Conn, view *projections.Fleet) (time.Duration, error) {
	cp, err := view.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	last, err := conn.LastSeq(ctx)
	if err != nil || cp >= last {
		return 0, err
	}
	newest, err := conn.Get(ctx, last)
	if err != nil {
		return 0, err
	}
	applied, err := conn.Get(ctx, max(cp, 1))
	if err != nil {
		return 0, err
	}
	return newest.Stored.Sub(applied.Stored), nil
}

// reads times the status view of the fleet and of one host, and one
// host's history, as the CLI reads them (without its start-up).
func (b *bench) reads(ctx context.Context) error {
	hosts := b.sim.Hosts()
	host := hosts[len(hosts)/2]
	b.progress("reading: status of the fleet, status and history of %s", host)
	var err error
	if b.r.StatusFleetMs, err = medianMS(3, func() error {
		sts, err := b.view.All(ctx)
		if err == nil && len(sts) < len(hosts) {
			err = fmt.Errorf("status shows %d hosts, want at least %d", len(sts), len(hosts))
		}
		return err
	}); err != nil {
		return err
	}
	if b.r.StatusHostMs, err = medianMS(5, func() error { _, err := b.view.Host(ctx, host); return err }); err != nil {
		return err
	}
	b.r.HistoryHostMs, err = medianMS(5, func() error {
		b.r.HistoryEvents = 0
		return b.view.History(ctx, projections.Query{Host: host}, func(bus.Stored) error { b.r.HistoryEvents++; return nil })
	})
	return err
}

func (b *bench) realWorker(ctx context.Context) error {
	if b.realUps == 0 {
		return nil
	}
	b.progress("one real worker (%s: real git, the command driver with shell build and switch), %d upgrades", realHost, b.realUps)
	ups, err := realWorker(ctx, b.url, filepath.Join(b.dir, "real"), b.realUps, b.log)
	if err != nil {
		return err
	}
	overhead := make([]time.Duration, len(ups))
	toStarted := make([]time.Duration, len(ups))
	for i, u := range ups {
		overhead[i], toStarted[i] = u.overhead(), u.toStarted
	}
	b.r.WorkerOverheadP50Ms, b.r.WorkerOverheadP99Ms = ptr(ms(percentile(overhead, 0.5))), ptr(ms(percentile(overhead, 0.99)))
	b.r.RequestToStartedP99Ms = ptr(ms(percentile(toStarted, 0.99)))
	return nil
}

// rebuild times a raw ordered replay of what the projector reads, then
// projections rebuild of the same.
func (b *bench) rebuild(ctx context.Context) error {
	b.progress("ordered replay of the stream, then projections rebuild")
	n, d, err := b.raw.replayRate(ctx, []string{events.AllHostFacts, events.AllRequests})
	if err != nil {
		return err
	}
	b.r.RawReplayEvents, b.r.RawReplayPerS = n, round(float64(n)/d.Seconds(), 0)
	p, err := projections.NewProjector(ctx, b.conn)
	if err != nil {
		return err
	}
	start := time.Now()
	m, err := p.Rebuild(ctx)
	if err != nil {
		return err
	}
	d = time.Since(start)
	b.r.RebuildEvents, b.r.RebuildS, b.r.RebuildPerS = m, round(d.Seconds(), 3), round(float64(m)/d.Seconds(), 0)
	b.r.RebuildVsRawReplay = round(b.r.RebuildPerS/b.r.RawReplayPerS, 2)
	return nil
}

// close stops the simulated hosts, then the server, and removes the temp
// dirs unless keep. It reports what failed and goes on.
func (b *bench) close(keep bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if b.sim != nil {
		b.progress("stopping the simulated hosts")
		if err := b.sim.Close(ctx); err != nil {
			b.progress("simulated hosts: %v", err)
		}
	}
	if b.raw != nil {
		b.raw.close()
	}
	if b.conn != nil {
		b.conn.Close()
	}
	if b.server != nil {
		b.server.stop()
	}
	for _, d := range []string{b.dir, b.hostsDir} {
		switch {
		case d == "":
		case keep:
			b.progress("kept %s", d)
		default:
			if err := os.RemoveAll(d); err != nil {
				b.progress("%v", err)
			}
		}
	}
	if keep {
		b.r.KeptDir, b.r.KeptHostsDir = b.dir, b.hostsDir
	}
}

// printBench writes the report as a table.
func printBench(w io.Writer, r benchReport) error {
	fmt.Fprintf(w, "convoy bench: %d simulated hosts against %s\n", r.Hosts, r.Server)
	fmt.Fprintf(w, "Note: %s.\nTheir state dirs are on %s.\n\n", simulatedNote, r.HostsStateDirs)
	t := table(w)
	row(t, "FIGURE", "VALUE", "WHAT")
	row(t, "raw sync publish", fmt.Sprintf("%.0f events/s", r.RawSyncPublishPerS), "one publisher waiting for each ack")
	row(t, "raw async publish", fmt.Sprintf("%.0f events/s", r.RawAsyncPublishPerS), fmt.Sprintf("one publisher, up to %d awaiting their ack", rawAsyncWindow))
	row(t, "raw ordered replay", fmt.Sprintf("%.0f events/s", r.RawReplayPerS), fmt.Sprintf("the stream's %d requests and facts, one ordered consumer", r.RawReplayEvents))
	row(t, "hosts joining", fmt.Sprintf("%.2f s", r.JoinS), fmt.Sprintf("%.0f hosts/s, until every worker.started is stored", r.JoinHostsPerS))
	row(t, "request fan-out", fmt.Sprintf("%.0f requests/s", r.FanoutRequestsPerS), fmt.Sprintf("producers.Upgrade of %d hosts in %.2f s", r.Hosts, r.FanoutS))
	row(t, "pipeline", fmt.Sprintf("%.0f facts/s", r.PipelineFactsPerS), fmt.Sprintf("%.2f × raw async; %d facts in %.2f s from the first request (the fan-out took %.2f s of it); %d of %d upgrades succeeded", r.PipelineVsRawAsync, r.PipelineFacts, r.PipelineS, r.FanoutS, r.UpgradesSucceeded, r.Hosts))
	row(t, "projector lag", fmt.Sprintf("p50 %.0f ms, p99 %.0f ms", r.ProjectorLagP50Ms, r.ProjectorLagP99Ms), fmt.Sprintf("status checkpoint behind the newest event; max %.0f ms, %d samples", r.ProjectorLagMaxMs, r.ProjectorLagSamples))
	row(t, "status, fleet", fmt.Sprintf("%.1f ms", r.StatusFleetMs), fmt.Sprintf("all %d hosts, median of 3", r.Hosts))
	row(t, "status, one host", fmt.Sprintf("%.1f ms", r.StatusHostMs), "median of 5")
	row(t, "history, one host", fmt.Sprintf("%.1f ms", r.HistoryHostMs), fmt.Sprintf("%d events, median of 5", r.HistoryEvents))
	row(t, "rebuild", fmt.Sprintf("%.0f events/s", r.RebuildPerS), fmt.Sprintf("%.2f × raw replay; %d events in %.2f s", r.RebuildVsRawReplay, r.RebuildEvents, r.RebuildS))
	row(t, "server memory", fmt.Sprintf("idle %s, end %s", mib(r.ServerRSSIdleMiB), mib(r.ServerRSSEndMiB)), "resident (VmRSS), after the hosts joined and at the end")
	if r.WorkerOverheadP50Ms != nil {
		row(t, "real worker overhead", fmt.Sprintf("p50 %.1f ms, p99 %.1f ms", *r.WorkerOverheadP50Ms, *r.WorkerOverheadP99Ms), fmt.Sprintf("per upgrade (%d), request stored to terminal fact stored, minus command time", r.RealUpgrades))
		row(t, "request → upgrade.started", fmt.Sprintf("p99 %.1f ms", *r.RequestToStartedP99Ms), "real worker, stored times")
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if r.WorkerOverheadP50Ms != nil {
		fmt.Fprintf(w, "\nThe real worker's command time is %s.\n", r.WorkerCommandTimeFrom)
	}
	return nil
}

func mib(v *float64) string {
	if v == nil {
		return "not available"
	}
	return fmt.Sprintf("%.0f MiB", *v)
}

// medianMS runs f n times and returns the median time it took, in ms.
func medianMS(n int, f func() error) (float64, error) {
	ds := make([]time.Duration, n)
	for i := range ds {
		start := time.Now()
		if err := f(); err != nil {
			return 0, err
		}
		ds[i] = time.Since(start)
	}
	return ms(percentile(ds, 0.5)), nil
}

// percentile is the nearest-rank p-th percentile of ds (0 for none).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

func ptr[T any](v T) *T { return &v }
