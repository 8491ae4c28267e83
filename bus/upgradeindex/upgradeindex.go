// Package upgradeindex is the upgrade index: an idempotency ledger with
// one record per host and upgrade id, in the convoy-upgrades bucket, that
// says where the upgrade's events start and end and how it ended.
//
// The stream forgets message ids after bus.DuplicateWindow; the index
// remembers for good. Workers read it to recognise a request whose upgrade
// already ended (and acknowledge it without running it again), producers
// to report such a request instead of sending it, and history to read one
// upgrade without scanning the stream.
//
// Only the projector writes it (see projections), a batch of events at a
// time with Apply, under a compare-and-set, so concurrent projectors
// converge; a host credential
// may read only its own records, and operators may not write them.
package upgradeindex

import (
	"context"
	"fmt"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// Record is one host's upgrade in the index.
type Record struct {
	Host string `json:"host"`
	ID   string `json:"id"`
	// FirstSeq and LastSeq bound the upgrade's events on the stream.
	// Until the upgrade ends, the stored LastSeq may be behind (see
	// Index.Apply).
	FirstSeq  uint64    `json:"first_seq"`
	LastSeq   uint64    `json:"last_seq"`
	Requested time.Time `json:"requested,omitzero"`
	// Terminal is the terminal kind once the upgrade ended
	// ("upgrade.succeeded"), or golden.pinned for a pin request.
	Terminal string `json:"terminal,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Commit   string `json:"commit,omitempty"`
	Result   string `json:"result,omitempty"`
}

// Ended reports whether the upgrade has its terminal fact.
func (r Record) Ended() bool { return r.Terminal != "" }

// Fold applies one stored event of the upgrade to r. It returns false,
// leaving r alone, for events at or below r.LastSeq (already applied),
// undecodable ones and events of no upgrade.
func (r *Record) Fold(st bus.Stored) bool {
	if st.Seq <= r.LastSeq || st.Err != nil || st.Event.UpgradeID == "" {
		return false
	}
	e := st.Event
	if r.FirstSeq == 0 {
		r.FirstSeq = st.Seq
		r.Host, r.ID = e.Host(), e.UpgradeID
	}
	r.LastSeq = st.Seq
	if e.Kind() == events.UpgradeRequested {
		r.Requested = e.Time
	}
	// golden.pinned is how a pin request ends well.
	if k := e.Kind(); k.IsTerminal() || k == events.GoldenPinned {
		f, _ := e.Fact()
		r.Terminal, r.Reason, r.Commit, r.Result = string(k), f.Reason, f.Commit, f.Result
	}
	return true
}

// Index reads (and, for the projector, writes) the upgrade index.
type Index struct{ b *bus.Bucket }

// Open opens the index (provisioned by bus.Conn.Provision).
func Open(ctx context.Context, c *bus.Conn) (*Index, error) {
	b, err := c.Bucket(ctx, bus.UpgradesBucket)
	if err != nil {
		return nil, err
	}
	return &Index{b: b}, nil
}

// Get returns host's record of upgrade id, or an error wrapping
// bus.ErrNotFound.
func (x *Index) Get(ctx context.Context, host, id string) (Record, error) {
	var r Record
	if _, err := x.b.GetJSON(ctx, bus.UpgradeKey(host, id), &r); err != nil {
		return r, fmt.Errorf("upgrade %s on %s: %w", id, host, err)
	}
	return r, nil
}

// ByID returns every host's record of upgrade id, sorted by host, read
// in one pass over the index.
func (x *Index) ByID(ctx context.Context, id string) ([]Record, error) {
	if err := events.ValidateID(id); err != nil {
		return nil, err
	}
	recs, err := bus.AllJSON[Record](ctx, x.b, bus.UpgradeKey("*", id))
	if err != nil {
		return nil, fmt.Errorf("upgrade %s: %w", id, err)
	}
	return recs, nil
}

// Records returns the records of upgrade id on those of hosts that have
// one, by host, in one round trip per thousand hosts.
func (x *Index) Records(ctx context.Context, id string, hosts []string) (map[string]Record, error) {
	keys := make([]string, len(hosts))
	for i, h := range hosts {
		keys[i] = bus.UpgradeKey(h, id)
	}
	byKey, err := bus.GetManyJSON[Record](ctx, x.b, keys)
	if err != nil {
		return nil, fmt.Errorf("upgrade %s: %w", id, err)
	}
	out := make(map[string]Record, len(byKey))
	for i, k := range keys {
		if r, ok := byKey[k]; ok {
			out[hosts[i]] = r
		}
	}
	return out, nil
}

// HostEvent is a stored event and the host whose subjects it was stored
// under (which, unlike the event's own host field, the server's
// permissions vouch for).
type HostEvent struct {
	Host string
	bus.Stored
}

// Apply folds events, in order, into their upgrades' records and writes
// each record it changed once, the writes pipelined, under a
// compare-and-set (bus.ModifyMany), so concurrent projectors converge.
// Events of no upgrade, or with an upgrade id that is not a ULID, are
// ignored. When it returns nil every changed record is durable.
//
// A record of an upgrade still running is not written when its only
// change is LastSeq: no reader needs LastSeq before the upgrade ended
// (history reads a running upgrade to the end), and it halves the index's
// writes. Folding those events again later changes nothing else.
func (x *Index) Apply(ctx context.Context, evs []HostEvent) error {
	var keys []string
	byKey := map[string][]bus.Stored{}
	for _, ev := range evs {
		id := ev.Event.UpgradeID
		if ev.Err != nil || id == "" || events.ValidateID(id) != nil {
			continue
		}
		k := bus.UpgradeKey(ev.Host, id)
		if byKey[k] == nil {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], ev.Stored)
	}
	return bus.ModifyMany(ctx, x.b, keys, func(k string, r *Record) (bool, error) {
		before := *r
		for _, st := range byKey[k] {
			r.Fold(st)
		}
		moved := before
		moved.LastSeq = r.LastSeq
		return *r != moved || (r.Ended() && r.LastSeq != before.LastSeq), nil
	})
}
