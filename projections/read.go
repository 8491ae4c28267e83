package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
)

// ErrUnknownHost is returned for a host the fleet view has never seen.
var ErrUnknownHost = errors.New("unknown host")

// UnknownHost is the error, wrapping ErrUnknownHost, for a host the view
// has no row of.
func UnknownHost(host string) error {
	return fmt.Errorf("%w %q: no worker or request for it is on the bus yet", ErrUnknownHost, host)
}

// Fleet reads the status bucket. It never replays the stream: one host's
// status is one KV read, and the whole fleet's, or many named hosts', one
// pass over the bucket. Each read also looks at the workers' leases (the
// convoy-leases bucket), so that a worker that stopped without saying so
// shows as WorkerSilent.
type Fleet struct {
	view
	leases *bus.Bucket

	mu       sync.Mutex // guards the judgeLeases cache below
	judgedAt time.Time
	judged   bool
	ttl      time.Duration
}

// OpenFleet opens the fleet view.
func OpenFleet(ctx context.Context, c *bus.Conn) (*Fleet, error) {
	v, err := openView(ctx, c)
	if err != nil {
		return nil, err
	}
	leases, err := c.Bucket(ctx, bus.LeasesBucket)
	if err != nil {
		return nil, err
	}
	return &Fleet{view: v, leases: leases}, nil
}

// Worker liveness, in Status.Worker.
const (
	// WorkerOnline: the worker's last fact is worker.started (or any
	// fact after it) and it holds its lease.
	WorkerOnline = "online"
	// WorkerOffline: the worker's last word was worker.stopped.
	WorkerOffline = "offline"
	// WorkerSilent: the facts say online, but the worker has not renewed
	// its lease for the leases' TTL (bus.LeaseTTL): it stopped without
	// saying so (killed, its machine down or cut off from the bus). Set
	// when the view is read, never stored, and only once the leases
	// bucket is older than that TTL.
	WorkerSilent = "silent"
)

// judge marks s WorkerSilent if its worker is online by its facts but
// holds no lease (held false).
func (s *Status) judge(held bool) {
	if s.Worker == WorkerOnline && !held {
		s.Worker = WorkerSilent
	}
}

// judgeLeases reports whether a missing lease means a silent worker: the
// leases bucket must be readable and older than its TTL. It is kept in
// memory, so a server (or JetStream) that just started has no lease until
// every live worker has renewed its own.
//
// The answer is kept for judgeFor, so that a stream of reads (the
// dashboard's live rows) asks the server once in a while.
func (f *Fleet) judgeLeases(ctx context.Context) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.judgedAt.IsZero() && time.Since(f.judgedAt) < judgeFor {
		return f.judged
	}
	age, ttl, err := f.leases.Age(ctx)
	f.judged, f.ttl, f.judgedAt = err == nil && ttl > 0 && age >= ttl, ttl, time.Now()
	return f.judged
}

// judgeFor is how long judgeLeases keeps its answer.
const judgeFor = time.Second

// LeaseTTL returns how long a lease outlives its worker's last renewal on
// this bus (the leases bucket's TTL), 0 if it cannot be read.
func (f *Fleet) LeaseTTL(ctx context.Context) time.Duration {
	f.judgeLeases(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ttl
}

// liveOne judges s by its host's lease. When the leases cannot be
// judged, s stays as it is.
func (f *Fleet) liveOne(ctx context.Context, s *Status) {
	if s.Worker != WorkerOnline || !f.judgeLeases(ctx) {
		return
	}
	_, err := f.leases.Get(ctx, s.Host)
	s.judge(!errors.Is(err, bus.ErrNotFound))
}

// leaseHolders returns the hosts that hold a lease now, and false when
// the leases cannot be judged.
func (f *Fleet) leaseHolders(ctx context.Context) (map[string]bool, bool) {
	if !f.judgeLeases(ctx) {
		return nil, false
	}
	keys, err := f.leases.Keys(ctx, ">")
	if err != nil {
		return nil, false
	}
	held := make(map[string]bool, len(keys))
	for _, k := range keys {
		held[k] = true
	}
	return held, true
}

// Host returns one host's status.
func (f *Fleet) Host(ctx context.Context, host string) (Status, error) {
	var s Status
	if err := events.ValidateHost(host); err != nil {
		return s, err
	}
	_, err := f.status.GetJSON(ctx, hostKey(host), &s)
	if errors.Is(err, bus.ErrNotFound) {
		return s, UnknownHost(host)
	}
	if err != nil {
		return s, fmt.Errorf("status %s: %w", host, err)
	}
	f.liveOne(ctx, &s)
	return s, nil
}

// All returns every host's status, sorted by host name, read in one pass
// over the bucket.
func (f *Fleet) All(ctx context.Context) ([]Status, error) {
	sts, err := bus.AllJSON[Status](ctx, f.status, hostKeyPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	if held, ok := f.leaseHolders(ctx); ok {
		for i := range sts {
			sts[i].judge(held[sts[i].Host])
		}
	}
	return sts, nil
}

// Hosts returns the status of those of hosts the view knows, by host, in
// one round trip per thousand hosts: for a list of named hosts, cheaper
// than reading the fleet.
func (f *Fleet) Hosts(ctx context.Context, hosts []string) (map[string]Status, error) {
	keys := make([]string, len(hosts))
	for i, h := range hosts {
		if err := events.ValidateHost(h); err != nil {
			return nil, err
		}
		keys[i] = hostKey(h)
	}
	byKey, err := bus.GetManyJSON[Status](ctx, f.status, keys)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	var leases map[string]bus.Entry
	judge := f.judgeLeases(ctx)
	if judge {
		if leases, err = f.leases.GetMany(ctx, hosts); err != nil {
			judge = false
		}
	}
	out := make(map[string]Status, len(byKey))
	for i, k := range keys {
		if s, ok := byKey[k]; ok {
			if judge {
				_, held := leases[hosts[i]]
				s.judge(held)
			}
			out[hosts[i]] = s
		}
	}
	return out, nil
}

// Lag returns how many stream sequences the projection is behind.
func (f *Fleet) Lag(ctx context.Context) (uint64, error) {
	cp, err := f.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	last, err := f.conn.LastSeq(ctx)
	if err != nil {
		return 0, err
	}
	if last < cp {
		return 0, nil
	}
	return last - cp, nil
}

// ServedHosts returns the hosts whose worker has started at least once
// (a request alone, say for a mistyped name, does not make a host).
func (f *Fleet) ServedHosts(ctx context.Context) ([]string, error) {
	return f.Tagged(ctx, "")
}

// Tagged returns the served hosts whose worker started with tag ("":
// every served host).
func (f *Fleet) Tagged(ctx context.Context, tag string) ([]string, error) {
	sts, err := f.All(ctx)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, s := range sts {
		if s.Worker != "" && s.HasTag(tag) {
			hosts = append(hosts, s.Host)
		}
	}
	return hosts, nil
}

// Query selects events for History. Zero fields match everything.
type Query struct {
	Host    string
	Upgrade string
	Kinds   []events.Kind // match any; a stage alone ("build") matches its outcomes
	Since   time.Time
	Until   time.Time
}

func (q Query) match(st bus.Stored) bool {
	if st.Err != nil {
		return q.Upgrade == "" && len(q.Kinds) == 0
	}
	e := st.Event
	if q.Upgrade != "" && e.UpgradeID != q.Upgrade {
		return false
	}
	if !q.Until.IsZero() && e.Time.After(q.Until) {
		return false
	}
	if len(q.Kinds) > 0 {
		ok := false
		for _, k := range q.Kinds {
			if e.Kind() == k || (k.Outcome() == "" && e.Kind().Stage() == string(k)) {
				ok = true
			}
		}
		return ok
	}
	return true
}

// History calls fn for every stored event the query selects, in stream
// order. A host narrows the read to that host's subjects; an upgrade id
// starts the read where the upgrade index says it starts and stops at its
// last fact, so neither reads the whole stream.
func (f *Fleet) History(ctx context.Context, q Query, fn func(bus.Stored) error) error {
	filters := []string{events.AllHostFacts, events.AllRequests, events.AllRolloutFacts}
	if q.Host != "" {
		if err := events.ValidateHost(q.Host); err != nil {
			return err
		}
		filters = []string{events.HostFacts(q.Host), events.HostRequests(q.Host)}
	}
	from := bus.From{Time: q.Since}
	var stop uint64
	if q.Upgrade != "" {
		if err := events.ValidateID(q.Upgrade); err != nil {
			return err
		}
		index, err := upgradeindex.Open(ctx, f.conn)
		if err != nil {
			return err
		}
		recs, err := index.ByID(ctx, q.Upgrade)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("upgrade %s: %w (no host has a request or fact with this id; check it with `convoy history HOST`)", q.Upgrade, bus.ErrNotFound)
		}
		open := false
		for _, r := range recs {
			if from.Seq == 0 || r.FirstSeq < from.Seq {
				from.Seq = r.FirstSeq
			}
			open = open || r.Terminal == ""
			stop = max(stop, r.LastSeq)
		}
		if open {
			stop = 0 // still running: read to the end
		}
		from.Time = time.Time{}
	}
	return f.conn.Replay(ctx, filters, from, func(st bus.Stored) error {
		if stop != 0 && st.Seq > stop {
			return bus.ErrStop
		}
		if !q.match(st) {
			return nil
		}
		return fn(st)
	})
}

// Watch calls fn with every host's status, then with each host's status
// again whenever the projector writes its row, until ctx ends (nil) or fn
// returns an error (bus.ErrStop: nil). It reads the bucket's updates as
// they are written, without polling. A row that cannot be decoded is
// passed over. Rows are judged by the lease holders of the last second,
// read in one pass, not a lease read per row.
func (f *Fleet) Watch(ctx context.Context, fn func(Status) error) error {
	var (
		held   map[string]bool
		judged bool
		readAt time.Time
	)
	return f.status.Watch(ctx, hostKeyPrefix+"*", func(e bus.Entry) error {
		var s Status
		if json.Unmarshal(e.Value, &s) != nil {
			return nil
		}
		if s.Worker == WorkerOnline && time.Since(readAt) >= judgeFor {
			held, judged = f.leaseHolders(ctx)
			readAt = time.Now()
		}
		if judged {
			s.judge(held[s.Host])
		}
		return fn(s)
	})
}
