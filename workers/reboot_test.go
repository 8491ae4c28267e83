package workers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/events"
)

// system makes a toy system dir under root whose boot files link to the
// store paths named (a missing name has no such file).
func system(t *testing.T, root, name string, links map[string]string) string {
	t.Helper()
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for file, target := range links {
		p := filepath.Join(root, "store", target)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(target), 0o644); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(dir, file)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBootChanges(t *testing.T) {
	root := t.TempDir()
	booted := system(t, root, "booted", map[string]string{"kernel": "linux-6.1/bzImage", "initrd": "initrd-1/initrd", "kernel-modules": "modules-6.1"})
	for _, tc := range []struct {
		name  string
		links map[string]string
		want  []string
	}{
		{"same kernel, initrd and modules", map[string]string{"kernel": "linux-6.1/bzImage", "initrd": "initrd-1/initrd", "kernel-modules": "modules-6.1"}, nil},
		{"new kernel and modules", map[string]string{"kernel": "linux-6.6/bzImage", "initrd": "initrd-1/initrd", "kernel-modules": "modules-6.6"}, []string{"kernel", "kernel-modules"}},
		{"new initrd", map[string]string{"kernel": "linux-6.1/bzImage", "initrd": "initrd-2/initrd", "kernel-modules": "modules-6.1"}, []string{"initrd"}},
		{"no initrd in the new system", map[string]string{"kernel": "linux-6.1/bzImage", "kernel-modules": "modules-6.1"}, []string{"initrd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := system(t, root, tc.name, tc.links)
			got, err := bootChanges(booted, next)
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("bootChanges = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
	t.Run("no boot files in either", func(t *testing.T) {
		a, b := system(t, root, "bare-a", nil), system(t, root, "bare-b", nil)
		if got, err := bootChanges(a, b); err != nil || got != nil {
			t.Fatalf("bootChanges = %v, %v; want no change", got, err)
		}
	})
	t.Run("no booted system", func(t *testing.T) {
		_, err := bootChanges(filepath.Join(root, "nothing"), booted)
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err %v, want one wrapping os.ErrNotExist", err)
		}
	})
}

func TestPendingAfter(t *testing.T) {
	old := &pendingReboot{UpgradeID: "old", Result: "/nix/store/a"}
	ok := func(reboot bool) outcome {
		return outcome{events.UpgradeSucceeded, events.Fact{Result: "/nix/store/b", Generation: 7, RebootRequired: reboot}}
	}
	for _, tc := range []struct {
		name  string
		old   *pendingReboot
		allow bool
		out   outcome
		want  *pendingReboot
	}{
		{"a success that needs a reboot replaces it", old, true, ok(true), &pendingReboot{UpgradeID: "new", Result: "/nix/store/b", Generation: 7, Reason: "why"}},
		{"a success that needs none clears it", old, true, ok(false), nil},
		{"reboots not allowed: nothing pending", nil, false, ok(true), nil},
		{"a failure keeps it (the system was put back)", old, true, outcome{kind: events.UpgradeFailed}, old},
		{"a skip keeps it", old, true, outcome{kind: events.UpgradeSkipped}, old},
		{"a failure with none pending", nil, true, outcome{kind: events.UpgradeFailed}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pendingAfter(tc.old, tc.allow, "new", tc.out, "why")
			if (got == nil) != (tc.want == nil) || (got != nil && *got != *tc.want) {
				t.Fatalf("pendingAfter = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRebootDue(t *testing.T) {
	sat := func(hhmm string) time.Time { return localTime(t, 5, hhmm) }
	win, err := events.ParseWindow("Sat 02:00-05:00")
	if err != nil {
		t.Fatal(err)
	}
	any, _ := events.ParseWindow("")
	p := func(attempted time.Time) *pendingReboot {
		return &pendingReboot{Result: "/nix/store/b", Attempted: attempted}
	}
	for _, tc := range []struct {
		name string
		p    *pendingReboot
		win  events.Window
		now  time.Time
		want bool
	}{
		{"nothing pending", nil, win, sat("03:00"), false},
		{"inside the window", p(time.Time{}), win, sat("03:00"), true},
		{"before the window", p(time.Time{}), win, sat("01:00"), false},
		{"already tried in this window", p(sat("02:30")), win, sat("03:00"), false},
		{"tried in last week's window", p(sat("02:30").AddDate(0, 0, -7)), win, sat("03:00"), true},
		{"any time", p(time.Time{}), any, sat("13:00"), true},
		{"any time, tried today", p(sat("09:00")), any, sat("13:00"), false},
		{"any time, tried yesterday", p(sat("09:00").AddDate(0, 0, -1)), any, sat("13:00"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rebootDue(tc.p, tc.win, tc.now); got != tc.want {
				t.Fatalf("rebootDue = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPendingRebootSurvivesSaveAndLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	at := time.Date(2026, 12, 5, 2, 30, 0, 0, time.UTC)
	want := pendingReboot{UpgradeID: "01M80APSMCKJ2QZA3RZM3W2B3X", Result: "/nix/store/b", Generation: 3, Reason: "kernel differs", Attempted: at}
	if err := saveState(path, &localState{PendingReboot: &want}); err != nil {
		t.Fatal(err)
	}
	s, _, err := loadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.PendingReboot == nil || !s.PendingReboot.Attempted.Equal(at) {
		t.Fatalf("loaded %+v, want %+v", s.PendingReboot, want)
	}
	s.PendingReboot.Attempted = at
	if *s.PendingReboot != want {
		t.Fatalf("loaded %+v, want %+v", *s.PendingReboot, want)
	}
}

// localTime returns 2026-12-<day> hh:mm in local time; the 5th is a
// Saturday.
func localTime(t *testing.T, day int, hhmm string) time.Time {
	t.Helper()
	tm, err := time.ParseInLocation("2006-01-02 15:04", fmt.Sprintf("2026-12-%02d %s", day, hhmm), time.Local)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}
