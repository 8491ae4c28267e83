package workers

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/convoy-fleet/convoy/events"
)

// outbox holds events that are not yet acknowledged by the bus, one file
// per event named by its ULID, so they are published in order, exactly
// once, when the bus is back.
type outbox struct{ dir string }

type outboxEntry struct {
	Subject string          `json:"subject"`
	Event   json.RawMessage `json:"event"`
}

func (o outbox) put(subject string, e events.Event) error {
	b, err := events.Encode(e)
	if err != nil {
		return err
	}
	entry, err := json.Marshal(outboxEntry{Subject: subject, Event: b})
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(o.dir, e.ID+".json"), entry); err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

func (o outbox) has(id string) bool {
	if strings.ContainsAny(id, "/.") {
		return false
	}
	_, err := os.Stat(filepath.Join(o.dir, id+".json"))
	return err == nil
}

func (o outbox) remove(id string) error {
	if err := os.Remove(filepath.Join(o.dir, id+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("outbox: %w", err)
	}
	return nil
}

// pending returns the waiting events, oldest first.
func (o outbox) pending() ([]string, []events.Event, error) {
	ents, err := os.ReadDir(o.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("outbox: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".json") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var subjects []string
	var evs []events.Event
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(o.dir, n))
		if err != nil {
			return nil, nil, fmt.Errorf("outbox: %w", err)
		}
		var entry outboxEntry
		if err := json.Unmarshal(b, &entry); err != nil {
			return nil, nil, fmt.Errorf("outbox %s is corrupt: %w", n, err)
		}
		e, err := events.Decode(entry.Event)
		if err != nil {
			return nil, nil, fmt.Errorf("outbox %s: %w", n, err)
		}
		subjects = append(subjects, entry.Subject)
		evs = append(evs, e)
	}
	return subjects, evs, nil
}
