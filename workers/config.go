package workers

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/convoy-fleet/convoy/events"
)

// Config is a worker's TOML configuration. Load it with LoadConfig, which
// refuses unknown keys, fills defaults and validates. Every command the
// worker runs comes from this file; nothing on the bus becomes a command.
type Config struct {
	Host string `toml:"host"`
	// Tags put the host in groups ("canary", "web") that producers
	// select hosts by (convoy upgrade --tag).
	Tags []string `toml:"tags"`
	NATS string   `toml:"nats"`
	// NKey is the host's credential (an nkey seed file from
	// `convoy creds add-host`); TLSCA the CA of the server's certificate.
	NKey     string        `toml:"nkey"`
	TLSCA    string        `toml:"tls_ca"`
	StateDir string        `toml:"state_dir"`
	Repo     RepoConfig    `toml:"repo"`
	Secrets  *RepoConfig   `toml:"secrets"`
	Upgrade  UpgradeConfig `toml:"upgrade"`
	System   SystemConfig  `toml:"system"`
	Golden   GoldenConfig  `toml:"golden"`
	Reboot   RebootConfig  `toml:"reboot"`
	Logs     LogsConfig    `toml:"logs"`
}

// LogsConfig bounds the upgrade logs kept under state_dir/logs.
type LogsConfig struct {
	// Keep is how many upgrade logs are kept, the newest; default 50.
	Keep int `toml:"keep"`
	// MaxAge, if set, also removes upgrade logs last written longer ago.
	MaxAge Duration `toml:"max_age"`
	// MaxSize caps one log: past it, the log keeps its head and its
	// tail with a line saying how many bytes were dropped between them;
	// default 10MB.
	MaxSize Size `toml:"max_size"`
}

// Log defaults.
const (
	DefaultLogsKeep    = 50
	DefaultLogsMaxSize = 10_000_000
	minLogsMaxSize     = 4096
)

// RepoConfig is a git repository the worker tracks.
type RepoConfig struct {
	Path   string `toml:"path"`
	Remote string `toml:"remote"` // default "origin"
	Branch string `toml:"branch"` // default "main"
	// VerifyCommits builds only a target commit with a good SSH signature
	// from a key in AllowedSigners (git's gpg.ssh.allowedSignersFile).
	VerifyCommits  bool   `toml:"verify_commits"`
	AllowedSigners string `toml:"allowed_signers"`
}

// UpgradeConfig shapes the pipeline.
type UpgradeConfig struct {
	// PreUpdateHooks run with sh -c in the repo before the pull.
	PreUpdateHooks []string `toml:"pre_update_hooks"`
	// BuildBeforeSwitch builds before switching; default true. Validation
	// checks run either way, before the switch.
	BuildBeforeSwitch *bool `toml:"build_before_switch"`
	// ValidationChecks run with sh -c after the build.
	ValidationChecks []string `toml:"validation_checks"`
	// OnValidationFailure is rollback (default), notify or ignore.
	OnValidationFailure string `toml:"on_validation_failure"`
	// HealthChecks run with sh -c after the switch; a failure rolls back.
	HealthChecks []string `toml:"health_checks"`
	// Timeout bounds each command the pipeline runs (each hook, check,
	// git command, build and switch); default 30m.
	Timeout Duration `toml:"timeout"`
	// AllowDowngrade lets a request with allow_downgrade deploy an
	// ancestor of the deployed commit. Default false.
	AllowDowngrade bool `toml:"allow_downgrade"`
	// AllowRolloutRollback lets a rollout's rollback (a request with
	// rollout_rollback, sent by the rollout controller after a halt with
	// --on-failure rollback) deploy an ancestor of the deployed commit.
	// Default false.
	AllowRolloutRollback bool `toml:"allow_rollout_rollback"`
}

// SystemConfig selects and configures the system driver.
type SystemConfig struct {
	// Driver is "command" (argv from this file) or "nixos".
	Driver string `toml:"driver"`
	// Command driver: Build runs in the repo and prints the result as its
	// last stdout line; Switch gets it as CONVOY_RESULT; Current prints
	// what is deployed now.
	Build   []string `toml:"build"`
	Switch  []string `toml:"switch"`
	Current []string `toml:"current"`
	// NixOS driver.
	Builder   string   `toml:"builder"`
	Flake     string   `toml:"flake"`
	Profile   string   `toml:"profile"`
	GCRoots   string   `toml:"gcroots"`
	Elevation []string `toml:"elevation"`
	// BootedSystem is the link to the system the machine booted
	// (/run/booted-system); tests point it at a directory.
	BootedSystem string `toml:"booted_system"`
}

// RebootConfig lets the worker reboot the host after an upgrade whose
// kernel, initrd or kernel modules differ from the booted system's.
type RebootConfig struct {
	// Allow turns reboots on; default false.
	Allow bool `toml:"allow"`
	// Window is when a reboot may start, in local time: "Sat 02:00-05:00",
	// "02:00-05:00" (every day) or "22:00-02:00" (across midnight). Empty
	// means any time.
	Window string `toml:"window"`
	// Command reboots the host; default <system.elevation> systemctl reboot.
	Command []string `toml:"command"`
}

// GoldenConfig configures the golden generation and boot checks.
type GoldenConfig struct {
	Enable           bool     `toml:"enable"`
	ValidateServices []string `toml:"validate_services"`
	ServiceCheck     []string `toml:"service_check"`
	AutoPinAfterBoot *bool    `toml:"auto_pin_after_boot"`
	MaxBootFailures  int      `toml:"max_boot_failures"`
}

// Validation failure actions.
const (
	OnFailRollback = "rollback"
	OnFailNotify   = "notify"
	OnFailIgnore   = "ignore"
)

// Drivers.
const (
	DriverCommand = "command"
	DriverNixOS   = "nixos"
)

// Duration is a time.Duration written as "30m" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, such as 30m or 90s", b)
	}
	d.Duration = v
	return nil
}

// MarshalText formats the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Size is a number of bytes written as "10MB" in TOML: a whole number
// with a unit B, kB/KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers
// of 1024).
type Size int64

var sizeUnits = []struct {
	suffix string
	n      int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"kB", 1e3}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
}

// UnmarshalText parses a size such as 10MB.
func (s *Size) UnmarshalText(b []byte) error {
	str := strings.TrimSpace(string(b))
	for _, u := range sizeUnits {
		num, ok := strings.CutSuffix(str, u.suffix)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
		if err != nil || n < 0 || n > math.MaxInt64/u.n {
			break
		}
		*s = Size(n * u.n)
		return nil
	}
	return fmt.Errorf("size %q: want a whole number with a unit, such as 10MB or 512KiB", b)
}

// MarshalText formats the size in bytes.
func (s Size) MarshalText() ([]byte, error) {
	return []byte(strconv.FormatInt(int64(s), 10) + "B"), nil
}

// LoadConfig reads, defaults and validates a worker config. Unknown keys
// are errors that name the key and its line.
func LoadConfig(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses TOML, applies defaults and validates.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		var sm *toml.StrictMissingError
		var de *toml.DecodeError
		switch {
		case errors.As(err, &sm):
			errs := make([]error, 0, len(sm.Errors))
			for _, e := range sm.Errors {
				row, _ := e.Position()
				errs = append(errs, fmt.Errorf("line %d: unknown key %q (check its spelling and section; see docs/config.md)", row, strings.Join(e.Key(), ".")))
			}
			return nil, errors.Join(errs...)
		case errors.As(err, &de):
			row, col := de.Position()
			return nil, fmt.Errorf("line %d, column %d: %s", row, col, de.Error())
		}
		return nil, err
	}
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *Config) setDefaults() {
	if c.NATS == "" {
		c.NATS = os.Getenv("CONVOY_NATS_URL")
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/convoy"
	}
	if c.Repo.Remote == "" {
		c.Repo.Remote = "origin"
	}
	if c.Repo.Branch == "" {
		c.Repo.Branch = "main"
	}
	if c.Secrets != nil {
		if c.Secrets.Remote == "" {
			c.Secrets.Remote = "origin"
		}
		if c.Secrets.Branch == "" {
			c.Secrets.Branch = "main"
		}
	}
	if c.Upgrade.OnValidationFailure == "" {
		c.Upgrade.OnValidationFailure = OnFailRollback
	}
	if c.Upgrade.Timeout.Duration == 0 {
		c.Upgrade.Timeout.Duration = 30 * time.Minute
	}
	if c.System.Driver == "" {
		c.System.Driver = DriverCommand
	}
	if c.System.Driver == DriverNixOS {
		if c.System.Builder == "" {
			c.System.Builder = BuilderNH
		}
		if c.System.Profile == "" {
			c.System.Profile = "/nix/var/nix/profiles/system"
		}
		if c.System.GCRoots == "" {
			c.System.GCRoots = "/nix/var/nix/gcroots"
		}
		if c.System.Elevation == nil {
			c.System.Elevation = []string{"sudo"}
		}
		if c.System.BootedSystem == "" {
			c.System.BootedSystem = bootedSystem
		}
	}
	if c.Reboot.Command == nil {
		c.Reboot.Command = append(append([]string{}, c.System.Elevation...), "systemctl", "reboot")
	}
	if len(c.Golden.ServiceCheck) == 0 {
		c.Golden.ServiceCheck = []string{"systemctl", "is-active", "--quiet"}
	}
	if c.Golden.MaxBootFailures == 0 {
		c.Golden.MaxBootFailures = 2
	}
	if c.Logs.Keep == 0 {
		c.Logs.Keep = DefaultLogsKeep
	}
	if c.Logs.MaxSize == 0 {
		c.Logs.MaxSize = DefaultLogsMaxSize
	}
}

// Validate reports every problem in c at once. It does not need the
// defaults applied (ParseConfig applies them first).
func (c *Config) Validate() error {
	v := &problems{}
	if c.Host == "" {
		v.add("host: missing (the host's short name, e.g. host = \"sorrow\")")
	} else if err := events.ValidateHost(c.Host); err != nil {
		v.add("host: %w", err)
	}
	for i, tag := range c.Tags {
		if err := events.ValidateTag(tag); err != nil {
			v.add("tags[%d]: %w", i, err)
		}
	}
	for _, f := range []struct{ key, path string }{{"nkey", c.NKey}, {"tls_ca", c.TLSCA}} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			v.add("%s %q: must be an absolute path", f.key, f.path)
		}
	}
	if !filepath.IsAbs(c.StateDir) {
		v.add("state_dir %q: must be an absolute path", c.StateDir)
	}
	v.repo("repo", c.Repo)
	if c.Secrets != nil {
		v.repo("secrets", *c.Secrets)
	}
	v.upgrade(c.Upgrade)
	v.system(c.System, c.Upgrade.BuildsFirst())
	v.reboot(c.Reboot, c.System.Driver)
	if c.Golden.MaxBootFailures < 1 {
		v.add("golden.max_boot_failures %d: must be at least 1", c.Golden.MaxBootFailures)
	}
	v.logs(c.Logs)
	return errors.Join(v.errs...)
}

// problems collects what Validate finds.
type problems struct{ errs []error }

func (v *problems) add(format string, a ...any) { v.errs = append(v.errs, fmt.Errorf(format, a...)) }

func (v *problems) repo(name string, r RepoConfig) {
	if r.Path == "" {
		v.add("%s.path: missing (the git checkout to track)", name)
	} else if !filepath.IsAbs(r.Path) {
		v.add("%s.path %q: must be an absolute path", name, r.Path)
	}
	if strings.HasPrefix(r.Remote, "-") || strings.ContainsAny(r.Remote, " \t\n") {
		v.add("%s.remote %q: not a remote name", name, r.Remote)
	}
	if strings.HasPrefix(r.Branch, "-") || strings.ContainsAny(r.Branch, " \t\n~^:?*[\\") {
		v.add("%s.branch %q: not a branch name", name, r.Branch)
	}
	if r.VerifyCommits && r.AllowedSigners == "" {
		v.add("%s.verify_commits: needs %s.allowed_signers, the file of keys allowed to sign (see ssh-keygen(1) ALLOWED SIGNERS)", name, name)
	}
	if r.AllowedSigners != "" && !filepath.IsAbs(r.AllowedSigners) {
		v.add("%s.allowed_signers %q: must be an absolute path", name, r.AllowedSigners)
	}
}

func (v *problems) upgrade(u UpgradeConfig) {
	switch u.OnValidationFailure {
	case OnFailRollback, OnFailNotify, OnFailIgnore:
	default:
		v.add("upgrade.on_validation_failure %q: want rollback, notify or ignore", u.OnValidationFailure)
	}
	if u.Timeout.Duration < 0 {
		v.add("upgrade.timeout: must be positive")
	}
	for _, list := range []struct {
		name string
		cmds []string
	}{{"upgrade.pre_update_hooks", u.PreUpdateHooks}, {"upgrade.validation_checks", u.ValidationChecks}, {"upgrade.health_checks", u.HealthChecks}} {
		for i, s := range list.cmds {
			if strings.TrimSpace(s) == "" {
				v.add("%s[%d]: empty command", list.name, i)
			}
		}
	}
}

func (v *problems) system(s SystemConfig, buildsFirst bool) {
	switch s.Driver {
	case DriverCommand:
		if len(s.Switch) == 0 {
			v.add("system.switch: missing (argv that activates CONVOY_RESULT)")
		}
		if buildsFirst && len(s.Build) == 0 {
			v.add("system.build: missing (argv whose last stdout line is the result), or set upgrade.build_before_switch = false")
		}
		if len(s.Current) == 0 {
			v.add("system.current: missing (argv that prints what is deployed; rollback needs it)")
		}
	case DriverNixOS:
		switch s.Builder {
		case BuilderNH, BuilderNixosRebuild, BuilderNix:
		default:
			v.add("system.builder %q: want %s, %s or %s", s.Builder, BuilderNH, BuilderNixosRebuild, BuilderNix)
		}
		if s.Builder == BuilderNix && !buildsFirst {
			v.add("upgrade.build_before_switch = false: the nix builder switches to what it built, so it must build first (nh and nixos-rebuild build as part of their switch)")
		}
		if s.Builder == BuilderNH && len(s.Elevation) > 1 {
			v.add("system.elevation %q: nh takes one elevation program (--elevation-program), without arguments", s.Elevation)
		}
		if !filepath.IsAbs(s.Profile) {
			v.add("system.profile %q: must be an absolute path", s.Profile)
		}
		if !filepath.IsAbs(s.GCRoots) {
			v.add("system.gcroots %q: must be an absolute path", s.GCRoots)
		}
		if s.BootedSystem != "" && !filepath.IsAbs(s.BootedSystem) {
			v.add("system.booted_system %q: must be an absolute path", s.BootedSystem)
		}
	default:
		v.add("system.driver %q: want %s or %s", s.Driver, DriverCommand, DriverNixOS)
	}
}

func (v *problems) reboot(r RebootConfig, driver string) {
	if _, err := events.ParseWindow(r.Window); err != nil {
		v.add("reboot.window: %w", err)
	}
	if !r.Allow {
		return
	}
	if driver != DriverNixOS {
		v.add("reboot.allow: needs system.driver = \"nixos\" (only it can tell that a reboot is required)")
	}
	if len(r.Command) == 0 || r.Command[0] == "" {
		v.add("reboot.command: empty (argv that reboots the host; default systemctl reboot through system.elevation)")
	}
}

func (v *problems) logs(l LogsConfig) {
	if l.Keep < 0 {
		v.add("logs.keep %d: must be at least 1 (0 means the default, %d)", l.Keep, DefaultLogsKeep)
	}
	if l.MaxAge.Duration < 0 {
		v.add("logs.max_age %s: must be positive (or left out: no age limit)", l.MaxAge)
	}
	if l.MaxSize != 0 && l.MaxSize < minLogsMaxSize {
		v.add("logs.max_size %d bytes: must be at least %d (a log keeps its head, a marker line and its tail)", l.MaxSize, minLogsMaxSize)
	}
}

// BuildsFirst reports whether the upgrade builds before it switches
// (build_before_switch, true unless set false).
func (u UpgradeConfig) BuildsFirst() bool { return u.BuildBeforeSwitch == nil || *u.BuildBeforeSwitch }

// AutoPin reports whether a validated boot is pinned golden
// (auto_pin_after_boot, true unless set false).
func (g GoldenConfig) AutoPin() bool { return g.AutoPinAfterBoot == nil || *g.AutoPinAfterBoot }

// Flake returns the flake reference of the host's NixOS configuration.
func (c *Config) Flake() string {
	if c.System.Flake != "" {
		return c.System.Flake
	}
	return c.Repo.Path + "#nixosConfigurations." + c.Host
}
