package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// Seed Test 10, which the seed never ran: the scheduled upgrade. A
// schedule upgrades the fleet by itself; a second schedule (another
// machine, for availability) adds no request of its own.
func TestSeed10ScheduledUpgrade(t *testing.T) {
	t.Parallel()
	r := newRig(t, []string{"sorrow", "torment"}, sandbox.Options{})
	r.startWorker("sorrow")
	r.startWorker("torment")
	c := r.commit(configV1, "v1")
	for range 2 {
		p := startProc(t, "schedule", "--nats", r.url, "schedule", "--every", "2s")
		eventually(t, 10*time.Second, "the schedule to start", func() bool { return strings.Contains(p.stdout.String(), "next upgrade at") })
	}
	for _, h := range []string{"sorrow", "torment"} {
		eventually(t, 30*time.Second, h+" upgraded by the schedule", func() bool {
			head, _ := r.head(h)
			return head == c
		})
	}
	// Later slots find the hosts current.
	eventually(t, 30*time.Second, "a later slot to end already current", func() bool {
		for _, l := range r.history("sorrow", "--type", "upgrade.skipped") {
			if strings.Contains(l.fact(t).Reason, "already current") {
				return true
			}
		}
		return false
	})
	// Each slot's upgrade id was requested once per host, whatever the
	// number of schedules.
	perID := map[string]int{}
	for _, l := range r.history("sorrow") {
		if l.kind() == "upgrade.requested" {
			perID[l.upgradeID()]++
		}
	}
	for id, n := range perID {
		if n != 1 {
			t.Fatalf("slot upgrade %s requested %d times on sorrow", id, n)
		}
	}
}
