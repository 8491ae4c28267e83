// Package bus is convoy's only contact with NATS: it runs the embedded
// nats-server, connects (with bounded, logged-by-the-caller retries) to it
// or to an external cluster through the same code, provisions the CONVOY
// stream and the projection KV buckets idempotently, and offers the few
// operations the rest of convoy needs: append an event (deduplicated by id,
// optionally guarded by an expected last sequence), replay a filtered range
// in order, and follow new events.
//
// The package returns errors and never logs.
package bus
