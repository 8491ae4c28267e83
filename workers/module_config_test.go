package workers_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/convoy-fleet/convoy/workers"
)

// TestNixOSModuleConfigLoads loads the worker settings that nix/module.nix
// renders with the worker's own loader: every key the module writes must
// be one the worker knows, with a value it accepts. The fixtures are the
// JSON the module hands to pkgs.formats.toml (which turns it into
// /etc/convoy/worker.toml); `.ci/nix-checks module` fails when they are
// not what the module renders now, and `--update` rewrites them.
func TestNixOSModuleConfigLoads(t *testing.T) {
	tests := []struct {
		fixture string
		check   func(t *testing.T, c *workers.Config)
	}{
		{"nixos-module-minimal.json", func(t *testing.T, c *workers.Config) {
			if c.Host != "sorrow" || c.System.Driver != workers.DriverNixOS || c.System.Builder != workers.BuilderNix {
				t.Errorf("host %q driver %q builder %q, want sorrow nixos nix", c.Host, c.System.Driver, c.System.Builder)
			}
			if !c.Upgrade.BuildsFirst() || !c.Golden.AutoPin() || c.Golden.Enable || c.Reboot.Allow {
				t.Errorf("defaults not kept: %+v %+v %+v", c.Upgrade, c.Golden, c.Reboot)
			}
			if got := c.System.Elevation; len(got) != 2 || got[1] != "-n" {
				t.Errorf("elevation %q, want sudo -n (a service cannot answer a password prompt)", got)
			}
		}},
		{"nixos-module-full.json", func(t *testing.T, c *workers.Config) {
			if c.Host != "torment" || c.System.Builder != workers.BuilderNixosRebuild || c.Secrets == nil {
				t.Errorf("host %q builder %q secrets %v", c.Host, c.System.Builder, c.Secrets)
			}
			if c.Upgrade.Timeout.Duration != time.Hour || c.Upgrade.OnValidationFailure != workers.OnFailNotify {
				t.Errorf("settings not merged: timeout %v, on_validation_failure %q", c.Upgrade.Timeout, c.Upgrade.OnValidationFailure)
			}
			if !c.Repo.VerifyCommits || c.Golden.AutoPin() || c.Golden.MaxBootFailures != 3 || !c.Reboot.Allow {
				t.Errorf("options not rendered: repo %+v golden %+v reboot %+v", c.Repo, c.Golden, c.Reboot)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.fixture))
			if err != nil {
				t.Fatal(err)
			}
			c, err := workers.ParseConfig(jsonToTOML(t, b))
			if err != nil {
				t.Fatalf("the module renders a config the worker refuses:\n%v", err)
			}
			tt.check(t, c)
		})
	}
}

// jsonToTOML does what pkgs.formats.toml does with the module's value.
// Integers stay integers (JSON has only numbers; TOML does not).
func jsonToTOML(t *testing.T, b []byte) []byte {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	out, err := toml.Marshal(numbers(v))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func numbers(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = numbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = numbers(e)
		}
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n
		}
		f, _ := v.Float64()
		return f
	}
	return v
}
