package alerts

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/convoy-fleet/convoy/events"
)

// Severities, lowest first.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Derived kinds: alerts no single fact carries, which the Alerter derives.
const (
	// WorkerOffline: the host's worker stopped (worker.stopped, so the
	// status view shows it offline, or without it, so its lease expired
	// and the view shows it silent), has not started again, and the host
	// has sent no fact for Config.OfflineAfter.
	WorkerOffline events.Kind = "worker.offline"
	// HostFailing: the host's last Config.ConsecutiveFailures upgrades
	// each ended upgrade.failed.
	HostFailing events.Kind = "host.failing"
	// BusStorage: a convoy server's storage guard says its data dir is
	// low (new requests refused) or full (every append refused).
	BusStorage events.Kind = "bus.storage"
)

// Sink types.
const (
	SinkWebhook = "webhook"
	SinkNtfy    = "ntfy"
	SinkMatrix  = "matrix"
	SinkCommand = "command"
)

// Duration is a time.Duration written as "10m" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want a number with a unit, such as 10m or 30s", b)
	}
	d.Duration = v
	return nil
}

// MarshalText formats the duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Config is the [alerts] section. The zero value, with defaults applied,
// alerts on DefaultRules; it needs at least one sink to be valid.
type Config struct {
	// OfflineAfter is how long a stopped worker may stay silent before
	// WorkerOffline is raised. Default 10m.
	OfflineAfter Duration `toml:"offline_after"`
	// CheckEvery is how often the status view is read for offline
	// workers. Default OfflineAfter/4, at most 1m.
	CheckEvery Duration `toml:"check_every"`
	// ConsecutiveFailures is the N of HostFailing. Default 3.
	ConsecutiveFailures int `toml:"consecutive_failures"`
	// DashboardURL, when set, is where ntfy's click link points
	// (DashboardURL/hosts/<host>).
	DashboardURL string `toml:"dashboard_url"`
	// Rules decide which events alert and how loud; the first matching
	// rule wins. None: DefaultRules.
	Rules []Rule `toml:"rule"`
	// Sinks receive every alert.
	Sinks []SinkConfig `toml:"sink"`
}

// Rule matches events by kind and host.
type Rule struct {
	// Kinds are event kinds ("upgrade.failed", "rollout.halted") or
	// derived kinds (WorkerOffline, HostFailing).
	Kinds []string `toml:"kinds"`
	// Hosts and Tags select hosts: a rule with neither matches every
	// event; otherwise the event's host must be named or carry one of the
	// tags (as its worker started with). Rollout events have no host and
	// match only rules without a selector.
	Hosts []string `toml:"hosts"`
	Tags  []string `toml:"tags"`
	// Severity is info, warning or critical.
	Severity string `toml:"severity"`
}

// DefaultRules are the rules of a config that gives none.
func DefaultRules() []Rule {
	return []Rule{
		{Kinds: []string{string(events.RollbackFailed)}, Severity: SeverityCritical},
		{Kinds: []string{string(events.GoldenRestored)}, Severity: SeverityCritical},
		{Kinds: []string{string(HostFailing), string(BusStorage)}, Severity: SeverityCritical},
		{Kinds: []string{string(events.UpgradeFailed), string(events.BootFailed), string(events.RolloutHalted), string(WorkerOffline)}, Severity: SeverityWarning},
	}
}

// SinkConfig is one [[alerts.sink]].
type SinkConfig struct {
	// Type is webhook, ntfy, matrix or command.
	Type string `toml:"type"`
	// Name identifies the sink in logs, Stats and the record of what was
	// sent (renaming it sends the unacknowledged alerts again). Default:
	// the type. Lower-case letters, digits and '-'.
	Name string `toml:"name"`
	// URL is the webhook's endpoint or the ntfy topic's URL.
	URL string `toml:"url"`
	// SecretFile holds the webhook's HMAC-SHA256 key (optional).
	SecretFile string `toml:"secret_file"`
	// TokenFile holds the ntfy bearer token (optional) or the Matrix
	// access token (required).
	TokenFile string `toml:"token_file"`
	// Homeserver and Room are Matrix's ("https://matrix.org",
	// "!abc:matrix.org").
	Homeserver string `toml:"homeserver"`
	Room       string `toml:"room"`
	// Command is the argv of the command sink, run without a shell.
	Command []string `toml:"command"`
	// Timeout bounds one attempt. Default 10s (command: 30s).
	Timeout Duration `toml:"timeout"`
	// RetryFor bounds the retries of one alert. Default 1m.
	RetryFor Duration `toml:"retry_for"`
}

// file is a config file whose alerts are its [alerts] section.
type file struct {
	Alerts Config `toml:"alerts"`
}

// LoadFile reads the [alerts] section of a TOML file, applies the
// defaults and validates it. Unknown keys are errors naming the key and
// its line.
func LoadFile(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("alerts config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("alerts config %s: %w", path, err)
	}
	return c, nil
}

// Parse is LoadFile on the file's content.
func Parse(b []byte) (Config, error) {
	var f file
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		var sm *toml.StrictMissingError
		var de *toml.DecodeError
		switch {
		case errors.As(err, &sm):
			errs := make([]error, 0, len(sm.Errors))
			for _, e := range sm.Errors {
				row, _ := e.Position()
				errs = append(errs, fmt.Errorf("line %d: unknown key %q (check its spelling and section; see docs/alerts.md)", row, strings.Join(e.Key(), ".")))
			}
			return Config{}, errors.Join(errs...)
		case errors.As(err, &de):
			row, col := de.Position()
			return Config{}, fmt.Errorf("line %d, column %d: %s", row, col, de.Error())
		}
		return Config{}, err
	}
	f.Alerts.SetDefaults()
	if err := f.Alerts.Validate(); err != nil {
		return Config{}, err
	}
	return f.Alerts, nil
}

// SetDefaults fills what the config leaves out.
func (c *Config) SetDefaults() {
	if c.OfflineAfter.Duration == 0 {
		c.OfflineAfter.Duration = 10 * time.Minute
	}
	if c.CheckEvery.Duration == 0 {
		c.CheckEvery.Duration = min(max(c.OfflineAfter.Duration/4, 100*time.Millisecond), time.Minute)
	}
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = 3
	}
	if len(c.Rules) == 0 {
		c.Rules = DefaultRules()
	}
	for i := range c.Sinks {
		s := &c.Sinks[i]
		if s.Name == "" {
			s.Name = s.Type
		}
		if s.Timeout.Duration == 0 {
			s.Timeout.Duration = 10 * time.Second
			if s.Type == SinkCommand {
				s.Timeout.Duration = 30 * time.Second
			}
		}
		if s.RetryFor.Duration == 0 {
			s.RetryFor.Duration = time.Minute
		}
	}
}

// Validate reports every problem of a defaulted config at once.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.OfflineAfter.Duration < 0 {
		bad("offline_after %s: want a positive duration", c.OfflineAfter.Duration)
	}
	if c.CheckEvery.Duration <= 0 {
		bad("check_every %s: want a positive duration", c.CheckEvery.Duration)
	}
	if c.ConsecutiveFailures < 1 {
		bad("consecutive_failures %d: want 1 or more", c.ConsecutiveFailures)
	}
	if c.DashboardURL != "" {
		if err := httpURL(c.DashboardURL); err != nil {
			bad("dashboard_url: %w", err)
		}
	}
	for i, r := range c.Rules {
		at := fmt.Sprintf("rule %d", i+1)
		if len(r.Kinds) == 0 {
			bad("%s: no kinds (such as kinds = [\"upgrade.failed\"])", at)
		}
		for _, k := range r.Kinds {
			if !alertable(events.Kind(k)) {
				bad("%s: unknown kind %q (an event kind from docs/events.md, %q or %q)", at, k, WorkerOffline, HostFailing)
			}
		}
		for _, h := range r.Hosts {
			if err := events.ValidateHost(h); err != nil {
				bad("%s: %w", at, err)
			}
		}
		for _, tag := range r.Tags {
			if err := events.ValidateTag(tag); err != nil {
				bad("%s: %w", at, err)
			}
		}
		if !slices.Contains([]string{SeverityInfo, SeverityWarning, SeverityCritical}, r.Severity) {
			bad("%s: severity %q: want info, warning or critical", at, r.Severity)
		}
	}
	if len(c.Sinks) == 0 {
		bad("no sink: add an [[alerts.sink]] (webhook, ntfy, matrix or command)")
	}
	names := map[string]bool{}
	for i, s := range c.Sinks {
		at := fmt.Sprintf("sink %d (%s)", i+1, s.Name)
		if err := events.ValidateTag(s.Name); err != nil {
			bad("sink %d: name: %w", i+1, err)
		}
		if names[s.Name] {
			bad("%s: another sink has this name; give each a name = \"...\"", at)
		}
		names[s.Name] = true
		if s.Timeout.Duration <= 0 || s.RetryFor.Duration < 0 {
			bad("%s: timeout and retry_for must be positive", at)
		}
		unused := func(field, v string) {
			if v != "" {
				bad("%s: %s does not apply to a %s sink", at, field, s.Type)
			}
		}
		switch s.Type {
		case SinkWebhook, SinkNtfy:
			if err := httpURL(s.URL); err != nil {
				bad("%s: url: %w", at, err)
			}
			unused("homeserver", s.Homeserver)
			unused("room", s.Room)
			if s.Type == SinkWebhook {
				unused("token_file", s.TokenFile)
			} else {
				unused("secret_file", s.SecretFile)
			}
		case SinkMatrix:
			if err := httpURL(s.Homeserver); err != nil {
				bad("%s: homeserver: %w", at, err)
			}
			if !strings.HasPrefix(s.Room, "!") || !strings.Contains(s.Room, ":") {
				bad("%s: room %q: want a room id such as \"!abc123:matrix.org\"", at, s.Room)
			}
			if s.TokenFile == "" {
				bad("%s: token_file is required (a file holding the access token)", at)
			}
			unused("url", s.URL)
			unused("secret_file", s.SecretFile)
		case SinkCommand:
			if len(s.Command) == 0 || s.Command[0] == "" {
				bad("%s: command is required (an argv such as [\"/usr/local/bin/page\", \"--team\", \"ops\"])", at)
			}
			unused("url", s.URL)
			unused("token_file", s.TokenFile)
			unused("secret_file", s.SecretFile)
		default:
			bad("%s: type %q: want webhook, ntfy, matrix or command", at, s.Type)
		}
		if s.Type != SinkCommand && len(s.Command) > 0 {
			bad("%s: command does not apply to a %s sink", at, s.Type)
		}
	}
	return errors.Join(errs...)
}

func alertable(k events.Kind) bool {
	return k == WorkerOffline || k == HostFailing || k == BusStorage || (k.Known() && !k.IsRequest() && !strings.HasSuffix(string(k), ".requested"))
}

func httpURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q: want an http:// or https:// URL", s)
	}
	return nil
}
