// Package bus is convoy's only contact with NATS. It runs the embedded
// nats-server, connects (with bounded retries) to it or to an external
// cluster through the same code, provisions the CONVOY stream and the KV
// buckets idempotently, and offers what the rest of convoy needs:
//
//   - Append an event, deduplicated by id and optionally guarded by the
//     expected last sequence of a filter; when it returns nil the event
//     is fsynced and acknowledged. AppendAll appends many, pipelined (all
//     sent, then every ack awaited), and reports each one: an event
//     without an error is durable, one with an error may be stored and is
//     stored at most once if appended again with the same id.
//   - Last and Get one stored message; Replay a filtered range in stream
//     order; Follow new messages until the context ends or the callback
//     returns ErrStop.
//   - Requests: a host's requests, one delivery at a time, acked,
//     retried or kept in progress; Ack settles a delivery by its subject
//     from a later process.
//   - Bucket: a KV bucket's get, put, delete, keys and revision-guarded
//     write; GetMany, many keys in one round trip per 1,024; All, every
//     key under a filter in one pass; and ModifyMany, the one
//     compare-and-set loop of every view and ledger: it reads many keys at
//     once, folds each, and writes the changed ones pipelined, each only
//     if nobody wrote the key in between (a conflicting key is read and
//     folded again). When it returns nil every write is durable; the
//     writes of one call are not atomic together.
//   - Credentials and the permissions of each role.
//   - The storage guard (Server.WatchStorage, Server.Storage,
//     QueryStorage): refuses appends before the data dir's disk is full,
//     with ErrStorageFull naming the server and the dir, and recovers
//     JetStream from a write that failed for lack of space.
//   - Retention bounds of the stream (ConnectConfig.Retention, Retained).
//
// Every API call, and each ack of a pipelined write, is bounded by
// APITimeout. The package returns errors and never logs.
package bus
