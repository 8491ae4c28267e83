// Package projections turns the event stream into what people and tools
// read: the fleet status view, one row per host in the convoy-status KV
// bucket with a checkpoint, and filtered history replays for audit. Its
// Projector also keeps the upgrade index (package upgradeindex) written.
//
// The view is a pure function of the stream. Applying an event is
// idempotent (each row remembers the last sequence applied to it), so
// replaying from an old checkpoint, or running a rebuild beside the live
// projector, converges on the same view.
package projections
