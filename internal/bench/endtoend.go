package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/commandapi"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/internal/relaypub"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/postgres"
	"github.com/jetcqrs/jetcqrs/projections"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	chstore "github.com/jetcqrs/jetcqrs/projections/clickhouse"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
	"github.com/jetcqrs/jetcqrs/queryapi"
	"github.com/jetcqrs/jetcqrs/relay"
)

// EndToEndConfig configures the end-to-end benchmark.
type EndToEndConfig struct {
	// ServerURL is a PostgreSQL URL (wal_level=logical) whose server gets a
	// scratch database.
	ServerURL     string
	RedisURL      string
	ClickHouseURL string
	// Rates are the offered loads in orders per second, each run in turn
	// (default 250, 500 and 1,000: the target's load and two below it, to
	// show where this machine saturates).
	Rates []int
	// Duration is the length of each run (the system, then the bare chain).
	Duration time.Duration
	// Workers is how many clients place orders concurrently (default 128).
	Workers int
	// MaxConns is the write store's pool size (default 20, the binary's).
	MaxConns int32
	Log      io.Writer
}

// EndToEnd measures how long an order takes from the command API's 201 to
// being readable through the query API, with the whole system wired in this
// process as `serve` wires it (command API, CDC relay, embedded JetStream,
// projection runtime with all four read models, query API), at a fixed
// offered load; and, in the same run, the same hops done by bare libraries:
// committed outbox rows → pglogrepl → PublishMsgAsync → a JetStream consumer
// → HSET. It returns the markdown section.
func EndToEnd(ctx context.Context, cfg EndToEndConfig) (string, error) {
	if len(cfg.Rates) == 0 {
		cfg.Rates = []int{250, 500, 1000}
	}
	if cfg.Workers == 0 {
		cfg.Workers = 128
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 20
	}
	const name = "jetcqrs_bench_end_to_end"
	dbURL, drop, err := scratchReplicationDatabase(ctx, cfg.ServerURL, name)
	if err != nil {
		return "", err
	}
	defer drop()
	pool, err := migratedPool(ctx, dbURL, cfg.MaxConns)
	if err != nil {
		return "", err
	}
	defer pool.Close()
	skus, err := seedCatalog(ctx, pool, 1000)
	if err != nil {
		return "", err
	}
	if err := createPublication(ctx, pool, name); err != nil {
		return "", err
	}
	b, err := startBroker(ctx)
	if err != nil {
		return "", err
	}
	defer b.close()
	if _, err := jnats.EnsureDeadLetterStream(ctx, b.js, jnats.DeadLetterConfig{}); err != nil {
		return "", err
	}
	prefix := name + ":"
	rdb, dropRedis, err := scratchRedis(ctx, cfg.RedisURL, prefix)
	if err != nil {
		return "", err
	}
	defer dropRedis()

	type pair struct {
		rate      int
		sys, bare e2eResult
	}
	var runs []pair
	for _, rate := range cfg.Rates {
		if err := b.freshStream(ctx); err != nil {
			return "", err
		}
		sys, err := systemRun(ctx, cfg, rate, dbURL, pool, b, rdb, fmt.Sprintf("%sg%d:", prefix, rate), name, skus)
		if err != nil {
			return "", fmt.Errorf("system at %d orders/s: %w", rate, err)
		}
		if err := b.freshStream(ctx); err != nil {
			return "", err
		}
		bare, err := bareChainRun(ctx, cfg, rate, dbURL, pool, b, rdb, fmt.Sprintf("%sbare%d:", prefix, rate), name, skus)
		if err != nil {
			return "", fmt.Errorf("bare chain at %d orders/s: %w", rate, err)
		}
		runs = append(runs, pair{rate, sys, bare})
	}

	var out strings.Builder
	fmt.Fprintf(&out, "## End to end: command 201 → visible in the read model\n\n")
	fmt.Fprintf(&out, "`jetcqrs-bench end-to-end` on %s. Orders of 1–3 random SKUs of 1000 are offered open-loop at\n", Machine())
	fmt.Fprintf(&out, "%s orders/s in turn by %d concurrent clients for %s per run (the first %s not measured).\n\n", joinInts(cfg.Rates), cfg.Workers, cfg.Duration, latencyWarmUp(cfg.Duration))
	out.WriteString("- **jetcqrs**: the whole system in one process, wired as `serve` wires it: command API (write store pool of\n")
	fmt.Fprintf(&out, "  %d), CDC relay, embedded JetStream, projection runtime with the four read models (Redis orders and\n", cfg.MaxConns)
	out.WriteString("  inventory, Bleve catalog, ClickHouse sales, 16 partitions; one runtime for the four, where `serve` runs one\n")
	out.WriteString("  each: the same consumers and workers) and query API. Each client POSTs /v1/orders; on\n")
	out.WriteString("  the 201 it takes the time and at once GETs /v1/orders/{id} with the response's `X-Consistency-Token`, which\n")
	out.WriteString("  the query API holds (woken by the projectors' applied notices, no polling) until the order model has\n")
	out.WriteString("  applied that version. Latency = that GET's 200 − the 201, so it includes one extra HTTP round trip.\n")
	out.WriteString("- **bare chain**, the raw baseline: the same hops with bare libraries and nothing else: each client commits\n")
	out.WriteString("  the order's outbox rows (OrderPlaced and one InventoryReserved per line) in one INSERT; a pglogrepl loop\n")
	out.WriteString("  publishes each committed row with `PublishMsgAsync`; one JetStream consumer (no acks) HSETs each order\n")
	out.WriteString("  event's payload into Redis. Latency = that HSET's return − the INSERT's commit return.\n\n")
	out.WriteString("Target: jetcqrs p99 < 50 ms at 1,000 orders/s.\n\n")
	out.WriteString("| pipeline | offered orders/s | completed orders/s | measured | command p50 / p99 ms | visible p50 ms | visible p99 ms | visible max ms | p99 / bare p99 |\n")
	out.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range runs {
		fmt.Fprintf(&out, "| bare chain | %d | %.0f | %d | %s / %s | %s | %s | %s | 1.00 |\n", r.rate, r.bare.achieved, r.bare.visible.Ops,
			ms(r.bare.command.P50), ms(r.bare.command.P99), ms(r.bare.visible.P50), ms(r.bare.visible.P99), ms(r.bare.visible.Max))
		fmt.Fprintf(&out, "| jetcqrs | %d | %.0f | %d | %s / %s | %s | %s | %s | %.2f |\n", r.rate, r.sys.achieved, r.sys.visible.Ops,
			ms(r.sys.command.P50), ms(r.sys.command.P99), ms(r.sys.visible.P50), ms(r.sys.visible.P99), ms(r.sys.visible.Max),
			float64(r.sys.visible.P99)/float64(max(r.bare.visible.P99, time.Microsecond)))
	}
	out.WriteString("\nThe command column is the POST (jetcqrs) or the INSERT (bare chain), for reference.\n")
	var missed []string
	for _, r := range runs {
		if r.rate != 1000 {
			continue
		}
		if r.sys.achieved < 0.95*float64(r.rate) {
			missed = append(missed, fmt.Sprintf("%.0f of %d orders/s completed", r.sys.achieved, r.rate))
		}
		if r.sys.visible.P99 >= 50*time.Millisecond {
			missed = append(missed, fmt.Sprintf("visible p99 %s ms", ms(r.sys.visible.P99)))
		}
	}
	fmt.Fprintf(&out, "\nTarget (p99 < 50 ms at 1,000 orders/s): %s.\n", verdict(missed))
	return out.String(), nil
}

type e2eResult struct {
	achieved         float64
	command, visible Result
}

// systemRun wires the system, places orders through it and measures.
func systemRun(ctx context.Context, cfg EndToEndConfig, rate int, dbURL string, pool *pgxpool.Pool, b *broker, rdb *redis.Client,
	prefix, name string, skus []string) (e2eResult, error) {
	logger := discardLogger()
	slot := name + "_relay"
	if err := prepareRelayRun(ctx, pool, relay.Config{DatabaseURL: dbURL, SlotName: slot, PublicationName: name}); err != nil {
		return e2eResult{}, err
	}
	defer func() { _ = relay.DropSlot(context.WithoutCancel(ctx), dbURL, slot) }()

	dir, err := os.MkdirTemp("", "jetcqrs-bench-e2e-*")
	if err != nil {
		return e2eResult{}, err
	}
	defer os.RemoveAll(dir)
	catalog, err := blevestore.Open(dir + "/catalog")
	if err != nil {
		return e2eResult{}, err
	}
	defer catalog.Close()
	ch, dropCH, err := scratchClickHouse(ctx, cfg.ClickHouseURL, name)
	if err != nil {
		return e2eResult{}, err
	}
	defer dropCH()
	sales, err := chstore.NewSalesStore(ch, "g1")
	if err != nil {
		return e2eResult{}, err
	}
	if err := sales.EnsureSchema(ctx); err != nil {
		return e2eResult{}, err
	}
	orders, inventory := redisstore.NewOrderStore(rdb, prefix), redisstore.NewInventoryStore(rdb, prefix)

	runtime, err := projections.NewRuntime(b.js, projections.Config{Generation: "g1", Logger: logger,
		Registry: prometheus.NewRegistry(),
		OnApplied: func(_ string, events []projections.Envelope) {
			_ = jnats.PublishApplied(b.nc, projections.Aggregates(events))
		},
	}, []projections.Projection{
		{Name: "orders", AggregateTypes: []string{domain.AggregateOrder}, Store: orders},
		{Name: "inventory", AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
			EventTypes: redisstore.InventoryEventTypes, Store: inventory},
		{Name: "catalog", AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory}, Store: catalog,
			CommitInterval: projections.CatalogCommitInterval},
		{Name: "sales", AggregateTypes: []string{domain.AggregateOrder}, EventTypes: chstore.EventTypes, Store: sales,
			CommitInterval: projections.SalesCommitInterval},
	})
	if err != nil {
		return e2eResult{}, err
	}
	// The relay publishes on a connection of its own, as serve wires it.
	relayNC, err := b.connect(ctx, "relay")
	if err != nil {
		return e2eResult{}, err
	}
	defer relayNC.Close()
	relayJS, err := jetstream.New(relayNC)
	if err != nil {
		return e2eResult{}, err
	}
	pub, err := jnats.NewPublisher(relayJS, jnats.PublisherConfig{}, logger)
	if err != nil {
		return e2eResult{}, err
	}
	rel, err := relay.New(relay.Config{DatabaseURL: dbURL, SlotName: slot, PublicationName: name, Logger: logger,
		Registerer: prometheus.NewRegistry()}, relaypub.New(pub))
	if err != nil {
		return e2eResult{}, err
	}

	tokens, err := auth.New([]byte(strings.Repeat("e", auth.MinSecretLen)))
	if err != nil {
		return e2eResult{}, err
	}
	token, err := tokens.Issue("bench-admin", domain.RoleAdmin, time.Hour)
	if err != nil {
		return e2eResult{}, err
	}
	tracer := sdktrace.NewTracerProvider()
	defer func() { _ = tracer.Shutdown(context.Background()) }()
	hub := queryapi.NewHub()
	sub, err := jnats.SubscribeApplied(b.nc, hub.Notify)
	if err != nil {
		return e2eResult{}, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	router, err := httpx.NewRouter(httpx.RouterConfig{Logger: logger, Registry: prometheus.NewRegistry()},
		commandapi.New(postgres.NewStore(pool), tokens, tracer.Tracer("jetcqrs/commandapi"), logger, commandapi.Config{}).Mount,
		queryapi.New(queryapi.Readers{Orders: orders, Inventory: inventory, Catalog: catalog, Sales: sales,
			Versions: map[string]map[string]projections.VersionReader{
				queryapi.ModelOrders:    {domain.AggregateOrder: orders},
				queryapi.ModelInventory: {domain.AggregateInventory: inventory},
				queryapi.ModelCatalog:   {domain.AggregateProduct: catalog, domain.AggregateInventory: catalog}}},
			tokens, hub, nil, nil, logger, queryapi.Config{ConsistencyWait: 5 * time.Second}).Mount)
	if err != nil {
		return e2eResult{}, err
	}
	base, stopHTTP, err := serve(router)
	if err != nil {
		return e2eResult{}, err
	}
	defer stopHTTP()

	stopRelay := runUntilStopped(ctx, rel.Run, func() error { return nil })
	defer func() { _ = stopRelay() }()
	stopRuntime := runUntilStopped(ctx, runtime.Run, func() error { return nil })
	defer func() { _ = stopRuntime() }()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512, MaxConnsPerHost: 512}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	place := func(ctx context.Context, rng *rand.Rand) (cmd, visible time.Duration, err error) {
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/orders", bytes.NewReader(orderBody(rng, skus)))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		created := time.Now()
		if resp.StatusCode != http.StatusCreated {
			return 0, 0, fmt.Errorf("POST /v1/orders: status %d", resp.StatusCode)
		}
		req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+resp.Header.Get("Location"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Consistency-Token", resp.Header.Get("X-Consistency-Token"))
		resp, err = client.Do(req)
		if err != nil {
			return 0, 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, 0, fmt.Errorf("GET %s: status %d: %s", req.URL.Path, resp.StatusCode, body)
		}
		return created.Sub(start), time.Since(created), nil
	}
	// The runtime creates its consumers first; the first order through
	// shows that everything is in place.
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, _, err = place(pctx, rand.New(rand.NewPCG(1, 2)))
	cancel()
	if err != nil {
		return e2eResult{}, fmt.Errorf("first order: %w", err)
	}
	cmdRec, visRec := NewRecorder(), NewRecorder()
	warmUntil := time.Now().Add(latencyWarmUp(cfg.Duration))
	pr := paced(ctx, fmt.Sprintf("jetcqrs, %d orders/s", rate), rate, cfg.Duration, cfg.Workers, func(ctx context.Context, i int64) error {
		track := time.Now().After(warmUntil)
		c, v, err := place(ctx, rand.New(rand.NewPCG(uint64(i), 99)))
		if err == nil && track {
			cmdRec.Observe(c)
			visRec.Observe(v)
		}
		return err
	}, cfg.Log)
	return e2eFinish(cfg, "jetcqrs", pr, cmdRec, visRec)
}

func e2eFinish(cfg EndToEndConfig, label string, pr pacedResult, cmdRec, visRec *Recorder) (e2eResult, error) {
	if pr.failed*100 > pr.done+1 {
		return e2eResult{}, fmt.Errorf("%d of %d orders failed, first: %v", pr.failed, pr.done+pr.failed, pr.firstErr)
	}
	res := e2eResult{achieved: float64(pr.done) / pr.elapsed.Seconds(),
		command: cmdRec.Result(label, pr.elapsed), visible: visRec.Result(label, pr.elapsed)}
	fmt.Fprintf(cfg.Log, "%s: %.0f orders/s completed, %d measured, command p50 %s ms p99 %s ms, visible p50 %s ms p99 %s ms, %d errors\n",
		label, res.achieved, res.visible.Ops, ms(res.command.P50), ms(res.command.P99), ms(res.visible.P50), ms(res.visible.P99), pr.failed)
	return res, nil
}

// bareOutboxSQL commits an order's events: the OrderPlaced payload $2 and
// one InventoryReserved per line, as the outbox rows the store writes.
const bareOutboxSQL = `INSERT INTO outbox_events
	(id, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version, payload, headers, occurred_at)
	SELECT gen_random_uuid(), u.agg_type, u.agg_id, u.version, u.event_type, 1, u.payload::jsonb, '{"actor":"bench-admin"}', now()
	FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[]) WITH ORDINALITY
		AS u(agg_type, agg_id, version, event_type, payload, ord)
	ORDER BY u.ord`

// bareChainRun measures the raw baseline: outbox INSERT → pglogrepl →
// PublishMsgAsync → JetStream consumer → HSET.
func bareChainRun(ctx context.Context, cfg EndToEndConfig, rate int, dbURL string, pool *pgxpool.Pool, b *broker, rdb *redis.Client,
	prefix, name string, skus []string) (e2eResult, error) {
	slot := name + "_bare"
	if err := createSlot(ctx, pool, slot); err != nil {
		return e2eResult{}, err
	}
	br, err := newBareRelay(b.nc)
	if err != nil {
		return e2eResult{}, err
	}
	stopRelay := runUntilStopped(ctx, func(ctx context.Context) error { return br.run(ctx, dbURL, slot, name) }, func() error {
		return relay.DropSlot(context.WithoutCancel(ctx), dbURL, slot)
	})
	defer func() { _ = stopRelay() }()

	tr := newLatencyTracker()
	cons, err := b.js.CreateConsumer(ctx, jnats.DefaultStreamName, jetstream.ConsumerConfig{
		FilterSubject: jnats.SubjectRoot + "." + domain.AggregateOrder + ".>", AckPolicy: jetstream.AckNonePolicy})
	if err != nil {
		return e2eResult{}, err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		id := m.Headers().Get(jnats.HeaderAggregateID)
		md, err := m.Metadata()
		if err != nil {
			return
		}
		if rdb.HSet(ctx, prefix+"order:"+id, "seq", md.Sequence.Stream, "view", m.Data()).Err() == nil {
			tr.seen(id, time.Now())
		}
	})
	if err != nil {
		return e2eResult{}, err
	}
	defer cc.Stop()

	insert := func(ctx context.Context, rng *rand.Rand, id string) error {
		now := time.Now().UTC()
		snap := domain.OrderSnapshot{OrderID: id, UserID: "bench-user", Status: domain.StatusPlaced, PaymentMethod: "card",
			Version: 1, PlacedAt: now, UpdatedAt: now}
		aggTypes, aggIDs, versions, types, payloads := []string{domain.AggregateOrder}, []string{id}, []int64{1},
			[]string{domain.EventOrderPlaced}, []string{""}
		for _, sku := range pickSKUs(rng, skus) {
			snap.Items = append(snap.Items, domain.OrderLine{SKU: sku, Name: "Product " + sku, Category: "cat-1", Quantity: 1, PriceCents: 1999})
			snap.TotalCents += 1999
			body, _ := json.Marshal(domain.InventoryReserved{InventoryLevels: domain.InventoryLevels{SKU: sku, OnHand: 1000000000,
				Reserved: 1, Available: 999999999, Version: 2}, OrderID: id, Quantity: 1})
			aggTypes, aggIDs, versions = append(aggTypes, domain.AggregateInventory), append(aggIDs, sku+"-"+id[:8]), append(versions, 2)
			types, payloads = append(types, domain.EventInventoryReserved), append(payloads, string(body))
		}
		body, _ := json.Marshal(domain.OrderPlaced{OrderSnapshot: snap})
		payloads[0] = string(body)
		_, err := pool.Exec(ctx, bareOutboxSQL, aggTypes, aggIDs, versions, types, payloads)
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	first := uuid.NewString()
	if err := insert(pctx, rand.New(rand.NewPCG(1, 2)), first); err != nil {
		return e2eResult{}, fmt.Errorf("first order: %w", err)
	}
	if err := waitVisible(pctx, rdb, prefix+"order:"+first); err != nil {
		return e2eResult{}, fmt.Errorf("first order: %w", err)
	}

	cmdRec := NewRecorder()
	warmUntil := time.Now().Add(latencyWarmUp(cfg.Duration))
	pr := paced(ctx, fmt.Sprintf("bare chain, %d orders/s", rate), rate, cfg.Duration, cfg.Workers, func(ctx context.Context, i int64) error {
		id, track := uuid.NewString(), time.Now().After(warmUntil)
		if track {
			// Known before the commit: the consumer may see the order
			// before this goroutine runs again.
			tr.expect(id)
		}
		start := time.Now()
		if err := insert(ctx, rand.New(rand.NewPCG(uint64(i), 99)), id); err != nil {
			tr.forget(id)
			return err
		}
		if track {
			cmdRec.Observe(time.Since(start))
			tr.committed(id, time.Now())
		}
		return nil
	}, cfg.Log)
	if missing := tr.wait(ctx, 15*time.Second); missing > 0 {
		return e2eResult{}, fmt.Errorf("%d committed orders did not reach Redis within 15s", missing)
	}
	return e2eFinish(cfg, "bare chain", pr, cmdRec, tr.fromCommit)
}

// waitVisible polls until key exists.
func waitVisible(ctx context.Context, rdb *redis.Client, key string) error {
	for {
		n, err := rdb.Exists(ctx, key).Result()
		if err != nil {
			return err
		}
		if n == 1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("not visible in time")
		case <-time.After(10 * time.Millisecond):
		}
	}
}
