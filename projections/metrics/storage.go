package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/convoy-fleet/convoy/bus"
)

var (
	descStorageFree = prometheus.NewDesc("convoy_bus_storage_free_bytes",
		"Free space of the server's data dir, as its storage guard last read it.",
		[]string{"server"}, nil)
	descStorageMinFree = prometheus.NewDesc("convoy_bus_storage_min_free_bytes",
		"The server's --min-free: below it new requests are refused.",
		[]string{"server"}, nil)
	descStorageLevel = prometheus.NewDesc("convoy_bus_storage_level",
		"1 for the storage guard's current level (ok, low: new requests refused, full: every append refused), 0 for the others.",
		[]string{"server", "level"}, nil)
	descJetStreamRestarts = prometheus.NewDesc("convoy_bus_jetstream_restarts_total",
		"In-process JetStream restarts after a write failed for lack of space.",
		[]string{"server"}, nil)
)

// StorageCollector exports the storage guard's view of the data dir of
// the server whose Storage storage returns (bus.Server.Storage: no I/O).
func StorageCollector(storage func() bus.Storage) prometheus.Collector {
	return storageCollector(storage)
}

type storageCollector func() bus.Storage

func (storageCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStorageFree, descStorageMinFree, descStorageLevel, descJetStreamRestarts} {
		ch <- d
	}
}

func (c storageCollector) Collect(ch chan<- prometheus.Metric) {
	st := c()
	ch <- prometheus.MustNewConstMetric(descStorageFree, prometheus.GaugeValue, float64(st.Free), st.Server)
	ch <- prometheus.MustNewConstMetric(descStorageMinFree, prometheus.GaugeValue, float64(st.MinFree), st.Server)
	for _, l := range []bus.StorageLevel{bus.StorageOK, bus.StorageLow, bus.StorageFull} {
		ch <- prometheus.MustNewConstMetric(descStorageLevel, prometheus.GaugeValue, bool01(st.Level == l), st.Server, string(l))
	}
	ch <- prometheus.MustNewConstMetric(descJetStreamRestarts, prometheus.CounterValue, float64(st.Restarts), st.Server)
}
