package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/commandapi"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/postgres"
)

// PlaceOrderConfig configures the PlaceOrder benchmark.
type PlaceOrderConfig struct {
	// ServerURL is a PostgreSQL URL whose server gets a scratch database.
	ServerURL   string
	Duration    time.Duration
	Concurrency []int
	SKUs        int
	MaxConns    int32
	Log         io.Writer
}

// PlaceOrder compares POST /v1/orders through the whole HTTP command path
// with the same SQL transaction (same statements, rows and locks) issued with
// bare pgx, at each client concurrency. It returns the markdown section.
func PlaceOrder(ctx context.Context, cfg PlaceOrderConfig) (string, error) {
	dbURL, drop, err := ScratchDatabase(ctx, cfg.ServerURL, "jetcqrs_bench_place_order")
	if err != nil {
		return "", err
	}
	defer drop()
	pool, err := migratedPool(ctx, dbURL, cfg.MaxConns)
	if err != nil {
		return "", err
	}
	defer pool.Close()
	skus, err := seedCatalog(ctx, pool, cfg.SKUs)
	if err != nil {
		return "", err
	}

	srv, token, err := startCommandAPI(pool)
	if err != nil {
		return "", err
	}
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}, Timeout: 30 * time.Second}
	apiURL := "http://" + srv.Addr().String() + "/v1/orders"

	apiOp := func(rng *rand.Rand) error {
		body := orderBody(rng, skus)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, apiURL, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	rawOp := func(rng *rand.Rand) error { return rawPlaceOrder(ctx, pool, pickSKUs(rng, skus)) }

	var b strings.Builder
	fmt.Fprintf(&b, "## PlaceOrder: HTTP command API vs bare pgx\n\n")
	fmt.Fprintf(&b, "`jetcqrs-bench place-order` on %s. Each request orders 1–3 random SKUs of %d (quantity 1);\n", Machine(), cfg.SKUs)
	fmt.Fprintf(&b, "the raw baseline issues the same transaction in the same two round trips (BEGIN with SELECT … FOR UPDATE in SKU order, then one pipelined batch of\n")
	fmt.Fprintf(&b, "order, items, inventory and outbox writes, COMMIT) with bare pgx over a pool of the same size (%d).\n", cfg.MaxConns)
	fmt.Fprintf(&b, "%s per run after a warm-up; the API adds HTTP, JSON decoding, JWT verification, validation and the domain.\n\n", cfg.Duration)
	b.WriteString("| clients | raw ops/s | raw p50 ms | raw p99 ms | API ops/s | API p50 ms | API p99 ms | API/raw throughput |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	_, _ = Load(ctx, "warm-up", 4, 2*time.Second, apiOp, cfg.Log)
	_, _ = Load(ctx, "warm-up", 4, 2*time.Second, rawOp, cfg.Log)
	var missed []string
	for _, c := range cfg.Concurrency {
		raw, err := Load(ctx, fmt.Sprintf("raw pgx, %d clients", c), c, cfg.Duration, rawOp, cfg.Log)
		if err != nil {
			return "", err
		}
		api, err := Load(ctx, fmt.Sprintf("HTTP API, %d clients", c), c, cfg.Duration, apiOp, cfg.Log)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "| %d | %.0f | %s | %s | %.0f | %s | %s | %.2f |\n", c,
			raw.Throughput(), ms(raw.P50), ms(raw.P99), api.Throughput(), ms(api.P50), ms(api.P99),
			api.Throughput()/raw.Throughput())
		if ratio := api.Throughput() / raw.Throughput(); ratio < 0.7 {
			missed = append(missed, fmt.Sprintf("throughput ratio %.2f at %d clients", ratio, c))
		}
		if c == 16 && api.P99 >= 10*time.Millisecond {
			missed = append(missed, fmt.Sprintf("API p99 %s ms at 16 clients (raw pgx: %s ms)", ms(api.P99), ms(raw.P99)))
		}
	}
	fmt.Fprintf(&b, "\nTarget (API/raw ≥ 0.7; API p99 < 10 ms at 16 clients): %s.\n", verdict(missed))
	return b.String(), nil
}

// Load runs op from clients goroutines for d and summarizes the latencies.
// An operation error is counted; more than 1% errors fails the run.
func Load(ctx context.Context, name string, clients int, d time.Duration, op func(*rand.Rand) error, log io.Writer) (Result, error) {
	rec := NewRecorder()
	var done atomic.Int64
	stop := Progress(log, name, 5*time.Second, done.Load)
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, seed*7+1))
			for ctx.Err() == nil {
				t := time.Now()
				if err := op(rng); err != nil {
					if ctx.Err() != nil {
						return
					}
					rec.Error()
					errOnce.Do(func() { firstErr = err })
					continue
				}
				rec.Observe(time.Since(t))
				done.Add(1)
			}
		}(uint64(i + 1))
	}
	wg.Wait()
	stop()
	res := rec.Result(name, time.Since(start))
	fmt.Fprintf(log, "%s: %d ops, %.0f ops/s, p50 %s ms, p99 %s ms, %d errors\n", name, res.Ops, res.Throughput(), ms(res.P50), ms(res.P99), res.Errors)
	if res.Errors*100 > res.Ops+1 {
		return res, fmt.Errorf("%s: %d of %d operations failed, first: %v", name, res.Errors, res.Ops+res.Errors, firstErr)
	}
	return res, nil
}

func startCommandAPI(pool *pgxpool.Pool) (net.Listener, string, error) {
	secret := []byte(strings.Repeat("b", auth.MinSecretLen))
	tokens, err := auth.New(secret)
	if err != nil {
		return nil, "", err
	}
	token, err := tokens.Issue("bench-admin", domain.RoleAdmin, time.Hour)
	if err != nil {
		return nil, "", err
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	r, err := httpx.NewRouter(httpx.RouterConfig{Logger: logger},
		commandapi.New(postgres.NewStore(pool), tokens, noop.NewTracerProvider().Tracer(""), logger, commandapi.Config{}).Mount)
	if err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	go func() { _ = (&http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}).Serve(ln) }()
	return ln, token, nil
}

// seedCatalog inserts n products with practically unlimited stock.
func seedCatalog(ctx context.Context, pool *pgxpool.Pool, n int) ([]string, error) {
	skus := make([]string, n)
	for i := range skus {
		skus[i] = fmt.Sprintf("BENCH-%05d", i)
	}
	_, err := pool.Exec(ctx, `
		INSERT INTO products (sku, name, description, category, price_cents, version, created_at, updated_at)
		SELECT s, 'Product ' || s, 'A product used by the benchmark', 'cat-' || (ord % 10), 100 + ord, 1, now(), now()
		FROM unnest($1::text[]) WITH ORDINALITY AS u(s, ord);
		`, skus)
	if err != nil {
		return nil, fmt.Errorf("seed products: %w", err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO inventory (sku, on_hand, reserved, version, updated_at)
		SELECT s, 1000000000, 0, 1, now() FROM unnest($1::text[]) AS s`, skus)
	if err != nil {
		return nil, fmt.Errorf("seed inventory: %w", err)
	}
	return skus, nil
}

func pickSKUs(rng *rand.Rand, skus []string) []string {
	n := 1 + rng.IntN(3)
	out := make([]string, 0, n)
	for len(out) < n {
		s := skus[rng.IntN(len(skus))]
		dup := false
		for _, o := range out {
			dup = dup || o == s
		}
		if !dup {
			out = append(out, s)
		}
	}
	return out
}

func orderBody(rng *rand.Rand, skus []string) []byte {
	type item struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	}
	var items []item
	for _, s := range pickSKUs(rng, skus) {
		items = append(items, item{s, 1})
	}
	body, _ := json.Marshal(map[string]any{"user_id": "bench-user", "items": items,
		"payment": map[string]string{"method": "card", "token": "tok_bench"}})
	return body
}

// rawPlaceOrder is the baseline: the store's PlaceOrder transaction written
// directly against pgx, without HTTP, JSON decoding, validation or the domain.
func rawPlaceOrder(ctx context.Context, pool *pgxpool.Pool, skus []string) error {
	slices.Sort(skus)
	// Two round trips, as the store's: BEGIN with the locking read, then the
	// writes with COMMIT.
	pc, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer pc.Release()
	conn := pc.Conn()
	err = func() error {
		var read pgx.Batch
		read.Queue("BEGIN")
		read.Queue(`SELECT i.sku, i.on_hand, i.reserved, i.version, p.name, p.category, p.price_cents
			FROM inventory i JOIN products p ON p.sku = i.sku
			WHERE i.sku = ANY($1) ORDER BY i.sku FOR UPDATE OF i`, skus)
		br := conn.SendBatch(ctx, &read)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		type line struct {
			sku, name, cat              string
			onHand, reserved, ver, cost int64
		}
		var lines []line
		var l line
		if _, err := pgx.ForEachRow(rows, []any{&l.sku, &l.onHand, &l.reserved, &l.ver, &l.name, &l.cat, &l.cost}, func() error {
			lines = append(lines, l)
			return nil
		}); err != nil {
			return err
		}
		if err := br.Close(); err != nil {
			return err
		}
		id, _ := uuid.NewV7()
		now := time.Now().UTC()
		var total int64
		n := len(lines)
		lineNos, names, cats, qtys, prices := make([]int32, n), make([]string, n), make([]string, n), make([]int64, n), make([]int64, n)
		onHand, reserved, versions := make([]int64, n), make([]int64, n), make([]int64, n)
		evIDs := make([]uuid.UUID, 0, n+1)
		aggTypes, aggIDs, evVers, evTypes, payloads := []string{}, []string{}, []int64{}, []string{}, []string{}
		schemas, occurred := []int32{}, []time.Time{}
		addEvent := func(aggType, aggID string, ver int64, typ string, payload any) {
			eid, _ := uuid.NewV7()
			body, _ := json.Marshal(payload)
			evIDs, aggTypes, aggIDs, evVers = append(evIDs, eid), append(aggTypes, aggType), append(aggIDs, aggID), append(evVers, ver)
			evTypes, payloads, schemas, occurred = append(evTypes, typ), append(payloads, string(body)), append(schemas, 1), append(occurred, now)
		}
		items := make([]map[string]any, n)
		for i, l := range lines {
			lineNos[i], names[i], cats[i], qtys[i], prices[i] = int32(i+1), l.name, l.cat, 1, l.cost
			onHand[i], reserved[i], versions[i] = l.onHand, l.reserved+1, l.ver+1
			total += l.cost
			items[i] = map[string]any{"sku": l.sku, "name": l.name, "category": l.cat, "quantity": 1, "price_cents": l.cost}
		}
		addEvent("order", id.String(), 1, "OrderPlaced", map[string]any{"order_id": id.String(), "user_id": "bench-user",
			"status": "placed", "items": items, "total_cents": total, "payment_method": "card", "version": 1, "placed_at": now, "updated_at": now})
		for i, l := range lines {
			addEvent("inventory", l.sku, versions[i], "InventoryReserved", map[string]any{"sku": l.sku, "on_hand": onHand[i],
				"reserved": reserved[i], "available": onHand[i] - reserved[i], "version": versions[i], "order_id": id.String(), "quantity": 1})
		}
		var batch pgx.Batch
		batch.Queue(`INSERT INTO orders (id, user_id, status, total_cents, payment_method, version, placed_at, updated_at)
			VALUES ($1, $2, 'placed', $3, 'card', 1, $4, $4)`, id, "bench-user", total, now)
		batch.Queue(`INSERT INTO order_items (order_id, line_no, sku, name, category, quantity, price_cents)
			SELECT $1, * FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])`,
			id, lineNos, skus, names, cats, qtys, prices)
		batch.Queue(`WITH affected AS (UPDATE inventory AS i SET on_hand = u.on_hand, reserved = u.reserved, version = u.version, updated_at = $5
			FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(sku, on_hand, reserved, version)
			WHERE i.sku = u.sku AND i.version = u.version - 1 RETURNING 1)
			SELECT jetcqrs_expect_rows(count(*), $6, $7) FROM affected`, skus, onHand, reserved, versions, now, int64(n), "UPDATE inventory AS")
		batch.Queue(`INSERT INTO outbox_events
			(id, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version, payload, headers, occurred_at)
			SELECT u.id, u.agg_type, u.agg_id, u.version, u.event_type, u.schema_version, u.payload::jsonb, $8::jsonb, u.occurred_at
			FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::int[], $7::text[], $9::timestamptz[])
				WITH ORDINALITY AS u(id, agg_type, agg_id, version, event_type, schema_version, payload, occurred_at, ord)
			ORDER BY u.ord`, evIDs, aggTypes, aggIDs, evVers, evTypes, schemas, payloads, `{"actor":"bench-admin"}`, occurred)
		batch.Queue("COMMIT")
		return conn.SendBatch(ctx, &batch).Close()
	}()
	if err != nil {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	}
	return err
}

// migratedPool migrates the database of dbURL and opens a pool of maxConns.
func migratedPool(ctx context.Context, dbURL string, maxConns int32) (*pgxpool.Pool, error) {
	if err := postgres.Migrate(ctx, dbURL, discardLogger()); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = maxConns
	return pgxpool.NewWithConfig(ctx, pcfg)
}

// ScratchDatabase (re)creates a database named name on the server of
// serverURL and returns its URL and a function that drops it.
func ScratchDatabase(ctx context.Context, serverURL, name string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", nil, fmt.Errorf("connect to PostgreSQL (run `bash scripts/services.sh`): %w", err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
		return "", nil, err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", nil, err
	}
	cfg, err := pgx.ParseConfig(serverURL)
	if err != nil {
		return "", nil, err
	}
	u := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name)
	drop := func() {
		c, err := pgx.Connect(context.Background(), serverURL)
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)")
			c.Close(context.Background())
		}
	}
	return u, drop, nil
}
