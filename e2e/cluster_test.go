package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convoy-fleet/convoy/bus"
	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// Scale-out with the same binaries: three `convoy server` processes form a
// JetStream cluster with the stream at three replicas; a worker connected
// to all three loses the stream leader (kill -9) mid-upgrade, and the
// upgrade completes with every fact stored exactly once.
func TestClusterOfServersSurvivesLeaderKill(t *testing.T) {
	// Three clustered servers need the machine to themselves: beside the
	// rest of the suite on two cores, elections and replicated writes slow
	// to the API timeouts. .ci/run runs it alone, after the suite; the
	// in-process cluster test (workers) runs with everything else.
	if os.Getenv("CONVOY_E2E_CLUSTER") != "1" {
		t.Skip("set CONVOY_E2E_CLUSTER=1 to run the three-process cluster test (alone: go test -run Cluster ./e2e/)")
	}
	r := baseRig(t)
	const n = 3
	clients, routes := make([]int, n), make([]string, n)
	for i := range n {
		clients[i] = freePort(t)
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	}
	urls := make([]string, n)
	servers := map[string]*proc{}
	for i := range n {
		name := fmt.Sprintf("node%d", i+1)
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", clients[i])
		servers[name] = startProc(t, name, "server", "--data", fmt.Sprintf("%s/bus%d", r.dir, i+1),
			"--listen", fmt.Sprintf("127.0.0.1:%d", clients[i]), "--name", name, "--replicas", "3",
			"--cluster", "convoy", "--cluster-listen", strings.TrimPrefix(routes[i], "nats://"), "--routes", strings.Join(routes, ","))
	}
	for name, p := range servers {
		eventually(t, 90*time.Second, name+" to listen", func() bool {
			return strings.Contains(p.stdout.String(), "listening on") || p.exited()
		})
		if p.exited() {
			t.Fatalf("%s exited: %s", name, p.stderr.String())
		}
	}
	r.url = strings.Join(urls, ",")
	r.makeFleet([]string{"sorrow"}, sandbox.Options{ValidationChecks: []string{"sleep 3"}})
	t.Cleanup(func() {
		for _, w := range r.workers {
			w.stop(syscall.SIGTERM, 10*time.Second)
		}
	})
	r.startWorker("sorrow")
	c := r.commit(configV1, "v1")
	res := r.convoy("upgrade", "sorrow")
	wantExit(t, res, exitOK)
	id := upgradeIDIn(t, res)

	// Find the stream leader while validation sleeps, and kill it.
	conn, err := bus.Connect(t.Context(), bus.ConnectConfig{URL: r.url, MaxWait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eventually(t, 30*time.Second, "build.succeeded", func() bool {
		for _, l := range r.history("sorrow") {
			if l.upgradeID() == id && l.kind() == "build.succeeded" {
				return true
			}
		}
		return false
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	name, replicas, err := conn.StreamLeader(ctx)
	if err != nil || replicas != 3 {
		t.Fatalf("stream leader %q, %d replicas: %v", name, replicas, err)
	}
	leader := servers[name]
	if leader == nil {
		t.Fatalf("leader %q is none of ours", name)
	}
	leader.stop(syscall.SIGKILL, 5*time.Second)
	t.Logf("killed the stream leader %s", name)

	// While the cluster elects new leaders a command may fail; a user
	// runs it again.
	var facts []histLine
	eventually(t, 90*time.Second, "the upgrade to end after the leader's loss", func() bool {
		res := r.convoy("history", "--json", "sorrow")
		if res.code != exitOK {
			return false
		}
		facts = facts[:0]
		for _, l := range parseHistory(t, res.stdout) {
			if l.isFact() && l.upgradeID() == id {
				facts = append(facts, l)
			}
		}
		return len(facts) > 0 && isTerminal(facts[len(facts)-1].kind())
	})
	wantKinds(t, facts, "upgrade.started", "pull.succeeded", "build.succeeded", "validation.passed", "switch.succeeded", "upgrade.succeeded")
	if head, _ := r.head("sorrow"); head != c {
		t.Fatalf("HEAD %s, want %s", head, c)
	}
	// The fleet goes on: a second upgrade on the two remaining nodes.
	c2 := r.commit(configV2, "v2")
	sum := r.upgrade(exitOK, "sorrow", "--wait", "--timeout", "60s")
	if sum.result("sorrow") != "upgrade.succeeded" {
		t.Fatalf("second upgrade: %+v", sum)
	}
	if head, _ := r.head("sorrow"); head != c2 {
		t.Fatalf("HEAD %s, want %s", head, c2)
	}
}
