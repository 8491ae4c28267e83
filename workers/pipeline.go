package workers

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/events"
)

// job is one upgrade in progress. It lives in the worker's goroutine.
type job struct {
	w       *Worker
	id      string
	req     events.UpgradeRequest
	run     Exec
	logPath string
	repo    *gitRepo
	secrets *gitRepo // nil without [secrets]

	stopCtx context.Context // see emit
	stop    context.CancelFunc

	pullStart             time.Time
	oldCommit, oldSecrets string
	newCommit, newSecrets string
	result, previous      string
	generation            int
	reboot                bool   // the result needs a reboot (needsReboot)
	rebootWhy             string // what differs from the booted system
	moved                 bool   // the checkouts were reset to the target
	switched              bool   // the switch was started
}

// newJob returns a job whose commands log to log and are tracked in the
// state dir (see killLeftover).
func (w *Worker) newJob(id, logPath string, log io.Writer) *job {
	run := tracked(w.cfg.StateDir, w.exec(w.cfg.Upgrade.Timeout.Duration, id, log))
	j := &job{w: w, id: id, run: run, logPath: logPath, stop: func() {}}
	for _, r := range w.cfg.repos() {
		r.run = run
		if r.name == "repo" {
			j.repo = r
		} else {
			j.secrets = r
		}
	}
	return j
}

// outcome is how a pipeline ends: the terminal kind and its data.
type outcome struct {
	kind events.Kind
	fact events.Fact
}

// upgrade runs an admitted upgrade request and appends its terminal fact.
func (w *Worker) upgrade(ctx context.Context, r request, req events.UpgradeRequest) error {
	if inf := w.state.InFlight; inf != nil && inf.UpgradeID == r.id {
		// Redelivered after this worker failed to finish it: put the host
		// back and end it, rather than start again from a moved checkout.
		return w.recover(ctx)
	}
	lf, logPath, err := w.openLog(r.id)
	if err != nil {
		return err
	}
	defer lf.Close()
	j := w.newJob(r.id, logPath, lf)
	j.req = req
	log := w.log.With(logUpgrade, r.id)
	log.Info("upgrade started", "rev", req.Rev)
	// Recorded before upgrade.started, so a kill in between still leaves
	// recovery what it needs: the upgrade to end and its request.
	w.state.InFlight = &inFlight{UpgradeID: r.id, RequestSeq: r.seq}
	if err := w.saveState(); err != nil {
		return err
	}
	if err := w.emit(ctx, r.id, events.UpgradeStarted, events.Fact{Rev: req.Rev, Log: logPath}); err != nil {
		return err
	}
	defer j.stop()
	out, err := j.pipeline(ctx)
	if err != nil {
		return err
	}
	// The log is complete: put its tail in place and apply logs.keep
	// and logs.max_age before the terminal fact says where it is.
	if err := lf.Close(); err != nil {
		log.Warn("upgrade log", logErr, err)
	}
	w.pruneLogs()
	ectx, cancel := j.cleanupCtx(ctx)
	defer cancel()
	if out.kind == events.UpgradeSucceeded {
		w.state.Deployed, w.state.DeployedSecrets = j.newCommit, j.newSecrets
	}
	// Saved with the terminal fact's record; serve reboots after it.
	w.state.PendingReboot = pendingAfter(w.state.PendingReboot, w.cfg.Reboot.Allow, r.id, out, j.rebootWhy)
	out.fact.RebootPending = w.state.PendingReboot != nil && w.state.PendingReboot.UpgradeID == r.id
	log.Info("upgrade ended", logKind, out.kind, logReason, out.fact.Reason)
	return w.finish(ectx, r, out.kind, out.fact)
}

// stage is one step of the pipeline. It returns nil to go on, or the
// outcome that ends the upgrade; it returns an error only when a fact
// could not be made durable (the request is then retried).
type stage func(context.Context) (*outcome, error)

// pipeline runs the stages in order: hooks, pull, build, validate,
// switch, health. Each appends its fact before the next one's side
// effect starts.
func (j *job) pipeline(ctx context.Context) (outcome, error) {
	for _, run := range []stage{j.hooks, j.pull, j.build, j.validate, j.switchSystem, j.health} {
		out, err := run(ctx)
		if err != nil {
			return outcome{}, err
		}
		if out != nil {
			return *out, nil
		}
	}
	return outcome{events.UpgradeSucceeded, events.Fact{Commit: j.newCommit, SecretsNewCommit: j.newSecrets, Result: j.result, PreviousResult: j.previous, Generation: j.generation, RebootRequired: j.reboot}}, nil
}

// hooks runs the pre-update hooks, before anything is fetched.
func (j *job) hooks(ctx context.Context) (*outcome, error) {
	hooks := j.w.cfg.Upgrade.PreUpdateHooks
	if len(hooks) == 0 {
		return nil, nil
	}
	res, ok, d := j.runChecks(ctx, hooks)
	if !ok {
		f := cmdFact(res, nil)
		return j.fail(ctx, events.HooksFailed, f, "pre-update hook failed: "+f.Reason, false)
	}
	return nil, j.emit(ctx, events.HooksSucceeded, events.Fact{DurationMS: d.Milliseconds()})
}

// build builds the target, unless the config leaves that to the switch.
func (j *job) build(ctx context.Context) (*outcome, error) {
	if !j.w.cfg.Upgrade.BuildsFirst() {
		return nil, nil
	}
	result, res, err := j.w.driver.Build(ctx, j.run)
	if err != nil {
		f := cmdFact(res, err)
		f.Commit = j.newCommit
		return j.fail(ctx, events.BuildFailed, f, "build failed: "+f.Reason, false)
	}
	j.result = result
	return nil, j.emit(ctx, events.BuildSucceeded, events.Fact{Commit: j.newCommit, Result: result, DurationMS: res.Duration.Milliseconds(), Command: res.Argv})
}

// validate runs the validation checks; a failure ends the upgrade or, as
// on_validation_failure says, is only recorded.
func (j *job) validate(ctx context.Context) (*outcome, error) {
	cfg := j.w.cfg.Upgrade
	if len(cfg.ValidationChecks) == 0 {
		return nil, nil
	}
	res, ok, d := j.runChecks(ctx, cfg.ValidationChecks)
	if ok {
		return nil, j.emit(ctx, events.ValidationPassed, events.Fact{Commit: j.newCommit, Result: j.result, DurationMS: d.Milliseconds()})
	}
	f := cmdFact(res, nil)
	f.Commit, f.Action = j.newCommit, cfg.OnValidationFailure
	if f.Action == OnFailRollback || ctx.Err() != nil {
		return j.fail(ctx, events.ValidationFailed, f, "validation check failed: "+f.Reason, false)
	}
	if err := j.emit(ctx, events.ValidationFailed, f); err != nil {
		return nil, err
	}
	j.w.log.Warn("validation failed; going on as on_validation_failure says", logUpgrade, j.id, "action", f.Action)
	return nil, nil
}

// switchSystem records what runs now, then makes the result the running
// system.
func (j *job) switchSystem(ctx context.Context) (*outcome, error) {
	previous, err := j.w.driver.Current(ctx, j.run)
	if err != nil {
		f := events.Fact{Commit: j.newCommit, Result: j.result, Reason: err.Error()}
		return j.fail(ctx, events.SwitchFailed, f, err.Error(), false)
	}
	j.previous = previous
	err = j.w.saveInFlight(func(inf *inFlight) { inf.Switching, inf.Previous = true, previous })
	if err != nil {
		return nil, err
	}
	j.switched = true
	gen, res, err := j.w.driver.Switch(ctx, j.run, j.result)
	if err != nil {
		f := cmdFact(res, err)
		f.Commit, f.Result, f.PreviousResult = j.newCommit, j.result, previous
		return j.fail(ctx, events.SwitchFailed, f, "switch failed: "+f.Reason, true)
	}
	j.generation = gen
	if j.result == "" {
		// Without a separate build the switch decided the result.
		j.result, _ = j.w.driver.Current(ctx, j.run)
	}
	j.reboot, j.rebootWhy = j.w.needsReboot(j.result)
	return nil, j.emit(ctx, events.SwitchSucceeded, events.Fact{Commit: j.newCommit, Result: j.result, PreviousResult: previous, Generation: gen,
		DurationMS: res.Duration.Milliseconds(), RebootRequired: j.reboot})
}

// health runs the health checks on the switched system.
func (j *job) health(ctx context.Context) (*outcome, error) {
	checks := j.w.cfg.Upgrade.HealthChecks
	if len(checks) == 0 {
		return nil, nil
	}
	res, ok, d := j.runChecks(ctx, checks)
	if !ok {
		f := cmdFact(res, nil)
		f.Commit, f.Result = j.newCommit, j.result
		return j.fail(ctx, events.HealthFailed, f, "health check failed: "+f.Reason, true)
	}
	return nil, j.emit(ctx, events.HealthPassed, events.Fact{Commit: j.newCommit, Result: j.result, DurationMS: d.Milliseconds()})
}

// fail appends how a stage failed (kind and f), puts back what the
// upgrade changed (the system too, when system is set and the switch
// started) and returns the terminal outcome.
func (j *job) fail(ctx context.Context, kind events.Kind, f events.Fact, reason string, system bool) (*outcome, error) {
	if err := j.emit(ctx, kind, f); err != nil {
		return nil, err
	}
	return j.failed(ctx, kind.Stage(), reason, system)
}

// failed rolls back and returns the terminal outcome: upgrade.failed, or
// upgrade.aborted when the worker is stopping.
func (j *job) failed(ctx context.Context, stage, reason string, system bool) (*outcome, error) {
	stopping := ctx.Err() != nil
	ctx, cancel := j.cleanupCtx(ctx)
	defer cancel()
	rb, err := j.rollback(ctx, stage, system && j.switched)
	if err != nil {
		return nil, err
	}
	f := events.Fact{Stage: stage, Rev: j.req.Rev, Commit: rb.Commit, Result: rb.Result, Reason: reason}
	if stopping {
		f.Reason = "worker stopped during " + stage + "; host put back: " + reason
		return &outcome{events.UpgradeAborted, f}, nil
	}
	return &outcome{events.UpgradeFailed, f}, nil
}

// rollback restores the checkouts to the recorded commits and, with
// system set, the previous system. It appends rollback.succeeded or
// rollback.failed when there was anything to undo.
func (j *job) rollback(ctx context.Context, stage string, system bool) (events.Fact, error) {
	f := events.Fact{Stage: stage, Commit: j.oldCommit, SecretsOldCommit: j.oldSecrets}
	if !j.moved && !system {
		return f, nil // nothing changed: the host is untouched
	}
	start := time.Now()
	var errs []string
	if j.oldCommit != "" {
		if err := j.repo.reset(ctx, j.oldCommit); err != nil {
			errs = append(errs, err.Error())
			// Say where the checkout is, not where it should be.
			f.Commit, _ = j.repo.head(ctx)
		}
	}
	if j.secrets != nil && j.oldSecrets != "" {
		if err := j.secrets.reset(ctx, j.oldSecrets); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if system {
		gen, res, err := j.w.driver.Rollback(ctx, j.run, j.previous)
		f.Generation, f.Result, f.PreviousResult = gen, j.previous, j.result
		if err != nil {
			errs = append(errs, "system: "+err.Error())
			f.Output = res.Tail
			// Say what the host runs now, not what it should.
			f.Result, _ = j.w.driver.Current(ctx, j.run)
		}
		f.RebootRequired, _ = j.w.needsReboot(f.Result)
	}
	f.DurationMS = time.Since(start).Milliseconds()
	kind := events.RollbackSucceeded
	if len(errs) > 0 {
		kind, f.Reason = events.RollbackFailed, strings.Join(errs, "; ")
		j.w.log.Error("rollback failed; the host needs attention (docs/runbooks.md)", logUpgrade, j.id, logErr, f.Reason)
	}
	return f, j.emit(ctx, kind, f)
}

// cleanupCtx is the context for rollback and the terminal fact: the
// request's own, or, when the worker is stopping, one that outlives the
// stop long enough to put the host back.
func (j *job) cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Err() == nil {
		return ctx, func() {}
	}
	return context.WithTimeout(context.WithoutCancel(ctx), j.w.cfg.Upgrade.Timeout.Duration)
}

// emit appends a fact of this upgrade. When the worker is stopping, the
// fact that says how the running stage ended is still written, under a
// context that outlives the stop for as long as a stage may take.
func (j *job) emit(ctx context.Context, k events.Kind, f events.Fact) error {
	if f.Log == "" && (k.Outcome() == "failed" || k.Outcome() == "succeeded") {
		f.Log = j.logPath
	}
	if ctx.Err() != nil {
		if j.stopCtx == nil {
			j.stopCtx, j.stop = context.WithTimeout(context.WithoutCancel(ctx), j.w.cfg.Upgrade.Timeout.Duration)
		}
		ctx = j.stopCtx
	}
	return j.w.emit(ctx, j.id, k, f)
}

// runChecks runs sh -c snippets in the repo, stopping at the first failure.
func (j *job) runChecks(ctx context.Context, checks []string) (CmdResult, bool, time.Duration) {
	start := time.Now()
	var env []string
	if j.result != "" {
		env = append(env, "CONVOY_RESULT="+j.result)
	}
	for _, c := range checks {
		res := j.run(ctx, j.w.cfg.Repo.Path, shell(c), env...)
		if res.Err != nil {
			return res, false, time.Since(start)
		}
	}
	return CmdResult{}, true, time.Since(start)
}

// cmdFact is the fact of a command's run; err, when the command itself
// did not fail, is the reason.
func cmdFact(res CmdResult, err error) events.Fact {
	f := events.Fact{Command: res.Argv, DurationMS: res.Duration.Milliseconds(), Output: res.Tail}
	if res.ExitCode >= 0 {
		code := res.ExitCode
		f.ExitCode = &code
	}
	switch {
	case res.Err != nil:
		f.Reason = res.Err.Error()
		if l := errorLine(res.Tail); l != "" {
			f.Reason += ": " + l
		}
	case err != nil:
		f.Reason = err.Error()
	}
	return f
}

// errorLine picks the line of output that best says what went wrong: the
// last one starting with "error" or "fatal" (Nix, git), else the last
// non-empty one.
func errorLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if low := strings.ToLower(l); strings.HasPrefix(low, "error") || strings.HasPrefix(low, "fatal") {
			return l
		}
	}
	return lastLine(out)
}
