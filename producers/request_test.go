package producers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/bus/bustest"
	"github.com/convoy-fleet/convoy/bus/upgradeindex"
	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/producers"
)

// endUpgrade stores host's terminal fact of the upgrade requested at seq
// and folds both into the upgrade index, as the projector would.
func endUpgrade(t *testing.T, c *bus.Conn, host string, seq uint64) {
	t.Helper()
	ctx := t.Context()
	req, err := c.Get(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := events.New(events.UpgradeSucceeded, host, "test", events.Fact{Commit: "c1"})
	e.UpgradeID = req.Event.UpgradeID
	subj, _ := events.HostSubject(host, e.Kind())
	end, err := c.Append(ctx, subj, e, nil)
	if err != nil {
		t.Fatal(err)
	}
	fact, err := c.Get(ctx, end)
	if err != nil {
		t.Fatal(err)
	}
	index, err := upgradeindex.Open(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := index.Apply(ctx, []upgradeindex.HostEvent{{Host: host, Stored: req}, {Host: host, Stored: fact}}); err != nil {
		t.Fatal(err)
	}
}

func TestUpgradeRequestsEachHostOncePerID(t *testing.T) {
	_, c := bustest.Start(t)
	ctx := t.Context()
	var hosts []string
	for i := range 700 { // more than the pipeline holds at once
		hosts = append(hosts, fmt.Sprintf("h%03d", i))
	}
	id, first, err := producers.Upgrade(ctx, c, producers.Request{Hosts: hosts, By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != len(hosts) {
		t.Fatalf("%d sent, want %d", len(first), len(hosts))
	}
	for i, s := range first {
		if s.Host != hosts[i] || s.Seq != uint64(i+1) || s.Done != nil {
			t.Fatalf("sent[%d] = %+v, want %s at %d", i, s, hosts[i], i+1)
		}
	}

	// The same id again: nothing new is stored, and a host whose upgrade
	// ended under it is reported, not sent.
	endUpgrade(t, c, "h003", first[3].Seq)
	last, _ := c.LastSeq(ctx)
	_, again, err := producers.Upgrade(ctx, c, producers.Request{Hosts: hosts, ID: id, By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range again {
		if s.Host != hosts[i] || s.Seq != first[i].Seq {
			t.Fatalf("again[%d] = %+v, want %s at %d", i, s, hosts[i], first[i].Seq)
		}
		if ended := s.Done != nil; ended != (s.Host == "h003") {
			t.Fatalf("%s: Done %+v", s.Host, s.Done)
		}
	}
	if again[3].Done.Terminal != string(events.UpgradeSucceeded) {
		t.Fatalf("h003: %+v", again[3].Done)
	}
	if now, _ := c.LastSeq(ctx); now != last {
		t.Fatalf("a repeated request stored %d new events", now-last)
	}

	// One bad name: nothing is sent.
	if _, _, err := producers.Upgrade(ctx, c, producers.Request{Hosts: []string{"h900", "bad host"}}); err == nil {
		t.Fatal("a bad host name was accepted")
	}
	if now, _ := c.LastSeq(ctx); now != last {
		t.Fatal("a request with a bad host name stored events")
	}

	// Appends that fail are reported per host.
	done, cancel := context.WithCancel(ctx)
	cancel()
	id, sent, err := producers.Upgrade(done, c, producers.Request{Hosts: []string{"h900", "h901"}})
	if id == "" || len(sent) != 0 || err == nil || !strings.Contains(err.Error(), "h900") || !strings.Contains(err.Error(), "h901") {
		t.Fatalf("cancelled: id %q, sent %+v, err %v", id, sent, err)
	}
}
