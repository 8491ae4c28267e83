package alerts

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
)

// Alert is one thing worth telling a person, sent to every sink once.
type Alert struct {
	// ID is the CloudEvent id sent, and every sink's idempotency key: the
	// fact's own id, or for a derived alert an id derived from what
	// triggered it, so the same alert always has the same id.
	ID       string
	Kind     events.Kind
	Severity string
	// Host is the host it is about ("" for a rollout's).
	Host string
	// Rollout is the rollout's id, for rollout kinds.
	Rollout   string
	UpgradeID string
	Reason    string
	// Summary is one line for a person.
	Summary string
	Time    time.Time
	// Event is the CloudEvent the webhook posts: the fact itself, or the
	// derived alert, with the extensions "severity" and "summary".
	Event events.Event
}

// Source is the CloudEvents source of derived alerts.
const Source = "convoy/alerts"

// derivedID is a ULID at t whose entropy is a hash of parts: the same
// trigger always gives the same id.
func derivedID(t time.Time, parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	var u ulid.ULID
	_ = u.SetTime(ulid.Timestamp(t))
	copy(u[6:], h[:10])
	return u.String()
}

// factAlert is the alert of a stored fact.
func factAlert(e events.Event, sev string) Alert {
	a := Alert{ID: e.ID, Kind: e.Kind(), Severity: sev, UpgradeID: e.UpgradeID, Time: e.Time}
	if a.Kind.Stage() == events.ClassRollout {
		a.Rollout = e.Subject
		var f events.RolloutFact
		_ = e.DecodeData(&f)
		a.Reason = f.Reason
		a.Summary = fmt.Sprintf("rollout %s: %s", a.Rollout, strings.TrimPrefix(string(a.Kind), "rollout."))
	} else {
		a.Host = e.Host()
		f, _ := e.Fact()
		a.Reason = f.Reason
		a.Summary = a.Host + ": " + string(a.Kind)
		if f.Stage != "" && a.Kind.IsTerminal() {
			a.Summary += " at " + f.Stage
		}
		if a.Kind == events.GoldenRestored && f.Result != "" {
			a.Summary += ", now running " + f.Result
		}
	}
	if a.Reason != "" {
		a.Summary += ": " + firstLine(a.Reason)
	}
	a.Event = withExtensions(e, a)
	return a
}

// derivedAlert builds a derived alert about host.
func derivedAlert(id string, k events.Kind, host, sev, summary string, t time.Time, data any) Alert {
	a := Alert{ID: id, Kind: k, Severity: sev, Host: host, Summary: summary, Time: t}
	e, _ := events.New(k, host, Source, data)
	e.ID, e.Time = id, t
	a.Event = withExtensions(e, a)
	return a
}

func withExtensions(e events.Event, a Alert) events.Event {
	ext := make(map[string]json.RawMessage, len(e.Extensions)+2)
	for k, v := range e.Extensions {
		ext[k] = v
	}
	ext["severity"], _ = json.Marshal(a.Severity)
	ext["summary"], _ = json.Marshal(a.Summary)
	e.Extensions = ext
	return e
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// OfflineData is the data of a WorkerOffline alert.
type OfflineData struct {
	// Stopped is the id of the worker.stopped that began the episode
	// (none when the worker fell silent without one).
	Stopped string `json:"stopped_event,omitempty"`
	// LastSeen is the time of the worker's last fact.
	LastSeen time.Time `json:"last_seen"`
	// OfflineAfter is the configured silence, in seconds.
	OfflineAfter float64 `json:"offline_after_seconds"`
}

// FailingData is the data of a HostFailing alert.
type FailingData struct {
	// Failures is how many upgrades in a row ended upgrade.failed.
	Failures int `json:"failures"`
	// Last is the id of the last of them (upgrade.failed's event id).
	Last string `json:"last_event"`
	// Reason is the last failure's.
	Reason string `json:"reason,omitempty"`
}

// StorageData is the data of a BusStorage alert: the server's Storage.
type StorageData = bus.Storage
