// Package metrics serves convoy's Prometheus metrics: the fleet as the
// status view shows it, and counts of what the stream recorded.
//
// Everything is registered on the Metrics' own registry, never on
// Prometheus' global default one, so two Metrics in one process (tests,
// a server with two listeners) do not collide, and nothing else in the
// process adds metrics behind its back. Register adds collectors of
// other parts (the alert sender's counts).
//
// Two kinds of metric, read two ways:
//
//   - Gauges of the fleet (convoy_host_*, convoy_projector_lag_events,
//     convoy_rollout_state, convoy_build_info) are read at scrape time:
//     every host's row of the status view in one pass over the bucket,
//     the projector's checkpoint and the stream's last sequence for the
//     lag, and one replay of the rollout subjects (convoy.rollout.>) for
//     the rollouts, folded as `convoy rollout status` folds them. A scrape
//     is thus exactly as fresh as the view: a host row the projector has
//     not written yet is not in it. A failed read fails the scrape (HTTP
//     500), so Prometheus records the target as down rather than serving
//     a fleet with hosts missing.
//   - Counters and the histogram (convoy_upgrades_total,
//     convoy_stage_duration_seconds) count the host facts stored after
//     New returned, in stream order, each once: Run follows the stream
//     from there. They start at zero in every process, and a restart of
//     the process is a counter reset, as Prometheus' rate() and
//     increase() expect; they are not folded from the facts the stream
//     retains.
//
// Metrics is safe for concurrent use: scrapes run concurrently with each
// other and with Run.
package metrics
