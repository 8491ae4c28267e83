package e2e

import (
	"encoding/json"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/convoy-fleet/convoy/events"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// startController starts `convoy controller` against the rig's bus and
// waits until it runs.
func (r *rig) startController() *proc {
	r.t.Helper()
	p := startProc(r.t, "controller", "--nats", r.url, "controller")
	eventually(r.t, 30*time.Second, "the controller to run", func() bool {
		return strings.Contains(p.stderr.String(), "convoy controller running") || p.exited()
	})
	if p.exited() {
		r.t.Fatalf("controller exited with %d: %s", p.code, p.stderr.String())
	}
	return p
}

// wantRolloutOnce checks that rollout id of waves waves ended as an
// uninterrupted run ends: each fact kind once per wave, one success, each
// of hosts asked once under the rollout's wave ids and now on commit c.
func (r *rig) wantRolloutOnce(id, c string, hosts []string, waves int) {
	r.t.Helper()
	want := []string{"rollout.requested", "rollout.started"}
	for range waves {
		want = append(want, "rollout.wave.started", "rollout.wave.succeeded")
	}
	want = append(want, "rollout.succeeded")
	evs := r.rolloutEvents(id)
	wantKinds(r.t, evs, want...)
	var ids []string
	for _, l := range evs {
		if l.kind() == "rollout.wave.started" {
			ids = append(ids, l.upgradeID())
		}
	}
	for _, h := range hosts {
		if n := r.requestsFor(h, ids); n != 1 {
			r.t.Fatalf("%s requested %d times by the rollout", h, n)
		}
		if head, _ := r.head(h); head != c {
			r.t.Fatalf("%s on %s, want %s", h, head, c)
		}
	}
}

// A convoy controller beside convoy server's own: the two follow the same
// rollout, and each fact, and each host's request, is written once.
func TestRolloutTwoControllers(t *testing.T) {
	t.Parallel()
	r := newRolloutRig(t)
	second := r.startController()
	c := r.commit(configV1, "v1")
	res := convoy(t, 2*time.Minute, "--nats", r.url, "rollout", "start", "--rev", c,
		"--wave", "tag=canary", "--wave", "50%", "--wave", "all", "--bake", "1s", "--wait")
	wantExit(t, res, exitOK)
	id := strings.Fields(res.stdout)[0]
	r.wantRolloutOnce(id, c, rolloutHosts, 3)
	if second.exited() {
		t.Fatalf("the second controller exited with %d", second.code)
	}
	t.Logf("second controller:\n%s", second.stderr.String())
}

// killHosts are the hosts of a kill point's rollout: two waves of two.
var killHosts = []string{"ash", "birch", "cedar", "elm"}

// killBake is each wave's bake in the kill points' rollouts.
const killBake = 2 * time.Second

// controllerKillPoint is where in a rollout the controller is killed:
// when the n-th fact of kind is on the bus (a host's terminal fact of
// wave n when kind is "terminal"), after delay.
type controllerKillPoint struct {
	name  string
	kind  string
	n     int
	delay time.Duration
}

// The controller (a convoy controller; the server runs none) is killed
// with SIGKILL at each point of a two-wave rollout, at the moment the
// fact is on the bus, and restarted: the rollout ends as it would have,
// each fact once, no host asked twice.
func TestRolloutControllerKillPoints(t *testing.T) {
	t.Parallel()
	for _, pt := range []controllerKillPoint{
		{"requested", "rollout.requested", 1, 0},
		{"started", "rollout.started", 1, 0},
		{"wave 1 started", "rollout.wave.started", 1, 0},
		{"wave 1 ended", "terminal", 1, 0},
		{"wave 1 baking", "terminal", 1, killBake / 2},
		{"wave 1 succeeded", "rollout.wave.succeeded", 1, 0},
		{"wave 2 started", "rollout.wave.started", 2, 0},
		{"wave 2 baking", "terminal", 2, killBake / 2},
		{"wave 2 succeeded", "rollout.wave.succeeded", 2, 0},
	} {
		t.Run(strings.ReplaceAll(pt.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			testControllerKill(t, pt)
		})
	}
}

func testControllerKill(t *testing.T, pt controllerKillPoint) {
	r := baseRig(t)
	r.serverArgs = []string{"--controller=false"}
	r.startServerAnyPort()
	r.makeFleet(killHosts, sandbox.Options{})
	for _, h := range killHosts {
		r.startWorker(h)
	}
	eventually(t, 30*time.Second, "the workers in the status", func() bool {
		sts, _, _ := r.status()
		n := 0
		for _, s := range sts {
			if s.Worker != "" {
				n++
			}
		}
		return n == len(killHosts)
	})
	ctl := r.startController()

	// Watch the bus: count the facts and kill the controller at the point.
	var (
		mu       sync.Mutex
		seen     = map[string]int{} // rollout kind → count
		waveOf   = map[string]int{} // wave upgrade id → wave number
		ended    = map[int]int{}    // wave number → hosts' terminal facts
		killedAt time.Time
	)
	fired := make(chan struct{})
	kill := func() {
		mu.Lock()
		killedAt = time.Now()
		mu.Unlock()
		_ = ctl.cmd.Process.Signal(syscall.SIGKILL)
		close(fired)
	}
	onMsg := func(m *nats.Msg) {
		var e struct {
			Type      string `json:"type"`
			UpgradeID string `json:"upgradeid"`
		}
		if json.Unmarshal(m.Data, &e) != nil {
			return
		}
		kind := strings.TrimPrefix(e.Type, events.TypePrefix)
		mu.Lock()
		defer mu.Unlock()
		var hit bool
		switch {
		case strings.HasPrefix(kind, "rollout."):
			seen[kind]++
			if kind == "rollout.wave.started" {
				waveOf[e.UpgradeID] = seen[kind]
			}
			hit = kind == pt.kind && seen[kind] == pt.n
		case isTerminal(kind) && waveOf[e.UpgradeID] > 0:
			w := waveOf[e.UpgradeID]
			ended[w]++
			hit = pt.kind == "terminal" && w == pt.n && ended[w] == len(killHosts)/2
		}
		if hit {
			time.AfterFunc(pt.delay, kill)
		}
	}
	nc, err := nats.Connect(r.url, nats.Name("controller-kills"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	for _, subj := range []string{events.AllRolloutFacts, events.AllHostFacts} {
		if _, err := nc.Subscribe(subj, onMsg); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	c := r.commit(configV1, "v1")
	res := r.convoy("rollout", "start", "--rev", c, "--wave", "50%", "--wave", "all", "--bake", killBake.String())
	wantExit(t, res, exitOK)
	id := strings.Fields(res.stdout)[0]
	select {
	case <-fired:
	case <-time.After(time.Minute):
		t.Fatalf("the point %q never came", pt.name)
	}
	if code := ctl.stop(syscall.SIGKILL, 5*time.Second); code != 128+int(syscall.SIGKILL) {
		t.Fatalf("controller exit %d, want killed", code)
	}
	mu.Lock()
	at := killedAt
	before := map[string]int{}
	for k, n := range seen {
		before[k] = n
	}
	mu.Unlock()
	t.Logf("killed the controller at %q; on the bus: %v", pt.name, before)
	r.startController()

	st := convoy(t, 90*time.Second, "--nats", r.url, "rollout", "status", id, "--wait")
	wantExit(t, st, exitOK)
	r.wantRolloutOnce(id, c, killHosts, 2)
	if pt.delay > 0 {
		// The kill fell inside the bake: the wave succeeded after it.
		var done []histLine
		for _, l := range r.rolloutEvents(id) {
			if l.kind() == "rollout.wave.succeeded" {
				done = append(done, l)
			}
		}
		if end := done[pt.n-1].Event.Time; !end.After(at) {
			t.Fatalf("wave %d succeeded at %s, before the kill at %s", pt.n, end, at)
		}
	}
}
