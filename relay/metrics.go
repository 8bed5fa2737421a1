package relay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	slotLag     prometheus.Gauge
	published   prometheus.Counter
	commitToAck prometheus.Histogram
	leader      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		slotLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetcqrs_relay_slot_lag_bytes",
			Help: "Bytes of WAL between the server's current position and the replication slot's confirmed position (CDC).",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetcqrs_relay_events_published_total",
			Help: "Events the stream acknowledged, re-sends after a restart included.",
		}),
		commitToAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jetcqrs_relay_commit_to_ack_seconds",
			Help: "Time from an event's commit (poll mode: its occurred_at) to the stream's acknowledgement.",
			// 1ms to about 65s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetcqrs_relay_leader",
			Help: "1 while this relay holds the leader lock and relays, 0 on a standby.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.slotLag, m.published, m.commitToAck, m.leader} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("relay: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
