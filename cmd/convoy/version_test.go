package main

import (
	"bytes"
	"testing"
)

// convoy --version and convoy version print the version stamped at build
// time (-X main.version=..., as the Nix package does).
func TestVersionFlagAndCommand(t *testing.T) {
	old := version
	version = "1a2b3c4"
	t.Cleanup(func() { version = old })
	for _, args := range [][]string{{"--version"}, {"version"}} {
		var out, errb bytes.Buffer
		if code := run(t.Context(), args, &out, &errb); code != exitOK || out.String() != "convoy 1a2b3c4\n" {
			t.Errorf("convoy %v: exit %d, %q %q", args, code, out.String(), errb.String())
		}
	}
}
