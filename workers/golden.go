package workers

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/events"
)

// goldenDriver is what the golden generation needs beyond Driver. Only
// the nixos driver has generations to pin.
type goldenDriver interface {
	Driver
	Golden() string
	Pin(ctx context.Context, run Exec, path string) (CmdResult, error)
	RestoreGolden(ctx context.Context, run Exec) (string, int, CmdResult, error)
	Booted(ctx context.Context, run Exec) (string, error)
	generation() int
	generationOf(path string) int
}

// pin handles pin.requested: it pins the running generation as golden,
// but only if that generation passed a boot check on this host. It ends
// with golden.pinned, or upgrade.rejected with the reason.
func (w *Worker) pin(ctx context.Context, r request) error {
	refuse := func(f events.Fact) error {
		f.Stage = "golden"
		return w.finish(ctx, r, events.UpgradeRejected, f)
	}
	d, ok := w.driver.(goldenDriver)
	switch {
	case !ok:
		return refuse(events.Fact{Reason: "pin refused: the golden generation needs system.driver = \"nixos\""})
	case !w.cfg.Golden.Enable:
		return refuse(events.Fact{Reason: "pin refused: golden.enable is false in this host's config"})
	}
	lf, _, err := w.openLog(r.id)
	if err != nil {
		return err
	}
	defer lf.Close()
	run := w.exec(w.cfg.Upgrade.Timeout.Duration, r.id, lf)
	cur, err := d.Current(ctx, run)
	if err != nil || cur == "" {
		return refuse(events.Fact{Reason: fmt.Sprintf("pin refused: no current generation (%v)", err)})
	}
	gen := d.generation()
	if !w.state.validated(cur) {
		return refuse(events.Fact{Result: cur, Generation: gen,
			Reason: fmt.Sprintf("pin refused: generation %d (%s) has not passed a boot check; reboot into it and let convoy boot-check validate it", gen, cur)})
	}
	if res, err := d.Pin(ctx, run, cur); err != nil {
		f := cmdFact(res, nil)
		f.Result, f.Reason = cur, "pin failed: "+err.Error()
		return refuse(f)
	}
	if err := w.emit(ctx, r.id, events.GoldenPinned, events.Fact{Result: cur, Generation: gen, RequestSeq: r.seq}); err != nil {
		return err
	}
	return w.ended(r)
}

// bootEmit appends a boot-check fact without waiting long for the bus:
// the fact is in the outbox first, so if the bus does not acknowledge it
// in time the check goes on (a failing boot must still fall back) and the
// worker publishes it later.
func bootEmit(ctx context.Context, w *Worker, k events.Kind, f events.Fact) error {
	ectx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := w.emit(ectx, "", k, f)
	if err != nil && ectx.Err() != nil && ctx.Err() == nil {
		w.log.Warn("the bus did not acknowledge in time; the fact waits in the outbox", logKind, k)
		w.queueOnly = true
		return nil
	}
	return err
}

// BootResult says what a boot check found and did.
type BootResult struct {
	Validated bool
	Result    string // the running system
	Failures  int    // consecutive failed checks of this system
	Pinned    bool   // golden.pinned was emitted
	Restored  string // the golden system made current and boot default
	Queued    bool   // the bus was unreachable: events wait in the outbox
}

// ErrBootCheckFailed is wrapped when validate_services failed.
var ErrBootCheckFailed = errors.New("boot check failed")

// BootCheck runs once after boot (a systemd oneshot before the worker).
// It checks golden.validate_services. On success it records the running
// generation as validated and, with auto_pin_after_boot, pins it golden.
// On failure it counts failures of this generation, persistently; at
// golden.max_boot_failures in a row it makes the golden generation the
// current one and the boot default. Each step is an event; with the bus
// unreachable (Options.Conn nil or failing) they wait in the worker's
// outbox and the worker publishes them when it starts.
func BootCheck(ctx context.Context, o Options) (BootResult, error) {
	var br BootResult
	w, err := New(o)
	if err != nil {
		return br, err
	}
	d, ok := w.driver.(goldenDriver)
	if !ok {
		return br, errors.New("boot-check needs system.driver = \"nixos\": only NixOS has generations to validate and fall back to")
	}
	lock, err := w.open()
	if err != nil {
		return br, err
	}
	defer lock.Close()
	if busErr := w.catchUpForBoot(ctx); busErr != nil && w.damaged != nil {
		return br, refuseDamaged(w.damaged, busErr)
	}
	if !w.queueOnly {
		rctx, cancel := context.WithTimeout(ctx, probeTimeout)
		err := w.rebuildIfNeeded(rctx)
		cancel()
		switch {
		case err != nil && w.damaged != nil:
			return br, refuseDamaged(w.damaged, err)
		case err != nil:
			w.log.Warn("state.json is missing and rebuilding it from the bus failed; boot-check starts with an empty state", logErr, err)
		}
	}
	lf, err := openCappedLog(filepath.Join(w.logDir, "boot-check.log"), int64(w.cfg.Logs.MaxSize))
	if err != nil {
		return br, fmt.Errorf("boot-check log: %w", err)
	}
	defer lf.Close()
	b := &bootCheck{w: w, d: d, run: w.exec(time.Minute, "", lf)}
	err = b.check(ctx)
	b.result.Queued = w.queueOnly
	return b.result, err
}

// catchUpForBoot publishes what the outbox holds, or, when the bus does
// not answer within 10s, switches the worker to queueing its facts and
// returns why.
func (w *Worker) catchUpForBoot(ctx context.Context) error {
	if w.conn == nil {
		w.queueOnly = true
		return errors.New("no bus connection")
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := w.syncSeq(cctx)
	if err == nil {
		err = w.flushOutbox(cctx)
	}
	if err != nil {
		w.log.Warn("bus unreachable at boot; events wait in the outbox", logErr, err)
		w.queueOnly = true
	}
	return err
}

// bootCheck is one run of BootCheck.
type bootCheck struct {
	w      *Worker
	d      goldenDriver
	run    Exec
	result BootResult
}

func (b *bootCheck) check(ctx context.Context) error {
	// Validate, pin or count what this boot runs, not what the profile
	// would boot next.
	cur, err := b.d.Booted(ctx, b.run)
	if err != nil {
		return err
	}
	b.result.Result = cur
	if p := b.w.state.PendingReboot; p != nil {
		// The reboot happened: this check's verdict (boot.validated, or
		// boot.failed and the golden fallback) ends it. Saved with the
		// verdict.
		b.w.log.Info("the pending reboot is done", "result", p.Result, "booted", cur)
		b.w.state.PendingReboot = nil
	}
	start := time.Now()
	for _, svc := range b.w.cfg.Golden.ValidateServices {
		res := b.run(ctx, "/", append(append([]string{}, b.w.cfg.Golden.ServiceCheck...), svc))
		if res.Err != nil {
			return b.failed(ctx, cur, res)
		}
	}
	return b.validated(ctx, cur, time.Since(start))
}

// validated records that cur passed and, with auto_pin_after_boot, pins it.
func (b *bootCheck) validated(ctx context.Context, cur string, took time.Duration) error {
	w, st := b.w, b.w.state
	b.result.Validated = true
	st.markValidated(cur)
	st.BootFailures, st.BootFailed = 0, ""
	if err := w.saveState(); err != nil {
		return err
	}
	gen := b.d.generationOf(cur)
	if err := bootEmit(ctx, w, events.BootValidated, events.Fact{Result: cur, Generation: gen, DurationMS: took.Milliseconds()}); err != nil {
		return err
	}
	if !w.cfg.Golden.Enable || !w.cfg.Golden.AutoPin() || b.d.Golden() == cur {
		return nil
	}
	if res, err := b.d.Pin(ctx, b.run, cur); err != nil {
		return fmt.Errorf("pin %s: %w: %s", cur, err, strings.TrimSpace(res.Tail))
	}
	b.result.Pinned = true
	return bootEmit(ctx, w, events.GoldenPinned, events.Fact{Result: cur, Generation: gen})
}

// failed counts a failed check of cur and, at max_boot_failures in a row,
// falls back to the golden generation.
func (b *bootCheck) failed(ctx context.Context, cur string, res CmdResult) error {
	w, st := b.w, b.w.state
	if st.BootFailed != cur {
		st.BootFailures, st.BootFailed = 0, cur
	}
	st.BootFailures++
	n := st.BootFailures
	b.result.Failures = n
	if err := w.saveState(); err != nil {
		return err
	}
	f := cmdFact(res, nil)
	f.Result, f.Generation, f.Failures = cur, b.d.generationOf(cur), n
	f.Reason = fmt.Sprintf("service check failed (%d of %d allowed): %s", n, w.cfg.Golden.MaxBootFailures, f.Reason)
	if err := bootEmit(ctx, w, events.BootFailed, f); err != nil {
		return err
	}
	if !w.cfg.Golden.Enable || n < w.cfg.Golden.MaxBootFailures {
		return fmt.Errorf("%w: %s", ErrBootCheckFailed, f.Reason)
	}
	golden, ggen, gres, err := b.d.RestoreGolden(ctx, b.run)
	if err != nil {
		return fmt.Errorf("%w, and restoring the golden generation failed: %w: %s", ErrBootCheckFailed, err, strings.TrimSpace(gres.Tail))
	}
	b.result.Restored = golden
	st.BootFailures, st.BootFailed = 0, ""
	// The commit whose system failed is not deployed again; it stays the
	// reference for downgrade checks, so a fix must be a newer commit
	// (or an allowed, requested downgrade).
	st.Quarantined = st.Deployed
	if err := w.saveState(); err != nil {
		return err
	}
	// Commit names the quarantined commit, so a state rebuilt from the
	// facts keeps refusing it.
	if err := bootEmit(ctx, w, events.GoldenRestored, events.Fact{Commit: st.Quarantined, Result: golden, Generation: ggen, PreviousResult: cur,
		Reason: fmt.Sprintf("%d failed boot checks of %s", n, cur)}); err != nil {
		return err
	}
	return fmt.Errorf("%w %d times; golden generation %d (%s) is now current and the boot default: reboot into it", ErrBootCheckFailed, n, ggen, golden)
}
