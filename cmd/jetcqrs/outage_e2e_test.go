package main

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
)

// outage keeps commands flowing for at least d while a dependency is down:
// the write side does not need the read models.
func outage(w *workload, d time.Duration) {
	start, count := time.Now(), w.count.Load()
	w.waitFor(count + 50)
	time.Sleep(d - time.Since(start)) // the outage itself, not a wait for the system
}

// redisRestartedUnderLoad runs the system on a Redis of its own (volatile:
// without persistence), kills that Redis (SIGKILL, no shutdown) while
// commands flow, starts it again on the same port after down, and stops the
// commands 100 later. It returns the system, an admin token and how many
// commands were sent.
func redisRestartedUnderLoad(t *testing.T, volatile bool, skuPrefix string, down time.Duration) (*system, string, int64) {
	t.Helper()
	rs := startRedisServer(t, volatile)
	cfg := testConfig(t)
	cfg.RedisURL = rs.url()
	s := startSystem(t, cfg, All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, skuPrefix, 6, 100_000)
	w := s.startWorkload(admin, skus, 4, 0)
	w.waitFor(100)
	rs.kill()
	outage(w, down)
	rs.start()
	w.waitFor(w.count.Load() + 100)
	return s, admin, w.stop()
}

// TestRedisOutageConverges kills the read models' Redis (SIGKILL, no
// shutdown) while commands flow and starts it again on the same port with
// its append-only file, as production runs it: the projector retries the
// batches in hand and every read model converges to the write side.
func TestRedisOutageConverges(t *testing.T) {
	s, admin, commands := redisRestartedUnderLoad(t, false, "RO", 2*time.Second)
	s.awaitLive(admin, time.Minute)
	s.checkReadModelsMatchWriteSide(s.main, true)
	retries := counter(t, s.main, "jetcqrs_projection_batch_retries_total", "orders") +
		counter(t, s.main, "jetcqrs_projection_batch_retries_total", "inventory")
	if retries == 0 {
		t.Errorf("no batch was retried: the outage did not reach the projector")
	}
	t.Logf("%d commands, %v batches retried", commands, retries)
}

// TestRedisLosingItsDataIsRebuilt restarts the read models' Redis without
// persistence (as this machine runs it), so every key is gone while the
// stream's consumers keep their progress: the projector notices that the
// order and inventory models lost their data, rebuilds them from the stream
// into a new generation, and they converge to the write side.
func TestRedisLosingItsDataIsRebuilt(t *testing.T) {
	s, admin, _ := redisRestartedUnderLoad(t, true, "RL", time.Second)
	deadline := time.Now().Add(time.Minute)
	for {
		var st []projectionStatus
		s.do(http.MethodGet, "/v1/admin/projections", admin, nil, nil, &st)
		gens := map[string]string{}
		for _, p := range st {
			if p.Rebuild == nil {
				gens[p.Name] = p.Generation
			}
		}
		if gens["orders"] == "g2" && gens["inventory"] == "g2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orders and inventory not rebuilt within a minute of losing their data: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.awaitLive(admin, time.Minute)
	s.checkReadModelsMatchWriteSide(s.main, true)
}

// TestClickHouseOutageConverges puts a TCP proxy between the system and
// ClickHouse, cuts every connection and refuses new ones for a few seconds
// while commands flow, and restores it: the sales report converges to what
// the orders and order lines in PostgreSQL imply.
func TestClickHouseOutageConverges(t *testing.T) {
	cfg := testConfig(t)
	u, err := url.Parse(cfg.ClickHouseURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, u.Host)
	cfg.ClickHouseURL = "clickhouse://" + proxy.addr() + u.Path
	s := startSystem(t, cfg, All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "CH", 6, 100_000)
	w := s.startWorkload(admin, skus, 4, 0)
	w.waitFor(100)
	proxy.cut()
	outage(w, 3*time.Second)
	proxy.restore()
	w.waitFor(w.count.Load() + 100)
	commands := w.stop()

	s.awaitLive(admin, time.Minute)
	orders := s.writeOrders()
	from, to := time.Now().UTC().AddDate(0, 0, -1).Truncate(24*time.Hour), time.Now().UTC().AddDate(0, 0, 2).Truncate(24*time.Hour)
	for _, g := range []string{"day", "sku", "category"} {
		var rep struct {
			Rows []projections.SalesRow `json:"rows"`
		}
		s.expect(http.StatusOK, http.MethodGet, "/v1/reports/sales?group_by="+g+"&from="+from.Format(time.DateOnly)+"&to="+to.Format(time.DateOnly),
			admin, nil, nil, &rep)
		if want := expectedSales(orders, g, from, to); !slices.Equal(rep.Rows, want) || len(want) == 0 {
			t.Errorf("sales by %s = %+v, want %+v", g, rep.Rows, want)
		}
	}
	if retries := counter(t, s.main, "jetcqrs_projection_batch_retries_total", "sales"); retries == 0 {
		t.Errorf("no sales batch was retried: the outage did not reach the projector")
	}
	t.Logf("%d commands, %d orders", commands, len(orders))
}

// TestProjectorStoppedWithEventsInHandLosesNothing stops a projector process
// while its store is down, so that it leaves the events it holds
// unacknowledged, as its runtime intends ("they are redelivered after
// AckWait"). A new projector process then applies the events that follow.
// Every order placed must reach the read model, including those the first
// process held when it stopped.
func TestProjectorStoppedWithEventsInHandLosesNothing(t *testing.T) {
	rs := startRedisServer(t, false)
	cfg := testConfig(t)
	cfg.RedisURL = rs.url()
	writer := startSystem(t, cfg, Components{CommandAPI: true, Relay: true})
	admin := writer.token("ops", domain.RoleAdmin)
	customer := writer.token("gus", domain.RoleCustomer)
	first := startPeer(t, writer, Components{Projector: true})
	skus := writer.seedCatalog(admin, "HAND", 2, 10_000)
	writer.awaitCaughtUp(first, 30*time.Second)
	place := func(n int) {
		for i := 0; i < n; i++ {
			writer.expect(http.StatusCreated, http.MethodPost, "/v1/orders", customer, map[string]any{"user_id": "gus",
				"items":   []map[string]any{{"sku": skus[i%2], "quantity": 1}},
				"payment": map[string]string{"method": "card", "token": "t"}}, nil, nil)
		}
	}

	rs.kill()
	place(16)
	// Wait until the first process holds them: delivered, not acknowledged.
	held := func() (n int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for part := 0; part < cfg.Partitions; part++ {
			c, err := writer.main.js.Consumer(ctx, jnats.DefaultStreamName, consumerName("orders", part))
			if err != nil {
				t.Fatal(err)
			}
			info, err := c.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			n += info.NumAckPending
		}
		return n
	}
	for deadline := time.Now().Add(30 * time.Second); held() < 16; {
		if time.Now().After(deadline) {
			t.Fatalf("the projector holds %d of 16 order events after 30s", held())
		}
		time.Sleep(20 * time.Millisecond)
	}
	first.stop()
	rs.start()
	second := startPeer(t, writer, Components{Projector: true})
	place(96) // enough to reach every partition

	writer.awaitCaughtUp(second, 90*time.Second)
	orders := writer.writeOrders()
	var missing []string
	for id := range orders {
		if _, err := second.main.live.orders.Load().Order(context.Background(), id); err != nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d orders never reached the read model, though every projection reports nothing pending: %s",
			len(missing), len(orders), strings.Join(missing, " "))
	}
	writer.checkReadModelsMatchWriteSide(second.main, false)
}
