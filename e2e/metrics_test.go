package e2e

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/convoy-fleet/convoy/workers/sandbox"
)

// After the seed's scenarios (both hosts upgrade, torment's next build
// fails and rolls back, sorrow's worker stops), /metrics of `convoy server
// --http` says what `convoy status --json` says, host by host, and counts
// the upgrades that ended.
func TestMetricsAgreeWithStatus(t *testing.T) {
	t.Parallel()
	hosts := []string{"sorrow", "torment"}
	r := baseRig(t)
	web := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	r.serverArgs = []string{"--http", web}
	r.startServerAnyPort()
	r.makeFleet(hosts, sandbox.Options{ValidationChecks: []string{"true"}})
	for _, h := range hosts {
		r.startWorker(h)
	}
	r.commit(configV1, "v1")
	r.upgrade(exitOK, "--all", "--wait", "--timeout", "60s")
	r.commit(configBroken, "broken")
	r.upgrade(exitFailed, "torment", "--wait", "--timeout", "60s")
	r.stopWorker("sorrow")
	r.waitStatus("sorrow", "worker offline", func(s hostStatus) bool { return s.Worker == "offline" })
	r.waitStatus("torment", "failed", func(s hostStatus) bool { return s.State == "failed" })

	var rows []struct {
		Host           string    `json:"host"`
		State          string    `json:"state"`
		Commit         string    `json:"commit"`
		Worker         string    `json:"worker"`
		LastResult     string    `json:"last_result"`
		LastEnded      time.Time `json:"last_ended"`
		LastSucceeded  time.Time `json:"last_succeeded"`
		RebootRequired bool      `json:"reboot_required"`
	}
	if err := json.Unmarshal([]byte(r.settledStatus()), &rows); err != nil || len(rows) != 2 {
		t.Fatalf("status --json: %v (%d rows)", err, len(rows))
	}

	resp, err := http.Get("http://" + web + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse as Prometheus text: %v", err)
	}
	// value finds the one sample of name whose labels include want.
	value := func(name string, want map[string]string) (float64, map[string]string, bool) {
		f := fams[name]
		if f == nil {
			return 0, nil, false
		}
	next:
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if labels[k] != v {
					continue next
				}
			}
			return sampleValue(f.GetType(), m), labels, true
		}
		return 0, nil, false
	}
	near := func(a, b float64) bool { return a-b < 0.001 && b-a < 0.001 }
	for _, s := range rows {
		h := map[string]string{"host": s.Host}
		if v, labels, ok := value("convoy_host_info", h); !ok || v != 1 || labels["state"] != s.State || labels["commit"] != s.Commit {
			t.Errorf("%s: convoy_host_info %v %v, status says state %s commit %s", s.Host, v, labels, s.State, s.Commit)
		}
		up := 0.0
		if s.Worker == "online" {
			up = 1
		}
		if v, _, ok := value("convoy_host_worker_up", h); !ok || v != up {
			t.Errorf("%s: convoy_host_worker_up %v (found %t), status says worker %s", s.Host, v, ok, s.Worker)
		}
		result := strings.TrimPrefix(s.LastResult, "upgrade.")
		v, labels, ok := value("convoy_host_last_upgrade_timestamp_seconds", h)
		if !ok || labels["result"] != result || !near(v, float64(s.LastEnded.UnixNano())/1e9) {
			t.Errorf("%s: last upgrade %v %v, status says %s at %s", s.Host, v, labels, s.LastResult, s.LastEnded)
		}
		if v, _, ok := value("convoy_host_last_success_timestamp_seconds", h); !ok || !near(v, float64(s.LastSucceeded.UnixNano())/1e9) {
			t.Errorf("%s: last success %v (found %t), status says %s", s.Host, v, ok, s.LastSucceeded)
		}
		if v, _, ok := value("convoy_host_reboot_required", h); !ok || (v == 1) != s.RebootRequired {
			t.Errorf("%s: reboot required %v, status says %t", s.Host, v, s.RebootRequired)
		}
	}
	for result, want := range map[string]float64{"succeeded": 2, "failed": 1, "aborted": 0} {
		if v, _, ok := value("convoy_upgrades_total", map[string]string{"result": result}); !ok || v != want {
			t.Errorf("convoy_upgrades_total{result=%q} = %v (found %t), want %v", result, v, ok, want)
		}
	}
	if v, _, ok := value("convoy_stage_duration_seconds", map[string]string{"stage": "build"}); !ok || v != 3 {
		t.Errorf("convoy_stage_duration_seconds{stage=build} counts %v builds, want 3", v)
	}
	if v, _, ok := value("convoy_projector_lag_events", nil); !ok || v != 0 {
		t.Errorf("convoy_projector_lag_events = %v (found %t), want 0 once status has settled", v, ok)
	}
	if v, labels, ok := value("convoy_bus_storage_level", map[string]string{"level": "ok"}); !ok || v != 1 {
		t.Errorf("convoy_bus_storage_level{level=ok} = %v %v (found %t), want 1", v, labels, ok)
	}
}

// sampleValue is a sample's value; for a histogram, its count.
func sampleValue(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	case dto.MetricType_HISTOGRAM:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return m.GetUntyped().GetValue()
}
