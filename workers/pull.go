package workers

import (
	"context"
	"fmt"
	"time"

	"github.com/convoy-fleet/convoy/events"
)

// pull records the checked-out commits, fetches, resolves and judges the
// target, and moves the checkouts to it.
func (j *job) pull(ctx context.Context) (*outcome, error) {
	j.pullStart = time.Now()
	if err := j.readHeads(ctx); err != nil {
		return j.pullFailed(ctx, err)
	}
	err := j.w.saveInFlight(func(inf *inFlight) { inf.OldCommit, inf.OldSecrets = j.oldCommit, j.oldSecrets })
	if err != nil {
		return nil, err
	}
	if err := j.fetch(ctx); err != nil {
		return j.pullFailed(ctx, err)
	}
	t, err := j.resolve(ctx)
	if err != nil {
		return j.pullFailed(ctx, err)
	}
	if d := judge(t); d.verdict != proceed {
		commit := t.commit
		if commit == "" {
			commit = t.head
		}
		return &outcome{d.kind(), events.Fact{Rev: t.rev, Commit: commit, Reason: d.reason}}, nil
	}
	j.newCommit, j.newSecrets = t.commit, t.secrets
	return j.move(ctx)
}

// readHeads records the commits checked out before the upgrade.
func (j *job) readHeads(ctx context.Context) error {
	var err error
	if j.oldCommit, err = j.repo.head(ctx); err != nil {
		return err
	}
	if j.secrets != nil {
		j.oldSecrets, err = j.secrets.head(ctx)
	}
	return err
}

// fetch updates the tracking refs and refuses checkouts with local work.
func (j *job) fetch(ctx context.Context) error {
	for _, r := range j.repos() {
		if err := r.fetch(ctx); err != nil {
			return fmt.Errorf("fetch %s: %w", r.name, err)
		}
	}
	if err := j.repo.clean(ctx, j.oldCommit); err != nil {
		return err
	}
	if j.secrets != nil {
		return j.secrets.clean(ctx, j.oldSecrets)
	}
	return nil
}

// resolve finds the target commits and everything judge needs. A
// revision that is the request's fault is returned in target.err, not as
// an error.
func (j *job) resolve(ctx context.Context) (target, error) {
	st, cfg := j.w.state, j.w.cfg.Upgrade
	t := target{rev: j.req.Rev, head: j.oldCommit, secrets: j.oldSecrets,
		deployed: st.Deployed, deployedSecrets: st.DeployedSecrets, quarantined: st.Quarantined,
		configAllowsDowngrade: cfg.AllowDowngrade, requestAllowsDowngrade: j.req.AllowDowngrade,
		rolloutRollback: j.req.RolloutRollback, configAllowsRolloutRollback: cfg.AllowRolloutRollback}
	var err error
	t.commit, err = j.repo.resolve(ctx, j.req.Rev)
	if err == nil && j.secrets != nil {
		t.secrets, err = j.secrets.resolve(ctx, "")
	}
	if err == nil {
		err = j.repo.verify(ctx, t.commit)
	}
	if err == nil && j.secrets != nil {
		err = j.secrets.verify(ctx, t.secrets)
	}
	if isRevRejection(err) {
		return target{rev: t.rev, head: t.head, commit: t.commit, err: err}, nil
	}
	if err != nil {
		return t, err
	}
	if t.deployed != "" && t.commit != t.deployed {
		t.older, err = j.repo.isAncestor(ctx, t.commit, t.deployed)
	}
	return t, err
}

// move resets the checkouts to the target and appends pull.succeeded.
func (j *job) move(ctx context.Context) (*outcome, error) {
	j.moved = true
	if err := j.w.saveInFlight(func(inf *inFlight) { inf.Moved = true }); err != nil {
		return nil, err
	}
	if err := j.repo.reset(ctx, j.newCommit); err != nil {
		return j.pullFailed(ctx, err)
	}
	if j.secrets != nil {
		if err := j.secrets.reset(ctx, j.newSecrets); err != nil {
			return j.pullFailed(ctx, err)
		}
	}
	return nil, j.emit(ctx, events.PullSucceeded, events.Fact{
		Commit: j.newCommit, OldCommit: j.oldCommit, NewCommit: j.newCommit,
		SecretsOldCommit: j.oldSecrets, SecretsNewCommit: j.newSecrets,
		DurationMS: time.Since(j.pullStart).Milliseconds(),
	})
}

// pullFailed ends the upgrade at the pull stage.
func (j *job) pullFailed(ctx context.Context, err error) (*outcome, error) {
	f := events.Fact{OldCommit: j.oldCommit, SecretsOldCommit: j.oldSecrets, Reason: err.Error(), DurationMS: time.Since(j.pullStart).Milliseconds()}
	return j.fail(ctx, events.PullFailed, f, err.Error(), false)
}

func (j *job) repos() []*gitRepo {
	if j.secrets == nil {
		return []*gitRepo{j.repo}
	}
	return []*gitRepo{j.repo, j.secrets}
}
