package main

import (
	"context"
	"encoding/json"
	"github.com/jetcqrs/jetcqrs/internal/natstest"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
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
	proxy := natstest.StartLink(t, u.Host)
	cfg.ClickHouseURL = "clickhouse://" + proxy.Addr() + u.Path
	s := startSystem(t, cfg, All)
	admin := s.token("ops", domain.RoleAdmin)
	skus := s.seedCatalog(admin, "CH", 6, 100_000)
	w := s.startWorkload(admin, skus, 4, 0)
	w.waitFor(100)
	proxy.Cut()
	outage(w, 3*time.Second)
	proxy.Restore()
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
		if _, err := second.main.live.Orders().Order(context.Background(), id); err != nil {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d orders never reached the read model, though every projection reports nothing pending: %s",
			len(missing), len(orders), strings.Join(missing, " "))
	}
	writer.checkReadModelsMatchWriteSide(second.main, false)
}

// misconf is the reply of a Redis that cannot persist and so refuses writes.
const misconf = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. " +
	"Commands that may modify the data set are disabled, because this instance is configured to report errors " +
	"during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs " +
	"for details about the RDB error."

// TestRedisRefusingWritesAcrossProjectorRestartsDeadLettersNothing puts the
// read models' Redis behind a stand-in that answers MISCONF to every write,
// as a Redis that cannot persist does, while orders are placed: the
// projector reports the outage in /readyz (its projections check failing)
// and in its store-error metric under the reply. The projector is then restarted eleven times while Redis still
// refuses, so every event in hand is delivered again and again, far past
// MaxDeliver; once Redis writes again, every event is applied and none is
// dead-lettered.
func TestRedisRefusingWritesAcrossProjectorRestartsDeadLettersNothing(t *testing.T) {
	cfg := testConfig(t)
	opts, err := redis.ParseURL(cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testenv.StartRESPProxy(t, opts.Addr)
	cfg.RedisURL = "redis://" + proxy.Addr() + "/" + strconv.Itoa(opts.DB)
	writer := startSystem(t, cfg, Components{CommandAPI: true, Relay: true})
	admin := writer.token("ops", domain.RoleAdmin)
	customer := writer.token("ida", domain.RoleCustomer)
	first := startPeer(t, writer, Components{Projector: true})
	skus := writer.seedCatalog(admin, "MC", 3, 10_000)
	writer.awaitCaughtUp(first, 30*time.Second)

	proxy.Refuse(misconf, "EVALSHA", "EVAL", "ZADD", "HSET", "SET", "SCRIPT")
	for i := 0; i < 24; i++ {
		writer.expect(http.StatusCreated, http.MethodPost, "/v1/orders", customer, map[string]any{"user_id": "ida",
			"items":   []map[string]any{{"sku": skus[i%len(skus)], "quantity": 1}},
			"payment": map[string]string{"method": "card", "token": "t"}}, nil, nil)
	}
	var ready struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, raw := first.do(http.MethodGet, "/readyz", "", nil, nil, nil)
		if err := json.Unmarshal(raw, &ready); err != nil {
			t.Fatalf("/readyz: %v: %s", err, raw)
		}
		if resp.StatusCode == http.StatusServiceUnavailable && ready.Checks["projections"] == httpx.CheckFailing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz during the outage: %d %s", resp.StatusCode, raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := storeErrors(t, first.main, "orders", "MISCONF"); n == 0 {
		t.Errorf("jetcqrs_projection_store_errors_total{projection=orders,reply=MISCONF} = 0 during the outage")
	}
	first.stop()

	for restart := 1; restart <= 11; restart++ {
		p := startPeer(t, writer, Components{Projector: true})
		for deadline := time.Now().Add(time.Minute); storeErrors(t, p.main, "orders", "MISCONF") == 0; {
			if time.Now().After(deadline) {
				t.Fatalf("restart %d: the projector did not try the orders within a minute", restart)
			}
			time.Sleep(20 * time.Millisecond)
		}
		p.stop()
	}

	proxy.Refuse("")
	last := startPeer(t, writer, Components{Projector: true})
	for _, st := range writer.awaitCaughtUp(last, 2*time.Minute) {
		if st.DeadLetters != 0 {
			t.Errorf("%s: %d dead letters after an outage across 11 restarts", st.Name, st.DeadLetters)
		}
	}
	writer.checkReadModelsMatchWriteSide(last.main, false)
	if resp, raw := last.do(http.MethodGet, "/readyz", "", nil, nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz after the outage: %d %s", resp.StatusCode, raw)
	}
}

// storeErrors reads jetcqrs_projection_store_errors_total of one projection
// and reply from m's registry.
func storeErrors(t *testing.T, m *Main, projection, reply string) float64 {
	t.Helper()
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "jetcqrs_projection_store_errors_total" {
			continue
		}
		for _, series := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range series.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["projection"] == projection && labels["reply"] == reply {
				return series.GetCounter().GetValue()
			}
		}
	}
	return 0
}
