package projections

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
)

// Keys in the status bucket. Host keys cannot collide with the checkpoint:
// host names have no dots.
const (
	hostKeyPrefix = "host."
	checkpointKey = "meta.checkpoint"
	// The snapshot (see Snapshot): a copy of every row under
	// snapshotPrefix, and the sequence it covers.
	snapshotPrefix = "snap." + hostKeyPrefix
	snapshotSeqKey = "meta.snapshot"
)

func hostKey(h string) string { return hostKeyPrefix + h }

// Projector keeps the status view and the upgrade index up to date with
// the stream. Run it in one place per bus (convoy server does); a second
// one is harmless, since every write is a compare-and-set of an
// idempotent fold.
type Projector struct {
	view
	index *upgradeindex.Index
	// MaxBatch bounds a batch (see Run), and how far reading may run
	// ahead of writing. Set it, if at all, before Run.
	MaxBatch int
}

// DefaultMaxBatch is the MaxBatch NewProjector sets.
const DefaultMaxBatch = 8192

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
	return &Projector{view: v, index: x, MaxBatch: DefaultMaxBatch}, nil
}

// Checkpoint returns the last stream sequence the projector applied.
func (v *view) Checkpoint(ctx context.Context) (uint64, error) {
	return v.seqKey(ctx, checkpointKey)
}

// seqKey reads a sequence stored under key (0 when missing).
func (v *view) seqKey(ctx context.Context, key string) (uint64, error) {
	ent, err := v.status.Get(ctx, key)
	if errors.Is(err, bus.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", key, err)
	}
	n, err := strconv.ParseUint(string(ent.Value), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", key, ent.Value, err)
	}
	return n, nil
}

func (p *Projector) setCheckpoint(ctx context.Context, seq uint64) error {
	if _, err := p.status.Put(ctx, checkpointKey, []byte(strconv.FormatUint(seq, 10))); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// projected is what the projector reads: everything on the stream, so the
// checkpoint reaches the stream's last sequence (Fleet.Lag); rollout facts
// are read and passed over.
var projected = []string{events.AllSubjects}

// Run follows the stream from the checkpoint and applies every event,
// until ctx is done, a batch at a time. One goroutine reads events while
// another writes them: each batch is the events read while the previous
// one was being written (at least one, at most MaxBatch), folded in
// memory in stream order. The writer writes each host row and each
// upgrade record the batch changed once, all pipelined, and after they
// are durable the checkpoint: the batch's last sequence. A crash
// therefore replays at most the batch being written and those read
// ahead, which the folds skip or re-apply to the same result.
func (p *Projector) Run(ctx context.Context) error {
	cp, err := p.Checkpoint(ctx)
	if err != nil {
		return err
	}
	run, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	read := make(chan bus.Stored, max(p.MaxBatch, 1))
	written := make(chan error, 1)
	go func() {
		err := p.writeBatches(run, read)
		cancel(err)
		written <- err
	}()
	err = p.conn.Follow(run, projected, bus.From{Seq: cp + 1}, func(st bus.Stored) error {
		select {
		case read <- st:
			return nil
		case <-run.Done():
			return context.Cause(run)
		}
	})
	cancel(err)
	werr := <-written
	switch {
	case ctx.Err() != nil:
		return nil
	case werr != nil && !errors.Is(werr, context.Canceled):
		return werr
	}
	return err
}

// writeBatches takes what read holds, up to MaxBatch events, and writes
// it, until ctx is done or a write fails.
func (p *Projector) writeBatches(ctx context.Context, read <-chan bus.Stored) error {
	for {
		var b batch
		select {
		case st := <-read:
			b.add(st)
		case <-ctx.Done():
			return ctx.Err()
		}
	more:
		for b.n < p.MaxBatch {
			select {
			case st := <-read:
				b.add(st)
			default:
				break more
			}
		}
		if err := p.write(ctx, &b); err != nil {
			return err
		}
	}
}

// batch is the events taken for one write, grouped by host in the order
// of each host's first event.
type batch struct {
	n     int
	last  uint64 // the last event's sequence
	hosts []string
	facts map[string][]bus.Stored // by host
	index []upgradeindex.HostEvent
}

func (b *batch) add(st bus.Stored) {
	if b.n == 0 {
		b.facts = map[string][]bus.Stored{}
	}
	b.n++
	b.last = st.Seq
	h := hostOf(st)
	if h == "" {
		return
	}
	if b.facts[h] == nil {
		b.hosts = append(b.hosts, h)
	}
	b.facts[h] = append(b.facts[h], st)
	b.index = append(b.index, upgradeindex.HostEvent{Host: h, Stored: st})
}

// hostOf returns the host whose subjects st was stored under, or "" for
// an event the projections skip.
func hostOf(st bus.Stored) string {
	if st.Err != nil {
		return ""
	}
	sub, err := events.ParseSubject(st.Subject)
	if err != nil {
		return ""
	}
	return sub.Host
}

// write makes a batch durable: the rows and the upgrade records at once,
// then the checkpoint.
func (p *Projector) write(ctx context.Context, b *batch) error {
	var wg sync.WaitGroup
	var indexErr error
	wg.Go(func() { indexErr = p.index.Apply(ctx, b.index) })
	keys := make([]string, len(b.hosts))
	for i, h := range b.hosts {
		keys[i] = hostKey(h)
	}
	rowsErr := bus.ModifyMany(ctx, p.status, keys, func(k string, s *Status) (bool, error) {
		h := k[len(hostKeyPrefix):]
		if s.Host == "" {
			s.Host = h
		}
		changed := false
		for _, st := range b.facts[h] {
			changed = Apply(s, st) || changed
		}
		return changed, nil
	})
	wg.Wait()
	if err := errors.Join(rowsErr, indexErr); err != nil {
		return err
	}
	return p.setCheckpoint(ctx, b.last)
}

// Rebuild recomputes the status of every host from the stream and
// replaces what the bucket holds, so a view damaged or produced by older
// code is made right: rows that differ are rewritten (pipelined, each
// under a compare-and-set), rows of hosts the stream does not know are
// deleted, and the checkpoint is set to the last event read. Rows that
// are already right are read, not written. Hosts the live projector moved
// past the rebuild's end are caught up from the stream before they are
// written. It returns the number of events read.
//
// While the stream starts at sequence 1, every row is recomputed from
// nothing. Once its oldest events have aged out (see bus.Retention), the
// rebuild starts from the snapshot (see Snapshot) and folds the retained
// events on top; it fails, changing nothing, with ErrHistoryGap if events
// aged out that no snapshot covers.
//
// The upgrade index is not rebuilt: only the live projector writes it
// (workers trust it), and its folds are idempotent.
func (p *Projector) Rebuild(ctx context.Context) (int, error) {
	rows, from, err := p.rebuildBase(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var last uint64
	err = p.conn.Replay(ctx, projected, bus.From{Seq: from}, func(st bus.Stored) error {
		n++
		last = st.Seq
		h := hostOf(st)
		if h == "" {
			return nil
		}
		s := rows[h]
		if s == nil {
			s = &Status{Host: h}
			rows[h] = s
		}
		Apply(s, st)
		return nil
	})
	if err != nil {
		return n, fmt.Errorf("rebuild: %w", err)
	}
	if n == 0 && from > 1 {
		last = from - 1
	}
	keys := make([]string, 0, len(rows))
	for h := range rows {
		keys = append(keys, hostKey(h))
	}
	err = bus.ModifyMany(ctx, p.status, keys, func(k string, cur *Status) (bool, error) {
		return true, p.replaceHost(ctx, rows[k[len(hostKeyPrefix):]], cur)
	})
	if err != nil {
		return n, fmt.Errorf("rebuild: %w", err)
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

// ErrHistoryGap is returned by Rebuild when events aged out of the stream
// before a snapshot covered them: the view cannot be recomputed.
var ErrHistoryGap = errors.New("events aged out that no snapshot covers")

// rebuildBase returns the rows a rebuild starts from and the sequence it
// replays from: nothing and 1 while the stream keeps its first event, the
// snapshot and the stream's first sequence after events aged out.
func (p *Projector) rebuildBase(ctx context.Context) (map[string]*Status, uint64, error) {
	rows := map[string]*Status{}
	r, err := p.conn.Retained(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("rebuild: %w", err)
	}
	if r.FirstSeq <= 1 {
		return rows, 1, nil
	}
	covered, err := p.SnapshotSeq(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("rebuild: %w", err)
	}
	if covered+1 < r.FirstSeq {
		return nil, 0, fmt.Errorf("rebuild: %w: the stream starts at %d and the snapshot covers up to %d; the view is left as it is (see docs/runbooks.md)", ErrHistoryGap, r.FirstSeq, covered)
	}
	snap, err := bus.AllJSON[Status](ctx, p.status, snapshotPrefix+"*")
	if err != nil {
		return nil, 0, fmt.Errorf("rebuild: snapshot: %w", err)
	}
	for _, s := range snap {
		rows[s.Host] = &s
	}
	return rows, r.FirstSeq, nil
}

// SnapshotSeq returns the sequence the snapshot covers (0: none).
func (v *view) SnapshotSeq(ctx context.Context) (uint64, error) {
	return v.seqKey(ctx, snapshotSeqKey)
}

// Snapshot copies the view into the snapshot: every row that changed
// since the last one, then the sequence it covers, the checkpoint read
// before the rows (every event up to it is in every row; a row may hold
// later ones, which a rebuild's folds skip). A rebuild of a stream whose
// oldest events aged out starts from it, so it must be taken more often
// than events age out: convoy server takes one at start and then every
// tenth of --retain, and at least hourly. It returns the sequence covered. A crash midway leaves
// the previous sequence, which the rows still cover.
func (p *Projector) Snapshot(ctx context.Context) (uint64, error) {
	cp, err := p.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	prev, err := p.SnapshotSeq(ctx)
	if err != nil || prev >= cp {
		return prev, err
	}
	sts, err := bus.AllJSON[Status](ctx, p.status, hostKeyPrefix+"*")
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	byKey := make(map[string]Status, len(sts))
	keys := make([]string, 0, len(sts))
	for _, s := range sts {
		k := snapshotPrefix + s.Host
		byKey[k] = s
		keys = append(keys, k)
	}
	err = bus.ModifyMany(ctx, p.status, keys, func(k string, cur *Status) (bool, error) {
		*cur = byKey[k]
		return true, nil
	})
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	// A row the view no longer has (a rebuild removed it) leaves the
	// snapshot too, or a later rebuild would bring it back.
	old, err := p.status.Keys(ctx, snapshotPrefix+"*")
	if err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	for _, k := range old {
		if _, ok := byKey[k]; ok {
			continue
		}
		if err := p.status.Delete(ctx, k, 0); err != nil && !errors.Is(err, bus.ErrNotFound) {
			return 0, fmt.Errorf("snapshot: %w", err)
		}
	}
	if _, err := p.status.Put(ctx, snapshotSeqKey, []byte(strconv.FormatUint(cp, 10))); err != nil {
		return 0, fmt.Errorf("snapshot: %w", err)
	}
	return cp, nil
}

// replaceHost sets cur to the rebuilt row s, first catching s up from the
// stream if the live projector got cur further.
func (p *Projector) replaceHost(ctx context.Context, s, cur *Status) error {
	if cur.Seq > s.Seq {
		err := p.conn.Replay(ctx, []string{events.HostFacts(s.Host), events.HostRequests(s.Host)}, bus.From{Seq: s.Seq + 1}, func(st bus.Stored) error {
			Apply(s, st)
			return nil
		})
		if err != nil {
			return fmt.Errorf("catch up %s: %w", s.Host, err)
		}
	}
	*cur = *s
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
