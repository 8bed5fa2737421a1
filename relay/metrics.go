package relay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	slotLag         prometheus.Gauge
	published       prometheus.Counter
	commitToAck     prometheus.Histogram
	leader          prometheus.Gauge
	walStatus       *prometheus.GaugeVec
	safeWALSize     prometheus.Gauge
	slotInvalidated prometheus.Counter
	backfilled      prometheus.Counter
	skipped         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		slotLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetcqrs_relay_slot_lag_bytes",
			Help: "Bytes of WAL between the server's current position and the replication slot's confirmed position (CDC).",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetcqrs_relay_events_published_total",
			Help: "Events the stream acknowledged.",
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
		walStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jetcqrs_relay_slot_wal_status",
			Help: "1 for the replication slot's current wal_status (reserved, extended, unreserved, lost), 0 for the others; all 0 while the slot is missing.",
		}, []string{"status"}),
		safeWALSize: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jetcqrs_relay_slot_safe_wal_size_bytes",
			Help: "WAL that may still be written before PostgreSQL invalidates the replication slot (max_slot_wal_keep_size); -1 when unlimited.",
		}),
		slotInvalidated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetcqrs_relay_slot_invalidations_total",
			Help: "Invalidated (wal_status=lost) replication slots the relay found and re-created.",
		}),
		backfilled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetcqrs_relay_events_backfilled_total",
			Help: "Events committed before the replication slot existed that the relay appended from the outbox.",
		}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetcqrs_relay_events_skipped_total",
			Help: "Events the replication slot sent again after a restart that the stream already held, so they were not appended.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.slotLag, m.published, m.commitToAck, m.leader, m.walStatus,
			m.safeWALSize, m.slotInvalidated, m.backfilled, m.skipped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("relay: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
