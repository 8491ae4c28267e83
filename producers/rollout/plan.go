package rollout

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/convoy-fleet/convoy/events"
)

// Selector is one parsed --wave: exactly one of Tag, Percent or All.
type Selector struct {
	Tag     string
	Percent int
	All     bool
}

// String returns the selector as the operator writes it.
func (s Selector) String() string {
	switch {
	case s.Tag != "":
		return "tag=" + s.Tag
	case s.Percent > 0:
		return strconv.Itoa(s.Percent) + "%"
	}
	return "all"
}

// ParseWave parses a --wave: "tag=T" (the hosts with tag T), "N%" (N
// percent, 1 to 100, of the hosts no earlier wave has, at least one) or
// "all" (every host no earlier wave has).
func ParseWave(v string) (Selector, error) {
	switch {
	case v == "all":
		return Selector{All: true}, nil
	case strings.HasPrefix(v, "tag="):
		tag := strings.TrimPrefix(v, "tag=")
		if tag == "" {
			return Selector{}, fmt.Errorf("--wave %q: name the tag, as in tag=canary", v)
		}
		return Selector{Tag: tag}, nil
	case strings.HasSuffix(v, "%"):
		n, err := strconv.Atoi(strings.TrimSuffix(v, "%"))
		if err != nil || n < 1 || n > 100 {
			return Selector{}, fmt.Errorf("--wave %q: a share of the hosts from 1%% to 100%%", v)
		}
		return Selector{Percent: n}, nil
	}
	return Selector{}, fmt.Errorf("--wave %q: want tag=TAG, N%% or all", v)
}

// Host is a host a plan may select: its name and its tags.
type Host struct {
	Name string
	Tags []string
}

// Plan selects each wave's hosts from hosts, in order: a host is in at
// most one wave, and within a selector hosts go by name. It reports every
// wave that selects no host, and every tag no host has, at once.
func Plan(sels []Selector, hosts []Host) ([]events.RolloutWave, error) {
	if len(sels) == 0 {
		return nil, errors.New("no waves: give at least one --wave (tag=canary, 25%, all)")
	}
	hosts = slices.Clone(hosts)
	slices.SortFunc(hosts, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	taken := map[string]bool{}
	var waves []events.RolloutWave
	var errs []error
	for i, s := range sels {
		var rest []Host
		for _, h := range hosts {
			if !taken[h.Name] {
				rest = append(rest, h)
			}
		}
		var pick []string
		switch {
		case s.Tag != "":
			known := false
			for _, h := range hosts {
				if slices.Contains(h.Tags, s.Tag) {
					known = true
				}
			}
			if !known {
				errs = append(errs, fmt.Errorf("wave %d (%s): no host has the tag %q", i+1, s, s.Tag))
				continue
			}
			for _, h := range rest {
				if slices.Contains(h.Tags, s.Tag) {
					pick = append(pick, h.Name)
				}
			}
		case s.Percent > 0:
			n := max(1, len(rest)*s.Percent/100)
			for _, h := range rest[:min(n, len(rest))] {
				pick = append(pick, h.Name)
			}
		default:
			for _, h := range rest {
				pick = append(pick, h.Name)
			}
		}
		if len(pick) == 0 {
			errs = append(errs, fmt.Errorf("wave %d (%s) selects no host: earlier waves took all %d", i+1, s, len(hosts)))
			continue
		}
		for _, h := range pick {
			taken[h] = true
		}
		waves = append(waves, events.RolloutWave{Spec: s.String(), Hosts: pick})
	}
	if len(hosts) == 0 {
		return nil, errors.New("no hosts: no worker has started yet, so the fleet is empty")
	}
	return waves, errors.Join(errs...)
}

// WaveID is the upgrade id of wave (from 1) of rollout id: a ULID with the
// rollout's time and a hash of both as randomness, the same in every
// controller, so a restarted one asks each host once.
func WaveID(id string, wave int) string {
	sum := sha256.Sum256([]byte("convoy rollout " + id + " wave " + strconv.Itoa(wave)))
	var u ulid.ULID
	if r, err := ulid.ParseStrict(id); err == nil {
		_ = u.SetTime(r.Time())
	}
	_ = u.SetEntropy(sum[:10])
	return u.String()
}

// RollbackID is the upgrade id under which a halted rollout id sends its
// upgraded hosts back: derived like WaveID, so a restarted controller
// asks each host once.
func RollbackID(id string) string {
	sum := sha256.Sum256([]byte("convoy rollout " + id + " rollback"))
	var u ulid.ULID
	if r, err := ulid.ParseStrict(id); err == nil {
		_ = u.SetTime(r.Time())
	}
	_ = u.SetEntropy(sum[:10])
	return u.String()
}
