package queryapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/projections"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

// tokenWait is the consistency bound of these tests: long enough that an
// answer given "at once" is told apart from one that waited, on a loaded
// machine.
const tokenWait = time.Second

// readSide is the query API over real read models (orders and stock in
// Redis, the catalog in Bleve), fed by applying events to the stores the way
// a projector does and notifying the hub after each batch.
type readSide struct {
	url       string
	client    *http.Client
	orders    *redisstore.OrderStore
	inventory *redisstore.InventoryStore
	catalog   *freshRecorder
	hub       *queryapi.Hub
	tokens    *auth.Tokens
	seq       atomic.Uint64
}

// freshRecorder is the Bleve catalog, recording whether each search was
// asked to be fresh.
type freshRecorder struct {
	*blevestore.CatalogStore
	mu    sync.Mutex
	fresh []bool
}

func (c *freshRecorder) Search(ctx context.Context, q projections.SearchQuery) (projections.SearchResult, error) {
	c.mu.Lock()
	c.fresh = append(c.fresh, q.Fresh)
	c.mu.Unlock()
	return c.CatalogStore.Search(ctx, q)
}

func (c *freshRecorder) searches() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bool(nil), c.fresh...)
}

func newReadSide(t *testing.T) *readSide {
	t.Helper()
	url, prefix := testenv.RedisURL(t)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(opts)
	t.Cleanup(func() { _ = rc.Close() })
	catalog, err := blevestore.Open(filepath.Join(t.TempDir(), "catalog"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = catalog.Close() })
	tokens, err := auth.New([]byte("queryapi-test-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	rs := &readSide{
		orders:    redisstore.NewOrderStore(rc, prefix+"g1:"),
		inventory: redisstore.NewInventoryStore(rc, prefix+"g1:"),
		catalog:   &freshRecorder{CatalogStore: catalog},
		hub:       queryapi.NewHub(),
		tokens:    tokens,
	}
	api := queryapi.New(queryapi.Readers{
		Orders: rs.orders, Inventory: rs.inventory, Catalog: rs.catalog, Stock: rs.inventory, CatalogStock: rs.catalog,
		Versions: map[string]map[string]projections.VersionReader{
			queryapi.ModelOrders:    {domain.AggregateOrder: rs.orders},
			queryapi.ModelInventory: {domain.AggregateInventory: rs.inventory},
			queryapi.ModelCatalog:   {domain.AggregateProduct: rs.catalog},
			queryapi.ModelSales:     {},
		},
	}, tokens, rs.hub, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), queryapi.Config{ConsistencyWait: tokenWait})
	router := chi.NewRouter()
	api.Mount(router)
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	rs.url, rs.client = srv.URL, srv.Client()
	return rs
}

func (rs *readSide) bearer(t *testing.T, subject string, role domain.Role) string {
	t.Helper()
	tok, err := rs.tokens.Issue(subject, role, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// apply applies one event to store as the next event of the stream, then
// tells the hub, as a projector does after a batch.
func (rs *readSide) apply(t *testing.T, store projections.Applier, aggType, aggID string, version int64, eventType string, payload any) {
	t.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	e := projections.Envelope{
		Seq: rs.seq.Add(1), ID: aggType + "-" + aggID + "-" + eventType, AggregateType: aggType, AggregateID: aggID,
		AggregateVersion: version, EventType: eventType, SchemaVersion: domain.CurrentSchemaVersion,
		OccurredAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), Payload: raw,
	}
	if err := store.Apply(t.Context(), []projections.Envelope{e}); err != nil {
		t.Fatalf("apply %s %s v%d: %v", eventType, aggID, version, err)
	}
	rs.hub.Notify(aggType, aggID)
}

// order applies the order event that leaves orderID of userID at version
// (placed at version 1, paid from version 2 on).
func (rs *readSide) order(t *testing.T, orderID, userID string, version int64) {
	t.Helper()
	placed := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	o := domain.OrderSnapshot{OrderID: orderID, UserID: userID, Status: domain.StatusPlaced,
		Items:      []domain.OrderLine{{SKU: "TEA-1", Name: "Tea", Category: "food", Quantity: 2, PriceCents: 450}},
		TotalCents: 900, PaymentMethod: "card", Version: version, PlacedAt: placed, UpdatedAt: placed.Add(time.Duration(version) * time.Minute)}
	if version == 1 {
		rs.apply(t, rs.orders, domain.AggregateOrder, orderID, version, domain.EventOrderPlaced, domain.OrderPlaced{OrderSnapshot: o})
		return
	}
	o.Status = domain.StatusPaid
	rs.apply(t, rs.orders, domain.AggregateOrder, orderID, version, domain.EventOrderPaid, domain.OrderPaid{OrderSnapshot: o})
}

// product creates sku in the catalog and, when stock is set, in the stock
// model too.
func (rs *readSide) product(t *testing.T, sku string, stock bool) {
	t.Helper()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p := domain.ProductCreated{ProductSnapshot: domain.ProductSnapshot{SKU: sku, Name: "Green tea", Description: "Sencha, loose leaf",
		Category: "food", PriceCents: 450, Attributes: map[string]string{}, Version: 1, CreatedAt: at, UpdatedAt: at}}
	rs.apply(t, rs.catalog, domain.AggregateProduct, sku, 1, domain.EventProductCreated, p)
	if stock {
		rs.apply(t, rs.inventory, domain.AggregateProduct, sku, 1, domain.EventProductCreated, p)
	}
}

// answer is what a GET answered and how long it took.
type answer struct {
	status  int
	body    string
	elapsed time.Duration
}

func (a answer) String() string {
	return fmt.Sprintf("%d after %s: %s", a.status, a.elapsed.Round(time.Millisecond), a.body)
}

// get sends a GET. It may run on a goroutine of its own: a request that
// fails is reported, and answered with status 0.
func (rs *readSide) get(t *testing.T, path, bearer, consistencyToken string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, rs.url+path, nil)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return answer{}
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if consistencyToken != "" {
		req.Header.Set("X-Consistency-Token", consistencyToken)
	}
	start := time.Now()
	resp, err := rs.client.Do(req)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return answer{}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("GET %s: %v", path, err)
		return answer{}
	}
	return answer{status: resp.StatusCode, body: strings.TrimSpace(string(body)), elapsed: time.Since(start)}
}

// getAll sends the GETs concurrently (each may wait out the bound) and
// returns their answers in order.
func (rs *readSide) getAll(t *testing.T, path, bearer string, consistencyTokens ...string) []answer {
	t.Helper()
	out := make([]answer, len(consistencyTokens))
	var wg sync.WaitGroup
	for i, tok := range consistencyTokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = rs.get(t, path, bearer, tok)
		}()
	}
	wg.Wait()
	return out
}

func wantAtOnce(t *testing.T, what string, a answer) {
	t.Helper()
	if a.elapsed >= tokenWait/2 {
		t.Errorf("%s answered %s; want an answer at once, not after waiting on the token", what, a)
	}
}

func wantWaitedOut(t *testing.T, what string, a answer) {
	t.Helper()
	if a.status != http.StatusServiceUnavailable || !strings.Contains(a.body, `"code":"consistency_timeout"`) {
		t.Errorf("%s = %s; want 503 consistency_timeout", what, a)
	}
	if a.elapsed < tokenWait || a.elapsed > tokenWait+time.Second {
		t.Errorf("%s answered after %s; want the whole bound, %s", what, a.elapsed, tokenWait)
	}
}

// TestOrderTokensRevealNothingToAStranger probes alice's order, at version
// 2, with bob's credentials and tokens of versions it has (1, 2) and has not
// (3, 99), on each endpoint that reads orders. Every probe gets exactly the
// answer a probe of an order that does not exist gets: on the order's URL the
// 403 a read without a token gets, at once; on bob's own list, the 503 of a
// version that never arrives, after the whole bound; on alice's list, 403 at
// once.
func TestOrderTokensRevealNothingToAStranger(t *testing.T) {
	t.Parallel()
	rs := newReadSide(t)
	const aliceOrder = "0195a1b2-0000-7000-8000-0000000000a1"
	rs.order(t, aliceOrder, "alice", 1)
	rs.order(t, aliceOrder, "alice", 2)
	bob := rs.bearer(t, "bob", domain.RoleCustomer)
	probes := []string{"order:" + aliceOrder + ":1", "order:" + aliceOrder + ":2", "order:" + aliceOrder + ":3", "order:" + aliceOrder + ":99"}

	// The order's own URL: the answer without a token, at once.
	plain := rs.get(t, "/v1/orders/"+aliceOrder, bob, "")
	if plain.status != http.StatusForbidden {
		t.Fatalf("bob GET alice's order = %s; want 403", plain)
	}
	for i, a := range rs.getAll(t, "/v1/orders/"+aliceOrder, bob, probes...) {
		what := "bob GET alice's order with " + probes[i]
		if a.status != plain.status || a.body != plain.body {
			t.Errorf("%s = %s; want what a read without a token gets, %s", what, a, plain)
		}
		wantAtOnce(t, what, a)
	}

	// Bob's own list: every token of alice's order, and one of an order that
	// exists nowhere, waits out the bound and answers alike.
	listProbes := append(probes, "order:0195a1b2-0000-7000-8000-0000000000ff:1")
	answers := rs.getAll(t, "/v1/users/bob/orders", bob, listProbes...)
	for i, a := range answers {
		what := "bob GET his orders with " + listProbes[i]
		wantWaitedOut(t, what, a)
		if a.body != answers[len(answers)-1].body {
			t.Errorf("%s = %s; want the answer to a token of no order, %s", what, a, answers[len(answers)-1])
		}
	}

	// Alice's list: forbidden before any token is looked at.
	plain = rs.get(t, "/v1/users/alice/orders", bob, "")
	if plain.status != http.StatusForbidden {
		t.Fatalf("bob GET alice's orders = %s; want 403", plain)
	}
	for i, a := range rs.getAll(t, "/v1/users/alice/orders", bob, append(probes, "product:TEA-1:1")...) {
		if a.status != plain.status || a.body != plain.body {
			t.Errorf("bob GET alice's orders with token #%d = %s; want %s", i, a, plain)
		}
		wantAtOnce(t, "bob GET alice's orders", a)
	}

	// An admin may read alice's order, but bob's list still honours only
	// bob's orders' tokens.
	admin := rs.bearer(t, "ops", domain.RoleAdmin)
	if a := rs.get(t, "/v1/orders/"+aliceOrder, admin, probes[1]); a.status != http.StatusOK {
		t.Errorf("admin GET alice's order with %s = %s; want 200", probes[1], a)
	}
	wantWaitedOut(t, "admin GET bob's orders with a token of alice's", rs.get(t, "/v1/users/bob/orders", admin, probes[0]))
}

// TestOrderTokensReadYourWrites checks that the owner's token still waits for
// her write: an order the model does not hold yet, on the order's URL and on
// her list, and a version the model has not reached; a version that never
// arrives answers 503 after the bound. A stranger's token of that order,
// sent before the model holds it, is answered as soon as the order appears,
// with the 403 of a read without a token, whatever version it names.
func TestOrderTokensReadYourWrites(t *testing.T) {
	t.Parallel()
	rs := newReadSide(t)
	const first, second = "0195a1b2-0000-7000-8000-0000000000b1", "0195a1b2-0000-7000-8000-0000000000b2"
	alice := rs.bearer(t, "alice", domain.RoleCustomer)
	bob := rs.bearer(t, "bob", domain.RoleCustomer)

	type result struct {
		name string
		a    answer
	}
	results := make(chan result, 5)
	for _, r := range []struct{ name, path, bearer, tok string }{
		{"alice GET her new order", "/v1/orders/" + first, alice, "order:" + first + ":1"},
		{"alice GET her orders", "/v1/users/alice/orders", alice, "order:" + first + ":1"},
		{"alice GET her order at version 2", "/v1/orders/" + first, alice, "order:" + first + ":2"},
		{"bob GET alice's new order at version 1", "/v1/orders/" + first, bob, "order:" + first + ":1"},
		{"bob GET alice's new order at version 7", "/v1/orders/" + first, bob, "order:" + first + ":7"},
	} {
		go func() { results <- result{r.name, rs.get(t, r.path, r.bearer, r.tok)} }()
	}
	time.Sleep(tokenWait / 5)
	rs.order(t, first, "alice", 1)
	time.Sleep(tokenWait / 5)
	rs.order(t, first, "alice", 2)

	var forbidden []answer
	for range 5 {
		r := <-results
		switch {
		case strings.HasPrefix(r.name, "bob"):
			if r.a.status != http.StatusForbidden {
				t.Errorf("%s = %s; want 403 once the order appears", r.name, r.a)
			}
			forbidden = append(forbidden, r.a)
		case strings.Contains(r.name, "orders"):
			var list struct {
				Orders []projections.OrderListEntry `json:"orders"`
			}
			if r.a.status != http.StatusOK || json.Unmarshal([]byte(r.a.body), &list) != nil ||
				len(list.Orders) != 1 || list.Orders[0].OrderID != first {
				t.Errorf("%s = %s; want the new order listed", r.name, r.a)
			}
		default:
			var o projections.OrderView
			want := int64(1)
			if strings.HasSuffix(r.name, "version 2") {
				want = 2
			}
			if r.a.status != http.StatusOK || json.Unmarshal([]byte(r.a.body), &o) != nil || o.OrderID != first || o.Version < want {
				t.Errorf("%s = %s; want the order at version %d or later", r.name, r.a, want)
			}
		}
	}
	plain := rs.get(t, "/v1/orders/"+first, bob, "")
	for _, a := range forbidden {
		if a.body != plain.body {
			t.Errorf("bob's probe = %s; want what a read without a token gets, %s", a, plain)
		}
	}

	// A version that never arrives, and an order that never appears.
	wantWaitedOut(t, "alice GET her order at version 3", rs.get(t, "/v1/orders/"+first, alice, "order:"+first+":3"))
	wantWaitedOut(t, "alice GET an order the model never gets", rs.get(t, "/v1/orders/"+second, alice, "order:"+second+":1"))
	wantWaitedOut(t, "alice GET her orders with a version that never arrives", rs.get(t, "/v1/users/alice/orders", alice, "order:"+first+":3"))
}

// TestTokenKinds checks which tokens each endpoint accepts: a token of
// another kind (or of another order, on an order's URL) is 400
// invalid_request naming the header, before any wait; the accepted ones
// answer.
func TestTokenKinds(t *testing.T) {
	t.Parallel()
	rs := newReadSide(t)
	const aliceOrder, otherOrder = "0195a1b2-0000-7000-8000-0000000000c1", "0195a1b2-0000-7000-8000-0000000000c2"
	rs.order(t, aliceOrder, "alice", 1)
	rs.order(t, otherOrder, "alice", 1)
	rs.product(t, "TEA-1", true)
	rs.apply(t, rs.inventory, domain.AggregateInventory, "TEA-1", 1, domain.EventInventoryAdjusted,
		domain.InventoryAdjusted{InventoryLevels: domain.InventoryLevels{SKU: "TEA-1", OnHand: 5, Available: 5, Version: 1}, Delta: 5, Reason: "count"})
	rs.apply(t, rs.catalog, domain.AggregateInventory, "TEA-1", 1, domain.EventInventoryAdjusted,
		domain.InventoryAdjusted{InventoryLevels: domain.InventoryLevels{SKU: "TEA-1", OnHand: 5, Available: 5, Version: 1}, Delta: 5, Reason: "count"})
	alice := rs.bearer(t, "alice", domain.RoleCustomer)
	admin := rs.bearer(t, "ops", domain.RoleAdmin)

	for _, c := range []struct{ path, bearer, tok string }{
		{"/v1/orders/" + aliceOrder, alice, "order:" + otherOrder + ":1"},
		{"/v1/orders/" + aliceOrder, alice, "product:TEA-1:1"},
		{"/v1/orders/" + aliceOrder, alice, "inventory:TEA-1:1"},
		{"/v1/orders/" + aliceOrder, alice, "garbage"},
		{"/v1/users/alice/orders", alice, "product:TEA-1:1"},
		{"/v1/users/alice/orders", alice, "inventory:TEA-1:1"},
		{"/v1/products/TEA-1", "", "order:" + aliceOrder + ":1"},
		{"/v1/products?q=tea", "", "order:" + aliceOrder + ":1"},
		{"/v1/inventory/TEA-1", "", "order:" + aliceOrder + ":1"},
		{"/v1/inventory/TEA-1", "", "loyalty:alice:1"},
		{"/v1/reports/sales", admin, "order:" + aliceOrder + ":1"},
		{"/v1/reports/sales", admin, "product:TEA-1:1"},
	} {
		a := rs.get(t, c.path, c.bearer, c.tok)
		var p struct{ Code, Field string }
		if a.status != http.StatusBadRequest || json.Unmarshal([]byte(a.body), &p) != nil ||
			p.Code != "invalid_request" || p.Field != "X-Consistency-Token" {
			t.Errorf("GET %s with %s = %s; want 400 invalid_request on X-Consistency-Token", c.path, c.tok, a)
		}
		wantAtOnce(t, "GET "+c.path+" with "+c.tok, a)
	}

	for _, c := range []struct{ path, bearer, tok string }{
		{"/v1/orders/" + aliceOrder, alice, "order:" + aliceOrder + ":1"},
		{"/v1/users/alice/orders", alice, "order:" + otherOrder + ":1"},
		{"/v1/products/TEA-1", "", "product:TEA-1:1"},
		{"/v1/products/TEA-1", "", "inventory:TEA-1:1"},
		{"/v1/products?q=tea", "", "product:TEA-1:1"},
		{"/v1/products?q=tea", "", "inventory:TEA-1:1"},
		{"/v1/inventory/TEA-1", "", "inventory:TEA-1:1"},
		{"/v1/inventory/TEA-1", "", "product:TEA-1:1"},
	} {
		if a := rs.get(t, c.path, c.bearer, c.tok); a.status != http.StatusOK {
			t.Errorf("GET %s with %s = %s; want 200", c.path, c.tok, a)
		}
	}
}

// TestCatalogTokens checks the reads the catalog and the stock model answer:
// a search waited on by a token asks the catalog for a fresh answer (and only
// then); a product token on the stock of a new product waits until the stock
// model has the product's entry; the search window is 400 invalid_request.
func TestCatalogTokens(t *testing.T) {
	t.Parallel()
	rs := newReadSide(t)

	searched, stocked := make(chan answer, 1), make(chan answer, 1)
	go func() { searched <- rs.get(t, "/v1/products?q=sencha", "", "product:TEA-2:1") }()
	go func() { stocked <- rs.get(t, "/v1/inventory/TEA-2", "", "product:TEA-2:1") }()
	time.Sleep(tokenWait / 5)
	rs.product(t, "TEA-2", false)
	search := <-searched
	if search.status != http.StatusOK || !strings.Contains(search.body, `"sku":"TEA-2"`) {
		t.Errorf("search with a token of the new product = %s; want it found", search)
	}
	rs.apply(t, rs.inventory, domain.AggregateProduct, "TEA-2", 1, domain.EventProductCreated, domain.ProductCreated{
		ProductSnapshot: domain.ProductSnapshot{SKU: "TEA-2", Name: "Green tea", Category: "food", Version: 1}})
	if stock := <-stocked; stock.status != http.StatusOK || !strings.Contains(stock.body, `"sku":"TEA-2","on_hand":0`) {
		t.Errorf("GET the new product's stock with its token = %s; want zero stock once the stock model has it", stock)
	}
	if a := rs.get(t, "/v1/products?q=sencha", "", ""); a.status != http.StatusOK {
		t.Errorf("search without a token = %s", a)
	}
	if got := rs.catalog.searches(); len(got) != 2 || !got[0] || got[1] {
		t.Errorf("searches asked fresh: %v; want [true false] (the one a token waited for)", got)
	}
	wantWaitedOut(t, "stock of a product that never comes, with its token", rs.get(t, "/v1/inventory/TEA-9", "", "product:TEA-9:1"))

	for _, c := range []struct {
		query  string
		status int
	}{
		{"offset=9990&limit=10", http.StatusOK},
		{"offset=9980", http.StatusOK},
		{"offset=9991&limit=10", http.StatusBadRequest},
		{"offset=9981", http.StatusBadRequest},
		{"offset=10000&limit=1", http.StatusBadRequest},
	} {
		a := rs.get(t, "/v1/products?"+c.query, "", "")
		if a.status != c.status || c.status == http.StatusBadRequest && !strings.Contains(a.body, `"field":"offset"`) {
			t.Errorf("GET /v1/products?%s = %s; want %d", c.query, a, c.status)
		}
	}
}

// stock applies the stock event that leaves sku with available units at
// version to the stock model and, when catalog is set, to the catalog.
func (rs *readSide) stock(t *testing.T, sku string, available, version int64, catalog bool) {
	t.Helper()
	e := domain.InventoryAdjusted{InventoryLevels: domain.InventoryLevels{SKU: sku, OnHand: available, Available: available, Version: version},
		Delta: 1, Reason: "count"}
	rs.apply(t, rs.inventory, domain.AggregateInventory, sku, version, domain.EventInventoryAdjusted, e)
	if catalog {
		rs.apply(t, rs.catalog, domain.AggregateInventory, sku, version, domain.EventInventoryAdjusted, e)
	}
}

// TestInventoryTokensOnCatalogReads checks the reads of a catalog that
// keeps only an in-stock flag, with available units from the stock model:
// the units always come from the stock model, cached search or not; an
// inventory token that changes no flag is answered as soon as the stock
// model has it; one that flips the flag waits until the catalog has flipped
// it too, and the search it waited for filters by the new flag, not by a
// result cached before.
func TestInventoryTokensOnCatalogReads(t *testing.T) {
	t.Parallel()
	rs := newReadSide(t)
	rs.product(t, "TEA-3", true)
	rs.stock(t, "TEA-3", 5, 1, true)

	const inStock = "/v1/products?q=sencha&in_stock=true"
	if a := rs.get(t, inStock, "", ""); a.status != http.StatusOK || !strings.Contains(a.body, `"sku":"TEA-3"`) ||
		!strings.Contains(a.body, `"available":5`) {
		t.Fatalf("in-stock search = %s; want TEA-3 with 5 available", a)
	}
	// Units move without a flip: the catalog is not written, the answers
	// show the stock model's units at once, the cached search included.
	rs.stock(t, "TEA-3", 4, 2, true)
	rs.stock(t, "TEA-3", 3, 3, false)
	for _, path := range []string{inStock, "/v1/products/TEA-3"} {
		a := rs.get(t, path, "", "inventory:TEA-3:3")
		if a.status != http.StatusOK || !strings.Contains(a.body, `"available":3`) {
			t.Errorf("GET %s with inventory:TEA-3:3 = %s; want 3 available", path, a)
		}
		wantAtOnce(t, "GET "+path+" with a token that flips nothing", a)
	}
	if v, err := rs.catalog.AppliedVersion(t.Context(), domain.AggregateInventory, "TEA-3"); err != nil || v != 1 {
		t.Errorf("catalog's inventory version = %d, %v; want 1: only flips write the catalog", v, err)
	}

	// Sold out in the stock model, not yet in the catalog: a token of it
	// waits for the catalog's flag.
	rs.stock(t, "TEA-3", 0, 4, false)
	answered := make(chan answer, 1)
	go func() { answered <- rs.get(t, inStock, "", "inventory:TEA-3:4") }()
	time.Sleep(tokenWait / 4)
	select {
	case a := <-answered:
		t.Fatalf("in-stock search with the token of a flip the catalog has not applied = %s; want it to wait", a)
	default:
	}
	rs.apply(t, rs.catalog, domain.AggregateInventory, "TEA-3", 4, domain.EventInventoryAdjusted, domain.InventoryAdjusted{
		InventoryLevels: domain.InventoryLevels{SKU: "TEA-3", Version: 4}, Delta: -3, Reason: "count"})
	if a := <-answered; a.status != http.StatusOK || strings.Contains(a.body, `"sku":"TEA-3"`) || !strings.Contains(a.body, `"total":0`) {
		t.Errorf("in-stock search with the sold-out token = %s; want no hit once the catalog flipped", a)
	}
	if a := rs.get(t, "/v1/products/TEA-3", "", "inventory:TEA-3:4"); a.status != http.StatusOK || !strings.Contains(a.body, `"available":0`) {
		t.Errorf("product with the sold-out token = %s; want 0 available", a)
	}
	wantWaitedOut(t, "in-stock search with a token of a stock version that never comes", rs.get(t, inStock, "", "inventory:TEA-3:9"))
}
