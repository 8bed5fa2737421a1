package relay_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/relay"
)

const benchBacklog = 100_000

// BenchmarkRelayDrain measures how fast a relay drains a backlog of
// benchBacklog outbox events written in transactions of 1 and of 100
// events, against a raw baseline in the same run: the same number of
// events published straight through the NATS publisher in batches of the
// relay's size. The relay's rate is reported with its ratio to the
// baseline.
func BenchmarkRelayDrain(b *testing.B) {
	e := newEnv(b)
	var rawRate float64
	b.Run("raw-publisher", func(b *testing.B) {
		pub, err := newNATSPublisher(e.connect("raw"), e.logger)
		if err != nil {
			b.Fatal(err)
		}
		var elapsed time.Duration
		for b.Loop() {
			b.StopTimer()
			e.purgeStream()
			events := make([]relay.Event, benchBacklog)
			for i := range events {
				events[i] = relay.Event{ID: uuid.NewString(), AggregateType: "order", AggregateID: fmt.Sprintf("agg-%d", i%1000),
					AggregateVersion: int64(i/1000 + 1), EventType: "OrderPlaced", SchemaVersion: 1, OccurredAt: time.Now(),
					Payload: []byte(`{"v": 1, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`)}
			}
			after, _, err := pub.Last(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			start := time.Now()
			for i := 0; i < len(events); i += relay.DefaultBatchSize {
				n, err := pub.PublishBatch(context.Background(), after, events[i:min(i+relay.DefaultBatchSize, len(events))])
				if err != nil {
					b.Fatal(err)
				}
				after += uint64(n)
			}
			elapsed += time.Since(start)
		}
		rawRate = float64(benchBacklog*b.N) / elapsed.Seconds()
		b.ReportMetric(rawRate, "events/s")
	})
	for _, perTx := range []int{1, 100} {
		b.Run(fmt.Sprintf("cdc-%d-per-tx", perTx), func(b *testing.B) {
			var elapsed time.Duration
			for b.Loop() {
				b.StopTimer()
				e.purgeStream()
				cfg := e.config()
				cfg.SlotName = "jetcqrs_b_" + randomHex()
				cfg.PublicationName = cfg.SlotName
				e.install(cfg)
				e.writeBacklog(perTx)
				r, stop := e.runRelay(cfg)
				b.StartTimer()
				start := time.Now()
				e.waitCount(benchBacklog, 10*time.Minute)
				elapsed += time.Since(start)
				b.StopTimer()
				if err := stop(); err != nil {
					b.Fatal(err)
				}
				if got := r.Status().Published; got < benchBacklog {
					b.Fatalf("relay published %d", got)
				}
				ctx := context.Background()
				if err := relay.DropSlot(ctx, e.dbURL, cfg.SlotName); err != nil {
					b.Fatal(err)
				}
				if err := relay.DropPublication(ctx, e.dbURL, cfg.PublicationName); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			rate := float64(benchBacklog*b.N) / elapsed.Seconds()
			b.ReportMetric(rate, "events/s")
			if rawRate > 0 {
				b.ReportMetric(rate/rawRate, "x-raw")
			}
		})
	}
}

// writeBacklog commits benchBacklog outbox rows in transactions of perTx.
func (e *env) writeBacklog(perTx int) {
	e.t.Helper()
	ctx := e.t.Context()
	conn, err := e.pool.Acquire(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Release()
	// One session, many transactions: COMMIT inside a DO block, without
	// waiting for each commit's WAL flush.
	for _, sql := range []string{
		`SET synchronous_commit = off`,
		fmt.Sprintf(`DO $$
		BEGIN
			FOR t IN 0..%d LOOP
				INSERT INTO outbox_events
					(id, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version, payload, occurred_at)
				SELECT gen_random_uuid(), 'order', '%s-' || t, v, 'OrderPlaced', 1,
					jsonb_build_object('v', v, 'pad', repeat('x', 64)), now()
				FROM generate_series(1, %d) AS v;
				COMMIT;
			END LOOP;
		END $$`, benchBacklog/perTx-1, "bench-"+randomHex(), perTx),
		`RESET synchronous_commit`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			e.t.Fatalf("write backlog: %v", err)
		}
	}
}

// purgeStream empties the EVENTS stream.
func (e *env) purgeStream() {
	e.t.Helper()
	s, err := e.js.Stream(e.t.Context(), nats.DefaultStreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := s.Purge(e.t.Context()); err != nil {
		e.t.Fatal(err)
	}
}
