// Package simfleet runs a fleet of simulated hosts in one process, for
// convoy bench and the scale tests: each host is a real workers.Worker
// (workers.New and Run, the project's own protocol code) with its own bus
// connection, state dir and command-driver config, whose processes are
// replaced through workers.Options.Exec by answers that cost nothing.
//
// A simulated host skips git and runs no command. Its checkout is
// Commit, and the branch it tracks points at Commit too; a request for
// any other full 40-hex commit deploys that commit. No commit is the
// ancestor of another, so such a request is never a downgrade. Its build
// prints a result named after the checked-out commit, its switch makes
// that result current, and everything else succeeds with no output. So a
// host's first upgrade ends upgrade.succeeded, a second one of the same
// commit upgrade.skipped (already current), and one with --rev of a new
// commit upgrade.succeeded again.
//
// What the hosts did is on the bus like any host's facts; Fleet only
// says when each one published worker.started.
package simfleet
