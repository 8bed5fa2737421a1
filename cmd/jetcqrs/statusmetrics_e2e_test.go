package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
)

// gauge sums the gauges named metric in m's registry over the series whose
// labels include every pair of match; ok is false when there is none.
func gauge(t *testing.T, m *Main, metric string, match map[string]string) (sum float64, ok bool) {
	t.Helper()
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
	series:
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range match {
				if labels[k] != v {
					continue series
				}
			}
			sum += s.GetGauge().GetValue()
			ok = true
		}
	}
	return sum, ok
}

// awaitGauge waits until cond holds for the gauge.
func awaitGauge(t *testing.T, m *Main, metric string, match map[string]string, what string, cond func(float64) bool) float64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, ok := gauge(t, m, metric, match)
		if ok && cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			st, err := m.models.Status(context.Background())
			t.Fatalf("%s%v = %v (present %v), want %s; models %+v %v", metric, match, v, ok, what, st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStatusMetricsMove: the metrics read at scrape time follow the
// system: a dead letter raises the read model's dead-letter gauge and the
// dead-letter stream's size; a command grows the stream; a stopped projector (its consumers paused) shows its
// events pending per partition and the age of the oldest one growing, and
// both fall back to 0 once it runs again; the leading relay reports its
// confirmed position's age and the models their generation.
func TestStatusMetricsMove(t *testing.T) {
	cfg := testConfig(t)
	cfg.Partitions = 2
	s := startSystem(t, cfg, All)
	m := s.main
	admin := s.token("ops", domain.RoleAdmin)
	alice := s.token("alice", domain.RoleCustomer)
	orders := map[string]string{"projection": "orders"}
	zero := func(v float64) bool { return v == 0 }

	awaitGauge(t, m, "jetcqrs_projection_generation", orders, "1", func(v float64) bool { return v == 1 })
	awaitGauge(t, m, "jetcqrs_projection_dead_letter_messages", orders, "0", zero)
	awaitGauge(t, m, "jetcqrs_relay_confirmed_lsn_age_seconds", nil, "present", func(v float64) bool { return v >= 0 })
	// A dead letter: the inventory model's key of one SKU holds a string,
	// so Redis refuses the SKU's events for what they are.
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.Set(context.Background(), cfg.RedisPrefix+"g1:inventory:M-BAD", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	inventory := map[string]string{"projection": "inventory"}
	awaitGauge(t, m, "jetcqrs_projection_dead_letter_messages", inventory, "0", zero)
	s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": "M-BAD", "name": "Refused mug",
		"category": "kitchen", "price_cents": 500}, nil, nil)
	s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/M-BAD/adjustments", admin, map[string]any{"delta": 1, "reason": "count"}, nil, nil)
	awaitGauge(t, m, "jetcqrs_projection_dead_letter_messages", inventory, "at least 1", func(v float64) bool { return v >= 1 })
	awaitGauge(t, m, "jetcqrs_stream_messages", map[string]string{"stream": "DLQ"}, "at least 1", func(v float64) bool { return v >= 1 })
	if v, _ := gauge(t, m, "jetcqrs_projection_dead_letter_messages", orders); v != 0 {
		t.Errorf("jetcqrs_projection_dead_letter_messages{projection=orders} = %v, want 0", v)
	}

	before, _ := gauge(t, m, "jetcqrs_stream_messages", map[string]string{"stream": "EVENTS"})
	s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": "M-1", "name": "Metric mug",
		"category": "kitchen", "price_cents": 500}, nil, nil)
	s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/M-1/adjustments", admin, map[string]any{"delta": 10, "reason": "count"}, nil, nil)
	awaitGauge(t, m, "jetcqrs_stream_messages", map[string]string{"stream": "EVENTS"}, "2 more", func(v float64) bool { return v >= before+2 })
	if b, ok := gauge(t, m, "jetcqrs_stream_bytes", map[string]string{"stream": "EVENTS"}); !ok || b <= 0 {
		t.Errorf("jetcqrs_stream_bytes{stream=EVENTS} = %v (present %v), want > 0", b, ok)
	}

	// A stopped projector.
	awaitGauge(t, m, "jetcqrs_projection_consumer_pending", orders, "0", zero)
	s.pauseProjection("orders", time.Now().Add(time.Hour))
	s.expect(http.StatusCreated, http.MethodPost, "/v1/orders", alice, map[string]any{"user_id": "alice",
		"items": []map[string]any{{"sku": "M-1", "quantity": 1}}, "payment": map[string]string{"method": "card", "token": "t"}}, nil, nil)
	awaitGauge(t, m, "jetcqrs_projection_consumer_pending", orders, "1", func(v float64) bool { return v == 1 })
	age := awaitGauge(t, m, "jetcqrs_projection_oldest_pending_age_seconds", orders, "above 0.5", func(v float64) bool { return v > 0.5 })
	awaitGauge(t, m, "jetcqrs_projection_oldest_pending_age_seconds", orders, "growing", func(v float64) bool { return v > age })
	awaitGauge(t, m, "jetcqrs_projection_consumer_pending", map[string]string{"projection": "sales"}, "0 (sales runs on)", zero)
	s.pauseProjection("orders", time.Time{})
	awaitGauge(t, m, "jetcqrs_projection_consumer_pending", orders, "0 once resumed", zero)
	awaitGauge(t, m, "jetcqrs_projection_oldest_pending_age_seconds", orders, "0 once resumed", zero)
	if v, ok := gauge(t, m, "jetcqrs_rebuild_in_progress", orders); !ok || v != 0 {
		t.Errorf("jetcqrs_rebuild_in_progress{projection=orders} = %v (present %v), want 0", v, ok)
	}
}
