package workers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Builders of the nixos driver.
const (
	BuilderNH           = "nh"
	BuilderNixosRebuild = "nixos-rebuild"
	BuilderNix          = "nix"
)

// GoldenRootName is the gcroot under system.gcroots that pins the golden
// generation's store path.
const GoldenRootName = "convoy-golden"

// nixosDriver builds and switches nixosConfigurations.<host> of the
// config repo's flake. The build runs as the worker's own (non-root)
// user; only the profile update and the activation go through the
// elevation program (sudo), so a sudoers rule can allow exactly those.
//
// Rollback and the golden generation work on the system profile directly
// (nix-env --switch-generation, switch-to-configuration), whatever the
// builder, as nixos-rebuild --rollback does.
type nixosDriver struct {
	builder  string
	host     string
	flakeRef string // the part before '#'
	attr     string // nixosConfigurations.<name>
	profile  string
	gcroots  string
	elev     []string
	stateDir string
	booted   string // system.booted_system
	// transient runs switch-to-configuration in a transient systemd unit
	// (as nixos-rebuild does), so that an activation which restarts
	// convoy-worker.service does not kill itself with the worker's cgroup.
	transient bool
}

func newNixOSDriver(c *Config) *nixosDriver {
	flake := c.Flake()
	ref, attr, _ := strings.Cut(flake, "#")
	if attr == "" {
		attr = "nixosConfigurations." + c.Host
	}
	_, err := os.Stat("/run/systemd/system")
	_, lerr := exec.LookPath("systemd-run")
	return &nixosDriver{builder: c.System.Builder, host: c.Host, flakeRef: ref, attr: attr,
		profile: c.System.Profile, gcroots: c.System.GCRoots, elev: c.System.Elevation, stateDir: c.StateDir,
		transient: err == nil && lerr == nil, booted: cmp.Or(c.System.BootedSystem, bootedSystem)}
}

// activation returns the argv that runs path's switch-to-configuration
// with action, through the elevation program, in a transient unit when
// systemd runs the host.
func (d *nixosDriver) activation(path, action string) []string {
	argv := []string{path + "/bin/switch-to-configuration", action}
	if d.transient {
		unit := "convoy-activate-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		argv = append([]string{"systemd-run", "--wait", "--collect", "--pipe", "--quiet", "--service-type=exec", "--unit=" + unit, "--"}, argv...)
	}
	return d.elevated(argv...)
}

// configName is the <name> of nixosConfigurations.<name>.
func (d *nixosDriver) configName() string {
	return strings.TrimPrefix(d.attr, "nixosConfigurations.")
}

func (d *nixosDriver) outLink() string { return filepath.Join(d.stateDir, "result") }

func (d *nixosDriver) elevated(argv ...string) []string {
	return append(append([]string{}, d.elev...), argv...)
}

// nixFlags turn on flakes for Nix versions that still call them
// experimental, without touching the host's nix.conf.
var nixFlags = []string{"--extra-experimental-features", "nix-command flakes"}

// buildArgv returns the build command and the directory it runs in.
func (d *nixosDriver) buildArgv() (dir string, argv []string) {
	switch d.builder {
	case BuilderNH:
		return d.stateDir, []string{"nh", "os", "build", d.flakeRef, "--hostname", d.configName(), "--out-link", d.outLink(), "--no-nom"}
	case BuilderNixosRebuild:
		// nixos-rebuild build leaves ./result in its working directory.
		return d.stateDir, []string{"nixos-rebuild", "build", "--flake", d.flakeRef + "#" + d.configName()}
	}
	argv = append([]string{"nix"}, nixFlags...)
	return d.stateDir, append(argv, "build", d.flakeRef+"#"+d.attr+".config.system.build.toplevel", "--out-link", d.outLink())
}

// switchArgvs returns the commands that make result the running system.
func (d *nixosDriver) switchArgvs(result string) [][]string {
	switch d.builder {
	case BuilderNH:
		argv := []string{"nh", "os", "switch", d.flakeRef, "--hostname", d.configName(), "--no-nom"}
		if len(d.elev) > 0 {
			argv = append(argv, "--elevation-program", d.elev[0])
		}
		return [][]string{argv}
	case BuilderNixosRebuild:
		return [][]string{d.elevated("nixos-rebuild", "switch", "--flake", d.flakeRef+"#"+d.configName())}
	}
	return [][]string{
		d.elevated("nix-env", "-p", d.profile, "--set", result),
		d.activation(result, "switch"),
	}
}

func (d *nixosDriver) Build(ctx context.Context, run Exec) (string, CmdResult, error) {
	_ = os.Remove(d.outLink())
	dir, argv := d.buildArgv()
	res := run(ctx, dir, argv)
	if res.Err != nil {
		return "", res, res.Err
	}
	result, err := filepath.EvalSymlinks(d.outLink())
	if err != nil {
		return "", res, fmt.Errorf("build left no result at %s: %w", d.outLink(), err)
	}
	return result, res, nil
}

func (d *nixosDriver) Switch(ctx context.Context, run Exec, result string) (int, CmdResult, error) {
	var res CmdResult
	for _, argv := range d.switchArgvs(result) {
		res = run(ctx, "/", argv)
		if res.Err != nil {
			return d.generation(), res, res.Err
		}
	}
	if cur, _ := d.Current(ctx, run); result != "" && cur != result {
		return d.generation(), res, fmt.Errorf("switch ran, but the profile %s points at %s, not the built %s", d.profile, cur, result)
	}
	return d.generation(), res, nil
}

// activate points the profile at path (an existing generation when one
// holds it, else a new one) and runs its switch-to-configuration action
// ("switch", or "boot" to make it the boot default only).
func (d *nixosDriver) activate(ctx context.Context, run Exec, path, action string) (int, CmdResult, error) {
	var argv []string
	if gen := d.generationOf(path); gen > 0 {
		argv = d.elevated("nix-env", "-p", d.profile, "--switch-generation", strconv.Itoa(gen))
	} else {
		argv = d.elevated("nix-env", "-p", d.profile, "--set", path)
	}
	res := run(ctx, "/", argv)
	if res.Err != nil {
		return d.generation(), res, res.Err
	}
	res = run(ctx, "/", d.activation(path, action))
	return d.generation(), res, res.Err
}

func (d *nixosDriver) Rollback(ctx context.Context, run Exec, previous string) (int, CmdResult, error) {
	if previous == "" {
		return 0, CmdResult{}, errors.New("the profile had no generation before this switch, so there is nothing to return to")
	}
	return d.activate(ctx, run, previous, "switch")
}

func (d *nixosDriver) Current(context.Context, Exec) (string, error) {
	p, err := filepath.EvalSymlinks(d.profile)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("current: %w", err)
	}
	return p, nil
}

// bootedSystem is where NixOS links the system the machine booted (the
// default of system.booted_system).
const bootedSystem = "/run/booted-system"

// Booted returns the system this boot runs: system.booted_system
// (/run/booted-system) on NixOS,
// which differs from the profile after a boot from an older menu entry or
// before a boot-only activation takes effect; the profile elsewhere.
func (d *nixosDriver) Booted(ctx context.Context, run Exec) (string, error) {
	if p, err := filepath.EvalSymlinks(d.booted); err == nil {
		return p, nil
	}
	return d.Current(ctx, run)
}

// generation returns the profile's current generation number (0 if none).
func (d *nixosDriver) generation() int {
	link, err := os.Readlink(d.profile)
	if err != nil {
		return 0
	}
	return linkGeneration(filepath.Base(d.profile), filepath.Base(link))
}

func linkGeneration(base, name string) int {
	s, ok := strings.CutPrefix(name, base+"-")
	if !ok {
		return 0
	}
	s, ok = strings.CutSuffix(s, "-link")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0
	}
	return n
}

// generationOf returns the newest generation of the profile whose link
// points at path, or 0 if none does (it was deleted, e.g. by
// nix-collect-garbage -d).
func (d *nixosDriver) generationOf(path string) int {
	dir, base := filepath.Dir(d.profile), filepath.Base(d.profile)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var gens []int
	for _, e := range ents {
		if n := linkGeneration(base, e.Name()); n > 0 {
			if t, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && t == path {
				gens = append(gens, n)
			}
		}
	}
	if len(gens) == 0 {
		return 0
	}
	sort.Ints(gens)
	return gens[len(gens)-1]
}

// goldenRoot is the gcroot symlink of the golden generation.
func (d *nixosDriver) goldenRoot() string { return filepath.Join(d.gcroots, GoldenRootName) }

// Golden returns the pinned golden store path, or "" if none is pinned.
func (d *nixosDriver) Golden() string {
	t, err := os.Readlink(d.goldenRoot())
	if err != nil {
		return ""
	}
	return t
}

// Pin makes path the golden generation: a gcroot pointing at the store
// path itself, not at the profile's system-N-link (which
// nix-collect-garbage -d deletes, leaving the root dangling).
func (d *nixosDriver) Pin(ctx context.Context, run Exec, path string) (CmdResult, error) {
	res := run(ctx, "/", d.elevated("nix-store", "--add-root", d.goldenRoot(), "--realise", path))
	if res.Err != nil {
		return res, res.Err
	}
	if got := d.Golden(); got != path {
		return res, fmt.Errorf("pin: %s points at %q, want %s", d.goldenRoot(), got, path)
	}
	return res, nil
}

// RestoreGolden makes the golden generation current and the boot default.
func (d *nixosDriver) RestoreGolden(ctx context.Context, run Exec) (string, int, CmdResult, error) {
	g := d.Golden()
	if g == "" {
		return "", 0, CmdResult{}, errors.New("no golden generation is pinned (" + d.goldenRoot() + " is missing)")
	}
	if _, err := os.Stat(g); err != nil {
		return g, 0, CmdResult{}, fmt.Errorf("golden store path %s is gone: %w", g, err)
	}
	gen, res, err := d.activate(ctx, run, g, "boot")
	return g, gen, res, err
}
