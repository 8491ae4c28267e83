package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// benchJSON is `convoy bench --json`, every figure by its stable name.
// No test asserts a speed: only that each figure was measured.
type benchJSON map[string]any

func (b benchJSON) num(t *testing.T, name string) float64 {
	t.Helper()
	v, ok := b[name]
	if !ok {
		t.Fatalf("bench --json has no %q", name)
	}
	f, ok := v.(float64)
	if !ok {
		t.Fatalf("bench --json %q = %v, want a number", name, v)
	}
	return f
}

// positive fails unless every named figure is a number above 0.
func (b benchJSON) positive(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if v := b.num(t, n); v <= 0 {
			t.Errorf("bench --json %q = %v, want above 0", n, v)
		}
	}
}

func (b benchJSON) null(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if v, ok := b[n]; !ok || v != nil {
			t.Errorf("bench --json %q = %v (present %v), want null", n, v, ok)
		}
	}
}

func runBench(t *testing.T, args ...string) benchJSON {
	t.Helper()
	res := convoy(t, 5*time.Minute, append([]string{"bench", "--json"}, args...)...)
	wantExit(t, res, exitOK)
	var b benchJSON
	if err := json.Unmarshal([]byte(res.stdout), &b); err != nil {
		t.Fatalf("bench --json: %v: %s", err, res)
	}
	if !strings.Contains(res.stderr, "bench: ") {
		t.Errorf("no progress on stderr: %s", res)
	}
	if s, _ := b["simulated_hosts"].(string); !strings.Contains(s, "skip git") || !strings.Contains(s, "no-op commands") {
		t.Errorf("bench --json does not say that simulated hosts skip git and run no-op commands: %q", s)
	}
	hosts := 0
	for i, a := range args {
		if a == "--hosts" {
			fmt.Sscan(args[i+1], &hosts)
		}
	}
	if got := b.num(t, "hosts"); int(got) != hosts {
		t.Errorf("hosts %v, want %d", got, hosts)
	}
	b.positive(t, "raw_sync_publish_per_s", "raw_async_publish_per_s", "raw_replay_per_s",
		"join_s", "join_hosts_per_s", "fanout_s", "fanout_requests_per_s",
		"pipeline_s", "pipeline_facts_per_s", "pipeline_vs_raw_async", "projector_lag_samples",
		"status_fleet_ms", "status_host_ms", "history_host_ms", "history_host_events",
		"rebuild_s", "rebuild_per_s", "rebuild_vs_raw_replay")
	if got := int(b.num(t, "upgrades_succeeded")); got != hosts {
		t.Errorf("upgrades_succeeded %d, want every one of %d", got, hosts)
	}
	// Each simulated upgrade stores at least upgrade.started and its end.
	if got := int(b.num(t, "pipeline_facts")); got < 2*hosts {
		t.Errorf("pipeline_facts %d, want at least %d", got, 2*hosts)
	}
	p50, p99, worst := b.num(t, "projector_lag_p50_ms"), b.num(t, "projector_lag_p99_ms"), b.num(t, "projector_lag_max_ms")
	if p50 < 0 || p50 > p99 || p99 > worst {
		t.Errorf("projector lag p50 %v, p99 %v, max %v: want 0 ≤ p50 ≤ p99 ≤ max", p50, p99, worst)
	}
	// The replay and the rebuild read the same subjects of the same stream.
	if replayed, rebuilt := b.num(t, "raw_replay_events"), b.num(t, "rebuild_events"); replayed != rebuilt || replayed < float64(3*hosts) {
		t.Errorf("raw replay read %v events, rebuild %v: want the same, at least %d", replayed, rebuilt, 3*hosts)
	}
	return b
}

// wantPublishedStatus checks that each simulated host's row of the status
// view says what its facts on the stream say: idle after a successful
// upgrade, at the commit and result it reported.
func wantPublishedStatus(t *testing.T, r *rig, hosts int) {
	t.Helper()
	r.settledStatus()
	sts, _, _ := r.status()
	rows := map[string]hostStatus{}
	for _, s := range sts {
		rows[s.Host] = s
	}
	type published struct{ upgrade, commit, result string }
	facts := map[string]*published{}
	for _, l := range r.history("--type", "switch.succeeded,upgrade.succeeded") {
		p := facts[l.Event.Subject]
		if p == nil {
			p = &published{}
			facts[l.Event.Subject] = p
		}
		f := l.fact(t)
		if l.kind() == "switch.succeeded" {
			p.result = f.Result
			continue
		}
		p.upgrade, p.commit = l.upgradeID(), f.Commit
	}
	for i := 1; i <= hosts; i++ {
		h := fmt.Sprintf("h%05d", i)
		s, p := rows[h], facts[h]
		switch {
		case p == nil || p.upgrade == "":
			t.Errorf("%s published no upgrade.succeeded", h)
		case s.Host == "":
			t.Errorf("%s has no status row", h)
		case s.State != "idle" || s.LastResult != "upgrade.succeeded" || s.LastUpgrade != p.upgrade || s.Commit != p.commit || s.Result != p.result || p.commit == "":
			t.Errorf("%s: status state %q, last %s of %s, commit %q, result %q; it published upgrade.succeeded of %s, commit %q, result %q",
				h, s.State, s.LastResult, s.LastUpgrade, s.Commit, s.Result, p.upgrade, p.commit, p.result)
		}
	}
}

// convoy bench against its own child server: every figure is measured,
// and, on that server's data, each simulated host's status is what it
// published.
func TestBenchMeasuresEveryFigure(t *testing.T) {
	t.Parallel()
	const hosts = 50
	b := runBench(t, "--hosts", fmt.Sprint(hosts), "--real-upgrades", "3", "--keep")
	kept, _ := b["kept_dir"].(string)
	keptHosts, _ := b["kept_hosts_dir"].(string)
	t.Cleanup(func() {
		for _, d := range []string{kept, keptHosts} {
			if d != "" {
				os.RemoveAll(d)
			}
		}
	})
	b.positive(t, "server_rss_idle_mib", "server_rss_end_mib", "worker_overhead_p50_ms", "worker_overhead_p99_ms", "request_to_started_p99_ms")
	if got := b.num(t, "real_upgrades"); got != 3 {
		t.Errorf("real_upgrades %v, want 3", got)
	}
	if _, err := os.Stat(filepath.Join(kept, "bus")); err != nil {
		t.Fatalf("--keep: the server's data: %v", err)
	}
	r := baseRig(t)
	r.data = filepath.Join(kept, "bus")
	r.startServerAnyPort()
	wantPublishedStatus(t, r, hosts)
}

// With --nats the bench measures someone else's server: its memory is
// not available, and the simulated hosts stay on that bus.
func TestBenchAgainstNATS(t *testing.T) {
	t.Parallel()
	const hosts = 8
	r := baseRig(t)
	r.startServerAnyPort()
	b := runBench(t, "--nats", r.url, "--hosts", fmt.Sprint(hosts), "--real-upgrades", "0")
	b.null(t, "server_rss_idle_mib", "server_rss_end_mib", "worker_overhead_p50_ms", "worker_overhead_p99_ms", "request_to_started_p99_ms")
	wantPublishedStatus(t, r, hosts)
}
