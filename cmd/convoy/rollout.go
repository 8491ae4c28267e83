package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers/rollout"
	"github.com/convoy-fleet/convoy/projections"
)

type rolloutCmd struct{ env *env }

// waveFlags collects repeated --wave selectors.
type waveFlags []rollout.Selector

func (w *waveFlags) String() string { return fmt.Sprint(*w) }
func (w *waveFlags) Set(v string) error {
	s, err := rollout.ParseWave(v)
	if err != nil {
		return err
	}
	*w = append(*w, s)
	return nil
}

const rolloutUsage = "rollout start --rev R --wave SEL... [--bake D] [--max-failures N] [--wave-timeout D] [--wait] | status [ID] [--json] [--wait] | abort|pause|resume ID"

const rolloutExamples = `  # a canary, then half of the rest, then all, each wave baking ten minutes
  convoy rollout start --rev 3f2a9c1 --wave tag=canary --wave 50% --wave all --bake 10m

  # every rollout, then one, waiting for its end
  convoy rollout status
  convoy rollout status 01M80APSTYVXCF8DA3FQ0RBP5B --wait

  # stop a rollout: no further wave is requested
  convoy rollout abort 01M80APSTYVXCF8DA3FQ0RBP5B
`

// Run dispatches the rollout subcommands.
func (c *rolloutCmd) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageErr(errors.New("want " + rolloutUsage))
	}
	switch args[0] {
	case "start":
		return c.start(ctx, args[1:])
	case "status":
		return c.status(ctx, args[1:])
	case "abort":
		return c.ask(ctx, "abort", events.RolloutAbortRequested, args[1:])
	case "pause":
		return c.ask(ctx, "pause", events.RolloutPauseRequested, args[1:])
	case "resume":
		return c.ask(ctx, "resume", events.RolloutResumeRequested, args[1:])
	case "-h", "--help", "help":
		fmt.Fprintf(c.env.stderr, "Usage: convoy %s\n\nExamples:\n%s\nRun convoy rollout start -h (or status -h, abort -h) for the flags.\n", rolloutUsage, rolloutExamples)
		return nil
	}
	return usageErr(fmt.Errorf("unknown rollout command %q: want start, status, abort, pause or resume", args[0]))
}

func (c *rolloutCmd) start(ctx context.Context, args []string) error {
	fs := c.env.flags("rollout start", "rollout start --rev R --wave SEL [--wave SEL...] [--bake D] [--max-failures N] [--wave-timeout D] [--wait]",
		example{"a canary, then half of the rest, then all, each baking ten minutes", "convoy rollout start --rev 3f2a9c1 --wave tag=canary --wave 50% --wave all --bake 10m"},
		example{"tolerate one failed host and wait for the end", "convoy rollout start --rev 3f2a9c1 --wave 10% --wave all --max-failures 1 --wait"},
	)
	var waves waveFlags
	fs.Var(&waves, "wave", "a wave, in order: tag=TAG, N% of the hosts no earlier wave has, or all (repeat)")
	rev := fs.String("rev", "", "commit to roll out (required)")
	bake := fs.Duration("bake", 0, "how long each wave must stay healthy after its last host's upgrade ends")
	maxFail := fs.Int("max-failures", 0, "hosts that may fail over the whole rollout before it halts")
	waveTimeout := fs.Duration("wave-timeout", 0, "how long a wave waits for its hosts; those without an end by then count as failed (0: no limit)")
	onFailure := fs.String("on-failure", "halt", "what a halt does: halt, or rollback (send the hosts the rollout upgraded back to their previous commit; their worker config must set upgrade.allow_rollout_rollback)")
	window := fs.String("window", "", "start waves only inside this window, in the controller's local time (\"Sat 02:00-05:00\", \"22:00-02:00\")")
	wait := fs.Bool("wait", false, "wait until the rollout ends (and its rollback, if it halts with --on-failure rollback); exit 1 if it halts or is aborted")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageErr(fmt.Errorf("unexpected %q: waves are given with --wave", pos[0]))
	}
	plan := events.RolloutPlan{Rev: *rev, BakeMS: bake.Milliseconds(), MaxFailures: *maxFail,
		WaveTimeoutMS: waveTimeout.Milliseconds(), OnFailure: *onFailure, Window: *window, RequestedBy: requester()}
	if len(waves) == 0 || *rev == "" {
		return usageErr(rollout.Validate(plan))
	}
	conn, fleet, err := c.env.openFleet(ctx, "rollout")
	if err != nil {
		return err
	}
	defer conn.Close()
	if plan.Waves, err = planWaves(ctx, fleet, waves); err != nil {
		return err
	}
	if err := rollout.Validate(plan); err != nil {
		return usageErr(err)
	}
	id, err := rollout.Start(ctx, conn, plan)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.env.stdout, id)
	for i, w := range plan.Waves {
		fmt.Fprintf(c.env.stderr, "wave %d (%s): %s\n", i+1, w.Spec, strings.Join(w.Hosts, " "))
	}
	if !*wait {
		return nil
	}
	return c.wait(ctx, conn, id, false)
}

func (c *rolloutCmd) status(ctx context.Context, args []string) error {
	fs := c.env.flags("rollout status", "rollout status [ID] [--json] [--wait]",
		example{"every rollout, one line each", "convoy rollout status"},
		example{"one rollout's waves, waiting for its end", "convoy rollout status 01M80APSTYVXCF8DA3FQ0RBP5B --wait"},
	)
	asJSON := fs.Bool("json", false, "print JSON")
	wait := fs.Bool("wait", false, "wait until the rollout ends (ID required); exit 1 if it halts or is aborted")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageErr(errors.New("name at most one rollout"))
	}
	if len(pos) == 1 {
		if err := events.ValidateID(pos[0]); err != nil {
			return usageErr(err)
		}
	} else if *wait {
		return usageErr(errors.New("--wait needs the rollout's ID"))
	}
	conn, err := c.env.connect(ctx, "rollout", 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if len(pos) == 0 {
		rs, err := rollout.List(ctx, conn)
		if err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(c.env.stdout).Encode(rs)
		}
		t := table(c.env.stdout)
		row(t, "ROLLOUT", "STATE", "REV", "WAVE", "REQUESTED")
		for _, r := range rs {
			row(t, r.ID, r.State(), short(r.Plan.Rev), fmt.Sprintf("%d/%d", len(r.Waves), len(r.Plan.Waves)), r.Requested.Local().Format(time.DateTime))
		}
		return t.Flush()
	}
	if *wait {
		return c.wait(ctx, conn, pos[0], *asJSON)
	}
	r, err := rollout.Read(ctx, conn, pos[0])
	if err != nil {
		return rolloutErr(err)
	}
	return c.print(r, *asJSON)
}

func (c *rolloutCmd) print(r *rollout.Rollout, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(c.env.stdout).Encode(r)
	}
	fmt.Fprintf(c.env.stdout, "rollout %s: %s, rev %s, bake %s, max failures %d\n", r.ID, r.State(), r.Plan.Rev, r.Plan.Bake(), r.Plan.MaxFailures)
	if r.WaitingForWindow(time.Now()) {
		fmt.Fprintf(c.env.stdout, "waiting for window %s to start wave %d\n", r.Plan.Window, len(r.Waves)+1)
	}
	for i, w := range r.Plan.Waves {
		state := "waiting"
		if i < len(r.Waves) {
			state = "running, upgrade " + r.Waves[i].ID
			if r.Waves[i].Succeeded {
				state = "succeeded, upgrade " + r.Waves[i].ID
			}
		}
		fmt.Fprintf(c.env.stdout, "  wave %d (%s): %s: %s\n", i+1, w.Spec, state, strings.Join(w.Hosts, " "))
	}
	if r.End != "" {
		fmt.Fprintf(c.env.stdout, "%s at %s: %s\n", r.End.Outcome(), r.Ended.Local().Format(time.DateTime), r.Reason)
	}
	if b := r.Rollback; b != nil {
		state := "rolling back"
		if r.RolledBack {
			state = "rolled back"
		}
		var hosts []string
		for _, h := range b.Hosts {
			hosts = append(hosts, h.Host+"→"+short(h.Commit))
		}
		fmt.Fprintf(c.env.stdout, "%s, upgrade %s: %s\n", state, b.ID, strings.Join(hosts, " "))
	}
	return nil
}

// wait follows the rollout until its end, prints it, and fails unless it
// succeeded.
func (c *rolloutCmd) wait(ctx context.Context, conn *bus.Conn, id string, asJSON bool) error {
	if _, err := rollout.Read(ctx, conn, id); err != nil {
		return rolloutErr(err)
	}
	r := &rollout.Rollout{ID: id}
	err := conn.Follow(ctx, []string{events.RolloutFacts(id)}, bus.From{}, func(st bus.Stored) error {
		r.Fold(st)
		if !r.Pending() {
			return bus.ErrStop
		}
		return nil
	})
	if ctx.Err() != nil {
		return timeoutErr(fmt.Errorf("rollout %s has not ended yet", id))
	}
	if err != nil {
		return err
	}
	if err := c.print(r, asJSON); err != nil {
		return err
	}
	if r.End != events.RolloutSucceeded {
		return failedErr(fmt.Errorf("rollout %s %s: %s", id, r.End.Outcome(), r.Reason))
	}
	return nil
}

func (c *rolloutCmd) ask(ctx context.Context, verb string, kind events.Kind, args []string) error {
	fs := c.env.flags("rollout "+verb, "rollout "+verb+" ID [--reason WHY]",
		example{verb + " a rollout", "convoy rollout " + verb + " 01M80APSTYVXCF8DA3FQ0RBP5B --reason 'latency up on the canary'"},
	)
	reason := fs.String("reason", "", "why, recorded in the rollout's facts")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageErr(fmt.Errorf("name the rollout: convoy rollout %s ID", verb))
	}
	if err := events.ValidateID(pos[0]); err != nil {
		return usageErr(err)
	}
	conn, err := c.env.connect(ctx, "rollout", 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := rollout.Ask(ctx, conn, pos[0], kind, events.RolloutAsk{RequestedBy: requester(), Reason: *reason}); err != nil {
		return rolloutErr(err)
	}
	fmt.Fprintf(c.env.stdout, "%s of rollout %s requested\n", verb, pos[0])
	return nil
}

// rolloutErr makes a rollout that does not exist, or has ended, a usage
// error (exit 2).
func rolloutErr(err error) error {
	var ee *exitError
	if errors.As(err, &ee) || errors.Is(err, flag.ErrHelp) {
		return err
	}
	if errors.Is(err, rollout.ErrUnknown) || errors.Is(err, rollout.ErrEnded) || strings.Contains(err.Error(), "paused") {
		return usageErr(err)
	}
	return err
}

// planWaves picks each wave's hosts now, from the hosts whose worker has
// started; a selection that cannot be made is a usage error.
func planWaves(ctx context.Context, fleet *projections.Fleet, waves []rollout.Selector) ([]events.RolloutWave, error) {
	sts, err := fleet.All(ctx)
	if err != nil {
		return nil, err
	}
	var hosts []rollout.Host
	for _, s := range sts {
		if s.Worker != "" {
			hosts = append(hosts, rollout.Host{Name: s.Host, Tags: s.Tags})
		}
	}
	planned, err := rollout.Plan(waves, hosts)
	if err != nil {
		return nil, usageErr(err)
	}
	return planned, nil
}
