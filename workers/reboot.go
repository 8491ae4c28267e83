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

// bootFiles are the parts of a NixOS system that only a reboot brings
// into effect: a switch activates everything else.
var bootFiles = []string{"kernel", "initrd", "kernel-modules"}

// bootChanges returns the bootFiles whose targets (symlinks resolved)
// differ between the booted system and next. A file missing from both
// is no change; missing from one, it is. The error wraps os.ErrNotExist
// when booted does not exist (no booted system to compare with).
func bootChanges(booted, next string) ([]string, error) {
	if _, err := os.Stat(booted); err != nil {
		return nil, fmt.Errorf("booted system: %w", err)
	}
	var changed []string
	for _, name := range bootFiles {
		a, err := resolve(filepath.Join(booted, name))
		if err != nil {
			return nil, err
		}
		b, err := resolve(filepath.Join(next, name))
		if err != nil {
			return nil, err
		}
		if a != b {
			changed = append(changed, name)
		}
	}
	return changed, nil
}

// resolve returns what path points at, or "" if it does not exist.
func resolve(path string) (string, error) {
	p, err := filepath.EvalSymlinks(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	return p, err
}

// rebootDetector is the driver's side of reboot detection. Only the
// nixos driver has a booted system to compare with; the command driver
// never requires a reboot.
type rebootDetector interface {
	// rebootRequired reports whether result boots something other than
	// the booted system, and what (for people).
	rebootRequired(result string) (bool, string, error)
}

func (d *nixosDriver) rebootRequired(result string) (bool, string, error) {
	booted, err := filepath.EvalSymlinks(d.booted)
	if err != nil {
		return false, "", fmt.Errorf("booted system %s: %w", d.booted, err)
	}
	changed, err := bootChanges(booted, result)
	if err != nil || len(changed) == 0 {
		return false, "", err
	}
	return true, fmt.Sprintf("%s differ from the booted system %s", strings.Join(changed, ", "), booted), nil
}

// needsReboot reports whether result takes a reboot to take full effect.
// Without a booted system to compare with, it does not.
func (w *Worker) needsReboot(result string) (bool, string) {
	d, ok := w.driver.(rebootDetector)
	if !ok || result == "" {
		return false, ""
	}
	req, why, err := d.rebootRequired(result)
	switch {
	case errors.Is(err, os.ErrNotExist):
		w.log.Debug("no booted system to compare with, so no reboot is required", logErr, err)
	case err != nil:
		w.log.Warn("comparing with the booted system failed; no reboot is recorded as required", logErr, err)
	}
	return req, why
}

// pendingReboot is a reboot the worker owes its host: kept in state.json
// from the upgrade that required it until the boot check after the
// reboot (or a newer upgrade that requires none).
type pendingReboot struct {
	UpgradeID  string `json:"upgrade_id"`
	Result     string `json:"result"`
	Generation int    `json:"generation,omitempty"`
	Reason     string `json:"reason,omitempty"`
	// Attempted is when the reboot command last ran: it runs once per
	// occurrence of the window.
	Attempted time.Time `json:"attempted,omitzero"`
}

// pendingAfter returns the pending reboot once upgrade id ended with out:
// a success that requires a reboot (when reboots are allowed) replaces
// it, a success that requires none clears it, and anything else (the
// system is back where it was) keeps it.
func pendingAfter(old *pendingReboot, allow bool, id string, out outcome, why string) *pendingReboot {
	if out.kind != events.UpgradeSucceeded {
		return old
	}
	if !allow || !out.fact.RebootRequired {
		return nil
	}
	return &pendingReboot{UpgradeID: id, Result: out.fact.Result, Generation: out.fact.Generation, Reason: why}
}

// rebootDue reports whether the pending reboot p should start at now:
// the window is open and the command has not run in this occurrence of
// it.
func rebootDue(p *pendingReboot, win events.Window, now time.Time) bool {
	if p == nil {
		return false
	}
	opened, ok := win.Opened(now)
	return ok && (p.Attempted.IsZero() || p.Attempted.Before(opened))
}

// rebootIfDue reboots the host for the pending reboot when its window is
// open: reboot.started first, then the reboot command. A command that
// fails is logged and the reboot stays pending for the next window. It
// returns an error only when the fact could not be appended.
func (w *Worker) rebootIfDue(ctx context.Context) error {
	p := w.state.PendingReboot
	if p == nil {
		return nil
	}
	log := w.log.With(logUpgrade, p.UpgradeID, "result", p.Result)
	if !w.cfg.Reboot.Allow {
		log.Info("reboot.allow is off: the pending reboot is dropped")
		w.state.PendingReboot = nil
		return w.saveState()
	}
	now := w.now()
	if !rebootDue(p, w.window, now) {
		return nil
	}
	if req, _ := w.needsReboot(p.Result); !req {
		log.Info("the booted system already has this kernel, initrd and modules: no reboot needed")
		w.state.PendingReboot = nil
		return w.saveState()
	}
	argv := w.cfg.Reboot.Command
	f := events.Fact{Result: p.Result, Generation: p.Generation, Command: argv,
		Reason: fmt.Sprintf("%s (upgrade %s); inside the reboot window %s", p.Reason, p.UpgradeID, w.window)}
	if err := w.emit(ctx, "", events.RebootStarted, f); err != nil {
		return err
	}
	p.Attempted = now
	if err := w.saveState(); err != nil {
		return err
	}
	lf, err := openCappedLog(filepath.Join(w.logDir, "reboot.log"), int64(w.cfg.Logs.MaxSize))
	if err != nil {
		return fmt.Errorf("reboot log: %w", err)
	}
	defer lf.Close()
	log.Info("rebooting", "command", argv, logReason, f.Reason)
	if res := w.exec(w.cfg.Upgrade.Timeout.Duration, "", lf)(ctx, "/", argv); res.Err != nil {
		log.Error("reboot command failed; the reboot stays pending for the next window", logErr, res.Err, "output", strings.TrimSpace(res.Tail))
	}
	return nil
}

// untilRebootCheck bounds the wait for the next request while a reboot
// is pending, so the window is looked at every rebootCheck.
func (w *Worker) untilRebootCheck(ctx context.Context) (context.Context, context.CancelFunc) {
	if w.state.PendingReboot == nil {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, w.rebootCheck)
}
