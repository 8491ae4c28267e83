package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// ErrUnknown is wrapped when no rollout has the id.
var ErrUnknown = errors.New("no such rollout")

// ErrEnded is wrapped when an ask comes after the rollout's end.
var ErrEnded = errors.New("rollout has ended")

// Start validates plan and appends rollout.requested under a new id,
// which it returns; the controller does the rest.
func Start(ctx context.Context, c *bus.Conn, plan events.RolloutPlan) (string, error) {
	return StartAs(ctx, c, events.NewID(), plan)
}

// ErrExists is wrapped by StartAs when a rollout with the id exists.
var ErrExists = errors.New("rollout exists already")

// StartAs is Start under a given id (a ULID), so that two producers
// starting the same rollout (two git watchers of one commit) start it
// once: the second gets an error wrapping ErrExists.
func StartAs(ctx context.Context, c *bus.Conn, id string, plan events.RolloutPlan) (string, error) {
	if err := Validate(plan); err != nil {
		return "", err
	}
	if err := events.ValidateID(id); err != nil {
		return "", err
	}
	e, err := events.New(events.RolloutRequested, id, "convoy/producer/"+plan.RequestedBy, plan)
	if err != nil {
		return "", err
	}
	subj, _ := events.RolloutSubject(id, events.RolloutRequested)
	var conflict *bus.ConflictError
	if _, err := c.Append(ctx, subj, e, &bus.Expect{Filter: events.RolloutFacts(id)}); errors.As(err, &conflict) {
		return id, fmt.Errorf("rollout %s: %w", id, ErrExists)
	} else if err != nil {
		return "", fmt.Errorf("request rollout: %w", err)
	}
	return id, nil
}

// Validate reports every problem with a plan at once.
func Validate(p events.RolloutPlan) error {
	var errs []error
	if strings.TrimSpace(p.Rev) == "" {
		errs = append(errs, errors.New("--rev: name the commit to roll out"))
	}
	if len(p.Waves) == 0 {
		errs = append(errs, errors.New("no waves: give at least one --wave (tag=canary, 25%, all)"))
	}
	seen := map[string]int{}
	for i, w := range p.Waves {
		if len(w.Hosts) == 0 {
			errs = append(errs, fmt.Errorf("wave %d (%s) has no host", i+1, w.Spec))
		}
		for _, h := range w.Hosts {
			if err := events.ValidateHost(h); err != nil {
				errs = append(errs, err)
			}
			if j, ok := seen[h]; ok {
				errs = append(errs, fmt.Errorf("host %s is in waves %d and %d", h, j, i+1))
			}
			seen[h] = i + 1
		}
	}
	if p.MaxFailures < 0 {
		errs = append(errs, fmt.Errorf("--max-failures %d: at least 0", p.MaxFailures))
	}
	if p.BakeMS < 0 || p.WaveTimeoutMS < 0 {
		errs = append(errs, errors.New("--bake and --wave-timeout: not negative"))
	}
	if _, err := events.ParseWindow(p.Window); err != nil {
		errs = append(errs, fmt.Errorf("--window %w", err))
	}
	if p.OnFailure != "" && p.OnFailure != events.OnFailureHalt && p.OnFailure != events.OnFailureRollback {
		errs = append(errs, fmt.Errorf("--on-failure %q: want halt or rollback", p.OnFailure))
	}
	return errors.Join(errs...)
}

// Ask appends the operator's ask of kind (rollout.abort.requested,
// rollout.pause.requested, rollout.resume.requested) to rollout id, which
// must exist and not have ended.
func Ask(ctx context.Context, c *bus.Conn, id string, kind events.Kind, ask events.RolloutAsk) error {
	r, err := Read(ctx, c, id)
	if err != nil {
		return err
	}
	if r.End != "" {
		return fmt.Errorf("%w: %s %s %s", ErrEnded, id, r.End.Outcome(), r.Ended.Local().Format("2006-01-02 15:04:05"))
	}
	switch {
	case kind == events.RolloutResumeRequested && !r.Paused && r.Pause == nil:
		return fmt.Errorf("rollout %s is not paused", id)
	case kind == events.RolloutPauseRequested && r.Paused:
		return fmt.Errorf("rollout %s is paused already", id)
	}
	e, err := events.New(kind, id, "convoy/producer/"+ask.RequestedBy, ask)
	if err != nil {
		return err
	}
	subj, err := events.RolloutSubject(id, kind)
	if err != nil {
		return err
	}
	if _, err := c.Append(ctx, subj, e, nil); err != nil {
		return fmt.Errorf("ask rollout %s: %w", id, err)
	}
	return nil
}

// Read returns rollout id as its own events tell it (not its hosts'
// facts: a wave's per-host ends are the controller's to count).
func Read(ctx context.Context, c *bus.Conn, id string) (*Rollout, error) {
	if err := events.ValidateID(id); err != nil {
		return nil, err
	}
	r := &Rollout{ID: id}
	err := c.Replay(ctx, []string{events.RolloutFacts(id)}, bus.From{}, func(st bus.Stored) error {
		r.Fold(st)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if r.Seq == 0 || len(r.Plan.Waves) == 0 {
		return nil, fmt.Errorf("%w %s: check the id with convoy rollout status", ErrUnknown, id)
	}
	return r, nil
}

// List returns every rollout on the bus, oldest first.
func List(ctx context.Context, c *bus.Conn) ([]*Rollout, error) {
	byID := map[string]*Rollout{}
	var order []string
	err := c.Replay(ctx, []string{events.AllRolloutFacts}, bus.From{}, func(st bus.Stored) error {
		s, err := events.ParseSubject(st.Subject)
		if err != nil || st.Err != nil {
			return nil
		}
		r := byID[s.ID]
		if r == nil {
			r = &Rollout{ID: s.ID}
			byID[s.ID] = r
			order = append(order, s.ID)
		}
		r.Fold(st)
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]*Rollout, 0, len(order))
	for _, id := range order {
		out = append(out, byID[id])
	}
	slices.SortStableFunc(out, func(a, b *Rollout) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}
