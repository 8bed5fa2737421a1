package commandapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/apitest"
)

// concurrently sends every request at once (released together by a barrier)
// and returns the responses in request order.
func concurrently(t *testing.T, e *apitest.Env, reqs []apitest.Request) []*apitest.Response {
	t.Helper()
	out := make([]*apitest.Response, len(reqs))
	errs := make([]error, len(reqs))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, req := range reqs {
		httpReq := e.NewRequest(t, req)
		wg.Go(func() {
			<-start
			resp, err := e.Client.Do(httpReq)
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				errs[i] = fmt.Errorf("read body: %w", err)
			}
			out[i] = &apitest.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d (%s %s): %v", i, reqs[i].Method, reqs[i].Path, err)
		}
	}
	return out
}

// TestOversell races 50 single-unit orders for the last 10 units of a SKU:
// exactly 10 win, and stock, orders and events all agree.
func TestOversell(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	const sku, onHand, buyers = "hot-1", 10, 50
	e.Stocked(t, onHand, sku)

	reqs := make([]apitest.Request, buyers)
	for i := range reqs {
		user := fmt.Sprintf("buyer-%02d", i)
		reqs[i] = post(ordersPath, apitest.CustomerToken(t, user), apitest.NewOrder(user, item(sku, 1)))
	}
	var placed []string
	for i, r := range concurrently(t, e, reqs) {
		switch r.Status {
		case http.StatusCreated:
			var o apitest.OrderResult
			r.JSON(t, &o)
			placed = append(placed, o.OrderID)
		case http.StatusConflict:
			p := r.WantProblem(t, http.StatusConflict, domain.CodeInsufficientStock)
			if p.SKU != sku {
				t.Errorf("request %d: problem sku = %q, want %s", i, p.SKU, sku)
			}
			wantDetailMentions(t, p.Detail, sku)
		default:
			t.Errorf("request %d: status %d, want 201 or 409; body %s", i, r.Status, r.Body)
		}
	}
	if len(placed) != onHand {
		t.Fatalf("%d orders placed, want exactly %d", len(placed), onHand)
	}
	if got := e.Stock(t, sku); got != (apitest.Stock{OnHand: onHand, Reserved: onHand, Version: 1 + onHand}) {
		t.Errorf("stock = %+v, want on_hand %d reserved %d version %d", got, onHand, onHand, 1+onHand)
	}
	for table, want := range map[string]int64{"orders": onHand, "order_items": onHand} {
		if n := e.Int(t, `SELECT count(*) FROM `+table); n != want {
			t.Errorf("%d rows in %s, want %d", n, table, want)
		}
	}
	for typ, want := range map[string]int64{domain.EventOrderPlaced: onHand, domain.EventInventoryReserved: onHand} {
		if n := e.Int(t, `SELECT count(*) FROM outbox_events WHERE event_type = $1`, typ); n != want {
			t.Errorf("%d %s events, want %d", n, typ, want)
		}
	}
	// No lost update: the n-th reservation saw n-1 units reserved before it.
	if n := e.Int(t, `SELECT count(*) FROM outbox_events WHERE event_type = 'InventoryReserved'
		AND (payload->>'reserved')::bigint = aggregate_version - 1 AND (payload->>'on_hand')::bigint = $1`, onHand); n != onHand {
		t.Errorf("%d of %d InventoryReserved events carry the levels of their version", n, onHand)
	}

	e.Transition(t, apitest.AdminToken(t), placed[0], "cancel")
	if got := e.Stock(t, sku); got != (apitest.Stock{OnHand: onHand, Reserved: onHand - 1, Version: 2 + onHand}) {
		t.Errorf("stock after one cancel = %+v, want reserved %d", got, onHand-1)
	}
	if n := e.Int(t, `SELECT count(*) FROM outbox_events WHERE event_type = 'InventoryReleased' AND aggregate_id = $1
		AND payload->>'order_id' = $2 AND (payload->>'quantity')::int = 1`, sku, placed[0]); n != 1 {
		t.Errorf("%d InventoryReleased events for the cancelled order, want 1", n)
	}
}

// TestConcurrentMultiSKUOrders races orders over overlapping SKU sets, each
// listing its SKUs in its own order, with adjustments, cancellations and
// price changes running at the same time. Every command must succeed (stock
// suffices), the server must not have seen a single deadlock, and stock must
// add up.
func TestConcurrentMultiSKUOrders(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	skus := []string{"m-a", "m-b", "m-c", "m-d", "m-e", "m-f"}
	const onHand = 1000
	e.Stocked(t, onHand, skus...)
	rng := rand.New(rand.NewPCG(1, 2))

	randomOrder := func(i int) apitest.Request {
		user := fmt.Sprintf("multi-%02d", i%7)
		perm := rng.Perm(len(skus))[:2+rng.IntN(len(skus)-1)]
		items := make([]apitest.Item, len(perm))
		for j, k := range perm {
			items[j] = item(skus[k], int64(1+rng.IntN(3)))
		}
		return post(ordersPath, apitest.CustomerToken(t, user), apitest.NewOrder(user, items...))
	}
	adjusted := map[string]int64{}
	adjustment := func() apitest.Request {
		sku := skus[rng.IntN(len(skus))]
		adjusted[sku]++
		return post(adjustPath(sku), admin, map[string]any{"delta": 1, "reason": "recount"})
	}

	var reqs []apitest.Request
	for i := range 40 {
		reqs = append(reqs, randomOrder(i))
		if i%4 == 0 {
			reqs = append(reqs, adjustment())
		}
	}
	var placed []string
	for i, r := range concurrently(t, e, reqs) {
		if r.Status != http.StatusCreated && r.Status != http.StatusOK {
			t.Fatalf("phase 1 request %d: status %d; body %s", i, r.Status, r.Body)
		}
		var o apitest.OrderResult
		if json.Unmarshal(r.Body, &o) == nil && o.OrderID != "" {
			placed = append(placed, o.OrderID)
		}
	}

	reqs = reqs[:0]
	for i, id := range placed {
		if i%2 == 0 {
			reqs = append(reqs, post(orderPath(id, "cancel"), admin, nil))
		}
		reqs = append(reqs, randomOrder(100+i))
		if i%5 == 0 {
			reqs = append(reqs, adjustment())
		}
		if i%6 == 0 {
			reqs = append(reqs, patch(productPath(skus[i%len(skus)]), admin, map[string]any{"price_cents": 100 + i}))
		}
	}
	for i, r := range concurrently(t, e, reqs) {
		if r.Status != http.StatusCreated && r.Status != http.StatusOK {
			t.Fatalf("phase 2 request %d: status %d; body %s", i, r.Status, r.Body)
		}
	}

	for _, sku := range skus {
		got := e.Stock(t, sku)
		want := apitest.Stock{
			OnHand: onHand + adjusted[sku],
			Reserved: e.Int(t, `SELECT coalesce(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id
				WHERE i.sku = $1 AND o.status = 'placed'`, sku),
			Version: e.Int(t, `SELECT count(*) FROM outbox_events WHERE aggregate_type = 'inventory' AND aggregate_id = $1`, sku),
		}
		if got != want {
			t.Errorf("%s: stock %+v, want %+v (from orders and events)", sku, got, want)
		}
		if n := e.Int(t, `SELECT count(*) FROM outbox_events WHERE aggregate_type = 'inventory' AND aggregate_id = $1
			AND (payload->>'on_hand')::bigint - (payload->>'reserved')::bigint = (payload->>'available')::bigint
			AND (payload->>'version')::bigint = aggregate_version`, sku); n != want.Version {
			t.Errorf("%s: %d of %d inventory events carry consistent levels", sku, n, want.Version)
		}
	}
	if n := e.Int(t, `SELECT count(*) FROM (SELECT aggregate_id, max(aggregate_version) = count(*) AS contiguous
		FROM outbox_events GROUP BY aggregate_type, aggregate_id) a WHERE NOT contiguous`); n != 0 {
		t.Errorf("%d aggregates have gaps in their event versions", n)
	}
	if n := deadlocks(t, e); n != 0 {
		t.Errorf("PostgreSQL detected %d deadlocks (hidden from clients by the store's retry)", n)
	}
}

// TestCountOutRacesOrders races single-unit orders against admins counting
// stock out: together they may take no more than there is, each loser is
// told insufficient_stock, and reserved never exceeds on_hand.
func TestCountOutRacesOrders(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	const sku, onHand = "count-1", 20
	e.Stocked(t, onHand, sku)
	var reqs []apitest.Request
	for i := range 20 {
		user := fmt.Sprintf("c-%02d", i)
		reqs = append(reqs, post(ordersPath, apitest.CustomerToken(t, user), apitest.NewOrder(user, item(sku, 1))))
		if i%2 == 0 {
			reqs = append(reqs, post(adjustPath(sku), admin, map[string]any{"delta": -1, "reason": "damaged"}))
		}
	}
	var orders, countedOut int64
	for i, r := range concurrently(t, e, reqs) {
		switch r.Status {
		case http.StatusCreated:
			orders++
		case http.StatusOK:
			countedOut++
		default:
			if p := r.WantProblem(t, http.StatusConflict, domain.CodeInsufficientStock); p.SKU != sku {
				t.Errorf("request %d: problem sku %q", i, p.SKU)
			}
		}
	}
	if orders+countedOut != onHand {
		t.Errorf("%d orders and %d units counted out, want them to take exactly the %d units", orders, countedOut, onHand)
	}
	if got := e.Stock(t, sku); got != (apitest.Stock{OnHand: onHand - countedOut, Reserved: orders, Version: 1 + orders + countedOut}) {
		t.Errorf("stock = %+v after %d orders and %d counted out", got, orders, countedOut)
	}
}

// deadlocks closes the env's pool, waits until its server processes have
// exited (which flushes their statistics) and returns the number of
// deadlocks PostgreSQL detected in the env's database. The env cannot run
// commands afterwards.
func deadlocks(t *testing.T, e *apitest.Env) int64 {
	t.Helper()
	cfg := e.Pool.Config().ConnConfig
	e.Pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for {
		var others int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND pid <> pg_backend_pid()`).Scan(&others); err != nil {
			t.Fatal(err)
		}
		if others == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d server processes of the closed pool did not exit", others)
		case <-time.After(20 * time.Millisecond):
		}
	}
	var n int64
	if err := conn.QueryRow(ctx, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
