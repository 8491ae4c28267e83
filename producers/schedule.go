package producers

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/convoy-fleet/convoy/bus"
)

// Schedule asks the fleet to upgrade at fixed times, as a systemd timer
// would, but as a producer. Every slot has one upgrade id, derived from the
// slot's time, so two schedulers (one on each of two machines, for
// availability) request each slot once: the bus deduplicates by id.
type Schedule struct {
	// Every is the period; slots are aligned to multiples of it since the
	// Unix epoch (1h: on the hour). Either Every or Daily.
	Every time.Duration
	// Daily is a time of day, "04:00", in Location.
	Daily    string
	Location *time.Location
	// Hosts returns the hosts to upgrade at a slot: a fixed list (see
	// HostList) or, say, the fleet view's served hosts. Required.
	Hosts func(context.Context) ([]string, error)
	// Rev to request; empty means the tip of each host's branch.
	Rev string
	// OnRequest, if set, is told of each slot's request.
	OnRequest func(slot time.Time, id string, sent []Sent, err error)
}

// Validate reports what is wrong with the schedule.
func (s *Schedule) Validate() error {
	switch {
	case s.Every == 0 && s.Daily == "":
		return errors.New("give --every DURATION (1h) or --daily HH:MM (04:00)")
	case s.Every != 0 && s.Daily != "":
		return errors.New("give --every or --daily, not both")
	case s.Every < 0 || (s.Every > 0 && s.Every < time.Second):
		return fmt.Errorf("--every %s: at least 1s", s.Every)
	case s.Hosts == nil:
		return errors.New("a schedule needs its hosts")
	}
	if s.Daily != "" {
		if _, _, err := parseHHMM(s.Daily); err != nil {
			return err
		}
	}
	return nil
}

func parseHHMM(v string) (int, int, error) {
	h, m, ok := strings.Cut(v, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 {
		return 0, 0, fmt.Errorf("--daily %q: want HH:MM, such as 04:00", v)
	}
	return hh, mm, nil
}

// Next returns the first slot strictly after t.
func (s *Schedule) Next(t time.Time) time.Time {
	if s.Every > 0 {
		return t.Truncate(s.Every).Add(s.Every)
	}
	loc := s.Location
	if loc == nil {
		loc = time.Local
	}
	hh, mm, _ := parseHHMM(s.Daily)
	lt := t.In(loc)
	slot := time.Date(lt.Year(), lt.Month(), lt.Day(), hh, mm, 0, 0, loc)
	if !slot.After(t) {
		slot = time.Date(lt.Year(), lt.Month(), lt.Day()+1, hh, mm, 0, 0, loc)
	}
	return slot
}

// SlotID is the upgrade id of a slot: a ULID whose time is the slot's and
// whose randomness is a hash of it, the same on every scheduler.
func SlotID(slot time.Time) string {
	sum := sha256.Sum256([]byte("convoy schedule " + slot.UTC().Format(time.RFC3339Nano)))
	var id ulid.ULID
	if err := id.SetTime(ulid.Timestamp(slot)); err != nil {
		return ulid.Make().String()
	}
	_ = id.SetEntropy(sum[:10])
	return id.String()
}

// Run requests an upgrade at every slot until ctx ends. A slot missed
// while the bus was unreachable is requested when it is back, once.
func (s *Schedule) Run(ctx context.Context, c *bus.Conn, now func() time.Time) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if now == nil {
		now = time.Now
	}
	for {
		slot := s.Next(now())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Until(slot)):
		}
		id := SlotID(slot)
		// Until it is requested, or the next slot is due.
		for {
			sent, err := s.request(ctx, c, id)
			if s.OnRequest != nil {
				s.OnRequest(slot, id, sent, err)
			}
			if err == nil || ctx.Err() != nil || !now().Before(s.Next(slot)) {
				break
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(min(5*time.Second, time.Until(s.Next(slot)))):
			}
		}
	}
}

func (s *Schedule) request(ctx context.Context, c *bus.Conn, id string) ([]Sent, error) {
	hosts, err := s.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	if len(hosts) == 0 {
		return nil, errors.New("no hosts to upgrade: no worker has started yet, so the fleet is empty")
	}
	_, sent, err := Upgrade(ctx, c, Request{Hosts: hosts, Rev: s.Rev, ID: id, By: "schedule"})
	return sent, err
}

// HostList returns a Schedule.Hosts that always names hosts.
func HostList(hosts ...string) func(context.Context) ([]string, error) {
	return func(context.Context) ([]string, error) { return hosts, nil }
}
