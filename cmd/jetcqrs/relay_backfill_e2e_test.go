package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// TestCommandsBeforeTheRelayReachTheStream runs the command API alone for
// 1,000 commands, with no relay and so no replication slot, then stops it
// and starts the relay alone: every event the commands wrote reaches the
// stream once, each aggregate's in version order.
func TestCommandsBeforeTheRelayReachTheStream(t *testing.T) {
	cfg := testConfig(t)
	api := startSystem(t, cfg, Components{CommandAPI: true})
	admin := api.token("ops", domain.RoleAdmin)
	const products, adjustments = 100, 9 // 100 creations + 900 adjustments
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for p := w; p < products; p += 4 {
				sku := fmt.Sprintf("SKU-%03d", p)
				if resp, raw := api.do(http.MethodPost, "/v1/products", admin, map[string]any{"sku": sku,
					"name": "Item " + sku, "category": "c", "price_cents": 100 + p}, nil, nil); resp.StatusCode != 201 {
					t.Errorf("create %s: %d %s", sku, resp.StatusCode, raw)
					return
				}
				for range adjustments {
					if resp, raw := api.do(http.MethodPost, "/v1/inventory/"+sku+"/adjustments", admin,
						map[string]any{"delta": 10, "reason": "count"}, nil, nil); resp.StatusCode != 200 {
						t.Errorf("adjust %s: %d %s", sku, resp.StatusCode, raw)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	api.stop()
	var committed int
	if err := api.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox_events`).Scan(&committed); err != nil {
		t.Fatal(err)
	}

	s := startSystem(t, cfg, Components{Relay: true})
	deadline := time.Now().Add(60 * time.Second)
	for s.streamCount() < uint64(committed) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a late duplicate would show now
	msgs := s.streamEvents(context.Background())
	if len(msgs) != committed {
		t.Fatalf("stream holds %d events, the outbox %d; relay status %+v", len(msgs), committed, s.main.relay.Status())
	}
	seen := map[string]bool{}
	last := map[string]int64{}
	for _, m := range msgs {
		ev, err := jnats.DecodeMsg(m.Subject, m.Header, m.Data)
		if err != nil {
			t.Fatalf("stream seq %d: %v", m.Sequence, err)
		}
		if seen[ev.ID] {
			t.Fatalf("event %s is in the stream twice", ev.ID)
		}
		seen[ev.ID] = true
		key := ev.AggregateType + "/" + ev.AggregateID
		if ev.AggregateVersion <= last[key] {
			t.Fatalf("%s: version %d after %d", key, ev.AggregateVersion, last[key])
		}
		last[key] = ev.AggregateVersion
	}
	t.Logf("%d events of %d commands written by the command API alone reached the stream", committed, products*(1+adjustments))
}
