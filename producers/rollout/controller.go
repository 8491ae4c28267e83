package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/projections"
)

// Source is the CloudEvents source of the controller's facts.
const Source = "convoy/rollout-controller"

// tick is how often the controller looks at the clock (bakes and wave
// deadlines) and retries what failed, when no fact arrives.
const tick = 250 * time.Millisecond

// Controller runs every unfinished rollout on the bus to its end. It owns
// its rollouts in the goroutine of Run and keeps nothing but what the
// facts say: run it again, or run two, and the rollouts go on from their
// facts.
type Controller struct {
	Conn *bus.Conn
	Log  *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Run reads every rollout, catches up with the hosts' facts of the
// unfinished ones, then follows the rollouts and the hosts' facts and
// acts until ctx ends (then it returns nil).
func (c *Controller) Run(ctx context.Context) error {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	last, err := c.Conn.LastSeq(ctx)
	if err != nil {
		return err
	}
	rollouts, err := List(ctx, c.Conn)
	if err != nil {
		return err
	}
	byID := map[string]*Rollout{}
	start := last + 1
	for _, r := range rollouts {
		byID[r.ID] = r
		if w := r.Current(); w != nil && r.End == "" {
			start = min(start, w.StartSeq+1)
		}
		if b := r.Rollback; b != nil && !r.RolledBack {
			start = min(start, b.StartSeq+1)
		}
	}
	// Catch up before acting: a bake's end or a failure is only known
	// once every fact up to now is read.
	filters := []string{events.AllRolloutFacts, events.AllHostFacts}
	next := start
	err = c.Conn.Replay(ctx, filters, bus.From{Seq: start}, func(st bus.Stored) error {
		c.fold(byID, st)
		next = st.Seq + 1
		return nil
	})
	if err != nil {
		return err
	}
	retry := map[string]bool{} // rollouts whose wave's requests must be (re)sent
	for id, r := range byID {
		if r.End == "" && r.Current() != nil || r.Rollback != nil && !r.RolledBack {
			retry[id] = true
		}
	}
	msgs := make(chan bus.Stored, 1024)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	followed := make(chan error, 1)
	go func() {
		followed <- c.Conn.Follow(fctx, filters, bus.From{Seq: next}, func(st bus.Stored) error {
			select {
			case msgs <- st:
				return nil
			case <-fctx.Done():
				return fctx.Err()
			}
		})
	}()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		for id := range retry {
			if r := byID[id]; r != nil && c.request(ctx, r) == nil {
				delete(retry, id)
			}
		}
		for _, r := range byID {
			if r.Pending() {
				if c.act(ctx, r) {
					retry[r.ID] = true
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-followed:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("rollout controller: %w", err)
		case st := <-msgs:
			c.fold(byID, st)
			// Take what else is there before deciding again.
			for more := true; more; {
				select {
				case st := <-msgs:
					c.fold(byID, st)
				default:
					more = false
				}
			}
		case <-t.C:
		}
	}
}

// fold applies st to the rollout it is about, or, for a host fact, to
// every rollout not yet done (Pending).
func (c *Controller) fold(byID map[string]*Rollout, st bus.Stored) {
	if st.Err != nil {
		return
	}
	s, err := events.ParseSubject(st.Subject)
	if err != nil {
		return
	}
	if s.Class == events.ClassRollout {
		r := byID[s.ID]
		if r == nil {
			r = &Rollout{ID: s.ID}
			byID[s.ID] = r
		}
		r.Fold(st)
		return
	}
	for _, r := range byID {
		if r.Pending() {
			r.Fold(st)
		}
	}
}

// act appends the facts Decide asks for until it asks for none. It
// reports whether a wave started, or a rollback, whose hosts are still
// to be requested. To a wave.started it adds each host's commit as the
// status view shows it (Decide has no I/O).
func (c *Controller) act(ctx context.Context, r *Rollout) (request bool) {
	log := c.Log.With(logRollout, r.ID)
	for range 16 {
		step := Decide(r, c.Now())
		if step.Kind == "" {
			return request
		}
		if step.Kind == events.RolloutWaveStarted {
			prev, err := c.previous(ctx, step.Fact.Hosts)
			if err != nil {
				log.Warn("wave not started: the status view not read; retrying", logWave, step.Fact.Wave, logErr, err)
				return request
			}
			step.Fact.Previous = prev
		}
		e, err := events.New(step.Kind, r.ID, Source, step.Fact)
		if err != nil {
			log.Error("rollout fact not encoded", logKind, step.Kind, logErr, err)
			return request
		}
		e.UpgradeID = step.UpgradeID
		subj, err := events.RolloutSubject(r.ID, step.Kind)
		if err != nil {
			log.Error("rollout fact has no subject", logKind, step.Kind, logErr, err)
			return request
		}
		seq, err := c.Conn.Append(ctx, subj, e, &bus.Expect{Filter: events.RolloutFacts(r.ID), Seq: r.Seq})
		var conflict *bus.ConflictError
		if errors.As(err, &conflict) {
			// Another controller acted, or the operator asked something:
			// read what was written and decide again.
			log.Info("rollout written concurrently; reading it again", logErr, err)
			if err := c.reread(ctx, r); err != nil {
				log.Warn("rollout not read again", logErr, err)
				return request
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("rollout fact not appended; retrying", logKind, step.Kind, logErr, err)
			}
			return request
		}
		r.Fold(bus.Stored{Seq: seq, Subject: subj, Event: e})
		log.Info("rollout "+strings.TrimPrefix(string(step.Kind), "rollout."), logKind, step.Kind, logWave, step.Fact.Wave,
			logUpgrade, step.UpgradeID, logHosts, step.Fact.Hosts, logReason, step.Fact.Reason)
		if step.Kind == events.RolloutWaveStarted || step.Kind == events.RolloutHalted && len(step.Fact.Rollback) > 0 {
			request = true
		}
	}
	return request
}

// reread folds the rollout's own events stored after r.Seq.
func (c *Controller) reread(ctx context.Context, r *Rollout) error {
	return c.Conn.Replay(ctx, []string{events.RolloutFacts(r.ID)}, bus.From{Seq: r.Seq + 1}, func(st bus.Stored) error {
		r.Fold(st)
		return nil
	})
}

// previous returns, per host, the commit the status view shows for it.
func (c *Controller) previous(ctx context.Context, hosts []string) (map[string]string, error) {
	fleet, err := projections.OpenFleet(ctx, c.Conn)
	if err != nil {
		return nil, err
	}
	sts, err := fleet.Hosts(ctx, hosts)
	if err != nil {
		return nil, err
	}
	prev := make(map[string]string, len(hosts))
	for h, s := range sts {
		if s.Commit != "" {
			prev[h] = s.Commit
		}
	}
	return prev, nil
}

// request asks the current wave's hosts to upgrade under the wave's id,
// leaving out those whose request is stored already: the upgrade index
// knows it for good, and the stream's deduplication for the minutes the
// index may lag.
func (c *Controller) request(ctx context.Context, r *Rollout) error {
	if b := r.Rollback; b != nil && !r.RolledBack {
		return c.requestRollback(ctx, r)
	}
	w := r.Current()
	if w == nil || r.End != "" {
		return nil
	}
	index, err := upgradeindex.Open(ctx, c.Conn)
	if err != nil {
		return err
	}
	recs, err := index.Records(ctx, w.ID, w.Hosts)
	if err != nil {
		return err
	}
	var hosts []string
	for _, h := range w.Hosts {
		if _, ended := w.Ends[h]; !ended && recs[h].FirstSeq == 0 {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return nil
	}
	_, _, err = producers.Upgrade(ctx, c.Conn, producers.Request{Hosts: hosts, Rev: r.Plan.Rev, ID: w.ID, By: "rollout/" + r.ID})
	if err != nil {
		c.Log.Warn("wave not requested yet; retrying", logRollout, r.ID, logWave, w.Number, logErr, err)
		return err
	}
	c.Log.Info("wave requested", logRollout, r.ID, logWave, w.Number, logUpgrade, w.ID, logHosts, hosts)
	return nil
}

// requestRollback asks each host of a halted rollout's rollback to
// upgrade to its previous commit under the rollback's id, marked as the
// rollout's rollback, leaving out those whose request is stored already
// (as request does).
func (c *Controller) requestRollback(ctx context.Context, r *Rollout) error {
	b := r.Rollback
	hosts := make([]string, 0, len(b.Hosts))
	for _, h := range b.Hosts {
		hosts = append(hosts, h.Host)
	}
	if len(hosts) == 0 {
		return nil
	}
	index, err := upgradeindex.Open(ctx, c.Conn)
	if err != nil {
		return err
	}
	recs, err := index.Records(ctx, b.ID, hosts)
	if err != nil {
		return err
	}
	byCommit := map[string][]string{}
	var commits []string
	for _, h := range b.Hosts {
		if _, ended := b.Ends[h.Host]; ended || recs[h.Host].FirstSeq != 0 {
			continue
		}
		if _, ok := byCommit[h.Commit]; !ok {
			commits = append(commits, h.Commit)
		}
		byCommit[h.Commit] = append(byCommit[h.Commit], h.Host)
	}
	var errs []error
	for _, commit := range commits {
		_, _, err := producers.Upgrade(ctx, c.Conn, producers.Request{Hosts: byCommit[commit], Rev: commit, ID: b.ID,
			RolloutRollback: r.ID, By: "rollout/" + r.ID})
		if err != nil {
			c.Log.Warn("rollback not requested yet; retrying", logRollout, r.ID, logErr, err)
			errs = append(errs, err)
			continue
		}
		c.Log.Info("rollback requested", logRollout, r.ID, logUpgrade, b.ID, logRev, commit, logHosts, byCommit[commit])
	}
	return errors.Join(errs...)
}
