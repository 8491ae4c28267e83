// Package bus is convoy's only contact with NATS. It runs the embedded
// nats-server, connects (with bounded retries) to it or to an external
// cluster through the same code, provisions the CONVOY stream and the KV
// buckets idempotently, and offers what the rest of convoy needs:
//
//   - Append an event, deduplicated by id and optionally guarded by the
//     expected last sequence of a filter; when it returns nil the event
//     is fsynced and acknowledged.
//   - Last and Get one stored message; Replay a filtered range in stream
//     order; Follow new messages until the context ends or the callback
//     returns ErrStop.
//   - Requests: a host's requests, one delivery at a time, acked,
//     retried or kept in progress; Ack settles a delivery by its subject
//     from a later process.
//   - Bucket: a KV bucket's get, put, delete, keys and revision-guarded
//     write, and Modify, the one compare-and-set loop of every view.
//   - Credentials and the permissions of each role.
//
// Every API call is bounded by APITimeout. The package returns errors and
// never logs.
package bus
