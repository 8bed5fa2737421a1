package main

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
)

// readSideSnapshot is every read model as bytes: each Redis key under the
// test's prefix as DUMP returns it, and the raw bodies of the catalog and
// sales queries.
type readSideSnapshot struct {
	redis   map[string]string
	queries map[string]string
}

func (s *system) snapshotReadSide(admin string, skus []string) readSideSnapshot {
	s.t.Helper()
	snap := readSideSnapshot{redis: redisDump(s.t, s.cfg.RedisURL, s.cfg.RedisPrefix), queries: map[string]string{}}
	paths := []string{"/v1/products?limit=100", "/v1/products?q=seeded+item&in_stock=true&limit=100",
		"/v1/products?min_price=1000&max_price=20000&limit=100"}
	for _, sku := range skus {
		paths = append(paths, "/v1/products/"+sku, "/v1/inventory/"+sku)
	}
	window := "&from=" + time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly) + "&to=" + time.Now().UTC().AddDate(0, 0, 2).Format(time.DateOnly)
	for _, g := range []string{"day", "sku", "category"} {
		paths = append(paths, "/v1/reports/sales?group_by="+g+window)
	}
	for _, p := range paths {
		resp, raw := s.do(http.MethodGet, p, admin, nil, nil, nil)
		if resp.StatusCode != http.StatusOK {
			s.t.Fatalf("GET %s: %d %s", p, resp.StatusCode, raw)
		}
		snap.queries[p] = string(raw)
	}
	return snap
}

// TestReplayingTheWholeStreamChangesNoReadModel builds a history, takes a
// byte snapshot of every read model, deletes every projection consumer so
// that the runtime re-creates them and redelivers the whole stream into the
// existing read models, and checks that the replay happened (the applied
// counters doubled) and changed nothing, down to the bytes.
func TestReplayingTheWholeStreamChangesNoReadModel(t *testing.T) {
	s := startSystem(t, testConfig(t), All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "RP", 8, 10_000)
	w := s.startWorkload(admin, skus, 4, 60)
	w.wg.Wait()
	commands := w.stop()
	s.awaitLive(admin, time.Minute)
	before := s.snapshotReadSide(admin, skus)
	orders := 0
	for k := range before.redis {
		if strings.HasPrefix(k, s.cfg.RedisPrefix+"g1:order:") {
			orders++
		}
	}
	if len(before.redis) < len(skus)+orders || orders < 50 {
		t.Fatalf("history too thin: %d commands, %d Redis keys, %d orders", commands, len(before.redis), orders)
	}
	applied := map[string]float64{}
	for _, p := range projectionNames {
		applied[p] = counter(t, s.main, "jetcqrs_projection_events_applied_total", p)
	}

	t.Logf("%d commands, %d Redis keys (%d orders), events applied per projection %v", commands, len(before.redis), orders, applied)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, p := range projectionNames {
		for part := 0; part < s.cfg.Partitions; part++ {
			if err := s.main.js.DeleteConsumer(ctx, jnats.DefaultStreamName, consumerName(p, part)); err != nil {
				t.Fatalf("delete consumer %s: %v", consumerName(p, part), err)
			}
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		replayed := true
		for _, p := range projectionNames {
			replayed = replayed && counter(t, s.main, "jetcqrs_projection_events_applied_total", p) >= 2*applied[p]
		}
		if replayed {
			break
		}
		if time.Now().After(deadline) {
			now := map[string]float64{}
			for _, p := range projectionNames {
				now[p] = counter(t, s.main, "jetcqrs_projection_events_applied_total", p)
			}
			t.Fatalf("the stream was not replayed within a minute of deleting the consumers: applied %v before, %v now", applied, now)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, st := range s.awaitLive(admin, time.Minute) {
		if st.DeadLetters != 0 {
			t.Errorf("after the replay: %+v", st)
		}
	}

	after := s.snapshotReadSide(admin, skus)
	if !maps.Equal(before.redis, after.redis) {
		for _, k := range slices.Sorted(maps.Keys(before.redis)) {
			if v, ok := after.redis[k]; !ok || v != before.redis[k] {
				t.Errorf("Redis %s changed by the replay (still there: %v)", k, ok)
			}
		}
		for k := range after.redis {
			if _, ok := before.redis[k]; !ok {
				t.Errorf("Redis %s appeared in the replay", k)
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(before.queries)) {
		if after.queries[p] != before.queries[p] {
			t.Errorf("GET %s changed by the replay:\nbefore %s\nafter  %s", p, before.queries[p], after.queries[p])
		}
	}
	s.checkReadModelsMatchWriteSide(s.main, true)
}
