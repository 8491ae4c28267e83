package alerts

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/projections"
)

// ConsumerName is the alerts' durable consumer on the stream: its stored
// position. Renaming it replays the stream from the first start of the
// renamed consumer (events stored after it), never earlier ones, but
// alerts of unacknowledged facts would be lost: never rename it.
const ConsumerName = "convoy-alerts"

// Filters are the subjects the Alerter reads: every host fact and every
// rollout event.
var Filters = []string{events.AllHostFacts, events.AllRolloutFacts}

// Alerter turns facts into alerts and sends each to every sink once.
type Alerter struct {
	conn   *bus.Conn
	cfg    Config
	log    *slog.Logger
	sinks  []namedSink
	record *bus.Bucket
	reader *bus.Durable
	fleet  *projections.Fleet
	now    func() time.Time
	disk   func(context.Context) ([]bus.Storage, error)

	mu    sync.Mutex
	stats map[string]*SinkStats
	// done remembers the alert ids every sink has been sent, so the
	// offline check does not read the bucket each round.
	done map[string]bool
	// silent is when this process first saw each silent host silent.
	silent map[string]time.Time
}

type namedSink struct {
	cfg  SinkConfig
	sink Sink
}

// SinkStats counts one sink's alerts.
type SinkStats struct {
	// Sent were accepted by the sink.
	Sent int
	// Failed still failed after their retries (or failed permanently).
	Failed int
	// Skipped had been sent already (a redelivery after a restart).
	Skipped int
}

// Options are the Alerter's seams for tests.
type Options struct {
	// Sinks replace the sinks of the config by name.
	Sinks map[string]Sink
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Storage reads the convoy servers' storage guards (default: ask
	// them on the bus, bus.QueryStorage).
	Storage func(context.Context) ([]bus.Storage, error)
}

// New builds an Alerter from a valid config, reading the sinks' secret
// files, and creates its durable consumer if it does not exist yet: the
// first start alerts on facts stored from then on, and every later start
// goes on where the last one stopped.
func New(ctx context.Context, conn *bus.Conn, cfg Config, log *slog.Logger, o Options) (*Alerter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Alerter{conn: conn, cfg: cfg, log: log, now: o.Now, disk: o.Storage, stats: map[string]*SinkStats{}, done: map[string]bool{}}
	if a.now == nil {
		a.now = time.Now
	}
	if a.disk == nil {
		a.disk = func(ctx context.Context) ([]bus.Storage, error) { return bus.QueryStorage(ctx, conn) }
	}
	for _, sc := range cfg.Sinks {
		s, ok := o.Sinks[sc.Name]
		if !ok {
			var err error
			if s, err = NewSink(sc, cfg.DashboardURL, nil); err != nil {
				return nil, err
			}
		}
		a.sinks = append(a.sinks, namedSink{sc, s})
		a.stats[sc.Name] = &SinkStats{}
	}
	var err error
	if a.record, err = conn.Bucket(ctx, bus.AlertsBucket); err != nil {
		return nil, err
	}
	if a.fleet, err = projections.OpenFleet(ctx, conn); err != nil {
		return nil, err
	}
	// From here on no fact is missed, whether or not Run has started.
	if a.reader, err = conn.Durable(ctx, ConsumerName, Filters, bus.From{New: true}); err != nil {
		return nil, err
	}
	return a, nil
}

// Stats returns each sink's counts, by sink name.
func (a *Alerter) Stats() map[string]SinkStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]SinkStats, len(a.stats))
	for n, s := range a.stats {
		out[n] = *s
	}
	return out
}

// Run reads the stream through the durable consumer ConsumerName, and the
// status view every CheckEvery for offline workers, until ctx ends. A
// fact is acknowledged once every sink has been sent its alert or has
// failed it for good, so an alert is not lost across restarts.
func (a *Alerter) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { a.watchOffline(ctx) })
	defer func() { cancel(); wg.Wait() }()
	err := a.reader.Consume(ctx, func(st bus.Stored) error { return a.handle(ctx, st) })
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// handle is the consumer's fn: derive, match, deliver.
func (a *Alerter) handle(ctx context.Context, st bus.Stored) error {
	if st.Err != nil {
		return nil // malformed: nothing to say about it
	}
	e := st.Event
	k := e.Kind()
	var out []Alert
	if k == events.UpgradeFailed || k == events.UpgradeSucceeded {
		al, err := a.countFailure(ctx, st)
		if err != nil {
			return err
		}
		out = append(out, al...)
	}
	if k == events.WorkerStopped || k == events.WorkerStarted {
		if err := a.trackEpisode(ctx, e); err != nil {
			return err
		}
	}
	if k.Known() {
		host := ""
		if k.Stage() != events.ClassRollout {
			host = e.Host()
		}
		if sev, ok := a.match(ctx, k, host, nil); ok {
			out = append(out, factAlert(e, sev))
		}
	}
	for _, al := range out {
		if err := a.send(ctx, al); err != nil {
			return err
		}
	}
	return nil
}

// failures is a host's streak of failed upgrades, in the alerts bucket.
type failures struct {
	Count int    `json:"count"`
	Seq   uint64 `json:"seq"` // the last terminal fact counted
}

// countFailure counts a host's consecutive upgrade.failed (an
// upgrade.succeeded ends the streak) and returns HostFailing when the
// streak reaches ConsecutiveFailures. It is idempotent per stream
// sequence: a redelivered fact is not counted twice.
func (a *Alerter) countFailure(ctx context.Context, st bus.Stored) ([]Alert, error) {
	host := st.Event.Host()
	if events.ValidateHost(host) != nil {
		return nil, nil
	}
	key := "failures." + host
	var f failures
	rev, err := a.record.GetJSON(ctx, key, &f)
	if err != nil && !errors.Is(err, bus.ErrNotFound) {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	if st.Seq > f.Seq {
		if st.Event.Kind() == events.UpgradeFailed {
			f.Count++
		} else {
			f.Count = 0
		}
		f.Seq = st.Seq
		b, _ := json.Marshal(f)
		if _, err := a.record.Write(ctx, key, b, rev); err != nil {
			return nil, fmt.Errorf("alerts: %w", err)
		}
	}
	if st.Event.Kind() != events.UpgradeFailed || f.Count != a.cfg.ConsecutiveFailures {
		return nil, nil
	}
	sev, ok := a.match(ctx, HostFailing, host, nil)
	if !ok {
		return nil, nil
	}
	fact, _ := st.Event.Fact()
	summary := fmt.Sprintf("%s: %d upgrades in a row failed", host, f.Count)
	if fact.Reason != "" {
		summary += "; the last: " + firstLine(fact.Reason)
	}
	id := derivedID(st.Event.Time, string(HostFailing), st.Event.ID)
	al := derivedAlert(id, HostFailing, host, sev, summary, st.Event.Time, FailingData{Failures: f.Count, Last: st.Event.ID, Reason: fact.Reason})
	al.UpgradeID, al.Reason = st.Event.UpgradeID, fact.Reason
	al.Event.UpgradeID = st.Event.UpgradeID
	return []Alert{al}, nil
}

// match returns the severity of the first rule matching kind k about host
// (status, if known, gives its tags).
func (a *Alerter) match(ctx context.Context, k events.Kind, host string, status *projections.Status) (string, bool) {
	for _, r := range a.cfg.Rules {
		if !slices.Contains(r.Kinds, string(k)) {
			continue
		}
		if len(r.Hosts) == 0 && len(r.Tags) == 0 {
			return r.Severity, true
		}
		if host == "" {
			continue
		}
		if slices.Contains(r.Hosts, host) {
			return r.Severity, true
		}
		if len(r.Tags) > 0 && status == nil {
			s, err := a.fleet.Host(ctx, host)
			if err != nil {
				continue
			}
			status = &s
		}
		for _, tag := range r.Tags {
			if status != nil && status.HasTag(tag) {
				return r.Severity, true
			}
		}
	}
	return "", false
}

func sentKey(sink, id string) string { return "sent." + sink + "." + id }

// send delivers al to every sink at once, each bounded by its retries,
// skipping sinks the record says were sent al already, and records each
// acceptance. It returns an error only when the record cannot be read or
// written; a sink that fails for good is logged and counted.
func (a *Alerter) send(ctx context.Context, al Alert) error {
	log := a.log.With(logAlert, al.ID, logKind, string(al.Kind), logHost, al.Host, logSeverity, al.Severity)
	var wg sync.WaitGroup
	errs := make([]error, len(a.sinks))
	for i, s := range a.sinks {
		wg.Go(func() {
			name := s.cfg.Name
			key := sentKey(name, al.ID)
			if _, err := a.record.Get(ctx, key); err == nil {
				a.count(name, func(st *SinkStats) { st.Skipped++ })
				return
			} else if !errors.Is(err, bus.ErrNotFound) {
				errs[i] = fmt.Errorf("alerts: %w", err)
				return
			}
			if err := deliver(ctx, s.sink, al, s.cfg.Timeout.Duration, s.cfg.RetryFor.Duration); err != nil {
				if ctx.Err() != nil {
					errs[i] = ctx.Err() // stopping: not acked, sent again at the next start
					return
				}
				log.Error("alert not delivered", logSink, name, logErr, err)
				a.count(name, func(st *SinkStats) { st.Failed++ })
				return
			}
			a.count(name, func(st *SinkStats) { st.Sent++ })
			log.Info("alert sent", logSink, name)
			b, _ := json.Marshal(map[string]any{"sent": a.now().UTC()})
			if _, err := a.record.Put(ctx, key, b); err != nil {
				errs[i] = fmt.Errorf("alerts: record %s: %w", key, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (a *Alerter) count(sink string, f func(*SinkStats)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a.stats[sink])
}

// episode is a host's worker stopped, in the alerts bucket from its
// worker.stopped to its next worker.started: one offline episode.
type episode struct {
	Host    string    `json:"host"`
	Stopped string    `json:"stopped"` // worker.stopped's event id
	Time    time.Time `json:"time"`
}

func episodeKey(host string) string { return "offline." + host }

// trackEpisode opens an offline episode at worker.stopped and closes it
// at worker.started.
func (a *Alerter) trackEpisode(ctx context.Context, e events.Event) error {
	host := e.Host()
	if events.ValidateHost(host) != nil {
		return nil
	}
	if e.Kind() == events.WorkerStarted {
		if err := a.record.Delete(ctx, episodeKey(host), 0); err != nil && !errors.Is(err, bus.ErrNotFound) {
			return fmt.Errorf("alerts: %w", err)
		}
		return nil
	}
	b, _ := json.Marshal(episode{Host: host, Stopped: e.ID, Time: e.Time})
	if _, err := a.record.Put(ctx, episodeKey(host), b); err != nil {
		return fmt.Errorf("alerts: %w", err)
	}
	return nil
}

// watchOffline checks every CheckEvery for offline workers and raises
// WorkerOffline for each host whose worker stopped (an open episode)
// and which the status view shows offline with no fact for OfflineAfter:
// once per episode, whose alert id derives from its worker.stopped.
func (a *Alerter) watchOffline(ctx context.Context) {
	t := time.NewTicker(a.cfg.CheckEvery.Duration)
	defer t.Stop()
	for {
		if err := a.checkOffline(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("offline check failed", logErr, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkOffline runs the checks of the status view and the servers: each
// on its own, so that one that cannot read does not stop the others.
func (a *Alerter) checkOffline(ctx context.Context) error {
	now := a.now()
	return errors.Join(a.checkStopped(ctx, now), a.checkSilent(ctx, now), a.checkStorage(ctx))
}

// checkStopped raises WorkerOffline for the open episodes whose host the
// status view shows offline with no fact for OfflineAfter.
func (a *Alerter) checkStopped(ctx context.Context, now time.Time) error {
	eps, err := bus.AllJSON[episode](ctx, a.record, episodeKey("*"))
	if err != nil {
		return err
	}
	for _, ep := range eps {
		id := derivedID(ep.Time, string(WorkerOffline), ep.Stopped)
		if a.isDone(id) {
			continue
		}
		s, err := a.fleet.Host(ctx, ep.Host)
		if err != nil {
			continue // not in the view yet
		}
		if s.Worker != projections.WorkerOffline || now.Sub(s.WorkerSeen) < a.cfg.OfflineAfter.Duration {
			continue
		}
		summary := fmt.Sprintf("%s: worker offline, silent since %s", s.Host, s.WorkerSeen.UTC().Format(time.RFC3339))
		data := OfflineData{Stopped: ep.Stopped, LastSeen: s.WorkerSeen, OfflineAfter: a.cfg.OfflineAfter.Seconds()}
		if err := a.raiseOnce(ctx, id, WorkerOffline, &s, summary, ep.Time, data); err != nil {
			return err
		}
	}
	return nil
}

// checkSilent raises WorkerOffline for each host whose worker stopped
// without saying so (projections.WorkerSilent: online by its facts, its
// lease expired), has sent no fact for OfflineAfter and has been seen
// silent by this process for the leases' TTL: once per silence, whose
// alert id derives from the host and the time of its last fact.
func (a *Alerter) checkSilent(ctx context.Context, now time.Time) error {
	sts, err := a.fleet.All(ctx)
	if err != nil {
		return err
	}
	ttl := a.fleet.LeaseTTL(ctx)
	a.mu.Lock()
	seen := make(map[string]time.Time, len(a.silent))
	for _, s := range sts {
		if s.Worker == projections.WorkerSilent {
			seen[s.Host] = cmp.Or(a.silent[s.Host], now)
		}
	}
	a.silent = seen
	a.mu.Unlock()
	for _, s := range sts {
		// Silent for a whole lease TTL in this process's eyes: after a
		// restart of a cluster's servers the leases come back empty, and
		// the workers renew theirs within a third of it.
		if s.Worker != projections.WorkerSilent || now.Sub(s.WorkerSeen) < a.cfg.OfflineAfter.Duration || now.Sub(seen[s.Host]) < ttl {
			continue
		}
		id := derivedID(s.WorkerSeen, string(WorkerOffline), s.Host+"@"+s.WorkerSeen.UTC().Format(time.RFC3339Nano))
		if a.isDone(id) {
			continue
		}
		summary := fmt.Sprintf("%s: worker silent since %s (its lease expired without worker.stopped: killed, or its machine is down or cut off)", s.Host, s.WorkerSeen.UTC().Format(time.RFC3339))
		data := OfflineData{LastSeen: s.WorkerSeen, OfflineAfter: a.cfg.OfflineAfter.Seconds()}
		if err := a.raiseOnce(ctx, id, WorkerOffline, &s, summary, s.WorkerSeen, data); err != nil {
			return err
		}
	}
	return nil
}

// checkStorage raises BusStorage for each convoy server whose data dir
// is low or full: once per level it enters, whose alert id derives from
// the server, the level and when it began.
func (a *Alerter) checkStorage(ctx context.Context) error {
	sts, err := a.disk(ctx)
	if err != nil {
		return err
	}
	for _, st := range sts {
		if st.Level == bus.StorageOK {
			continue
		}
		id := derivedID(st.Since, string(BusStorage), st.Server, string(st.Level), st.Since.UTC().Format(time.RFC3339Nano))
		if a.isDone(id) {
			continue
		}
		if err := a.raiseOnce(ctx, id, BusStorage, nil, st.Problem(), st.Since, StorageData(st)); err != nil {
			return err
		}
	}
	return nil
}

// raiseOnce sends the derived alert id of kind k (about the host of
// status, if any) when a rule matches it, and remembers id as done either
// way, so that later checks pass over it.
func (a *Alerter) raiseOnce(ctx context.Context, id string, k events.Kind, status *projections.Status, summary string, t time.Time, data any) error {
	host := ""
	if status != nil {
		host = status.Host
	}
	if sev, ok := a.match(ctx, k, host, status); ok {
		if err := a.send(ctx, derivedAlert(id, k, host, sev, summary, t, data)); err != nil {
			return err
		}
	}
	a.markDone(id)
	return nil
}

func (a *Alerter) isDone(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.done[id]
}

func (a *Alerter) markDone(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.done[id] = true
}
