package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// ErrUnknownHost is returned for a host the fleet view has never seen.
var ErrUnknownHost = errors.New("unknown host")

// Fleet reads the status bucket. It never replays the stream: a status
// query is one KV read per host.
type Fleet struct{ buckets }

// OpenFleet opens the fleet view.
func OpenFleet(ctx context.Context, c *bus.Conn) (*Fleet, error) {
	b, err := openBuckets(ctx, c)
	if err != nil {
		return nil, err
	}
	return &Fleet{b}, nil
}

// Host returns one host's status.
func (f *Fleet) Host(ctx context.Context, host string) (Status, error) {
	var s Status
	if err := events.ValidateHost(host); err != nil {
		return s, err
	}
	ent, err := f.status.Get(ctx, hostKey(host))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return s, fmt.Errorf("%w %q: no worker or request for it is on the bus yet", ErrUnknownHost, host)
	}
	if err != nil {
		return s, fmt.Errorf("status %s: %w", host, err)
	}
	if err := json.Unmarshal(ent.Value(), &s); err != nil {
		return s, fmt.Errorf("status %s: %w", host, err)
	}
	return s, nil
}

// All returns every host's status, sorted by host name.
func (f *Fleet) All(ctx context.Context) ([]Status, error) {
	hosts, err := f.hostKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Status, 0, len(hosts))
	for _, h := range hosts {
		s, err := f.Host(ctx, h)
		if errors.Is(err, ErrUnknownHost) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
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

// Upgrade returns the index record of one host's upgrade.
func (f *Fleet) Upgrade(ctx context.Context, host, id string) (UpgradeRecord, error) {
	var r UpgradeRecord
	ent, err := f.upgrades.Get(ctx, upgradeKey(host, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return r, bus.ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("upgrade %s on %s: %w", id, host, err)
	}
	if err := json.Unmarshal(ent.Value(), &r); err != nil {
		return r, fmt.Errorf("upgrade %s on %s: %w", id, host, err)
	}
	return r, nil
}

// Upgrades returns the index records of an upgrade id on every host.
func (f *Fleet) Upgrades(ctx context.Context, id string) ([]UpgradeRecord, error) {
	lister, err := f.upgrades.ListKeysFiltered(ctx, "*."+id)
	if err != nil {
		return nil, fmt.Errorf("upgrade %s: %w", id, err)
	}
	var out []UpgradeRecord
	for k := range lister.Keys() {
		var r UpgradeRecord
		ent, err := f.upgrades.Get(ctx, k)
		if err != nil {
			continue
		}
		if json.Unmarshal(ent.Value(), &r) == nil {
			out = append(out, r)
		}
	}
	return out, nil
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
	filters := []string{events.AllHostFacts, events.AllRequests}
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
		recs, err := f.Upgrades(ctx, q.Upgrade)
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return fmt.Errorf("upgrade %s: %w (not in the upgrade index; check the id, or run `convoy projections rebuild`)", q.Upgrade, bus.ErrNotFound)
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
	errStop := errors.New("stop")
	err := f.conn.Replay(ctx, filters, from, func(st bus.Stored) error {
		if stop != 0 && st.Seq > stop {
			return errStop
		}
		if !q.match(st) {
			return nil
		}
		return fn(st)
	})
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}
