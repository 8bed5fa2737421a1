package main

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	t.Logf("%d commands, %d Redis keys (%d orders)", commands, len(before.redis), orders)
	s.replayWholeStream(admin)
	s.wantReadSide(before, s.snapshotReadSide(admin, skus), "the replay")
	s.checkReadModelsMatchWriteSide(s.main, true)
}

// replayWholeStream deletes every projection consumer, so that the runtime
// re-creates them and redelivers the whole stream into the existing read
// models, and waits until it has (the applied counters doubled) and every
// projection is live again with no dead letter.
func (s *system) replayWholeStream(admin string) {
	s.t.Helper()
	applied := map[string]float64{}
	for _, p := range projectionNames {
		applied[p] = counter(s.t, s.main, "jetcqrs_projection_events_applied_total", p)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, p := range projectionNames {
		for part := 0; part < s.cfg.Partitions; part++ {
			if err := s.main.js.DeleteConsumer(ctx, jnats.DefaultStreamName, consumerName(p, part)); err != nil {
				s.t.Fatalf("delete consumer %s: %v", consumerName(p, part), err)
			}
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		replayed := true
		for _, p := range projectionNames {
			replayed = replayed && counter(s.t, s.main, "jetcqrs_projection_events_applied_total", p) >= 2*applied[p]
		}
		if replayed {
			break
		}
		if time.Now().After(deadline) {
			now := map[string]float64{}
			for _, p := range projectionNames {
				now[p] = counter(s.t, s.main, "jetcqrs_projection_events_applied_total", p)
			}
			s.t.Fatalf("the stream was not replayed within a minute of deleting the consumers: applied %v before, %v now", applied, now)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, st := range s.awaitLive(admin, time.Minute) {
		if st.DeadLetters != 0 {
			s.t.Errorf("after the replay: %+v", st)
		}
	}
}

// wantReadSide fails the test where after differs from before.
func (s *system) wantReadSide(before, after readSideSnapshot, what string) {
	s.t.Helper()
	if !maps.Equal(before.redis, after.redis) {
		for _, k := range slices.Sorted(maps.Keys(before.redis)) {
			if v, ok := after.redis[k]; !ok || v != before.redis[k] {
				s.t.Errorf("Redis %s changed by %s (still there: %v)", k, what, ok)
			}
		}
		for k := range after.redis {
			if _, ok := before.redis[k]; !ok {
				s.t.Errorf("Redis %s appeared in %s", k, what)
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(before.queries)) {
		if after.queries[p] != before.queries[p] {
			s.t.Errorf("GET %s changed by %s:\nbefore %s\nafter  %s", p, what, before.queries[p], after.queries[p])
		}
	}
}

// TestOldEventsRepublishedAfterTheDuplicateWindowMoveNoReadModel builds a
// history with a duplicate window of 1 s, then, once the window has passed,
// publishes old events again by hand with their original ids, subjects,
// headers and payloads, as a client re-sending them would: the stream takes
// them as new, with new and higher sequences. Each aggregate's first event
// (older than its current version) and its last one (the current version) go
// again, so every model meets an older and an equal version: orders and sales
// an OrderPlaced of an order since paid or cancelled, inventory and the
// catalog stock events and a ProductCreated of a product since updated. No
// read model moves, down to the bytes, and a full replay of the stream,
// re-published events included, leaves them byte-identical too.
func TestOldEventsRepublishedAfterTheDuplicateWindowMoveNoReadModel(t *testing.T) {
	cfg := testConfig(t)
	cfg.DuplicateWindow = time.Second
	s := startSystem(t, cfg, All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "RE", 6, 10_000)
	w := s.startWorkload(admin, skus, 4, 50)
	w.wg.Wait()
	w.stop()
	s.awaitLive(admin, time.Minute)
	before := s.snapshotReadSide(admin, skus)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := s.main.js.Stream(ctx, jnats.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byAggregate := map[string][]*jetstream.RawStreamMsg{}
	var aggregates []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		key := m.Header.Get(jnats.HeaderAggregateType) + "/" + m.Header.Get(jnats.HeaderAggregateID)
		if _, seen := byAggregate[key]; !seen {
			aggregates = append(aggregates, key)
		}
		byAggregate[key] = append(byAggregate[key], m)
	}
	var again []*jetstream.RawStreamMsg
	kinds := map[string]int{} // what the older events re-published are
	for _, key := range aggregates {
		history := byAggregate[key]
		if len(history) < 2 {
			continue
		}
		first, last := history[0], history[len(history)-1]
		again = append(again, first, last)
		kind := first.Header.Get(jnats.HeaderEventType) + " then " + last.Header.Get(jnats.HeaderEventType)
		if first.Header.Get(jnats.HeaderAggregateType) == domain.AggregateInventory {
			kind = "inventory"
		}
		kinds[kind]++
	}
	for _, kind := range []string{"OrderPlaced then OrderCancelled", "ProductCreated then ProductUpdated", "inventory"} {
		if kinds[kind] == 0 {
			t.Fatalf("the history has no %s to re-publish: %v", kind, kinds)
		}
	}
	if kinds["OrderPlaced then OrderPaid"]+kinds["OrderPlaced then OrderShipped"]+kinds["OrderPlaced then OrderDelivered"] == 0 {
		t.Fatalf("the history has no order paid since it was placed: %v", kinds)
	}

	time.Sleep(cfg.DuplicateWindow + 200*time.Millisecond) // the window of the newest original ends
	for _, m := range again {
		out := natsgo.NewMsg(m.Subject)
		out.Header, out.Data = m.Header, m.Data
		// The relay's own publish conditions were stored with the event;
		// a hand re-publish is not bound by them.
		for name := range out.Header {
			if strings.HasPrefix(name, "Nats-Expected-") {
				out.Header.Del(name)
			}
		}
		ack, err := s.main.js.PublishMsg(ctx, out)
		if err != nil {
			t.Fatalf("re-publish %s: %v", m.Header.Get(jnats.HeaderMsgID), err)
		}
		if ack.Duplicate || ack.Sequence <= info.State.LastSeq {
			t.Fatalf("re-published %s taken as a duplicate (%+v): the window has not passed", m.Header.Get(jnats.HeaderMsgID), ack)
		}
	}
	t.Logf("re-published %d events of %d aggregates: %v", len(again), len(again)/2, kinds)
	for _, st := range s.awaitLive(admin, time.Minute) {
		if st.DeadLetters != 0 {
			t.Errorf("after re-publishing: %+v", st)
		}
	}
	s.wantReadSide(before, s.snapshotReadSide(admin, skus), "re-published old events")

	s.replayWholeStream(admin)
	s.wantReadSide(before, s.snapshotReadSide(admin, skus), "a full replay")
	s.checkReadModelsMatchWriteSide(s.main, true)
}
