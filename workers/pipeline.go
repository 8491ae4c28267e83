package workers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
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

	oldCommit, oldSecrets string
	newCommit, newSecrets string
	result, previous      string
	moved                 bool // the checkouts were reset to the target
	switched              bool // the switch was started
}

// newJob returns a job whose commands log to log and are tracked in the
// state dir (see killLeftover).
func (w *Worker) newJob(id, logPath string, log io.Writer) *job {
	run := newExec(w.cfg.Upgrade.Timeout.Duration, w.env(id), log)
	run = tracked(w.cfg.StateDir, run)
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

func (w *Worker) upgrade(ctx context.Context, id string, req events.UpgradeRequest) error {
	logPath := filepath.Join(w.logDir, id+".log")
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("upgrade log: %w", err)
	}
	defer lf.Close()
	j := w.newJob(id, logPath, lf)
	j.req = req
	if inf := w.state.InFlight; inf != nil && inf.UpgradeID == id {
		// Redelivered after this worker failed to finish it: put the host
		// back and end it, rather than start again from a moved checkout.
		return w.recover(ctx)
	}
	log := w.log.With(logUpgrade, id)
	log.Info("upgrade started", "rev", req.Rev)
	// Recorded before upgrade.started, so a kill in between still leaves
	// recovery what it needs: the upgrade to end and the delivery to ack.
	w.state.InFlight = &inFlight{UpgradeID: id, AckSubject: w.delivery}
	if err := w.saveState(); err != nil {
		return err
	}
	if err := w.emit(ctx, id, events.UpgradeStarted, events.Fact{Rev: req.Rev, Log: logPath}); err != nil {
		return err
	}
	defer j.stop()
	out, err := j.pipeline(ctx)
	if err != nil {
		return err
	}
	ectx, cancel := j.cleanupCtx(ctx)
	defer cancel()
	if out.kind == events.UpgradeSucceeded {
		w.state.Deployed, w.state.DeployedSecrets = j.newCommit, j.newSecrets
	}
	log.Info("upgrade ended", logKind, out.kind, logReason, out.fact.Reason)
	return w.finish(ectx, id, out.kind, out.fact)
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

func cmdFact(res CmdResult) events.Fact {
	f := events.Fact{Command: res.Argv, DurationMS: res.Duration.Milliseconds(), Output: res.Tail}
	if res.ExitCode >= 0 {
		code := res.ExitCode
		f.ExitCode = &code
	}
	if res.Err != nil {
		f.Reason = res.Err.Error()
		if l := errorLine(res.Tail); l != "" {
			f.Reason += ": " + l
		}
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

// pipeline runs every stage. It returns the terminal outcome, or an error
// only when a fact could not be made durable (the request is then retried).
func (j *job) pipeline(ctx context.Context) (outcome, error) {
	cfg := j.w.cfg
	// 1. Pre-update hooks, before anything is fetched.
	if hooks := cfg.Upgrade.PreUpdateHooks; len(hooks) > 0 {
		res, ok, d := j.runChecks(ctx, hooks)
		if !ok {
			f := cmdFact(res)
			if err := j.emit(ctx, events.HooksFailed, f); err != nil {
				return outcome{}, err
			}
			return j.failed(ctx, "hooks", "pre-update hook failed: "+f.Reason, false)
		}
		if err := j.emit(ctx, events.HooksSucceeded, events.Fact{DurationMS: d.Milliseconds()}); err != nil {
			return outcome{}, err
		}
	}
	// 2. Record the old commits, then 3. fetch and resolve the target.
	start := time.Now()
	pullFailed := func(err error) (outcome, error) {
		f := events.Fact{OldCommit: j.oldCommit, SecretsOldCommit: j.oldSecrets, Reason: err.Error(), DurationMS: time.Since(start).Milliseconds()}
		if eerr := j.emit(ctx, events.PullFailed, f); eerr != nil {
			return outcome{}, eerr
		}
		return j.failed(ctx, "pull", err.Error(), false)
	}
	var err error
	if j.oldCommit, err = j.repo.head(ctx); err != nil {
		return pullFailed(err)
	}
	if j.secrets != nil {
		if j.oldSecrets, err = j.secrets.head(ctx); err != nil {
			return pullFailed(err)
		}
	}
	j.w.state.InFlight.OldCommit, j.w.state.InFlight.OldSecrets = j.oldCommit, j.oldSecrets
	if err := j.w.saveState(); err != nil {
		return outcome{}, err
	}
	for _, r := range j.repos() {
		if err := r.fetch(ctx); err != nil {
			return pullFailed(fmt.Errorf("fetch %s: %w", r.name, err))
		}
	}
	if err := j.repo.clean(ctx, j.oldCommit); err != nil {
		return pullFailed(err)
	}
	if j.secrets != nil {
		if err := j.secrets.clean(ctx, j.oldSecrets); err != nil {
			return pullFailed(err)
		}
	}
	target, err := j.repo.resolve(ctx, j.req.Rev)
	if errors.Is(err, ErrBadRev) || errors.Is(err, ErrNotOnBranch) {
		return outcome{events.UpgradeRejected, events.Fact{Rev: j.req.Rev, Commit: j.oldCommit, Reason: err.Error()}}, nil
	}
	if err != nil {
		return pullFailed(err)
	}
	j.newCommit, j.newSecrets = target, j.oldSecrets
	if j.secrets != nil {
		if j.newSecrets, err = j.secrets.resolve(ctx, ""); err != nil {
			return pullFailed(err)
		}
	}
	for _, v := range []struct {
		r      *gitRepo
		commit string
	}{{j.repo, target}, {j.secrets, j.newSecrets}} {
		if v.r == nil {
			continue
		}
		if err := v.r.verify(ctx, v.commit); errors.Is(err, ErrUnsigned) {
			return outcome{events.UpgradeRejected, events.Fact{Rev: j.req.Rev, Commit: target, Reason: err.Error()}}, nil
		} else if err != nil {
			return pullFailed(err)
		}
	}
	if q := j.w.state.Quarantined; q != "" && target == q {
		return outcome{events.UpgradeRejected, events.Fact{Rev: j.req.Rev, Commit: target,
			Reason: "commit " + short(target) + " failed its boot checks and the host fell back to the golden generation; push a fix (a new commit) to upgrade"}}, nil
	}
	deployed := j.w.state.Deployed
	if deployed != "" && target == deployed && j.newSecrets == j.w.state.DeployedSecrets && target == j.oldCommit {
		return outcome{events.UpgradeSkipped, events.Fact{Rev: j.req.Rev, Commit: target, Reason: events.ReasonAlreadyCurrent + ": " + short(target) + " is deployed"}}, nil
	}
	if deployed != "" && target != deployed {
		if older, err := j.repo.isAncestor(ctx, target, deployed); err != nil {
			return pullFailed(err)
		} else if older && !(cfg.Upgrade.AllowDowngrade && j.req.AllowDowngrade) {
			why := fmt.Sprintf("downgrade refused: %s is an ancestor of the deployed %s", short(target), short(deployed))
			if !cfg.Upgrade.AllowDowngrade {
				why += " (set upgrade.allow_downgrade in the worker config and request it to allow)"
			} else {
				why += " (request it with --allow-downgrade)"
			}
			return outcome{events.UpgradeRejected, events.Fact{Rev: j.req.Rev, Commit: target, Reason: why}}, nil
		}
	}
	j.moved = true
	j.w.state.InFlight.Moved = true
	if err := j.w.saveState(); err != nil {
		return outcome{}, err
	}
	if err := j.repo.reset(ctx, target); err != nil {
		return pullFailed(err)
	}
	if j.secrets != nil {
		if err := j.secrets.reset(ctx, j.newSecrets); err != nil {
			return pullFailed(err)
		}
	}
	if err := j.emit(ctx, events.PullSucceeded, events.Fact{
		Commit: target, OldCommit: j.oldCommit, NewCommit: target,
		SecretsOldCommit: j.oldSecrets, SecretsNewCommit: j.newSecrets,
		DurationMS: time.Since(start).Milliseconds(),
	}); err != nil {
		return outcome{}, err
	}
	// 4. Build and 5. validate.
	if *cfg.Upgrade.BuildBeforeSwitch {
		result, res, err := j.w.driver.Build(ctx, j.run)
		if err != nil {
			f := cmdFact(res)
			f.Commit = target
			if f.Reason == "" {
				f.Reason = err.Error()
			}
			if eerr := j.emit(ctx, events.BuildFailed, f); eerr != nil {
				return outcome{}, eerr
			}
			return j.failed(ctx, "build", "build failed: "+f.Reason, false)
		}
		j.result = result
		if err := j.emit(ctx, events.BuildSucceeded, events.Fact{Commit: target, Result: result, DurationMS: res.Duration.Milliseconds(), Command: res.Argv}); err != nil {
			return outcome{}, err
		}
	}
	if checks := cfg.Upgrade.ValidationChecks; len(checks) > 0 {
		res, ok, d := j.runChecks(ctx, checks)
		if ok {
			if err := j.emit(ctx, events.ValidationPassed, events.Fact{Commit: target, Result: j.result, DurationMS: d.Milliseconds()}); err != nil {
				return outcome{}, err
			}
		} else {
			f := cmdFact(res)
			f.Commit, f.Action = target, cfg.Upgrade.OnValidationFailure
			if err := j.emit(ctx, events.ValidationFailed, f); err != nil {
				return outcome{}, err
			}
			if f.Action == OnFailRollback || ctx.Err() != nil {
				return j.failed(ctx, "validation", "validation check failed: "+f.Reason, false)
			}
			j.w.log.Warn("validation failed; going on as on_validation_failure says", logUpgrade, j.id, "action", f.Action)
		}
	}
	// 6. Switch.
	previous, err := j.w.driver.Current(ctx, j.run)
	if err != nil {
		if eerr := j.emit(ctx, events.SwitchFailed, events.Fact{Commit: target, Result: j.result, Reason: err.Error()}); eerr != nil {
			return outcome{}, eerr
		}
		return j.failed(ctx, "switch", err.Error(), false)
	}
	j.previous = previous
	j.w.state.InFlight.Switching, j.w.state.InFlight.Previous = true, previous
	if err := j.w.saveState(); err != nil {
		return outcome{}, err
	}
	j.switched = true
	gen, res, err := j.w.driver.Switch(ctx, j.run, j.result)
	if err != nil {
		f := cmdFact(res)
		f.Commit, f.Result, f.PreviousResult = target, j.result, previous
		if f.Reason == "" {
			f.Reason = err.Error()
		}
		if eerr := j.emit(ctx, events.SwitchFailed, f); eerr != nil {
			return outcome{}, eerr
		}
		return j.failed(ctx, "switch", "switch failed: "+f.Reason, true)
	}
	if j.result == "" {
		// Without a separate build the switch decided the result.
		j.result, _ = j.w.driver.Current(ctx, j.run)
	}
	if err := j.emit(ctx, events.SwitchSucceeded, events.Fact{Commit: target, Result: j.result, PreviousResult: previous, Generation: gen, DurationMS: res.Duration.Milliseconds()}); err != nil {
		return outcome{}, err
	}
	// 7. Health checks.
	if checks := cfg.Upgrade.HealthChecks; len(checks) > 0 {
		res, ok, d := j.runChecks(ctx, checks)
		if !ok {
			f := cmdFact(res)
			f.Commit, f.Result = target, j.result
			if err := j.emit(ctx, events.HealthFailed, f); err != nil {
				return outcome{}, err
			}
			return j.failed(ctx, "health", "health check failed: "+f.Reason, true)
		}
		if err := j.emit(ctx, events.HealthPassed, events.Fact{Commit: target, Result: j.result, DurationMS: d.Milliseconds()}); err != nil {
			return outcome{}, err
		}
	}
	return outcome{events.UpgradeSucceeded, events.Fact{Commit: target, Result: j.result, PreviousResult: previous, Generation: gen}}, nil
}

func (j *job) repos() []*gitRepo {
	if j.secrets == nil {
		return []*gitRepo{j.repo}
	}
	return []*gitRepo{j.repo, j.secrets}
}

// failed rolls back what the upgrade changed and returns the terminal
// outcome: upgrade.failed, or upgrade.aborted when the worker is stopping.
func (j *job) failed(ctx context.Context, stage, reason string, system bool) (outcome, error) {
	stopping := ctx.Err() != nil
	ctx, cancel := j.cleanupCtx(ctx)
	defer cancel()
	rb, err := j.rollback(ctx, stage, system && j.switched)
	if err != nil {
		return outcome{}, err
	}
	f := events.Fact{Stage: stage, Rev: j.req.Rev, Commit: rb.Commit, Result: rb.Result, Reason: reason}
	if stopping {
		f.Reason = "worker stopped during " + stage + "; host put back: " + reason
		return outcome{events.UpgradeAborted, f}, nil
	}
	return outcome{events.UpgradeFailed, f}, nil
}

// rollback restores the checkouts to the recorded commits and, after a
// switch, the previous system. It appends rollback.succeeded or
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
	}
	f.DurationMS = time.Since(start).Milliseconds()
	kind := events.RollbackSucceeded
	if len(errs) > 0 {
		kind, f.Reason = events.RollbackFailed, strings.Join(errs, "; ")
		j.w.log.Error("rollback failed; the host needs attention (docs/runbooks.md)", logUpgrade, j.id, logErr, f.Reason)
	}
	return f, j.emit(ctx, kind, f)
}

// recover ends an upgrade that a previous run left in flight: it puts the
// checkouts (and, if a switch had started, the system) back to what they
// were and appends upgrade.aborted, so every upgrade ends exactly once.
func (w *Worker) recover(ctx context.Context) error {
	inf := w.state.InFlight
	last, err := w.conn.Last(ctx, events.HostFacts(w.cfg.Host))
	if err != nil && !errors.Is(err, bus.ErrNotFound) {
		return err
	}
	if inf == nil && w.state.Unacked != "" {
		// The last request ended, but the kill came before its ack.
		w.ackStale(&inFlight{AckSubject: w.state.Unacked})
		w.state.Unacked = ""
		if err := w.saveState(); err != nil {
			return err
		}
	}
	if inf == nil {
		// No local record, but the bus says an upgrade never ended (the
		// state dir was lost): end it without touching the host.
		k := last.Event.Kind()
		if err == nil && last.Event.UpgradeID != "" && !k.IsTerminal() && k != events.GoldenPinned && !w.state.done(last.Event.UpgradeID) {
			return w.finish(ctx, last.Event.UpgradeID, events.UpgradeAborted, events.Fact{Reason: "worker restarted without a record of this upgrade; host left as found"})
		}
		return nil
	}
	if end, err := w.terminalOf(ctx, inf); err != nil {
		return err
	} else if end != nil {
		// It ended; only the local record of it was lost.
		if end.Event.Kind() == events.UpgradeSucceeded {
			f, _ := end.Event.Fact()
			w.state.Deployed = f.Commit
			if w.cfg.Secrets != nil {
				w.state.DeployedSecrets, _ = (&gitRepo{name: "secrets", cfg: *w.cfg.Secrets, run: w.quietExec()}).head(ctx)
			}
		}
		w.state.finish(inf.UpgradeID)
		w.ackStale(inf)
		return w.saveState()
	}
	// A command the dead worker started may still run (a switch in its own
	// process group): stop it before putting the host back.
	killLeftover(w.cfg.StateDir, inf.UpgradeID)
	w.log.Warn("recovering an upgrade left in flight", logUpgrade, inf.UpgradeID)
	logPath := filepath.Join(w.logDir, inf.UpgradeID+".log")
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("upgrade log: %w", err)
	}
	defer lf.Close()
	j := w.newJob(inf.UpgradeID, logPath, lf)
	j.oldCommit, j.oldSecrets, j.previous = inf.OldCommit, inf.OldSecrets, inf.Previous
	j.moved, j.switched = inf.Moved, inf.Switching
	rb, err := j.rollback(ctx, "recovery", inf.Switching)
	if err != nil {
		return err
	}
	if err := w.finish(ctx, inf.UpgradeID, events.UpgradeAborted, events.Fact{Stage: "recovery", Commit: rb.Commit, Result: rb.Result,
		Reason: "worker stopped mid-upgrade (crash or kill); host put back to the commit it had before"}); err != nil {
		return err
	}
	w.ackStale(inf)
	return nil
}

// terminalOf returns the in-flight upgrade's terminal fact if it is stored
// (the process stopped before it could record that), else nil. The
// in-flight upgrade is the host's newest, so its terminal fact, if any, is
// the last one on its terminal subject: a few direct reads of the host's
// own subjects, which is all a host credential may read.
func (w *Worker) terminalOf(ctx context.Context, inf *inFlight) (*bus.Stored, error) {
	for _, k := range events.Kinds {
		if !k.IsTerminal() {
			continue
		}
		subj, _ := events.HostSubject(w.cfg.Host, k)
		st, err := w.conn.Last(ctx, subj)
		if errors.Is(err, bus.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if st.Event.UpgradeID == inf.UpgradeID {
			return &st, nil
		}
	}
	return nil, nil
}

// ackStale acknowledges the delivery of a request a previous run left in
// flight, so the consumer hands out the next one now instead of after the
// ack wait. Best effort: a redelivery is recognised as done anyway.
func (w *Worker) ackStale(inf *inFlight) {
	if inf.AckSubject != "" {
		_ = w.conn.NC.Publish(inf.AckSubject, []byte("+ACK"))
	}
}
