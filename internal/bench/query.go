package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/projections"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

// QueryGetOrderConfig configures the query-get-order benchmark.
type QueryGetOrderConfig struct {
	RedisURL    string
	Duration    time.Duration // of each measured run
	Concurrency []int
	Log         io.Writer
}

// QueryGetOrder compares GET /v1/orders/{id} through the query API (chi,
// recovery and metrics middleware, JWT authentication, the order store's
// Redis read, JSON out) with a bare net/http handler doing the same HMGET and
// writing the same JSON, at each client concurrency. It returns the
// markdown section.
func QueryGetOrder(ctx context.Context, cfg QueryGetOrderConfig) (string, error) {
	prefix := "jetcqrs_bench_query_get_order:g1:"
	rdb, dropRedis, err := scratchRedis(ctx, cfg.RedisURL, prefix)
	if err != nil {
		return "", err
	}
	defer dropRedis()

	orders := redisstore.NewOrderStore(rdb, prefix)
	ids, err := seedOrders(ctx, orders)
	if err != nil {
		return "", err
	}

	tokens, err := auth.New([]byte(strings.Repeat("q", auth.MinSecretLen)))
	if err != nil {
		return "", err
	}
	token, err := tokens.Issue("bench-admin", domain.RoleAdmin, time.Hour)
	if err != nil {
		return "", err
	}
	api, err := queryRouter(orders, tokens)
	if err != nil {
		return "", err
	}
	bare := http.NewServeMux()
	bare.HandleFunc("GET /v1/orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		vals, err := rdb.HMGet(r.Context(), prefix+"order:"+r.PathValue("id"), "user", "view").Result()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		view, ok := vals[1].(string)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, view)
	})
	apiURL, stopAPI, err := serve(api)
	if err != nil {
		return "", err
	}
	defer stopAPI()
	bareURL, stopBare, err := serve(bare)
	if err != nil {
		return "", err
	}
	defer stopBare()

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	get := func(base string) func(*rand.Rand) ([]byte, error) {
		return func(rng *rand.Rand) ([]byte, error) {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/orders/"+ids[rng.IntN(len(ids))], nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return nil, err
			}
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("status %d: %s", resp.StatusCode, body)
			}
			return body, nil
		}
	}
	getAPI, getBare := get(apiURL), get(bareURL)
	// Both answer the same bytes (up to the encoder's final newline).
	check := rand.New(rand.NewPCG(7, 7))
	a, err := getAPI(check)
	if err != nil {
		return "", fmt.Errorf("query API: %w", err)
	}
	check = rand.New(rand.NewPCG(7, 7))
	b, err := getBare(check)
	if err != nil {
		return "", fmt.Errorf("bare handler: %w", err)
	}
	if !bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b)) {
		return "", fmt.Errorf("the API and the bare handler answer differently:\n%s\n%s", a, b)
	}
	apiOp := func(rng *rand.Rand) error { _, err := getAPI(rng); return err }
	rawOp := func(rng *rand.Rand) error { _, err := getBare(rng); return err }

	var out strings.Builder
	fmt.Fprintf(&out, "## GET /v1/orders/{id}: query API vs a bare net/http handler\n\n")
	fmt.Fprintf(&out, "`jetcqrs-bench query-get-order` on %s. %d orders are applied to the Redis order model first;\n", Machine(), len(ids))
	out.WriteString("each request reads a random one with a keep-alive client on the same machine. The query API runs as `serve`\n")
	out.WriteString("mounts it (chi, recovery and metrics middleware, bearer JWT verification with its cache of verified tokens,\n")
	out.WriteString("`OrderStore.OrderJSON`: HMGET of the user and the stored view, the actor check, the view written as stored); the raw\n")
	out.WriteString("baseline is an `http.ServeMux` handler doing the same HMGET and writing the view (the same body), with the same Redis client. ")
	fmt.Fprintf(&out, "%s per run after a warm-up.\nTarget: API ≥ 0.7× raw throughput and p99 < 2 ms.\n\n", cfg.Duration)
	out.WriteString("| clients | raw req/s | raw p50 ms | raw p99 ms | API req/s | API p50 ms | API p99 ms | API/raw throughput |\n")
	out.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	warm := min(cfg.Duration, time.Second)
	_, _ = Load(ctx, "warm-up", 4, warm, rawOp, io.Discard)
	_, _ = Load(ctx, "warm-up", 4, warm, apiOp, io.Discard)
	var missed []string
	for _, c := range cfg.Concurrency {
		raw, err := Load(ctx, fmt.Sprintf("bare handler, %d clients", c), c, cfg.Duration, rawOp, cfg.Log)
		if err != nil {
			return "", err
		}
		api, err := Load(ctx, fmt.Sprintf("query API, %d clients", c), c, cfg.Duration, apiOp, cfg.Log)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&out, "| %d | %.0f | %s | %s | %.0f | %s | %s | %.2f |\n", c, raw.Throughput(), ms(raw.P50), ms(raw.P99),
			api.Throughput(), ms(api.P50), ms(api.P99), api.Throughput()/raw.Throughput())
		if ratio := api.Throughput() / raw.Throughput(); ratio < 0.7 {
			missed = append(missed, fmt.Sprintf("throughput ratio %.2f at %d clients", ratio, c))
		}
		if api.P99 >= 2*time.Millisecond {
			missed = append(missed, fmt.Sprintf("p99 %s ms at %d clients (bare handler: %s ms)", ms(api.P99), c, ms(raw.P99)))
		}
	}
	fmt.Fprintf(&out, "\nTarget: %s.\n", verdict(missed))
	return out.String(), nil
}

// seedOrders applies the order events of a generated shop to the store and
// returns the order ids.
func seedOrders(ctx context.Context, store *redisstore.OrderStore) ([]string, error) {
	events := filterEvents(eventMix(30_000, 1000, 3), []string{domain.AggregateOrder})
	seen := map[string]bool{}
	var ids []string
	for _, e := range events {
		if !seen[e.AggregateID] {
			seen[e.AggregateID] = true
			ids = append(ids, e.AggregateID)
		}
	}
	for _, b := range chunk(events, 256) {
		if err := store.Apply(ctx, b); err != nil {
			return nil, fmt.Errorf("seed orders: %w", err)
		}
	}
	return ids, nil
}

// queryRouter is the query API as the binary mounts it, over the order
// model only.
func queryRouter(orders *redisstore.OrderStore, tokens *auth.Tokens) (http.Handler, error) {
	logger := discardLogger()
	return httpx.NewRouter(httpx.RouterConfig{Logger: logger, Registry: prometheus.NewRegistry()},
		queryapi.New(queryapi.Readers{Orders: orders,
			Versions: map[string]map[string]projections.VersionReader{queryapi.ModelOrders: {domain.AggregateOrder: orders}}},
			tokens, queryapi.NewHub(), nil, nil, logger, queryapi.Config{}).Mount)
}

// serve serves h on a loopback port with the binary's server settings and
// returns its base URL and a function that stops it.
func serve(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
