package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convoy-fleet/convoy/bus"
)

// lease is the record in the convoy-leases bucket that says which worker
// serves a host. The bucket forgets a key bus.LeaseTTL after its last
// write, so a worker renews it every third of that.
type lease struct {
	Owner   string    `json:"owner"` // machine:state_dir
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
}

func (w *Worker) owner() string {
	h, _ := os.Hostname()
	return h + ":" + w.cfg.StateDir
}

// lease takes the host's lease, or fails with ErrSecondWorker when another
// live worker holds it. A lease left by this machine's previous run (same
// state dir, whose lock this process now holds) is taken over. It returns
// a func that stops renewing and releases the lease.
func (w *Worker) lease(ctx context.Context, lost func(error)) (func(), error) {
	me := lease{Owner: w.owner(), PID: os.Getpid(), Started: time.Now().UTC()}
	val, _ := json.Marshal(me)
	key := w.cfg.Host
	var rev uint64
	ent, err := w.leases.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = w.leases.Create(ctx, key, val)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("%w: another worker for %s took the lease just now", ErrSecondWorker, w.cfg.Host)
		}
	case err != nil:
	default:
		var other lease
		_ = json.Unmarshal(ent.Value(), &other)
		if other.Owner != me.Owner {
			return nil, fmt.Errorf("%w: %s (pid %d) holds the lease of %s since %s; stop it, or wait %s if it died",
				ErrSecondWorker, other.Owner, other.PID, w.cfg.Host, other.Started.Format(time.RFC3339), bus.LeaseTTL)
		}
		rev, err = w.leases.Update(ctx, key, val, ent.Revision())
	}
	if err != nil {
		return nil, fmt.Errorf("lease %s: %w", key, err)
	}
	stop := every(context.WithoutCancel(ctx), bus.LeaseTTL/3, func(ctx context.Context) {
		nrev, err := w.leases.Update(ctx, key, val, rev)
		switch {
		case err == nil:
			rev = nrev
		case errors.Is(err, jetstream.ErrKeyExists) || bus.IsWrongLastSequence(err):
			// The key changed under us: expired while the bus was away
			// (take it again), or another worker holds it (stop).
			ent, gerr := w.leases.Get(ctx, key)
			if errors.Is(gerr, jetstream.ErrKeyNotFound) {
				if nrev, cerr := w.leases.Create(ctx, key, val); cerr == nil {
					rev = nrev
					w.log.Warn("the host's lease had expired; taken again")
					return
				}
			}
			if gerr == nil {
				var other lease
				_ = json.Unmarshal(ent.Value(), &other)
				if other.Owner != me.Owner || other.PID != me.PID {
					lost(fmt.Errorf("%w: %s (pid %d) took the lease of %s", ErrSecondWorker, other.Owner, other.PID, w.cfg.Host))
					return
				}
				rev = ent.Revision()
			}
		case ctx.Err() == nil:
			w.log.Warn("lease renewal failed", logErr, err)
		}
	})
	return func() {
		stop()
		dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer dcancel()
		_ = w.leases.Delete(dctx, key, jetstream.LastRevision(rev))
	}, nil
}
