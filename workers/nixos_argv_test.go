package workers

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func nixosTestDriver(t *testing.T, builder string, elev []string) *nixosDriver {
	t.Helper()
	c, err := ParseConfig([]byte(`host = "sorrow"
state_dir = "/var/lib/convoy"
[repo]
path = "/home/ops/nix-config"
[system]
driver = "nixos"
builder = "` + builder + `"
`))
	if err != nil {
		t.Fatal(err)
	}
	if elev != nil {
		c.System.Elevation = elev
	}
	d := newNixOSDriver(c)
	d.transient = false // as on a machine without systemd; see TestNixOSActivationInATransientUnit
	return d
}

// nh and nixos-rebuild cannot run here; these pin the exact argv they get.
func TestNixOSDriverArgv(t *testing.T) {
	const result = "/nix/store/abc-nixos-system-sorrow"
	for _, tc := range []struct {
		builder   string
		elev      []string
		buildDir  string
		build     []string
		switchCmd [][]string
	}{
		{
			builder: "nh", buildDir: "/var/lib/convoy",
			build:     []string{"nh", "os", "build", "/home/ops/nix-config", "--hostname", "sorrow", "--out-link", "/var/lib/convoy/result", "--no-nom"},
			switchCmd: [][]string{{"nh", "os", "switch", "/home/ops/nix-config", "--hostname", "sorrow", "--no-nom", "--elevation-program", "sudo"}},
		},
		{
			builder: "nixos-rebuild", buildDir: "/var/lib/convoy",
			build:     []string{"nixos-rebuild", "build", "--flake", "/home/ops/nix-config#sorrow"},
			switchCmd: [][]string{{"sudo", "nixos-rebuild", "switch", "--flake", "/home/ops/nix-config#sorrow"}},
		},
		{
			builder: "nix", buildDir: "/var/lib/convoy",
			build: []string{"nix", "--extra-experimental-features", "nix-command flakes", "build",
				"/home/ops/nix-config#nixosConfigurations.sorrow.config.system.build.toplevel", "--out-link", "/var/lib/convoy/result"},
			switchCmd: [][]string{
				{"sudo", "nix-env", "-p", "/nix/var/nix/profiles/system", "--set", result},
				{"sudo", result + "/bin/switch-to-configuration", "switch"},
			},
		},
		{
			builder: "nix", elev: []string{"doas", "-n"}, buildDir: "/var/lib/convoy",
			build: []string{"nix", "--extra-experimental-features", "nix-command flakes", "build",
				"/home/ops/nix-config#nixosConfigurations.sorrow.config.system.build.toplevel", "--out-link", "/var/lib/convoy/result"},
			switchCmd: [][]string{
				{"doas", "-n", "nix-env", "-p", "/nix/var/nix/profiles/system", "--set", result},
				{"doas", "-n", result + "/bin/switch-to-configuration", "switch"},
			},
		},
		{
			builder: "nix", elev: []string{}, buildDir: "/var/lib/convoy",
			build: []string{"nix", "--extra-experimental-features", "nix-command flakes", "build",
				"/home/ops/nix-config#nixosConfigurations.sorrow.config.system.build.toplevel", "--out-link", "/var/lib/convoy/result"},
			switchCmd: [][]string{
				{"nix-env", "-p", "/nix/var/nix/profiles/system", "--set", result},
				{result + "/bin/switch-to-configuration", "switch"},
			},
		},
	} {
		d := nixosTestDriver(t, tc.builder, tc.elev)
		dir, build := d.buildArgv()
		if dir != tc.buildDir || !reflect.DeepEqual(build, tc.build) {
			t.Errorf("%s build: %q in %s\n want %q in %s", tc.builder, build, dir, tc.build, tc.buildDir)
		}
		if got := d.switchArgvs(result); !reflect.DeepEqual(got, tc.switchCmd) {
			t.Errorf("%s %v switch: %q\n want %q", tc.builder, tc.elev, got, tc.switchCmd)
		}
	}
}

// Rollback returns to the generation that holds the previous system, or
// adds one when its link was collected; then activates it.
func TestNixOSRollbackArgv(t *testing.T) {
	dir := t.TempDir()
	d := nixosTestDriver(t, "nh", []string{"sudo"})
	d.profile = filepath.Join(dir, "system")
	for gen, target := range map[string]string{"system-3-link": "/nix/store/old", "system-4-link": "/nix/store/new"} {
		if err := os.Symlink(target, filepath.Join(dir, gen)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("system-4-link", d.profile); err != nil {
		t.Fatal(err)
	}
	var calls [][]string
	run := func(_ context.Context, _ string, argv []string, _ ...string) CmdResult {
		calls = append(calls, argv)
		return CmdResult{Argv: argv}
	}
	if _, _, err := d.Rollback(t.Context(), run, "/nix/store/old"); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"sudo", "nix-env", "-p", d.profile, "--switch-generation", "3"},
		{"sudo", "/nix/store/old/bin/switch-to-configuration", "switch"},
	}
	if !reflect.DeepEqual(calls, want) {
		t.Fatalf("rollback ran %q\nwant %q", calls, want)
	}
	calls = nil
	if _, _, err := d.Rollback(t.Context(), run, "/nix/store/collected"); err != nil {
		t.Fatal(err)
	}
	if want := []string{"sudo", "nix-env", "-p", d.profile, "--set", "/nix/store/collected"}; !reflect.DeepEqual(calls[0], want) {
		t.Fatalf("rollback to a collected generation ran %q, want %q", calls[0], want)
	}
	if g := d.generation(); g != 4 {
		t.Fatalf("generation %d, want 4", g)
	}
}

// Under systemd the activation runs in a transient unit of its own, as
// nixos-rebuild does, so that restarting convoy-worker.service cannot kill
// it halfway.
func TestNixOSActivationInATransientUnit(t *testing.T) {
	d := nixosTestDriver(t, "nix", []string{"sudo"})
	d.transient = true
	got := d.switchArgvs("/nix/store/abc")[1]
	want := []string{"sudo", "systemd-run", "--wait", "--collect", "--pipe", "--quiet", "--service-type=exec"}
	if !reflect.DeepEqual(got[:len(want)], want) || !strings.HasPrefix(got[len(want)], "--unit=convoy-activate-") ||
		!reflect.DeepEqual(got[len(want)+1:], []string{"--", "/nix/store/abc/bin/switch-to-configuration", "switch"}) {
		t.Fatalf("activation argv %q", got)
	}
}
