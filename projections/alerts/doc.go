// Package alerts is the alerting subscriber: it reads every host fact and
// rollout event through one durable consumer (ConsumerName), matches each
// against the config's rules (kind, host or tag, severity), derives the
// alerts no single fact carries (a worker offline for OfflineAfter, N
// upgrades of one host failed in a row), and sends each alert to every
// sink: webhook, ntfy, Matrix or a command.
//
// Delivery contract:
//
//   - At least once across restarts: a fact is acknowledged only after
//     every sink has accepted its alert or failed it for good (after its
//     retries, or a permanent 4xx), so an alerter killed mid-delivery gets
//     the fact again.
//   - Once per sink: each acceptance is recorded in the convoy-alerts
//     bucket (key sent.<sink>.<alert id>) and a recorded alert is not
//     sent to that sink again. The one window left, killed after the sink
//     accepted and before the record was written, is covered by the
//     idempotency key: every sink gets the alert's id (Idempotency-Key,
//     Matrix's transaction id, CONVOY_ALERT_ID), and a derived alert's id
//     is derived from what triggered it, so a resend carries the same id.
//   - Sinks are sent to concurrently, each bounded by its timeout and
//     retry_for: one dead sink delays the next alert by at most its
//     retry_for and never keeps the others from theirs. Facts are handled
//     one at a time, in stream order.
//
// The package logs through the injected logger and counts each sink's
// deliveries (Stats).
package alerts
