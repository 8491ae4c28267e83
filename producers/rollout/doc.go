// Package rollout is the staged-rollout controller, a producer: it moves
// a fleet to one commit wave by wave (a canary tag, then a share of the
// rest, then all), and halts when too many hosts fail.
//
// An operator's ask is an event (rollout.requested carries the whole
// plan, with each wave's hosts chosen when it is asked for), and so is
// every decision of the controller (started, wave.started,
// wave.succeeded, halted, succeeded, aborted), on
// convoy.rollout.<id>.<kind>. The controller keeps nothing else: Fold
// rebuilds a rollout from its facts and its hosts' facts, and Decide, a
// pure function, says what to do next. A controller killed at any point
// and restarted reads the facts again and goes on; each wave's upgrade id
// is derived from the rollout id (WaveID), so a host is never asked twice.
//
// Every fact is appended with an Expect guard on the rollout's subjects
// and the last sequence the controller saw there: of two controllers, one
// appends and the other, refused, reads the new fact and decides again.
package rollout
