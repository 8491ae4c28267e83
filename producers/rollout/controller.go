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
		if r.End == "" && r.Current() != nil {
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
			if r.End == "" {
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
// every unfinished rollout.
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
		if r.End == "" {
			r.Fold(st)
		}
	}
}

// act appends the facts Decide asks for until it asks for none. It
// reports whether a wave started whose hosts are still to be requested.
func (c *Controller) act(ctx context.Context, r *Rollout) (request bool) {
	log := c.Log.With(logRollout, r.ID)
	for range 16 {
		step := Decide(r, c.Now())
		if step.Kind == "" {
			return request
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
		if step.Kind == events.RolloutWaveStarted {
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

// request asks the current wave's hosts to upgrade under the wave's id,
// leaving out those whose request is stored already: the upgrade index
// knows it for good, and the stream's deduplication for the minutes the
// index may lag.
func (c *Controller) request(ctx context.Context, r *Rollout) error {
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
