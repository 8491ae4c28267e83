// Package projections turns the event stream into what people and tools
// read: the fleet status view, one row per host in the convoy-status KV
// bucket with a checkpoint, and filtered history replays for audit. Its
// Projector also keeps the upgrade index (package upgradeindex) written.
//
// The view is a pure function of the stream. Applying an event is
// idempotent (each row remembers the last sequence applied to it), so
// replaying from an old checkpoint, or running a rebuild beside the live
// projector, converges on the same view.
//
// The projector applies events a batch at a time, a batch being what it
// read while it wrote the one before (up to Projector.MaxBatch events): it
// folds them in memory, in stream order, then writes each host row and
// each upgrade record the batch changed once, pipelined, each under a
// compare-and-set, and only when all of them are durable the checkpoint,
// the batch's last sequence. Every event up to the checkpoint is thus in the view (a row
// may hold later ones too), and a crash replays at most the batch it
// interrupted. Within a batch, rows
// and records become visible in no particular order.
//
// Once the stream's oldest events have aged out (bus.Retention), a
// rebuild starts from the snapshot of the view that Projector.Snapshot
// keeps, and refuses with ErrHistoryGap if events aged out uncovered.
//
// Reads never replay the stream for status: one host is one KV read, the
// fleet (or a list of named hosts) one pass over the bucket.
package projections
