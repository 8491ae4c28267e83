// Package workers is the one process that changes a host. A Worker serves
// its host's requests from the bus, one at a time, and runs each upgrade
// through the pipeline: pre-update hooks, pull (record the old commits,
// fetch, resolve and judge the target, move the checkouts), build,
// validation, switch and health checks, and on any failure the rollback
// of the checkouts and, after a switch, of the system. BootCheck runs
// once after boot and keeps the golden generation. With [reboot], an
// upgrade whose system boots another kernel, initrd or kernel modules
// than the booted one leaves a pending reboot that the serve loop starts
// inside the reboot window (reboot.started, then the command) and the
// next BootCheck ends.
//
// # Guarantees
//
// Ordering: every stage appends its fact to convoy.host.<host>.> and
// waits for JetStream's acknowledgement before the next stage's side
// effect starts. Facts are appended guarded by the last sequence of the
// host's facts this worker has seen, so the host's facts are one
// sequence that no second writer can interleave: a worker that finds
// another's fact stops with ErrSecondWorker. A flock on the state dir
// and a lease in the convoy-leases bucket keep a second worker from
// starting at all.
//
// Delivery: the worker handles its host's requests one at a time, in
// stream order, from its position: the sequence of the last request that
// ended, kept in state.json and named by every terminal fact
// (request_seq), so a worker whose state dir is lost learns it from its
// own facts. The position moves past a request only once its terminal
// fact is durable; a worker killed before that reads the request again
// after restart, and a request whose upgrade already ended (the local
// state's recent ids, or the upgrade index) is passed over without
// running again. A request with a newer one queued behind it ends
// upgrade.skipped (superseded). The host holds no consumer on the bus
// while idle (see bus.Requests).
//
// Durability: each fact is written to the outbox in the state dir
// (fsynced) before it is appended, and removed once acknowledged, so a
// fact survives a bus outage or a crash and is published once, in order.
// The state dir's state.json records the upgrade in flight before each
// step that changes the host.
//
// Failure: every upgrade ends with exactly one terminal fact:
// upgrade.succeeded, upgrade.failed, upgrade.rejected, upgrade.skipped or
// upgrade.aborted. A stage that fails rolls back what the upgrade changed
// first; a worker that stops mid-upgrade puts the host back under a
// context that outlives the stop; a worker that was killed does it when
// it starts again (see recover). Nothing from the bus becomes a command:
// commands come from the host's config alone.
//
// # Seams
//
// A Driver builds and switches the system, and every process goes
// through an Exec, so tests decide what commands do. Decisions (admit,
// judge) are pure functions of what the worker has read.
package workers
