package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
	"github.com/convoy-fleet/convoy/projections"
)

// selection is the hosts a command acts on: named ones, --all (every host
// whose worker has started), or --tag T (those whose worker started with
// tag T).
type selection struct {
	all   *bool
	tag   *string
	hosts []string
}

// addSelection registers --all and --tag on fs.
func addSelection(fs *flag.FlagSet) *selection {
	return &selection{
		all: fs.Bool("all", false, "every host whose worker has started"),
		tag: fs.String("tag", "", "every host whose worker started with this tag (tags = [...] in its config)"),
	}
}

// check takes the named hosts and reports a selection that is not
// exactly one of names, --all and --tag, or names a bad host or tag.
func (s *selection) check(hosts []string) error {
	s.hosts = hosts
	n := 0
	for _, given := range []bool{*s.all, *s.tag != "", len(hosts) > 0} {
		if given {
			n++
		}
	}
	switch {
	case n != 1:
		return errors.New("name hosts or use --all or --tag T (one of them)")
	case *s.tag != "":
		if err := events.ValidateTag(*s.tag); err != nil {
			return fmt.Errorf("--tag: %w", err)
		}
	case len(hosts) > 0:
		return producers.Request{Hosts: hosts}.Validate()
	}
	return nil
}

// named reports whether hosts were named (not --all or --tag).
func (s *selection) named() bool { return len(s.hosts) > 0 }

// resolve returns the selected hosts now, read from the status view for
// --all and --tag; an empty selection is an error that says why.
func (s *selection) resolve(ctx context.Context, fleet *projections.Fleet) ([]string, error) {
	if s.named() {
		return s.hosts, nil
	}
	hosts, err := fleet.Tagged(ctx, *s.tag)
	switch {
	case err != nil || len(hosts) > 0:
		return hosts, err
	case *s.tag != "":
		return nil, fmt.Errorf("--tag %s: no host whose worker has started has this tag (see convoy status for each host's tags)", *s.tag)
	default:
		return nil, errors.New("--all: no worker has started yet, so the fleet is empty; start the hosts' workers first")
	}
}

// source returns a func that resolves the selection each time it is
// called, for producers that run on (schedules, the git watcher).
func (s *selection) source(conn *bus.Conn) func(context.Context) ([]string, error) {
	if s.named() {
		return producers.HostList(s.hosts...)
	}
	return func(ctx context.Context) ([]string, error) {
		fleet, err := projections.OpenFleet(ctx, conn)
		if err != nil {
			return nil, err
		}
		return s.resolve(ctx, fleet)
	}
}
