package main

import (
	"io"
	"strings"
	"testing"
)

// examples returns the command lines under "Examples:" in a -h text.
func examples(help string) []string {
	_, section, _ := strings.Cut(help, "\nExamples:\n")
	var cmds []string
	for _, l := range strings.Split(section, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "convoy ") {
			cmds = append(cmds, l)
		}
	}
	return cmds
}

// commandOf returns the command an example runs, past the global flags,
// which all take a value.
func commandOf(args []string) string {
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		if strings.Contains(args[0], "=") {
			args = args[1:]
		} else {
			args = args[min(2, len(args)):]
		}
	}
	if len(args) == 0 {
		return ""
	}
	return args[0]
}

// Every command's -h shows examples, and each example parses: run with -h
// appended, an example whose flag does not exist or whose value does not
// parse exits 2 instead of showing the help.
func TestEveryCommandShowsExamplesThatParse(t *testing.T) {
	for name := range commands(&env{}) {
		t.Run(name, func(t *testing.T) {
			var help strings.Builder
			if code := run(t.Context(), []string{name, "-h"}, io.Discard, &help); code != exitOK {
				t.Fatalf("convoy %s -h: exit %d\n%s", name, code, help.String())
			}
			cmds := examples(help.String())
			if len(cmds) == 0 {
				t.Fatalf("convoy %s -h shows no example:\n%s", name, help.String())
			}
			for _, c := range cmds {
				args := strings.Fields(c)[1:]
				if got := commandOf(args); got != name {
					t.Errorf("example %q of convoy %s runs %q", c, name, got)
					continue
				}
				var stderr strings.Builder
				if code := run(t.Context(), append(args, "-h"), io.Discard, &stderr); code != exitOK {
					t.Errorf("example %q: exit %d\n%s", c, code, stderr.String())
				}
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "256MiB": 256 << 20, "50GB": 50e9, "1 GiB": 1 << 30, "4096": 4096, "12B": 12} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1.5GB", "ten", "8EiB", "9999999TB"} {
		if _, err := parseBytes(bad); err == nil {
			t.Errorf("parseBytes(%q) accepted", bad)
		}
	}
}
