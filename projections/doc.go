// Package projections turns the event stream into the views people and
// tools read: fleet status per host (kept in the convoy-status KV bucket
// with a checkpoint, rebuilt identically from sequence 1), the upgrade
// index (convoy-upgrades: where each upgrade's facts start and how it
// ended), and filtered history replays for audit.
//
// Projections are pure functions of the stream. Applying an event is
// idempotent (each record remembers the last sequence applied to it), so
// replaying from an old checkpoint, or running a rebuild beside the live
// projector, converges on the same view.
package projections
