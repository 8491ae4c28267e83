package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// NixConfig is the NIX_CONFIG every Nix command of a sandbox runs with:
// flakes on, no binary cache (there is no network), no build users or
// sandbox (Debian's single-user nix-bin as root has neither), no registry.
const NixConfig = "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false\nbuild-users-group =\nflake-registry =\nwarn-dirty = false"

// ErrNoNix is returned when Nix is not installed.
var ErrNoNix = errors.New("nix is not installed (on Debian: apt-get install nix-bin)")

// HaveNix reports whether the nix commands a sandbox needs are on PATH.
func HaveNix() error {
	for _, c := range []string{"nix", "nix-env", "nix-store", "nix-collect-garbage"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%w: %s not found", ErrNoNix, c)
		}
	}
	return nil
}

// flake is the sandbox nix-config: every host's toplevel is a plain
// derivation (no nixpkgs) built from configuration.nix, whose
// bin/switch-to-configuration records each activation in
// $CONVOY_STATE_DIR/activations.log. A syntax error in
// configuration.nix is a real Nix evaluation error.
//
// Each system links kernel, initrd and kernel-modules into a kernel
// derivation of their own, as NixOS does, so their targets change only
// when configuration.nix sets another `kernel = "…";` (default "6.1"):
// what the worker compares with the booted system.
const flakeTemplate = `{
  description = "nix-config (convoy sandbox): toy NixOS systems without nixpkgs";
  outputs = { self }:
    let
      config = import ./configuration.nix;
      version = config.kernel or "6.1";
      kernel = derivation {
        name = "linux-${version}";
        system = "x86_64-linux";
        builder = "/bin/sh";
        PATH = "/usr/bin:/bin";
        inherit version;
        args = [ "-c" ''
          set -e
          mkdir -p "$out/lib/modules/$version"
          printf 'kernel %s\n' "$version" > "$out/bzImage"
          printf 'initrd %s\n' "$version" > "$out/initrd"
        '' ];
      };
      mkSystem = host: derivation {
        name = "nixos-system-${host}";
        system = "x86_64-linux";
        builder = "/bin/sh";
        PATH = "/usr/bin:/bin";
        inherit host kernel;
        config = builtins.toJSON config;
        args = [ "-c" ''
          set -e
          mkdir -p "$out/bin"
          printf '%s\n' "$config" > "$out/configuration.json"
          ln -s "$kernel/bzImage" "$out/kernel"
          ln -s "$kernel/initrd" "$out/initrd"
          ln -s "$kernel/lib/modules" "$out/kernel-modules"
          cat > "$out/bin/switch-to-configuration" <<SCRIPT
          #!/bin/sh
          echo "\$1 $out" >> "\''${CONVOY_STATE_DIR:-/tmp}/activations.log"
          SCRIPT
          chmod 0555 "$out/bin/switch-to-configuration"
        '' ];
      };
    in {
      nixosConfigurations = builtins.listToAttrs (map (h: {
        name = h;
        value = { config.system.build.toplevel = mkSystem h; };
      }) [ HOSTS ]);
    };
}
`

func flakeFor(hosts []string) string {
	q := make([]string, len(hosts))
	for i, h := range hosts {
		q[i] = fmt.Sprintf("%q", h)
	}
	return strings.Replace(flakeTemplate, "HOSTS", strings.Join(q, " "), 1)
}

// Generations lists the host profile's generations as
// nix-env --list-generations prints them, one per line.
func (h *Host) Generations() ([]string, error) {
	out, err := h.Nix("nix-env", "-p", h.Profile(), "--list-generations")
	if err != nil || out == "" {
		return nil, err
	}
	return strings.Split(out, "\n"), nil
}

// NixEnv is the environment that points Nix at the host's private store
// and state, as each real host has its own: hosts (and tests) never share,
// lock or collect each other's store paths, and need no /nix.
func (h *Host) NixEnv() []string {
	n := h.nixDir()
	return []string{
		"NIX_CONFIG=" + NixConfig,
		"NIX_STORE_DIR=" + filepath.Join(n, "store"),
		"NIX_STATE_DIR=" + filepath.Join(n, "var"),
		"NIX_LOG_DIR=" + filepath.Join(n, "log"),
		"XDG_CACHE_HOME=" + filepath.Join(n, "cache"),
	}
}

func (h *Host) nixDir() string { return filepath.Join(filepath.Dir(h.StateDir), "nix") }

// Nix runs a Nix command in the host's Nix environment and returns its
// trimmed stdout.
func (h *Host) Nix(args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), h.NixEnv()...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, ee.Stderr)
		}
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// Profile is the host's system profile in the sandbox.
func (h *Host) Profile() string { return filepath.Join(filepath.Dir(h.StateDir), "profiles", "system") }

// GCRoots is the host's gcroots dir in the sandbox.
func (h *Host) GCRoots() string { return filepath.Join(filepath.Dir(h.StateDir), "gcroots") }

// failing is the file listing services the sandbox's service check fails.
func (h *Host) failing() string { return filepath.Join(filepath.Dir(h.StateDir), "failing-services") }

// FailService makes the boot check's service check fail for svc ("" heals
// every service).
func (h *Host) FailService(svc string) error {
	if svc == "" {
		return os.WriteFile(h.failing(), nil, 0o644)
	}
	return os.WriteFile(h.failing(), []byte(svc+"\n"), 0o644)
}

// Activations returns the lines switch-to-configuration logged
// ("switch /nix/store/…", "boot /nix/store/…").
func (h *Host) Activations() []string {
	b, _ := os.ReadFile(filepath.Join(h.StateDir, "activations.log"))
	s := strings.TrimSpace(string(b))
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func (h *Host) nixConfig() string {
	check := []string{"sh", "-c", fmt.Sprintf(`! grep -qx "$0" %q 2>/dev/null`, h.failing())}
	return fmt.Sprintf("[system]\ndriver = \"nixos\"\nbuilder = \"nix\"\nprofile = %q\ngcroots = %q\nelevation = []\n\n"+
		"[golden]\nenable = true\nvalidate_services = [\"sshd.service\"]\nservice_check = %s\nmax_boot_failures = 2\n",
		h.Profile(), h.GCRoots(), tomlList(check))
}
