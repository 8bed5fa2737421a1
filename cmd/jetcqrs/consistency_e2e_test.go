package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// TestReadYourWritesAThousandTimes sends 1,000 commands from eight clients
// and reads each one back at once with its consistency token: every read
// shows the state the command produced, never an older one. Each client owns
// its SKUs, so the state each read must show is exactly what its command
// answered.
func TestReadYourWritesAThousandTimes(t *testing.T) {
	const clients, perClient = 8, 125
	s := startSystem(t, testConfig(t), All)
	admin := s.token("ops", domain.RoleAdmin)
	for c := 0; c < clients; c++ {
		for k := 0; k < 2; k++ {
			sku := fmt.Sprintf("RYW-%d-%d", c, k)
			s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": sku, "name": "Item " + sku,
				"description": "read your writes", "category": "c" + strconv.Itoa(c), "price_cents": 100 + k}, nil, nil)
			s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/"+sku+"/adjustments", admin,
				map[string]any{"delta": 1_000_000, "reason": "initial count"}, nil, nil)
		}
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- readYourWrites(s, admin, c, perClient)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d command+read pairs in %s", clients*perClient, time.Since(start).Round(time.Millisecond))
}

// readYourWrites runs one client's share: order placements read back from
// the order model, adjustments from the inventory model and product updates
// from the catalog, each GET right after its command with its token.
func readYourWrites(s *system, admin string, client, n int) error {
	user := "ryw-" + strconv.Itoa(client)
	customer := s.token(user, domain.RoleCustomer)
	for i := 0; i < n; i++ {
		sku := fmt.Sprintf("RYW-%d-%d", client, i%2)
		switch i % 3 {
		case 0:
			var placed struct {
				OrderID    string `json:"order_id"`
				TotalCents int64  `json:"total_cents"`
			}
			resp, raw, err := s.send(http.MethodPost, "/v1/orders", customer, map[string]any{"user_id": user,
				"items":   []map[string]any{{"sku": sku, "quantity": 1 + i%5}},
				"payment": map[string]string{"method": "paypal", "token": "t"}}, nil, &placed)
			if err != nil || resp.StatusCode != http.StatusCreated {
				return fmt.Errorf("client %d #%d: place: %v %s", client, i, err, raw)
			}
			var got projections.OrderView
			resp, raw, err = s.send(http.MethodGet, "/v1/orders/"+placed.OrderID, customer, nil, consistency(resp), &got)
			if err != nil || resp.StatusCode != http.StatusOK || got.OrderID != placed.OrderID || got.Version != 1 ||
				got.Status != "placed" || got.TotalCents != placed.TotalCents || got.UserID != user || len(got.Items) != 1 {
				return fmt.Errorf("client %d #%d: GET the order just placed: %v %s", client, i, err, raw)
			}
		case 1:
			var adjusted projections.InventoryView
			resp, raw, err := s.send(http.MethodPost, "/v1/inventory/"+sku+"/adjustments", admin,
				map[string]any{"delta": 1 + i%7, "reason": "recount"}, nil, &adjusted)
			if err != nil || resp.StatusCode != http.StatusOK {
				return fmt.Errorf("client %d #%d: adjust: %v %s", client, i, err, raw)
			}
			var got projections.InventoryView
			resp, raw, err = s.send(http.MethodGet, "/v1/inventory/"+sku, "", nil, consistency(resp), &got)
			if err != nil || resp.StatusCode != http.StatusOK || got != adjusted {
				return fmt.Errorf("client %d #%d: GET the inventory just adjusted: %+v, want %+v (%v %s)", client, i, got, adjusted, err, raw)
			}
		case 2:
			name := fmt.Sprintf("Item %s rev %d", sku, i)
			var updated struct {
				Version int64 `json:"version"`
			}
			resp, raw, err := s.send(http.MethodPatch, "/v1/products/"+sku, admin, map[string]any{"name": name, "price_cents": 100 + i}, nil, &updated)
			if err != nil || resp.StatusCode != http.StatusOK {
				return fmt.Errorf("client %d #%d: update: %v %s", client, i, err, raw)
			}
			var got projections.ProductView
			resp, raw, err = s.send(http.MethodGet, "/v1/products/"+sku, "", nil, consistency(resp), &got)
			if err != nil || resp.StatusCode != http.StatusOK || got.Name != name || got.PriceCents != int64(100+i) || got.Version != updated.Version {
				return fmt.Errorf("client %d #%d: GET the product just updated: %+v, want %q %d v%d (%v %s)",
					client, i, got, name, 100+i, updated.Version, err, raw)
			}
		}
	}
	return nil
}

// TestReadYourWritesTimesOutWhileAProjectionStalls stops the order and
// inventory projections (their consumers paused on the server: the runtime
// offers no way to stop one projector of a running process) and checks that
// a read with a token they have not applied answers 503 consistency_timeout
// with Retry-After after the configured bound, never stale data or a 404;
// once the projections run again the same read succeeds.
func TestReadYourWritesTimesOutWhileAProjectionStalls(t *testing.T) {
	const wait = 300 * time.Millisecond
	cfg := testConfig(t)
	cfg.ConsistencyWait = wait
	s := startSystem(t, cfg, All)
	admin := s.token("ops", domain.RoleAdmin)
	customer := s.token("erin", domain.RoleCustomer)
	s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": "STALL-1", "name": "Stall",
		"description": "d", "category": "c", "price_cents": 700}, nil, nil)
	s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/STALL-1/adjustments", admin,
		map[string]any{"delta": 10, "reason": "count"}, nil, nil)
	s.awaitLive(admin, 30*time.Second)
	var before projections.InventoryView
	s.expect(http.StatusOK, http.MethodGet, "/v1/inventory/STALL-1", "", nil, nil, &before)
	if before.OnHand != 10 || before.Version != 1 {
		t.Fatalf("GET /v1/inventory/STALL-1 = %+v, want 10 on hand at version 1", before)
	}

	s.pauseProjection("inventory", time.Now().Add(time.Hour))
	s.pauseProjection("orders", time.Now().Add(time.Hour))
	adjusted := s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/STALL-1/adjustments", admin,
		map[string]any{"delta": 5, "reason": "count"}, nil, nil)
	placed := s.expect(http.StatusCreated, http.MethodPost, "/v1/orders", customer, map[string]any{"user_id": "erin",
		"items": []map[string]any{{"sku": "STALL-1", "quantity": 1}}, "payment": map[string]string{"method": "card", "token": "t"}}, nil, nil)
	orderPath := placed.Header.Get("Location")
	for _, read := range []struct {
		path, token string
		header      map[string]string
	}{
		{"/v1/inventory/STALL-1", "", consistency(adjusted)},
		{orderPath, customer, consistency(placed)},
		{"/v1/users/erin/orders", customer, consistency(placed)},
	} {
		start := time.Now()
		resp, p := s.expectProblem(http.StatusServiceUnavailable, "consistency_timeout", http.MethodGet, read.path, read.token, nil, read.header)
		elapsed := time.Since(start)
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra < 1 {
			t.Errorf("GET %s: Retry-After %q, want a number of seconds", read.path, resp.Header.Get("Retry-After"))
		}
		if elapsed < wait || elapsed > wait+time.Second {
			t.Errorf("GET %s answered 503 after %s, want about %s", read.path, elapsed, wait)
		}
		if p.Detail == "" {
			t.Errorf("GET %s: 503 without detail", read.path)
		}
	}
	// Without a token the stale state is what a client asked for.
	var stale projections.InventoryView
	s.expect(http.StatusOK, http.MethodGet, "/v1/inventory/STALL-1", "", nil, nil, &stale)
	if stale != before {
		t.Errorf("GET /v1/inventory/STALL-1 without a token while stalled = %+v, want %+v", stale, before)
	}

	s.pauseProjection("inventory", time.Time{})
	s.pauseProjection("orders", time.Time{})
	// A resumed consumer serves the workers' next pull request, up to one
	// FetchWait (5s) later: retry, as Retry-After says.
	var after projections.InventoryView
	resp, raw := s.do(http.MethodGet, "/v1/inventory/STALL-1", "", nil, consistency(adjusted), &after)
	for deadline := time.Now().Add(15 * time.Second); resp.StatusCode == http.StatusServiceUnavailable && time.Now().Before(deadline); {
		resp, raw = s.do(http.MethodGet, "/v1/inventory/STALL-1", "", nil, consistency(adjusted), &after)
	}
	if resp.StatusCode != http.StatusOK || after.OnHand != 15 || after.Reserved != 1 || after.Version != 3 {
		t.Errorf("GET /v1/inventory/STALL-1 after resuming = %d %s, want 15 on hand, 1 reserved, version 3", resp.StatusCode, raw)
	}
	var o projections.OrderView
	s.expect(http.StatusOK, http.MethodGet, orderPath, customer, nil, consistency(placed), &o)
	if o.Status != "placed" || o.Version != 1 || o.TotalCents != 700 {
		t.Errorf("GET %s after resuming = %+v", orderPath, o)
	}
}

// TestConsistencyTokenWaitsForTheModelThatAnswers checks reads whose answer
// comes from another read model than the one that holds the token's
// aggregate type: the product's available stock (catalog model, fed by
// inventory events) after an adjustment, a new product's stock (inventory
// model, fed by ProductCreated) after its creation, and the sales report
// after an order is placed. The answering model is stalled (its consumers
// paused) and every other one has applied the command, so a read with the
// token must wait and answer 503, or show the new state; it must never
// answer 200 with the state from before the command.
func TestConsistencyTokenWaitsForTheModelThatAnswers(t *testing.T) {
	cfg := testConfig(t)
	cfg.ConsistencyWait = 300 * time.Millisecond
	s := startSystem(t, cfg, All)
	admin := s.token("ops", domain.RoleAdmin)
	customer := s.token("finn", domain.RoleCustomer)
	s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": "TOK-1", "name": "Token",
		"description": "d", "category": "tokens", "price_cents": 250}, nil, nil)
	s.awaitLive(admin, 30*time.Second)

	// In this order, each case leaves its model stalled, except the catalog,
	// which the last one needs.

	// The product's available stock after an adjustment.
	{
		s.pauseProjection("catalog", time.Now().Add(time.Hour))
		adjusted := s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/TOK-1/adjustments", admin,
			map[string]any{"delta": 9, "reason": "count"}, nil, nil)
		s.awaitLive(admin, 30*time.Second, "inventory")
		var p projections.ProductView
		resp, raw := s.do(http.MethodGet, "/v1/products/TOK-1", "", nil, consistency(adjusted), &p)
		if resp.StatusCode != http.StatusServiceUnavailable && (resp.StatusCode != http.StatusOK || p.Available != 9) {
			t.Errorf("GET /v1/products/TOK-1 with %s while the catalog has not applied it = %d %s, want available 9 or 503",
				adjusted.Header.Get("X-Consistency-Token"), resp.StatusCode, raw)
		}
		var res projections.SearchResult
		resp, raw = s.do(http.MethodGet, "/v1/products?in_stock=true", "", nil, consistency(adjusted), &res)
		if resp.StatusCode != http.StatusServiceUnavailable && (resp.StatusCode != http.StatusOK || res.Total != 1) {
			t.Errorf("GET /v1/products?in_stock=true with %s while the catalog has not applied it = %d %s, want TOK-1 or 503",
				adjusted.Header.Get("X-Consistency-Token"), resp.StatusCode, raw)
		}
	}
	// The sales report after an order.
	{
		s.pauseProjection("sales", time.Now().Add(time.Hour))
		placed := s.expect(http.StatusCreated, http.MethodPost, "/v1/orders", customer, map[string]any{"user_id": "finn",
			"items": []map[string]any{{"sku": "TOK-1", "quantity": 2}}, "payment": map[string]string{"method": "card", "token": "t"}}, nil, nil)
		s.awaitLive(admin, 30*time.Second, "orders")
		var rep struct {
			Rows []projections.SalesRow `json:"rows"`
		}
		resp, raw := s.do(http.MethodGet, "/v1/reports/sales?group_by=sku", admin, nil, consistency(placed), &rep)
		want := []projections.SalesRow{{Key: "TOK-1", Orders: 1, Units: 2, RevenueCents: 500}}
		if resp.StatusCode != http.StatusServiceUnavailable && !refusedToken(resp, raw) && (resp.StatusCode != http.StatusOK || !slices.Equal(rep.Rows, want)) {
			t.Errorf("GET /v1/reports/sales with %s while the sales model has not applied it = %d %s, want %+v, 503 or the token refused",
				placed.Header.Get("X-Consistency-Token"), resp.StatusCode, raw, want)
		}
	}
	// A new product's stock after its creation.
	{
		s.pauseProjection("catalog", time.Time{})
		s.pauseProjection("inventory", time.Now().Add(time.Hour))
		created := s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": "TOK-2", "name": "Token 2",
			"description": "d", "category": "tokens", "price_cents": 100}, nil, nil)
		s.awaitLive(admin, 30*time.Second, "catalog")
		var inv projections.InventoryView
		resp, raw := s.do(http.MethodGet, "/v1/inventory/TOK-2", "", nil, consistency(created), &inv)
		if resp.StatusCode != http.StatusServiceUnavailable && !refusedToken(resp, raw) && (resp.StatusCode != http.StatusOK || inv != projections.InventoryView{SKU: "TOK-2"}) {
			t.Errorf("GET /v1/inventory/TOK-2 with %s while the inventory model has not applied it = %d %s, want zero stock, 503 or the token refused",
				created.Header.Get("X-Consistency-Token"), resp.StatusCode, raw)
		}
	}
}

// refusedToken reports a 400 that names the consistency token: the read
// model cannot wait for that aggregate and says so instead of answering
// possibly stale data.
func refusedToken(resp *http.Response, raw []byte) bool {
	var p struct {
		Code  string `json:"code"`
		Field string `json:"field"`
	}
	return resp.StatusCode == http.StatusBadRequest && json.Unmarshal(raw, &p) == nil &&
		p.Code == "invalid_request" && p.Field == "X-Consistency-Token"
}
