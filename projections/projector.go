package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// Keys in the status bucket. Host keys cannot collide with the checkpoint:
// host names have no dots.
const (
	hostKeyPrefix = "host."
	checkpointKey = "meta.checkpoint"
)

func hostKey(h string) string { return hostKeyPrefix + h }

func upgradeKey(host, id string) string { return host + "." + id }

// Projector keeps the status and upgrade buckets up to date with the
// stream. Run it in one place per bus (convoy server does); a second one
// is harmless, since every write is a compare-and-set of an idempotent
// fold.
type Projector struct{ buckets }

// buckets are the projections' KV buckets and the connection to them.
type buckets struct {
	conn     *bus.Conn
	status   jetstream.KeyValue
	upgrades jetstream.KeyValue
}

func openBuckets(ctx context.Context, c *bus.Conn) (buckets, error) {
	st, err := c.KV(ctx, bus.StatusBucket)
	if err != nil {
		return buckets{}, err
	}
	up, err := c.KV(ctx, bus.UpgradesBucket)
	if err != nil {
		return buckets{}, err
	}
	return buckets{conn: c, status: st, upgrades: up}, nil
}

// NewProjector opens the buckets (provisioned by bus.Conn.Provision).
func NewProjector(ctx context.Context, c *bus.Conn) (*Projector, error) {
	b, err := openBuckets(ctx, c)
	if err != nil {
		return nil, err
	}
	return &Projector{b}, nil
}

// Checkpoint returns the last stream sequence the projector applied.
func (p *buckets) Checkpoint(ctx context.Context) (uint64, error) {
	ent, err := p.status.Get(ctx, checkpointKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("checkpoint: %w", err)
	}
	n, err := strconv.ParseUint(string(ent.Value()), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("checkpoint %q: %w", ent.Value(), err)
	}
	return n, nil
}

func (p *Projector) setCheckpoint(ctx context.Context, seq uint64) error {
	if _, err := p.status.Put(ctx, checkpointKey, []byte(strconv.FormatUint(seq, 10))); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

var projected = []string{events.AllHostFacts, events.AllRequests}

// Run follows the stream from the checkpoint and applies every event,
// until ctx is done. It writes the checkpoint whenever it has caught up
// and at least every 256 events.
func (p *Projector) Run(ctx context.Context) error {
	cp, err := p.Checkpoint(ctx)
	if err != nil {
		return err
	}
	n := 0
	err = p.conn.Follow(ctx, projected, bus.From{Seq: cp + 1}, func(st bus.Stored) error {
		if err := p.apply(ctx, st); err != nil {
			return err
		}
		n++
		if n%256 == 0 || st.Pending == 0 {
			return p.setCheckpoint(ctx, st.Seq)
		}
		return nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (p *Projector) apply(ctx context.Context, st bus.Stored) error {
	if st.Err != nil {
		return nil
	}
	sub, err := events.ParseSubject(st.Subject)
	if err != nil || sub.Host == "" {
		return nil
	}
	if err := p.applyStatus(ctx, sub.Host, func(s *Status) bool { return Apply(s, st) }); err != nil {
		return err
	}
	if id := st.Event.UpgradeID; id != "" && events.ValidateID(id) == nil {
		return casLoop(ctx, p.upgrades, upgradeKey(sub.Host, id), func(r *UpgradeRecord) bool { return ApplyUpgrade(r, st) })
	}
	return nil
}

func (p *Projector) applyStatus(ctx context.Context, host string, fold func(*Status) bool) error {
	return casLoop(ctx, p.status, hostKey(host), func(s *Status) bool {
		if s.Host == "" {
			s.Host = host
		}
		return fold(s)
	})
}

// casLoop reads key, folds, and writes back only if nobody wrote in
// between; on a conflict it reads again.
func casLoop[T any](ctx context.Context, kv jetstream.KeyValue, key string, fold func(*T) bool) error {
	for range 16 {
		var v T
		var rev uint64
		ent, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("get %s: %w", key, err)
		default:
			rev = ent.Revision()
			if err := json.Unmarshal(ent.Value(), &v); err != nil {
				return fmt.Errorf("decode %s: %w", key, err)
			}
		}
		if !fold(&v) {
			return nil
		}
		b, err := json.Marshal(&v)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = kv.Create(ctx, key, b)
		} else {
			_, err = kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !bus.IsWrongLastSequence(err) {
			return fmt.Errorf("put %s: %w", key, err)
		}
	}
	return fmt.Errorf("put %s: too many concurrent writers", key)
}

// Rebuild recomputes the status of every host from stream sequence 1 and
// replaces what the bucket holds, so a view damaged or produced by older
// code is made right. Hosts the live projector moved past the rebuild's
// end are caught up from the stream before they are written. It returns
// the number of events read.
func (p *Projector) Rebuild(ctx context.Context) (int, error) {
	view := map[string]*Status{}
	n := 0
	var last uint64
	err := p.conn.Replay(ctx, projected, bus.From{}, func(st bus.Stored) error {
		n++
		last = st.Seq
		if st.Err != nil {
			return nil
		}
		sub, err := events.ParseSubject(st.Subject)
		if err != nil || sub.Host == "" {
			return nil
		}
		s := view[sub.Host]
		if s == nil {
			s = &Status{Host: sub.Host}
			view[sub.Host] = s
		}
		Apply(s, st)
		// The upgrade index is left to the live projector: its writes are
		// idempotent, and only the server may write it (workers trust it).
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("rebuild: %w", err)
	}
	for host, s := range view {
		if err := p.replaceHost(ctx, host, s); err != nil {
			return n, err
		}
	}
	keys, err := p.hostKeys(ctx)
	if err != nil {
		return n, err
	}
	for _, k := range keys {
		if view[k] == nil {
			if err := p.status.Delete(ctx, hostKey(k)); err != nil {
				return n, fmt.Errorf("rebuild: delete %s: %w", k, err)
			}
		}
	}
	if cp, err := p.Checkpoint(ctx); err == nil && cp < last {
		if err := p.setCheckpoint(ctx, last); err != nil {
			return n, err
		}
	}
	return n, nil
}

// replaceHost writes the rebuilt row, first catching it up to what the
// bucket holds if the live projector got further.
func (p *Projector) replaceHost(ctx context.Context, host string, s *Status) error {
	for range 16 {
		var cur Status
		var rev uint64
		ent, err := p.status.Get(ctx, hostKey(host))
		if err == nil {
			rev = ent.Revision()
			_ = json.Unmarshal(ent.Value(), &cur)
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("rebuild %s: %w", host, err)
		}
		if cur.Seq > s.Seq {
			err := p.conn.Replay(ctx, []string{events.HostFacts(host), events.HostRequests(host)}, bus.From{Seq: s.Seq + 1}, func(st bus.Stored) error {
				Apply(s, st)
				return nil
			})
			if err != nil {
				return fmt.Errorf("rebuild %s: %w", host, err)
			}
		}
		b, _ := json.Marshal(s)
		if rev == 0 {
			_, err = p.status.Create(ctx, hostKey(host), b)
		} else {
			_, err = p.status.Update(ctx, hostKey(host), b, rev)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !bus.IsWrongLastSequence(err) {
			return fmt.Errorf("rebuild %s: %w", host, err)
		}
	}
	return fmt.Errorf("rebuild %s: too many concurrent writers", host)
}

func (p *buckets) hostKeys(ctx context.Context) ([]string, error) {
	lister, err := p.status.ListKeysFiltered(ctx, hostKeyPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	var hosts []string
	for k := range lister.Keys() {
		hosts = append(hosts, k[len(hostKeyPrefix):])
	}
	sort.Strings(hosts)
	return hosts, nil
}
