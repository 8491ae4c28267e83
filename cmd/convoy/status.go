package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers/rollout"
	"github.com/convoy-fleet/convoy/projections"
)

type statusCmd struct{ env *env }

// Output formats of convoy status.
const (
	formatTable   = "table"
	formatJSON    = "json"
	formatOneline = "oneline"
)

func (c *statusCmd) Run(ctx context.Context, args []string) error {
	fs := c.env.flags("status", "status [HOST...] [--tag T] [--json | --format table|json|oneline] [--watch [--interval D]]",
		example{"show every host's state, commit and last upgrade", "convoy status"},
		example{"one host, as JSON", "convoy status sorrow --json"},
		example{"the hosts tagged canary in their worker config", "convoy status --tag canary"},
		example{"one line for a status bar", "convoy status --format oneline"},
		example{"redraw the table whenever the fleet changes, until Ctrl-C", "convoy status --watch"},
		example{"a new line for a status bar (waybar, i3blocks) at every change", "convoy status --watch --format oneline"},
	)
	asJSON := fs.Bool("json", false, "print JSON (same as --format json)")
	format := fs.String("format", formatTable, "table, json (the rows as an array) or oneline (one summary line)")
	tag := fs.String("tag", "", "only hosts with this tag (tags = [...] in the worker config)")
	watch := fs.Bool("watch", false, "print again whenever the status view changes, until interrupted")
	interval := fs.Duration("interval", time.Second, "with --watch: how often to look whether the view changed")
	hosts, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *asJSON && *format != formatTable && *format != formatJSON:
		return usageErr(fmt.Errorf("--json and --format %s: give one", *format))
	case *asJSON:
		*format = formatJSON
	case *format != formatTable && *format != formatJSON && *format != formatOneline:
		return usageErr(fmt.Errorf("--format %q: want table, json or oneline", *format))
	}
	if *interval <= 0 {
		return usageErr(fmt.Errorf("--interval %s: want a positive duration", *interval))
	}
	if *tag != "" {
		if err := events.ValidateTag(*tag); err != nil {
			return usageErr(fmt.Errorf("--tag: %w", err))
		}
	}
	for _, h := range hosts {
		if err := events.ValidateHost(h); err != nil {
			return usageErr(err)
		}
	}
	conn, fleet, err := c.env.openFleet(ctx, "status")
	if err != nil {
		return err
	}
	defer conn.Close()
	v := statusView{cmd: c, conn: conn, fleet: fleet, hosts: hosts, tag: *tag, format: *format}
	if *watch {
		return v.watch(ctx, *interval)
	}
	sts, err := v.rows(ctx)
	if err != nil {
		return err
	}
	printStorage(ctx, conn, c.env.stderr)
	if lag, err := fleet.Lag(ctx); err == nil && lag > 0 {
		fmt.Fprintf(c.env.stderr, "note: the status view is %d event(s) behind the stream (is `convoy server` running its projector?)\n", lag)
	}
	return v.render(ctx, c.env.stdout, sts, false)
}

// statusView reads and prints what one convoy status asks for.
type statusView struct {
	cmd    *statusCmd
	conn   *bus.Conn
	fleet  *projections.Fleet
	hosts  []string
	tag    string
	format string
}

// rows reads the hosts' rows, those with the tag.
func (v *statusView) rows(ctx context.Context) ([]projections.Status, error) {
	sts, err := v.cmd.read(ctx, v.fleet, v.hosts)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(sts, func(s projections.Status) bool { return !s.HasTag(v.tag) }), nil
}

// render prints sts in the format; compact writes JSON on one line (one
// line per change under --watch).
func (v *statusView) render(ctx context.Context, w io.Writer, sts []projections.Status, compact bool) error {
	switch v.format {
	case formatJSON:
		if sts == nil {
			sts = []projections.Status{}
		}
		enc := json.NewEncoder(w)
		if !compact {
			enc.SetIndent("", "  ")
		}
		return enc.Encode(sts)
	case formatOneline:
		_, err := fmt.Fprintln(w, oneline(sts))
		return err
	}
	if len(sts) == 0 && v.tag != "" {
		fmt.Fprintf(w, "no host has tag %q (tags = [...] in a worker config, shown once its worker started)\n", v.tag)
		return nil
	}
	if len(sts) == 0 {
		fmt.Fprintln(w, "no hosts yet: start a worker (convoy worker --config FILE)")
		return nil
	}
	t := table(w)
	row(t, "HOST", "STATE", "STAGE", "COMMIT", "RESULT", "GOLDEN", "LAST UPGRADE", "WORKER", "TAGS", "UPDATED", "REBOOT")
	for _, s := range sts {
		last := s.LastResult
		if last != "" && s.LastFailed != "" {
			last += " (" + s.LastFailed + ")"
		}
		golden := filepath.Base(s.Golden)
		if s.Golden == "" {
			golden = "-"
		}
		row(t, s.Host, s.State, dash(s.Stage), dash(short(s.Commit)), dash(filepath.Base(s.Result)), golden, dash(last), dash(s.Worker), dash(strings.Join(s.Tags, ",")), ago(s.Updated), reboot(s.RebootRequired))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	return v.cmd.printRollouts(ctx, w, v.conn)
}

// rereadEvery is how often status --watch reads the rows though the
// view's checkpoint has not moved, to show a worker that fell silent.
const rereadEvery = 10 * time.Second

// watch prints the view, then looks every interval whether the
// projector has moved its checkpoint, and if what it prints changed
// (see snapshot) prints it again: the table redrawn in place on
// a terminal, otherwise each render after the last, a blank line between
// tables; oneline and JSON print one line per change. It returns nil when
// ctx ends. A failed read is reported on stderr and tried again.
func (v *statusView) watch(ctx context.Context, interval time.Duration) error {
	tty := isTerminal(v.cmd.env.stdout)
	if !tty && v.format == formatTable {
		fmt.Fprintln(v.cmd.env.stderr, "watching; Ctrl-C to stop")
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var (
		seen     bool
		lastCP   uint64
		lastRead time.Time
		lastKey  string
		failing  bool
		rendered int
	)
	for {
		cp, err := v.fleet.Checkpoint(ctx)
		// A worker falls silent without an event (its lease expires):
		// read the rows now and then even when the view has not moved.
		if err == nil && (!seen || cp != lastCP || time.Since(lastRead) >= rereadEvery) {
			lastRead = time.Now()
			var key string
			var out bytes.Buffer
			key, err = v.snapshot(ctx, &out)
			if err == nil {
				seen, lastCP = true, cp
				if key != lastKey {
					lastKey = key
					switch {
					case tty && v.format == formatTable:
						fmt.Fprintf(v.cmd.env.stdout, "\x1b[H\x1b[2J%s (convoy status --watch; Ctrl-C to stop)\n\n", time.Now().Format(time.TimeOnly))
					case rendered > 0 && v.format == formatTable:
						fmt.Fprintln(v.cmd.env.stdout)
					}
					if _, err := v.cmd.env.stdout.Write(out.Bytes()); err != nil {
						return err
					}
					rendered++
				}
			}
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case !seen && errors.Is(err, projections.ErrUnknownHost):
			return err // a named host the view has never seen, as without --watch
		case err != nil && !failing:
			fmt.Fprintf(v.cmd.env.stderr, "convoy status: %v; trying again\n", err)
			failing = true
		case err == nil:
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// snapshot renders the view into out and returns what identifies it:
// for oneline and JSON the render itself; for the table the rows (each
// carries the last sequence applied to it) and the rollout lines, not
// the render, whose UPDATED column ages on its own.
func (v *statusView) snapshot(ctx context.Context, out *bytes.Buffer) (string, error) {
	sts, err := v.rows(ctx)
	if err != nil {
		return "", err
	}
	if err := v.render(ctx, out, sts, true); err != nil {
		return "", err
	}
	if v.format != formatTable {
		return out.String(), nil
	}
	key, err := json.Marshal(sts)
	if err != nil {
		return "", err
	}
	// The rollout lines follow the table.
	if i := bytes.Index(out.Bytes(), []byte("\nrollout ")); i >= 0 {
		key = append(key, out.Bytes()[i:]...)
	}
	return string(key), nil
}

// oneline summarises sts for a status bar: "convoy: 12 hosts, 11 ok,
// 1 failed (sorrow), 2 upgrading". Only the counts that are not zero are
// shown, after the hosts and ok ones; failed and offline hosts are
// named, the first three of them.
func oneline(sts []projections.Status) string {
	if len(sts) == 0 {
		return "convoy: no hosts"
	}
	var ok int
	var failed, upgrading, queued, unknown, offline, reboot []string
	for _, s := range sts {
		switch s.State {
		case projections.StateIdle:
			ok++
		case projections.StateFailed:
			failed = append(failed, s.Host)
		case projections.StateUpgrading:
			upgrading = append(upgrading, s.Host)
		case projections.StateQueued:
			queued = append(queued, s.Host)
		default:
			unknown = append(unknown, s.Host)
		}
		if s.Worker == projections.WorkerOffline || s.Worker == projections.WorkerSilent {
			offline = append(offline, s.Host)
		}
		if s.RebootRequired {
			reboot = append(reboot, s.Host)
		}
	}
	host := "hosts"
	if len(sts) == 1 {
		host = "host"
	}
	parts := []string{fmt.Sprintf("%d %s", len(sts), host), fmt.Sprintf("%d ok", ok)}
	add := func(hs []string, what string, named bool) {
		if len(hs) == 0 {
			return
		}
		p := fmt.Sprintf("%d %s", len(hs), what)
		if named {
			names := hs[:min(3, len(hs))]
			p += " (" + strings.Join(names, ", ")
			if len(hs) > 3 {
				p += fmt.Sprintf(", +%d", len(hs)-3)
			}
			p += ")"
		}
		parts = append(parts, p)
	}
	add(failed, "failed", true)
	add(upgrading, "upgrading", false)
	add(queued, "queued", false)
	add(unknown, "unknown", false)
	add(offline, "offline", true)
	add(reboot, "reboot required", false)
	return "convoy: " + strings.Join(parts, ", ")
}

// isTerminal reports whether w is a terminal, where --watch redraws.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// printRollouts lists the rollouts that have not ended, under the table.
func (c *statusCmd) printRollouts(ctx context.Context, w io.Writer, conn *bus.Conn) error {
	rs, err := rollout.List(ctx, conn)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if r.End != "" {
			continue
		}
		fmt.Fprintf(w, "rollout %s: %s, wave %d of %d, rev %s (convoy rollout status %s)\n", r.ID, r.State(), len(r.Waves), len(r.Plan.Waves), short(r.Plan.Rev), r.ID)
	}
	return nil
}

// read returns the named hosts' rows, in the order named, or every row.
func (c *statusCmd) read(ctx context.Context, fleet *projections.Fleet, hosts []string) ([]projections.Status, error) {
	if len(hosts) == 0 {
		return fleet.All(ctx)
	}
	byHost, err := fleet.Hosts(ctx, hosts)
	if err != nil {
		return nil, err
	}
	sts := make([]projections.Status, 0, len(hosts))
	for _, h := range hosts {
		s, ok := byHost[h]
		if !ok {
			return nil, usageErr(projections.UnknownHost(h))
		}
		sts = append(sts, s)
	}
	return sts, nil
}

// reboot marks a host whose running system waits for a reboot.
func reboot(required bool) string {
	if required {
		return "required"
	}
	return "-"
}

func dash(s string) string {
	if s == "" || s == "." {
		return "-"
	}
	return s
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}
