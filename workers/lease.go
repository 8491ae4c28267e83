package workers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

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

// heldLease is this worker's lease while it renews it.
type heldLease struct {
	w   *Worker
	me  lease
	val []byte
	rev uint64
	ttl time.Duration // how long the lease outlives a renewal
}

// lease takes the host's lease, or fails with ErrSecondWorker when another
// live worker holds it. A lease left by this machine's previous run (same
// state dir, whose lock this process now holds) is taken over. Until the
// returned func is called it renews the lease, and calls lost if another
// worker takes it; that func stops renewing and releases the lease.
func (w *Worker) lease(ctx context.Context, lost func(error)) (func(), error) {
	l := &heldLease{w: w, me: lease{Owner: w.owner(), PID: os.Getpid(), Started: time.Now().UTC()}}
	l.val, _ = json.Marshal(l.me)
	l.ttl = bus.LeaseTTL
	if _, t, err := w.leases.Age(ctx); err == nil && t > 0 {
		l.ttl = t // the bus's own
	}
	if err := l.take(ctx); err != nil {
		return nil, err
	}
	stop := every(context.WithoutCancel(ctx), l.ttl/3, func(ctx context.Context) { l.renew(ctx, lost) })
	return func() {
		stop()
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = w.leases.Delete(dctx, w.cfg.Host, l.rev)
	}, nil
}

// take writes the lease if it is free or this machine's own.
func (l *heldLease) take(ctx context.Context) error {
	host := l.w.cfg.Host
	var other lease
	rev, err := l.w.leases.GetJSON(ctx, host, &other)
	switch {
	case errors.Is(err, bus.ErrNotFound):
		rev = 0
	case err != nil:
		return fmt.Errorf("lease %s: %w", host, err)
	case other.Owner != l.me.Owner:
		return fmt.Errorf("%w: %s (pid %d) holds the lease of %s since %s; stop it, or wait %s if it died",
			ErrSecondWorker, other.Owner, other.PID, host, other.Started.Format(time.RFC3339), l.ttl)
	}
	l.rev, err = l.w.leases.Write(ctx, host, l.val, rev)
	if errors.Is(err, bus.ErrConflict) {
		return fmt.Errorf("%w: another worker for %s took the lease just now", ErrSecondWorker, host)
	}
	if err != nil {
		return fmt.Errorf("lease %s: %w", host, err)
	}
	return nil
}

// renew extends the lease. If the key changed under it, the lease either
// expired while the bus was away (it is taken again) or another worker
// holds it (lost is called).
func (l *heldLease) renew(ctx context.Context, lost func(error)) {
	host := l.w.cfg.Host
	rev, err := l.w.leases.Write(ctx, host, l.val, l.rev)
	switch {
	case err == nil:
		l.rev = rev
		return
	case !errors.Is(err, bus.ErrConflict):
		if ctx.Err() == nil {
			l.w.log.Warn("lease renewal failed", logErr, err)
		}
		return
	}
	var other lease
	cur, gerr := l.w.leases.GetJSON(ctx, host, &other)
	switch {
	case errors.Is(gerr, bus.ErrNotFound):
		if rev, err := l.w.leases.Write(ctx, host, l.val, 0); err == nil {
			l.rev = rev
			l.w.log.Warn("the host's lease had expired; taken again")
		}
	case gerr != nil:
	case other.Owner != l.me.Owner || other.PID != l.me.PID:
		lost(fmt.Errorf("%w: %s (pid %d) took the lease of %s", ErrSecondWorker, other.Owner, other.PID, host))
	default:
		l.rev = cur
	}
}
