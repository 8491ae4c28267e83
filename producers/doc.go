// Package producers writes requests onto the bus: "upgrade requested" and
// "pin requested" for named hosts, idempotently per host and request id,
// and follows the facts that answer them. The CLI uses it; so can a
// schedule, a git watcher or a rollout controller.
//
// A producer never decides what a host deploys: it names a revision, and
// the host's worker checks it against its tracked branch.
package producers
