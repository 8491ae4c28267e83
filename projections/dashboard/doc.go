// Package dashboard is the live, read-only web view of the fleet: an
// http.Handler that convoy server (and convoy demo) mount on their HTTP
// listener. It renders pages on the server with html/template from
// templates embedded in the binary; the only script is a small embedded
// one that patches the fleet table from server-sent events.
//
// Pages:
//
//	/                 the fleet table, one row per host of the status view
//	/events           server-sent events: a "row" event for every host at
//	                  connect, then one each time the projector writes a
//	                  host's row (a KV watch of the status bucket, no polling)
//	/hosts/{name}     one host: status, golden generation, its newest
//	                  upgrades with each stage's duration and the output tail
//	                  of a failed stage, and its other facts (worker, boot, golden)
//	/upgrades/{id}    every host of one upgrade id, from the upgrade index
//	/rollouts/{id}    a rollout's waves and their progress
//
// An unknown host, upgrade or rollout is a 404 page that says so.
//
// Everything shown came off the bus, and outputs and reasons are
// arbitrary text: every value goes through html/template's contextual
// escaping (nothing is ever converted to template.HTML), and a row sent
// over /events is the same template's escaped HTML inside a JSON string.
// Pages carry a Content-Security-Policy that allows only the dashboard's
// own script and style, so even a missed escape could not run a script.
//
// The handler only reads: status rows (projections.Fleet), the upgrade
// index (bus/upgradeindex), the stream (host and upgrade history) and
// rollout facts (producers/rollout). It is safe for concurrent use and
// keeps no state between requests; each /events stream holds one KV
// watch until its request's context ends, so a server shutting down must
// cancel the requests' base context (see cmd/convoy/http.go).
//
// The handler does no authentication: the listener in front of it does.
package dashboard
