package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serverFlags is a flag set with some of convoy server's flags.
func serverFlags() (*flag.FlagSet, map[string]*string) {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	v := map[string]*string{}
	for _, n := range []string{"data", "http", "min-free", "routes", "config"} {
		v[n] = fs.String(n, "default-"+n, "")
	}
	return fs, v
}

func writeConfig(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.toml")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The file's keys set the flags the command line did not give; its
// [alerts] section comes back validated.
func TestServerConfigSetsFlagsAndAlerts(t *testing.T) {
	fs, v := serverFlags()
	if err := fs.Parse([]string{"--data", "/from/the/command/line"}); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, `
data = "/from/the/file"
http = "127.0.0.1:9426"
min_free = "1GiB"
routes = ["nats://10.0.0.1:6222", "nats://10.0.0.2:6222"]

[alerts]
offline_after = "5m"
[[alerts.sink]]
type = "command"
command = ["logger", "-t", "convoy"]
`)
	a, err := applyServerConfig(path, fs)
	if err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{
		"data":     "/from/the/command/line",
		"http":     "127.0.0.1:9426",
		"min-free": "1GiB",
		"routes":   "nats://10.0.0.1:6222,nats://10.0.0.2:6222",
	} {
		if got := *v[flag]; got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	if a == nil || len(a.Sinks) != 1 || a.OfflineAfter.Minutes() != 5 || len(a.Rules) == 0 {
		t.Fatalf("alerts: %+v", a)
	}

	// Without [alerts], none.
	fs, _ = serverFlags()
	if a, err := applyServerConfig(writeConfig(t, `http = "127.0.0.1:9426"`), fs); err != nil || a != nil {
		t.Fatalf("no [alerts]: %+v, %v", a, err)
	}
}

// Every mistake is reported at once, each with its line.
func TestServerConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		want       []string
	}{
		{"unknown keys", "htpp = \"127.0.0.1:9426\"\nconfig = \"x\"\n[alerts]\nofline_after = \"1m\"\n[[alerts.sink]]\ntype = \"command\"\ncommand = [\"true\"]\n",
			[]string{`line 1: unknown key "htpp"`, `line 2: unknown key "config"`, `line 4: unknown key "alerts.ofline_after"`}},
		{"a bad alerts section", "[alerts]\n", []string{"no sink"}},
		{"a table for a flag", "[http]\nlisten = \"x\"\n", []string{"http: want a string"}},
		{"not TOML", "http = \n", []string{"line 1"}},
		{"a number list", "routes = [1, 2]\n", []string{"routes: want a list of strings"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, _ := serverFlags()
			path := writeConfig(t, tc.file)
			_, err := applyServerConfig(path, fs)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
