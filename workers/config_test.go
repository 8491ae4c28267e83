package workers_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers"
)

func TestParseConfigExample(t *testing.T) {
	b, err := os.ReadFile("testdata/command.toml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := workers.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if c.Host != "sorrow" || c.Secrets == nil || c.Secrets.Remote != "origin" || c.Secrets.Branch != "main" {
		t.Fatalf("parsed %+v", c)
	}
	if c.Upgrade.Timeout.Duration != 30*time.Minute || !c.Upgrade.BuildsFirst() || c.Golden.MaxBootFailures != 2 {
		t.Fatalf("upgrade %+v golden %+v", c.Upgrade, c.Golden)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := workers.ParseConfig([]byte(`host = "torment"
[repo]
path = "/srv/nix-config"
[system]
build = ["true"]
switch = ["true"]
current = ["true"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/var/lib/convoy" || c.Repo.Remote != "origin" || c.Repo.Branch != "main" ||
		c.Upgrade.OnValidationFailure != "rollback" || c.Upgrade.Timeout.Duration != 30*time.Minute ||
		c.System.Driver != "command" || c.Secrets != nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if got := c.Flake(); got != "/srv/nix-config#nixosConfigurations.torment" {
		t.Fatalf("flake %q", got)
	}
}

func TestParseConfigRefuses(t *testing.T) {
	base := "host = \"sorrow\"\n[repo]\npath = \"/srv/nix-config\"\n[system]\nbuild = [\"true\"]\nswitch = [\"true\"]\ncurrent = [\"true\"]\n"
	for _, tc := range []struct {
		name, toml string
		want       []string
	}{
		{"unknown key with its line", base + "[upgrade]\ntimeuot = \"5m\"\n", []string{"line 9", `"upgrade.timeuot"`}},
		{"unknown top-level key", "hots = \"x\"\n" + base, []string{"line 1", `"hots"`}},
		{"two unknown keys at once", base + "[upgrade]\na = 1\nb = 2\n", []string{"line 9", "line 10"}},
		{"bad host", strings.Replace(base, `"sorrow"`, `"Sorrow_1"`, 1), []string{"host:", "RFC 1123"}},
		{"missing host", strings.Replace(base, `host = "sorrow"`, ``, 1), []string{"host: missing"}},
		{"relative repo", strings.Replace(base, `/srv/nix-config`, `nix-config`, 1), []string{"repo.path", "absolute"}},
		{"bad action", base + "[upgrade]\non_validation_failure = \"pray\"\n", []string{"rollback, notify or ignore"}},
		{"bad duration", base + "[upgrade]\ntimeout = \"soon\"\n", []string{"line 9", "30m"}},
		{"bad driver", strings.Replace(base, "[system]\n", "[system]\ndriver = \"docker\"\n", 1), []string{"command or nixos"}},
		{"no switch", strings.Replace(base, "switch = [\"true\"]\n", "", 1), []string{"system.switch: missing"}},
		{"every problem at once", "host = \"\"\nstate_dir = \"rel\"\n[repo]\n[system]\n", []string{"host: missing", "state_dir", "repo.path: missing", "system.switch"}},
		{"bad builder", strings.Replace(base, "[system]\n", "[system]\ndriver = \"nixos\"\nbuilder = \"make\"\n", 1), []string{"nh, nixos-rebuild or nix"}},
		{"not toml", "host = ", []string{"line 1"}},
		{"option-like branch", base + "[secrets]\npath = \"/s\"\nbranch = \"--upload-pack=x\"\n", []string{"secrets.branch"}},
		{"bad reboot window", base + "[reboot]\nwindow = \"Sta 02:00-05:00\"\n", []string{"reboot.window", `day "Sta"`}},
		{"reboot with the command driver", base + "[reboot]\nallow = true\n", []string{"reboot.allow", "nixos"}},
		{"relative booted system", strings.Replace(base, "[system]\n", "[system]\ndriver = \"nixos\"\nbooted_system = \"run/booted\"\n", 1), []string{"system.booted_system", "absolute"}},
		{"empty reboot command", strings.Replace(base, "[system]\n", "[system]\ndriver = \"nixos\"\n", 1) + "[reboot]\nallow = true\ncommand = []\n", []string{"reboot.command: empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := workers.ParseConfig([]byte(tc.toml))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func FuzzParseConfig(f *testing.F) {
	b, err := os.ReadFile("testdata/command.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("host = \"x\"\n[upgrade]\ntimeout = \"1s\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := workers.ParseConfig(b)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseConfig accepted a config Validate refuses: %v", err)
		}
	})
}

// Validate reports every problem of a config that never had its defaults
// applied, without a nil dereference.
func TestValidateWithoutDefaults(t *testing.T) {
	var c workers.Config
	c.System.Driver = workers.DriverNixOS
	c.System.Builder = workers.BuilderNix
	f := false
	c.Upgrade.BuildBeforeSwitch = &f
	err := c.Validate()
	if err == nil {
		t.Fatal("an empty config validated")
	}
	for _, want := range []string{"host: missing", "state_dir", "repo.path: missing", "on_validation_failure", "nix builder switches to what it built", "system.profile", "max_boot_failures"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q missing from: %v", want, err)
		}
	}
}

func TestParseConfigTags(t *testing.T) {
	base := "host = \"sorrow\"\nstate_dir = \"/var/lib/convoy\"\n[repo]\npath = \"/etc/nixos\"\n[system]\nswitch = [\"true\"]\nbuild = [\"true\"]\ncurrent = [\"true\"]\n"
	c, err := workers.ParseConfig([]byte("tags = [\"canary\", \"web\"]\n" + base))
	if err != nil || strings.Join(c.Tags, ",") != "canary,web" {
		t.Fatalf("tags: %v %v", c, err)
	}
	if _, err := workers.ParseConfig([]byte("tags = [\"Canary\", \"\"]\n" + base)); err == nil || !strings.Contains(err.Error(), "tags[0]") || !strings.Contains(err.Error(), "tags[1]") {
		t.Fatalf("bad tags: %v", err)
	}
}

func TestParseConfigRebootDefaults(t *testing.T) {
	c, err := workers.ParseConfig([]byte("host = \"sorrow\"\n[repo]\npath = \"/srv/nix-config\"\n[system]\ndriver = \"nixos\"\nbuilder = \"nix\"\nelevation = [\"sudo\", \"-n\"]\n[reboot]\nallow = true\nwindow = \"Sat 02:00-05:00\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Reboot.Command, " "); got != "sudo -n systemctl reboot" {
		t.Fatalf("reboot.command %q, want the elevation program then systemctl reboot", got)
	}
	if c.System.BootedSystem != "/run/booted-system" {
		t.Fatalf("system.booted_system %q", c.System.BootedSystem)
	}
}
