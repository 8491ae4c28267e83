// Package events defines convoy's public wire contract: the CloudEvents
// envelope, the event types every stage emits, the NATS subjects they are
// stored under, and host-name rules.
//
// It holds plain types and pure functions only: no I/O, no logging and no
// NATS import, so any publisher or subscriber (in Go or not) can rely on it
// as the single definition of what is on the bus. The subjects and types
// documented here are a stable API; see docs/events.md.
package events
