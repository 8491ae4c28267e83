package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/projections"
)

// The server's storage: its disk reserve (--min-free) and the stream's
// retention (--retain, --retain-bytes). Kept apart from server.go so the
// flags, the run-group parts and the status line read as one.

// storageFlags are convoy server's storage flags.
type storageFlags struct {
	minFree, retain, retainBytes *string
}

// DefaultMinFree is --min-free's default.
const defaultMinFree = "256MiB"

func addStorageFlags(fs *flag.FlagSet) storageFlags {
	return storageFlags{
		minFree:     fs.String("min-free", defaultMinFree, "free space to keep in the data dir: below it new requests are refused (facts of running upgrades are still stored), below an eighth of it every append (0: no reserve)"),
		retain:      fs.String("retain", "0", "remove events older than this (400d, 720h; 0: keep forever)"),
		retainBytes: fs.String("retain-bytes", "0", "remove the oldest events beyond this size of the stream (50GB; 0: no bound)"),
	}
}

// parse returns the reserve and the retention the flags give.
func (f storageFlags) parse() (uint64, bus.Retention, error) {
	var errs []error
	minFree, err := parseBytes(*f.minFree)
	if err != nil {
		errs = append(errs, fmt.Errorf("--min-free %w", err))
	}
	var r bus.Retention
	if r.MaxAge, err = parseRetain(*f.retain); err != nil {
		errs = append(errs, fmt.Errorf("--retain %w", err))
	}
	if r.MaxBytes, err = parseBytes(*f.retainBytes); err != nil {
		errs = append(errs, fmt.Errorf("--retain-bytes %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return 0, r, usageErr(err)
	}
	return uint64(minFree), r, nil
}

// parseRetain reads a retention age: days (400d) or a Go duration
// (720h, 90s); 0 keeps events forever.
func parseRetain(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "0" || v == "" {
		return 0, nil
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(v, "d"); ok {
		var n int64
		if n, err = strconv.ParseInt(days, 10, 64); err == nil && n > 0 && n < 1e5 {
			d = time.Duration(n) * 24 * time.Hour
		} else if err == nil {
			err = errors.New("out of range")
		}
	} else {
		d, err = time.ParseDuration(v)
	}
	if err != nil || d < bus.MinRetainAge {
		return 0, fmt.Errorf("%q: want an age such as 400d or 720h, at least %s, or 0 to keep events forever", v, bus.MinRetainAge)
	}
	return d, nil
}

// snapshotEvery is how often the server snapshots the view for rebuilds
// after events age out: a tenth of the retention, at most hourly; never
// while events are kept forever by age and size.
func snapshotEvery(r bus.Retention) time.Duration {
	switch {
	case r.MaxAge > 0:
		return min(r.MaxAge/10, time.Hour)
	case r.MaxBytes > 0:
		return time.Hour
	}
	return 0
}

// runSnapshots snapshots the view at once and then every `every` until
// ctx ends: a server restarted more often than `every` still snapshots.
func runSnapshots(ctx context.Context, proj *projections.Projector, every time.Duration, log *slog.Logger) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := proj.Snapshot(ctx); err != nil && ctx.Err() == nil {
			log.Warn("snapshot of the status view failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// runStorageGuard runs the server's storage guard, logging each change
// of level in one line. Its error (JetStream could not be restarted after
// a full disk) ends the server with a non-zero exit.
func runStorageGuard(ctx context.Context, srv *bus.Server, conn *bus.Conn, log *slog.Logger) error {
	return srv.WatchStorage(ctx, bus.DefaultStorageCheck, func(old, cur bus.Storage) {
		args := []any{"level", cur.Level, "data", cur.DataDir, "free", bus.FormatBytes(cur.Free), "min_free", bus.FormatBytes(cur.MinFree)}
		if cur.Restarts > old.Restarts {
			// The restart dropped the memory bucket of the workers'
			// leases: create it again (they renew theirs within
			// bus.LeaseTTL/3).
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := provision(pctx, conn, log); err != nil {
				log.Error("provisioning after the JetStream restart", "err", err)
			}
			cancel()
		}
		switch {
		case cur.Level == bus.StorageOK && cur.Restarts > old.Restarts:
			log.Info("bus storage has free space again; JetStream restarted, appends accepted", args...)
		case cur.Level == bus.StorageOK:
			log.Info("bus storage has free space again; appends accepted", args...)
		default:
			log.Error(cur.Problem(), args...)
		}
	})
}

// printStorage writes a line for each server whose storage is not ok.
func printStorage(ctx context.Context, conn *bus.Conn, w io.Writer) {
	sts, err := bus.QueryStorage(ctx, conn)
	if err != nil {
		return
	}
	for _, st := range sts {
		if p := st.Problem(); p != "" {
			fmt.Fprintf(w, "bus storage %s: %s (docs/runbooks.md, \"The bus's disk is full\")\n", strings.ToUpper(string(st.Level)), p)
		}
	}
}

// printRetained says where the retained history starts, if events have
// aged out or the stream is bounded.
func printRetained(ctx context.Context, conn *bus.Conn, w io.Writer) {
	r, err := conn.Retained(ctx)
	if err != nil || (r.FirstSeq <= 1 && r.Retention == (bus.Retention{})) {
		return
	}
	var bounds []string
	if r.Retention.MaxAge > 0 {
		bounds = append(bounds, "--retain "+r.Retention.MaxAge.String())
	}
	if r.Retention.MaxBytes > 0 {
		bounds = append(bounds, "--retain-bytes "+bus.FormatBytes(uint64(r.Retention.MaxBytes)))
	}
	if len(bounds) == 0 {
		bounds = append(bounds, "kept forever from now on")
	}
	if r.Msgs == 0 {
		fmt.Fprintf(w, "retained history: empty, next sequence %d (%s)\n", r.LastSeq+1, strings.Join(bounds, ", "))
		return
	}
	fmt.Fprintf(w, "retained history: from sequence %d (%s) to %d (%s)\n", r.FirstSeq, r.FirstTime.UTC().Format(time.RFC3339), r.LastSeq, strings.Join(bounds, ", "))
}
