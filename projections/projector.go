package projections

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
)

// Keys in the status bucket. Host keys cannot collide with the checkpoint:
// host names have no dots.
const (
	hostKeyPrefix = "host."
	checkpointKey = "meta.checkpoint"
)

func hostKey(h string) string { return hostKeyPrefix + h }

// Projector keeps the status view and the upgrade index up to date with
// the stream. Run it in one place per bus (convoy server does); a second
// one is harmless, since every write is a compare-and-set of an
// idempotent fold.
type Projector struct {
	view
	index *upgradeindex.Index
}

// view is the status bucket and the connection to the stream.
type view struct {
	conn   *bus.Conn
	status *bus.Bucket
}

func openView(ctx context.Context, c *bus.Conn) (view, error) {
	st, err := c.Bucket(ctx, bus.StatusBucket)
	if err != nil {
		return view{}, err
	}
	return view{conn: c, status: st}, nil
}

// NewProjector opens the buckets (provisioned by bus.Conn.Provision).
func NewProjector(ctx context.Context, c *bus.Conn) (*Projector, error) {
	v, err := openView(ctx, c)
	if err != nil {
		return nil, err
	}
	x, err := upgradeindex.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	return &Projector{view: v, index: x}, nil
}

// Checkpoint returns the last stream sequence the projector applied.
func (v *view) Checkpoint(ctx context.Context) (uint64, error) {
	ent, err := v.status.Get(ctx, checkpointKey)
	if errors.Is(err, bus.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("checkpoint: %w", err)
	}
	n, err := strconv.ParseUint(string(ent.Value), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("checkpoint %q: %w", ent.Value, err)
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
	err = bus.Modify(ctx, p.status, hostKey(sub.Host), func(s *Status) (bool, error) {
		if s.Host == "" {
			s.Host = sub.Host
		}
		return Apply(s, st), nil
	})
	if err != nil {
		return err
	}
	return p.index.Apply(ctx, sub.Host, st)
}

// Rebuild recomputes the status of every host from stream sequence 1 and
// replaces what the bucket holds, so a view damaged or produced by older
// code is made right: rows are rewritten, rows of hosts the stream does
// not know are deleted, and the checkpoint is set to the last event read.
// Hosts the live projector moved past the rebuild's end are caught up
// from the stream before they are written. It returns the number of
// events read.
//
// The upgrade index is not rebuilt: only the live projector writes it
// (workers trust it), and its folds are idempotent.
func (p *Projector) Rebuild(ctx context.Context) (int, error) {
	rows := map[string]*Status{}
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
		s := rows[sub.Host]
		if s == nil {
			s = &Status{Host: sub.Host}
			rows[sub.Host] = s
		}
		Apply(s, st)
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("rebuild: %w", err)
	}
	for host, s := range rows {
		if err := p.replaceHost(ctx, host, s); err != nil {
			return n, err
		}
	}
	hosts, err := p.hosts(ctx)
	if err != nil {
		return n, err
	}
	for _, h := range hosts {
		if rows[h] == nil {
			if err := p.status.Delete(ctx, hostKey(h), 0); err != nil {
				return n, fmt.Errorf("rebuild: %w", err)
			}
		}
	}
	if cp, err := p.Checkpoint(ctx); err != nil || cp != last {
		if err := p.setCheckpoint(ctx, last); err != nil {
			return n, err
		}
	}
	return n, nil
}

// replaceHost writes the rebuilt row, first catching it up to what the
// bucket holds if the live projector got further.
func (p *Projector) replaceHost(ctx context.Context, host string, s *Status) error {
	err := bus.Modify(ctx, p.status, hostKey(host), func(cur *Status) (bool, error) {
		if cur.Seq > s.Seq {
			err := p.conn.Replay(ctx, []string{events.HostFacts(host), events.HostRequests(host)}, bus.From{Seq: s.Seq + 1}, func(st bus.Stored) error {
				Apply(s, st)
				return nil
			})
			if err != nil {
				return false, err
			}
		}
		*cur = *s
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", host, err)
	}
	return nil
}

// hosts returns the hosts that have a row, sorted.
func (v *view) hosts(ctx context.Context) ([]string, error) {
	keys, err := v.status.Keys(ctx, hostKeyPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	for i, k := range keys {
		keys[i] = k[len(hostKeyPrefix):]
	}
	return keys, nil
}
