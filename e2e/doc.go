// Package e2e holds convoy's end-to-end tests. They build the convoy
// binary once and drive it as an operator would: a `convoy server` process
// per test, `convoy worker` processes for the sandbox hosts "sorrow" and
// "torment" (real git repos in temp dirs, the command driver), and the
// CLI (`upgrade`, `status`, `history`, `projections rebuild`) with its
// exit codes and --json output. Each stage's success, failure and
// recovery is driven here as an operator would meet it.
//
// Run them with `go test ./e2e/`. Set CONVOY_E2E_RACE=1 to build the
// binary under test with -race as well.
package e2e
