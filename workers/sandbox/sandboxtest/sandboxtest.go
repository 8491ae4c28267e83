// Package sandboxtest holds the test helpers for sandbox fleets: they take
// a testing.TB, so only _test.go files may import this package, which
// keeps the testing package out of the convoy binary (the demo links
// sandbox itself).
package sandboxtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// NeedNix skips t when Nix is not installed, and fails it instead when
// CONVOY_REQUIRE_NIX=1 (CI), so a missing install step cannot pass as a
// skip.
func NeedNix(t testing.TB) {
	t.Helper()
	if err := sandbox.HaveNix(); err != nil {
		if os.Getenv("CONVOY_REQUIRE_NIX") == "1" {
			t.Fatalf("CONVOY_REQUIRE_NIX=1 but %v", err)
		}
		t.Skipf("skipping a real-Nix test: %v (CONVOY_REQUIRE_NIX=1 makes this a failure)", err)
	}
}

// RunningSystem returns the store path h's system profile points at,
// failing t when there is none.
func RunningSystem(t testing.TB, h *sandbox.Host) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(h.Profile())
	if err != nil {
		t.Fatalf("profile of %s: %v", h.Name, err)
	}
	return p
}
