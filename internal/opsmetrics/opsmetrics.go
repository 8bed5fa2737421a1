// Package opsmetrics exports, at each scrape, the state an operator watches
// and no event handler counts: the streams' size, each read model's
// generation, consumer pending per partition, oldest unapplied event, dead
// letters held and rebuild progress, and how long the relay's confirmed
// position has stood still. Each value is read when Prometheus asks, from
// JetStream and the components' own status, so it is never stale.
package opsmetrics

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	"github.com/jetcqrs/jetcqrs/relay"
)

// collectTimeout bounds the JetStream requests of one scrape.
const collectTimeout = 5 * time.Second

var (
	streamMessages = prometheus.NewDesc("jetcqrs_stream_messages",
		"Messages the JetStream stream holds.", []string{"stream"}, nil)
	streamBytes = prometheus.NewDesc("jetcqrs_stream_bytes",
		"Bytes the JetStream stream holds.", []string{"stream"}, nil)
	streamLastSeq = prometheus.NewDesc("jetcqrs_stream_last_sequence",
		"Sequence of the stream's last message.", []string{"stream"}, nil)
	generation = prometheus.NewDesc("jetcqrs_projection_generation",
		"Generation of the read model readers are served from.", []string{"projection"}, nil)
	pending = prometheus.NewDesc("jetcqrs_projection_consumer_pending",
		"Events of the partition not yet applied: waiting on the consumer or delivered and not acknowledged.",
		[]string{"projection", "partition"}, nil)
	oldestPending = prometheus.NewDesc("jetcqrs_projection_oldest_pending_age_seconds",
		"How long the oldest event the read model has not applied has been in the stream; 0 when nothing is pending.",
		[]string{"projection"}, nil)
	deadLetters = prometheus.NewDesc("jetcqrs_projection_dead_letter_messages",
		"Events of the read model held in the dead-letter stream.", []string{"projection"}, nil)
	rebuilding = prometheus.NewDesc("jetcqrs_rebuild_in_progress",
		"1 while a new generation of the read model is being built.", []string{"projection"}, nil)
	rebuildDone = prometheus.NewDesc("jetcqrs_rebuild_done_events",
		"Events the running rebuild has applied.", []string{"projection"}, nil)
	rebuildTotal = prometheus.NewDesc("jetcqrs_rebuild_total_events",
		"Events the running rebuild has to apply so far (the stream grows while it runs).", []string{"projection"}, nil)
	rebuildETA = prometheus.NewDesc("jetcqrs_rebuild_eta_seconds",
		"Time the running rebuild needs at its rate so far; 0 when unknown.", []string{"projection"}, nil)
	confirmedAge = prometheus.NewDesc("jetcqrs_relay_confirmed_lsn_age_seconds",
		"How long the relay's confirmed WAL position has not advanced while WAL waits behind it (slot lag above 0); 0 when caught up.",
		nil, nil)
	streamsUp = upDesc("stream")
	modelsUp  = upDesc("projections")
)

func upDesc(source string) *prometheus.Desc {
	return prometheus.NewDesc("jetcqrs_status_up",
		"1 when the scrape could read the source (stream, projections), 0 when it failed.", nil,
		prometheus.Labels{"source": source})
}

// Streams reports the size of JetStream streams.
type Streams struct {
	js      jetstream.JetStream
	streams []string
	log     *slog.Logger
}

// NewStreams reports the named streams.
func NewStreams(js jetstream.JetStream, log *slog.Logger, streams ...string) *Streams {
	return &Streams{js: js, streams: streams, log: log}
}

// Describe sends the descriptors.
func (s *Streams) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamMessages
	ch <- streamBytes
	ch <- streamLastSeq
	ch <- streamsUp
}

// Collect reads each stream's state.
func (s *Streams) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	ok := 1.0
	for _, name := range s.streams {
		st, err := s.js.Stream(ctx, name)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = st.Info(ctx)
		}
		if err != nil {
			if !errors.Is(err, jetstream.ErrStreamNotFound) {
				s.log.Warn("metrics: reading stream", "stream", name, "err", err)
				ok = 0
			}
			continue
		}
		ch <- prometheus.MustNewConstMetric(streamMessages, prometheus.GaugeValue, float64(info.State.Msgs), name)
		ch <- prometheus.MustNewConstMetric(streamBytes, prometheus.GaugeValue, float64(info.State.Bytes), name)
		ch <- prometheus.MustNewConstMetric(streamLastSeq, prometheus.GaugeValue, float64(info.State.LastSeq), name)
	}
	ch <- prometheus.MustNewConstMetric(streamsUp, prometheus.GaugeValue, ok)
}

// Models reports the read models a projector process applies.
type Models struct {
	status     func(context.Context) ([]lifecycle.Status, error)
	js         jetstream.JetStream
	stream     string
	partitions int
	log        *slog.Logger
}

// NewModels reports the models status returns, reading their consumers on
// stream (partitions of them each).
func NewModels(status func(context.Context) ([]lifecycle.Status, error), js jetstream.JetStream, stream string,
	partitions int, log *slog.Logger) *Models {
	return &Models{status: status, js: js, stream: stream, partitions: partitions, log: log}
}

// Describe sends the descriptors.
func (m *Models) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{generation, pending, oldestPending, deadLetters, rebuilding, rebuildDone,
		rebuildTotal, rebuildETA, modelsUp} {
		ch <- d
	}
}

// Collect reads each model's status and its consumers.
func (m *Models) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	sts, err := m.status(ctx)
	if err != nil {
		m.log.Warn("metrics: reading the read models' status", "err", err)
		ch <- prometheus.MustNewConstMetric(modelsUp, prometheus.GaugeValue, 0)
		return
	}
	ok := 1.0
	for _, st := range sts {
		gauge := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{st.Name}, labels...)...)
		}
		if n, err := strconv.Atoi(strings.TrimPrefix(st.Generation, "g")); err == nil {
			gauge(generation, float64(n))
		}
		gauge(oldestPending, float64(st.LagMS)/1000)
		gauge(deadLetters, float64(st.DeadLetters))
		for part := 0; part < m.partitions; part++ {
			name := projections.ConsumerName(st.Name, st.Generation, part)
			c, err := m.js.Consumer(ctx, m.stream, name)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				continue // being created by its worker
			}
			var info *jetstream.ConsumerInfo
			if err == nil {
				info, err = c.Info(ctx)
			}
			if err != nil {
				m.log.Warn("metrics: reading a consumer", "consumer", name, "err", err)
				ok = 0
				continue
			}
			gauge(pending, float64(info.NumPending+uint64(info.NumAckPending)), strconv.Itoa(part))
		}
		if r := st.Rebuild; r != nil {
			gauge(rebuilding, 1)
			gauge(rebuildDone, float64(r.Done))
			gauge(rebuildTotal, float64(r.Total))
			gauge(rebuildETA, r.ETASeconds)
		} else {
			gauge(rebuilding, 0)
		}
	}
	ch <- prometheus.MustNewConstMetric(modelsUp, prometheus.GaugeValue, ok)
}

// Relay reports how long the relay's confirmed position has stood still.
type Relay struct {
	status func() relay.Status
	now    func() time.Time

	mu        sync.Mutex
	lsn       string
	changedAt time.Time
}

// NewRelay reports the relay whose status is status.
func NewRelay(status func() relay.Status) *Relay { return &Relay{status: status, now: time.Now} }

// Describe sends the descriptor.
func (r *Relay) Describe(ch chan<- *prometheus.Desc) { ch <- confirmedAge }

// Collect computes the age from the positions seen at earlier scrapes and
// the relay's own sampling (its status changes with each confirmation).
func (r *Relay) Collect(ch chan<- prometheus.Metric) {
	st := r.status()
	if !st.Leader || st.Mode != relay.ModeCDC {
		return // only the leading CDC relay has a position to confirm
	}
	ch <- prometheus.MustNewConstMetric(confirmedAge, prometheus.GaugeValue, r.age(st).Seconds())
}

func (r *Relay) age(st relay.Status) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if st.ConfirmedLSN != r.lsn || r.changedAt.IsZero() {
		r.lsn, r.changedAt = st.ConfirmedLSN, now
	}
	if st.SlotLagBytes <= 0 {
		return 0
	}
	return now.Sub(r.changedAt)
}
