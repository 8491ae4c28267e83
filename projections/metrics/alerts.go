package metrics

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoy-fleet/convoy/projections/alerts"
)

var (
	descAlertsSent = prometheus.NewDesc("convoy_alerts_sent_total",
		"Alerts a sink accepted since the alerts subscriber started.",
		[]string{"sink"}, nil)
	descAlertsFailed = prometheus.NewDesc("convoy_alerts_failed_total",
		"Alerts a sink still refused after their retries (or refused for good), since the alerts subscriber started.",
		[]string{"sink"}, nil)
)

// AlertsCollector exports the counts of the alerts subscriber whose
// Stats stats returns (alerts.Alerter.Stats), by sink name.
func AlertsCollector(stats func() map[string]alerts.SinkStats) prometheus.Collector {
	return alertsCollector(stats)
}

type alertsCollector func() map[string]alerts.SinkStats

func (alertsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descAlertsSent
	ch <- descAlertsFailed
}

func (c alertsCollector) Collect(ch chan<- prometheus.Metric) {
	stats := c()
	for _, sink := range slices.Sorted(maps.Keys(stats)) {
		ch <- prometheus.MustNewConstMetric(descAlertsSent, prometheus.CounterValue, float64(stats[sink].Sent), sink)
		ch <- prometheus.MustNewConstMetric(descAlertsFailed, prometheus.CounterValue, float64(stats[sink].Failed), sink)
	}
}
