package workers

import (
	"context"
	"errors"
	"fmt"
	"os"
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
func (w *Worker) pin(ctx context.Context, id string) error {
	d, ok := w.driver.(goldenDriver)
	switch {
	case !ok:
		return w.finish(ctx, id, events.UpgradeRejected, events.Fact{Stage: "golden", Reason: "pin refused: the golden generation needs system.driver = \"nixos\""})
	case !w.cfg.Golden.Enable:
		return w.finish(ctx, id, events.UpgradeRejected, events.Fact{Stage: "golden", Reason: "pin refused: golden.enable is false in this host's config"})
	}
	lf, err := os.OpenFile(filepath.Join(w.logDir, id+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pin log: %w", err)
	}
	defer lf.Close()
	run := newExec(w.cfg.Upgrade.Timeout.Duration, w.env(id), lf)
	cur, err := d.Current(ctx, run)
	if err != nil || cur == "" {
		return w.finish(ctx, id, events.UpgradeRejected, events.Fact{Stage: "golden", Reason: fmt.Sprintf("pin refused: no current generation (%v)", err)})
	}
	gen := d.generation()
	if !w.state.validated(cur) {
		return w.finish(ctx, id, events.UpgradeRejected, events.Fact{Stage: "golden", Result: cur, Generation: gen,
			Reason: fmt.Sprintf("pin refused: generation %d (%s) has not passed a boot check; reboot into it and let convoy boot-check validate it", gen, cur)})
	}
	res, err := d.Pin(ctx, run, cur)
	if err != nil {
		f := cmdFact(res)
		f.Stage, f.Result, f.Reason = "golden", cur, "pin failed: "+err.Error()
		return w.finish(ctx, id, events.UpgradeRejected, f)
	}
	if err := w.emit(ctx, id, events.GoldenPinned, events.Fact{Result: cur, Generation: gen}); err != nil {
		return err
	}
	return w.ended(id)
}

// bootEmit appends a boot-check fact without waiting long for the bus:
// the fact is in the outbox first, so if the bus does not acknowledge it
// in time the check goes on (a failing boot must still fall back) and the
// worker publishes it later.
func bootEmit(ctx context.Context, w *Worker, br *BootResult, k events.Kind, f events.Fact) error {
	ectx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := w.emit(ectx, "", k, f)
	if err != nil && ectx.Err() != nil && ctx.Err() == nil {
		w.log.Warn("the bus did not acknowledge in time; the fact waits in the outbox", logKind, k)
		w.conn, br.Queued = nil, true
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
	if w.conn != nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := w.syncSeq(cctx)
		if err == nil {
			err = w.flushOutbox(cctx)
		}
		cancel()
		if err != nil {
			w.log.Warn("bus unreachable at boot; events wait in the outbox", logErr, err)
			w.conn = nil
		}
	}
	br.Queued = w.conn == nil
	lf, err := os.OpenFile(filepath.Join(w.logDir, "boot-check.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return br, fmt.Errorf("boot-check log: %w", err)
	}
	ownLikeParent(lf.Name())
	defer lf.Close()
	run := newExec(time.Minute, w.env(""), lf)
	// Validate, pin or count what this boot runs, not what the profile
	// would boot next.
	cur, err := d.Booted(ctx, run)
	if err != nil {
		return br, err
	}
	br.Result = cur
	gen := d.generationOf(cur)
	start := time.Now()
	var failed *CmdResult
	for _, svc := range w.cfg.Golden.ValidateServices {
		res := run(ctx, "/", append(append([]string{}, w.cfg.Golden.ServiceCheck...), svc))
		if res.Err != nil {
			failed = &res
			break
		}
	}
	if failed == nil {
		br.Validated = true
		w.state.markValidated(cur)
		w.state.BootFailures, w.state.BootFailed = 0, ""
		if err := w.saveState(); err != nil {
			return br, err
		}
		if err := bootEmit(ctx, w, &br, events.BootValidated, events.Fact{Result: cur, Generation: gen, DurationMS: time.Since(start).Milliseconds()}); err != nil {
			return br, err
		}
		if w.cfg.Golden.Enable && *w.cfg.Golden.AutoPinAfterBoot && d.Golden() != cur {
			res, err := d.Pin(ctx, run, cur)
			if err != nil {
				return br, fmt.Errorf("pin %s: %w: %s", cur, err, strings.TrimSpace(res.Tail))
			}
			br.Pinned = true
			if err := bootEmit(ctx, w, &br, events.GoldenPinned, events.Fact{Result: cur, Generation: gen}); err != nil {
				return br, err
			}
		}
		return br, nil
	}
	if w.state.BootFailed != cur {
		w.state.BootFailures, w.state.BootFailed = 0, cur
	}
	w.state.BootFailures++
	br.Failures = w.state.BootFailures
	if err := w.saveState(); err != nil {
		return br, err
	}
	f := cmdFact(*failed)
	f.Result, f.Generation, f.Failures = cur, gen, br.Failures
	f.Reason = fmt.Sprintf("service check failed (%d of %d allowed): %s", br.Failures, w.cfg.Golden.MaxBootFailures, f.Reason)
	if err := bootEmit(ctx, w, &br, events.BootFailed, f); err != nil {
		return br, err
	}
	if !w.cfg.Golden.Enable || br.Failures < w.cfg.Golden.MaxBootFailures {
		return br, fmt.Errorf("%w: %s", ErrBootCheckFailed, f.Reason)
	}
	golden, ggen, res, err := d.RestoreGolden(ctx, run)
	if err != nil {
		return br, fmt.Errorf("%w, and restoring the golden generation failed: %w: %s", ErrBootCheckFailed, err, strings.TrimSpace(res.Tail))
	}
	br.Restored = golden
	w.state.BootFailures, w.state.BootFailed = 0, ""
	// The commit whose system failed is not deployed again; it stays the
	// reference for downgrade checks, so a fix must be a newer commit
	// (or an allowed, requested downgrade).
	w.state.Quarantined = w.state.Deployed
	if err := w.saveState(); err != nil {
		return br, err
	}
	if err := bootEmit(ctx, w, &br, events.GoldenRestored, events.Fact{Result: golden, Generation: ggen, PreviousResult: cur,
		Reason: fmt.Sprintf("%d failed boot checks of %s", br.Failures, cur)}); err != nil {
		return br, err
	}
	return br, fmt.Errorf("%w %d times; golden generation %d (%s) is now current and the boot default: reboot into it", ErrBootCheckFailed, br.Failures, ggen, golden)
}
