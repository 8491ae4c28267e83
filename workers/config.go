package workers

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	NATS string `toml:"nats"`
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
}

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
	if c.Upgrade.BuildBeforeSwitch == nil {
		t := true
		c.Upgrade.BuildBeforeSwitch = &t
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
			c.System.Builder = "nh"
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
	}
	if len(c.Golden.ServiceCheck) == 0 {
		c.Golden.ServiceCheck = []string{"systemctl", "is-active", "--quiet"}
	}
	if c.Golden.AutoPinAfterBoot == nil {
		t := true
		c.Golden.AutoPinAfterBoot = &t
	}
	if c.Golden.MaxBootFailures == 0 {
		c.Golden.MaxBootFailures = 2
	}
}

// Validate reports every problem in c at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.Host == "" {
		bad("host: missing (the host's short name, e.g. host = \"sorrow\")")
	} else if err := events.ValidateHost(c.Host); err != nil {
		bad("host: %w", err)
	}
	for _, f := range []struct{ key, path string }{{"nkey", c.NKey}, {"tls_ca", c.TLSCA}} {
		if f.path != "" && !filepath.IsAbs(f.path) {
			bad("%s %q: must be an absolute path", f.key, f.path)
		}
	}
	if !filepath.IsAbs(c.StateDir) {
		bad("state_dir %q: must be an absolute path", c.StateDir)
	}
	checkRepo := func(name string, r RepoConfig) {
		if r.Path == "" {
			bad("%s.path: missing (the git checkout to track)", name)
		} else if !filepath.IsAbs(r.Path) {
			bad("%s.path %q: must be an absolute path", name, r.Path)
		}
		if strings.HasPrefix(r.Remote, "-") || strings.ContainsAny(r.Remote, " \t\n") {
			bad("%s.remote %q: not a remote name", name, r.Remote)
		}
		if strings.HasPrefix(r.Branch, "-") || strings.ContainsAny(r.Branch, " \t\n~^:?*[\\") {
			bad("%s.branch %q: not a branch name", name, r.Branch)
		}
		if r.VerifyCommits && r.AllowedSigners == "" {
			bad("%s.verify_commits: needs %s.allowed_signers, the file of keys allowed to sign (see ssh-keygen(1) ALLOWED SIGNERS)", name, name)
		}
		if r.AllowedSigners != "" && !filepath.IsAbs(r.AllowedSigners) {
			bad("%s.allowed_signers %q: must be an absolute path", name, r.AllowedSigners)
		}
	}
	checkRepo("repo", c.Repo)
	if c.Secrets != nil {
		checkRepo("secrets", *c.Secrets)
	}
	switch c.Upgrade.OnValidationFailure {
	case OnFailRollback, OnFailNotify, OnFailIgnore:
	default:
		bad("upgrade.on_validation_failure %q: want rollback, notify or ignore", c.Upgrade.OnValidationFailure)
	}
	if c.Upgrade.Timeout.Duration < 0 {
		bad("upgrade.timeout: must be positive")
	}
	for _, list := range []struct {
		name string
		cmds []string
	}{{"upgrade.pre_update_hooks", c.Upgrade.PreUpdateHooks}, {"upgrade.validation_checks", c.Upgrade.ValidationChecks}, {"upgrade.health_checks", c.Upgrade.HealthChecks}} {
		for i, s := range list.cmds {
			if strings.TrimSpace(s) == "" {
				bad("%s[%d]: empty command", list.name, i)
			}
		}
	}
	switch c.System.Driver {
	case DriverCommand:
		if len(c.System.Switch) == 0 {
			bad("system.switch: missing (argv that activates CONVOY_RESULT)")
		}
		if *c.Upgrade.BuildBeforeSwitch && len(c.System.Build) == 0 {
			bad("system.build: missing (argv whose last stdout line is the result), or set upgrade.build_before_switch = false")
		}
		if len(c.System.Current) == 0 {
			bad("system.current: missing (argv that prints what is deployed; rollback needs it)")
		}
	case DriverNixOS:
		switch c.System.Builder {
		case "nh", "nixos-rebuild", "nix":
		default:
			bad("system.builder %q: want nh, nixos-rebuild or nix", c.System.Builder)
		}
		if c.System.Builder == "nix" && !*c.Upgrade.BuildBeforeSwitch {
			bad("upgrade.build_before_switch = false: the nix builder switches to what it built, so it must build first (nh and nixos-rebuild build as part of their switch)")
		}
		if c.System.Builder == "nh" && len(c.System.Elevation) > 1 {
			bad("system.elevation %q: nh takes one elevation program (--elevation-program), without arguments", c.System.Elevation)
		}
		if !filepath.IsAbs(c.System.Profile) {
			bad("system.profile %q: must be an absolute path", c.System.Profile)
		}
		if !filepath.IsAbs(c.System.GCRoots) {
			bad("system.gcroots %q: must be an absolute path", c.System.GCRoots)
		}
	default:
		bad("system.driver %q: want command or nixos", c.System.Driver)
	}
	if c.Golden.MaxBootFailures < 1 {
		bad("golden.max_boot_failures %d: must be at least 1", c.Golden.MaxBootFailures)
	}
	return errors.Join(errs...)
}

// Flake returns the flake reference of the host's NixOS configuration.
func (c *Config) Flake() string {
	if c.System.Flake != "" {
		return c.System.Flake
	}
	return c.Repo.Path + "#nixosConfigurations." + c.Host
}
