package producers

import (
	"context"
	"errors"
	"fmt"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
)

// Request asks hosts to upgrade.
type Request struct {
	Hosts []string
	// Rev is the revision to deploy; empty means the tip of each host's
	// tracked branch.
	Rev string
	// ID is the upgrade id, a ULID; empty means a new one. Reusing an id
	// is safe: each host stores and runs it at most once.
	ID             string
	AllowDowngrade bool
	// RolloutRollback marks the request as the rollback of that rollout
	// (see events.UpgradeRequest).
	RolloutRollback string
	// By names who asks ("alice@laptop", "schedule").
	By string
}

// Sent says what happened to a request on one host.
type Sent struct {
	Host string
	// Seq is where the request is stored (the original on a retry).
	Seq uint64
	// Done is set when the upgrade had already ended under this id: the
	// request was not sent again.
	Done *upgradeindex.Record
}

// Validate reports every problem with the request at once, before
// anything is sent.
func (r Request) Validate() error {
	if len(r.Hosts) == 0 {
		return errors.New("no hosts: name at least one host, or use --all")
	}
	var errs []error
	seen := map[string]bool{}
	for _, h := range r.Hosts {
		if err := events.ValidateHost(h); err != nil {
			errs = append(errs, err)
		}
		if seen[h] {
			errs = append(errs, fmt.Errorf("host %q named twice", h))
		}
		seen[h] = true
	}
	if r.ID != "" {
		if err := events.ValidateID(r.ID); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RequestMsgID is the Nats-Msg-Id of an upgrade request: one per host and
// upgrade id, so a retried publish is stored once.
func RequestMsgID(host, id string) string { return "req." + host + "." + id }

// Upgrade validates the request and appends one upgrade.requested per
// host. Every host name is checked before anything is sent. When the
// caller gave the id, the upgrade index is read first, for all hosts at
// once, and a host whose upgrade already ended under it is reported in
// Sent.Done and not sent again (a new id cannot have ended). The appends
// are pipelined, each deduplicated by RequestMsgID, so a retry stores
// each host's request at most once.
//
// It returns the upgrade id and, in the order of r.Hosts, what happened
// on each host that was handled; the error joins one error per host whose
// request may not be stored, and those hosts have no Sent. Requesting
// them again with the same id is safe.
func Upgrade(ctx context.Context, c *bus.Conn, r Request) (string, []Sent, error) {
	if err := r.Validate(); err != nil {
		return "", nil, err
	}
	done := map[string]upgradeindex.Record{}
	if r.ID == "" {
		r.ID = events.NewID()
	} else {
		index, err := upgradeindex.Open(ctx, c)
		if err != nil {
			return "", nil, err
		}
		if done, err = index.Records(ctx, r.ID, r.Hosts); err != nil {
			return "", nil, err
		}
	}
	source := "convoy/producer"
	if r.By != "" {
		source += "/" + r.By
	}
	var out []bus.Outgoing
	for _, h := range r.Hosts {
		if done[h].Ended() {
			continue
		}
		e, err := events.New(events.UpgradeRequested, h, source, events.UpgradeRequest{Rev: r.Rev, AllowDowngrade: r.AllowDowngrade, RequestedBy: r.By, RolloutRollback: r.RolloutRollback})
		if err != nil {
			return r.ID, nil, err
		}
		e.UpgradeID = r.ID
		subj, _ := events.RequestSubject(h, events.UpgradeRequested)
		out = append(out, bus.Outgoing{Subject: subj, Event: e, MsgID: RequestMsgID(h, r.ID)})
	}
	appended := c.AppendAll(ctx, out)
	sent := make([]Sent, 0, len(r.Hosts))
	var errs []error
	for _, h := range r.Hosts {
		if rec := done[h]; rec.Ended() {
			sent = append(sent, Sent{Host: h, Seq: rec.FirstSeq, Done: &rec})
			continue
		}
		a := appended[0]
		appended = appended[1:]
		if a.Err != nil {
			errs = append(errs, fmt.Errorf("request upgrade of %s: %w", h, a.Err))
			continue
		}
		sent = append(sent, Sent{Host: h, Seq: a.Seq})
	}
	return r.ID, sent, errors.Join(errs...)
}

// Pin asks host's worker to pin its current generation as golden. It
// returns the request's id and stream sequence; the worker answers with
// golden.pinned or upgrade.rejected under that id.
func Pin(ctx context.Context, c *bus.Conn, host, by string) (string, uint64, error) {
	if err := events.ValidateHost(host); err != nil {
		return "", 0, err
	}
	e, err := events.New(events.PinRequested, host, "convoy/producer", events.PinRequest{RequestedBy: by})
	if err != nil {
		return "", 0, err
	}
	e.UpgradeID = e.ID
	subj, _ := events.RequestSubject(host, events.PinRequested)
	seq, err := c.Append(ctx, subj, e, nil)
	if err != nil {
		return "", 0, fmt.Errorf("request pin on %s: %w", host, err)
	}
	return e.ID, seq, nil
}

// Wait follows the facts of upgrade id on hosts, from the earliest of
// their requests, calling fn for each in stream order, until every host
// has its terminal fact or ctx ends. It returns each host's terminal kind.
func Wait(ctx context.Context, c *bus.Conn, id string, sent []Sent, fn func(bus.Stored)) (map[string]events.Kind, error) {
	ends := make(map[string]events.Kind, len(sent))
	if len(sent) == 0 {
		return ends, nil
	}
	var from uint64
	filters := make([]string, 0, len(sent))
	for _, s := range sent {
		if from == 0 || s.Seq < from {
			from = s.Seq
		}
		filters = append(filters, events.HostFacts(s.Host))
	}
	if len(filters) > 64 {
		filters = []string{events.AllHostFacts}
	}
	want := make(map[string]bool, len(sent))
	for _, s := range sent {
		want[s.Host] = true
	}
	err := c.Follow(ctx, filters, bus.From{Seq: from}, func(st bus.Stored) error {
		if st.Err != nil || st.Event.UpgradeID != id || !want[st.Event.Host()] {
			return nil
		}
		fn(st)
		if k := st.Event.Kind(); k.IsTerminal() {
			ends[st.Event.Host()] = k
			if len(ends) == len(want) {
				return bus.ErrStop
			}
		}
		return nil
	})
	return ends, err
}
