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

// damagedDir is where damaged outbox entries are kept, under the outbox.
const damagedDir = "damaged"

// damagedEntry is an outbox file that could not be read as a fact of
// this host: moved to outbox/damaged/, never published.
type damagedEntry struct {
	Name, KeptAt string
	Err          error
}

// pending returns the waiting events of host, oldest first. An entry that
// cannot be read as one of host's facts (truncated, garbled, another
// subject) is moved to outbox/damaged/ and returned in damaged, and the
// others are still returned.
func (o outbox) pending(host string) (subjects []string, evs []events.Event, damaged []damagedEntry, err error) {
	ents, err := os.ReadDir(o.dir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("outbox: %w", err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".json") && e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(o.dir, n))
		if err != nil {
			return nil, nil, nil, fmt.Errorf("outbox: %w", err)
		}
		subj, e, err := decodeEntry(b, host)
		if err == nil && e.ID+".json" != n {
			err = fmt.Errorf("holds event %s", e.ID)
		}
		if err != nil {
			kept, merr := o.keepAside(n)
			if merr != nil {
				return nil, nil, nil, fmt.Errorf("outbox %s is damaged (%w) and could not be kept aside: %w", n, err, merr)
			}
			damaged = append(damaged, damagedEntry{Name: n, KeptAt: kept, Err: err})
			continue
		}
		subjects = append(subjects, subj)
		evs = append(evs, e)
	}
	return subjects, evs, damaged, nil
}

// decodeEntry reads an outbox entry as a fact of host.
func decodeEntry(b []byte, host string) (string, events.Event, error) {
	var entry outboxEntry
	if err := json.Unmarshal(b, &entry); err != nil {
		return "", events.Event{}, err
	}
	e, err := events.Decode(entry.Event)
	if err != nil {
		return "", events.Event{}, err
	}
	if want, err := events.HostSubject(host, e.Kind()); err != nil || entry.Subject != want || e.Host() != host {
		return "", events.Event{}, fmt.Errorf("subject %q is not this host's subject for %s", entry.Subject, e.Type)
	}
	return entry.Subject, e, nil
}

// keepAside moves outbox file name to outbox/damaged/.
func (o outbox) keepAside(name string) (string, error) {
	dir := filepath.Join(o.dir, damagedDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	ownLikeParent(dir)
	to := filepath.Join(dir, name)
	if err := os.Rename(filepath.Join(o.dir, name), to); err != nil {
		return "", err
	}
	return to, nil
}
