package commandapi_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/apitest"
)

// The tests of this file follow the Commands table of shared/API.md: each
// endpoint's success answer (status, body, headers) and each error it lists.
// Error answers must also leave every table unchanged.

func TestCreateProduct(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)

	t.Run("created", func(t *testing.T) {
		p := apitest.Product{SKU: "chair.Oak_1", Name: "Oak chair", Description: "Solid oak.\nTwo colours.",
			Category: "furniture", PriceCents: 12999, Attributes: map[string]string{"colour": "oak", "legs": "4"}}
		r := e.Do(t, post(productsPath, admin, p))
		wantSuccess(t, r, http.StatusCreated, "product", p.SKU, 1)
		wantLocation(t, r, "/v1/products/"+p.SKU)
		var body map[string]any
		r.JSON(t, &body)
		if !reflect.DeepEqual(body, map[string]any{"sku": p.SKU, "version": 1.0}) {
			t.Errorf("body = %v, want {sku: %s, version: 1}", body, p.SKU)
		}

		var name, desc, cat, attrs string
		var price, version int64
		if err := e.Pool.QueryRow(t.Context(), `SELECT name, description, category, price_cents, attributes::text, version
			FROM products WHERE sku = $1`, p.SKU).Scan(&name, &desc, &cat, &price, &attrs, &version); err != nil {
			t.Fatal(err)
		}
		if name != p.Name || desc != p.Description || cat != p.Category || price != p.PriceCents || version != 1 {
			t.Errorf("stored product = %q %q %q %d v%d", name, desc, cat, price, version)
		}
		if attrs != `{"legs": "4", "colour": "oak"}` {
			t.Errorf("stored attributes = %s", attrs)
		}
		if got := e.Stock(t, p.SKU); got != (apitest.Stock{}) {
			t.Errorf("new product's stock = %+v, want zero at version 0", got)
		}
		if n := e.Int(t, `SELECT count(*) FROM outbox_events WHERE aggregate_id = $1 AND event_type = 'ProductCreated'`, p.SKU); n != 1 {
			t.Errorf("%d ProductCreated events, want 1", n)
		}
	})

	t.Run("limits accepted", func(t *testing.T) {
		for _, p := range []apitest.Product{
			{SKU: strings.Repeat("S", 64), Name: strings.Repeat("é", 200), Category: strings.Repeat("c", 100), PriceCents: 0},
			{SKU: "max-price", Name: "n", Category: "c", PriceCents: 100_000_000_000, Description: strings.Repeat("d", 5000)},
		} {
			wantSuccess(t, e.Do(t, post(productsPath, admin, p)), http.StatusCreated, "product", p.SKU, 1)
		}
	})

	t.Run("already_exists", func(t *testing.T) {
		e.CreateProduct(t, apitest.NewProduct("dup-1", "toys", 500))
		before := e.Snapshot(t)
		p := e.Do(t, post(productsPath, admin, apitest.NewProduct("dup-1", "other", 1))).
			WantProblem(t, http.StatusConflict, domain.CodeAlreadyExists)
		wantDetailMentions(t, p.Detail, "dup-1")
		e.WantUnchanged(t, before)
	})

	t.Run("version_mismatch", func(t *testing.T) {
		before := e.Snapshot(t)
		e.Do(t, post(productsPath, admin, apitest.NewProduct("ifmatch-1", "toys", 500), "If-Match", `"1"`)).
			WantProblem(t, http.StatusPreconditionFailed, domain.CodeVersionMismatch)
		e.WantUnchanged(t, before)
		wantSuccess(t, e.Do(t, post(productsPath, admin, apitest.NewProduct("ifmatch-1", "toys", 500), "If-Match", `"0"`)),
			http.StatusCreated, "product", "ifmatch-1", 1)
	})

	manyAttrs := map[string]string{}
	for i := range 51 {
		manyAttrs[strings.Repeat("k", i+1)] = "v"
	}
	invalid := []struct {
		name  string
		p     apitest.Product
		field string
	}{
		{"sku with a space", apitest.Product{SKU: "a b", Name: "n", Category: "c"}, "sku"},
		{"sku with a slash", apitest.Product{SKU: "a/b", Name: "n", Category: "c"}, "sku"},
		{"sku with a non-ASCII letter", apitest.Product{SKU: "café", Name: "n", Category: "c"}, "sku"},
		{"sku too long", apitest.Product{SKU: strings.Repeat("s", 65), Name: "n", Category: "c"}, "sku"},
		{"sku empty", apitest.Product{SKU: "", Name: "n", Category: "c"}, "sku"},
		{"name empty", apitest.Product{SKU: "s1", Name: "", Category: "c"}, "name"},
		{"name blank", apitest.Product{SKU: "s1", Name: "   ", Category: "c"}, "name"},
		{"name too long", apitest.Product{SKU: "s1", Name: strings.Repeat("é", 201), Category: "c"}, "name"},
		{"name with a control character", apitest.Product{SKU: "s1", Name: "a\x00b", Category: "c"}, "name"},
		{"description too long", apitest.Product{SKU: "s1", Name: "n", Category: "c", Description: strings.Repeat("d", 5001)}, "description"},
		{"category empty", apitest.Product{SKU: "s1", Name: "n", Category: ""}, "category"},
		{"category too long", apitest.Product{SKU: "s1", Name: "n", Category: strings.Repeat("c", 101)}, "category"},
		{"price negative", apitest.Product{SKU: "s1", Name: "n", Category: "c", PriceCents: -1}, "price_cents"},
		{"price over 10^11", apitest.Product{SKU: "s1", Name: "n", Category: "c", PriceCents: 100_000_000_001}, "price_cents"},
		{"too many attributes", apitest.Product{SKU: "s1", Name: "n", Category: "c", Attributes: manyAttrs}, "attributes"},
		{"attribute value with a NUL", apitest.Product{SKU: "s1", Name: "n", Category: "c", Attributes: map[string]string{"k": "\x00"}}, "attributes.k"},
		{"attribute key empty", apitest.Product{SKU: "s1", Name: "n", Category: "c", Attributes: map[string]string{"": "v"}}, "attributes"},
	}
	for _, tc := range invalid {
		t.Run("invalid_request/"+tc.name, func(t *testing.T) {
			before := e.Snapshot(t)
			p := e.Do(t, post(productsPath, admin, tc.p)).WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
			if p.Field != tc.field {
				t.Errorf("field = %q, want %q (%s)", p.Field, tc.field, p.Detail)
			}
			e.WantUnchanged(t, before)
		})
	}
}

func TestUpdateProduct(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	e.CreateProduct(t, apitest.NewProduct("lamp-1", "lighting", 2500))

	t.Run("updated", func(t *testing.T) {
		r := e.Do(t, patch(productPath("lamp-1"), admin, map[string]any{"name": "Desk lamp", "price_cents": 2700}))
		wantSuccess(t, r, http.StatusOK, "product", "lamp-1", 2)
		wantLocation(t, r, "")
		var body apitest.ProductResult
		r.JSON(t, &body)
		if body != (apitest.ProductResult{SKU: "lamp-1", Version: 2}) {
			t.Errorf("body = %+v", body)
		}
		var name, cat string
		var price int64
		if err := e.Pool.QueryRow(t.Context(), `SELECT name, category, price_cents FROM products WHERE sku = 'lamp-1'`).
			Scan(&name, &cat, &price); err != nil {
			t.Fatal(err)
		}
		if name != "Desk lamp" || cat != "lighting" || price != 2700 {
			t.Errorf("stored %q %q %d; want the new name and price, the old category", name, cat, price)
		}
		events := e.Outbox(t)
		var ev map[string]any
		if err := json.Unmarshal(events[len(events)-1].Payload, &ev); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{"sku": "lamp-1", "name": "Desk lamp", "category": "lighting", "price_cents": 2700.0,
			"version": 2.0, "changed": []any{"name", "price_cents"}}
		for k, v := range want {
			if !reflect.DeepEqual(ev[k], v) {
				t.Errorf("ProductUpdated %s = %v, want %v", k, ev[k], v)
			}
		}
	})

	t.Run("attributes replaced", func(t *testing.T) {
		r := e.Do(t, patch(productPath("lamp-1"), admin, map[string]any{"attributes": map[string]string{"watts": "40"}}))
		wantSuccess(t, r, http.StatusOK, "product", "lamp-1", 3)
		if n := e.Int(t, `SELECT count(*) FROM products WHERE sku = 'lamp-1' AND attributes = '{"watts": "40"}'`); n != 1 {
			t.Error("attributes were not replaced")
		}
	})

	t.Run("If-Match", func(t *testing.T) {
		wantSuccess(t, e.Do(t, patch(productPath("lamp-1"), admin, map[string]any{"category": "home"}, "If-Match", `"3"`)),
			http.StatusOK, "product", "lamp-1", 4)
		wantSuccess(t, e.Do(t, patch(productPath("lamp-1"), admin, map[string]any{"category": "home"}, "If-Match", `W/"4"`)),
			http.StatusOK, "product", "lamp-1", 5)
		wantSuccess(t, e.Do(t, patch(productPath("lamp-1"), admin, map[string]any{"category": "home"}, "If-Match", `*`)),
			http.StatusOK, "product", "lamp-1", 6)
	})

	t.Run("version_mismatch", func(t *testing.T) {
		before := e.Snapshot(t)
		p := e.Do(t, patch(productPath("lamp-1"), admin, map[string]any{"name": "Stale"}, "If-Match", `"3"`)).
			WantProblem(t, http.StatusPreconditionFailed, domain.CodeVersionMismatch)
		wantDetailMentions(t, p.Detail, "3", "6")
		e.WantUnchanged(t, before)
	})

	for _, sku := range []string{"no-such-sku", "bad%20sku", strings.Repeat("x", 65)} {
		t.Run("not_found/"+sku[:min(len(sku), 12)], func(t *testing.T) {
			before := e.Snapshot(t)
			e.Do(t, patch(productPath(sku), admin, map[string]any{"name": "x"})).WantProblem(t, http.StatusNotFound, domain.CodeNotFound)
			e.WantUnchanged(t, before)
		})
	}

	for name, body := range map[string]any{
		"nothing to change":  map[string]any{},
		"only nulls":         map[string]any{"name": nil, "attributes": nil},
		"negative price":     map[string]any{"price_cents": -5},
		"empty name":         map[string]any{"name": ""},
		"sku is not a field": map[string]any{"sku": "other"},
	} {
		t.Run("invalid_request/"+name, func(t *testing.T) {
			before := e.Snapshot(t)
			e.Do(t, patch(productPath("lamp-1"), admin, body)).WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
			e.WantUnchanged(t, before)
		})
	}
}

func TestAdjustInventory(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	e.CreateProduct(t, apitest.NewProduct("mug-1", "kitchen", 800))

	t.Run("counted in", func(t *testing.T) {
		r := e.Do(t, post(adjustPath("mug-1"), admin, map[string]any{"delta": 10, "reason": "delivery from supplier"}))
		wantSuccess(t, r, http.StatusOK, "inventory", "mug-1", 1)
		wantLocation(t, r, "")
		var body map[string]any
		r.JSON(t, &body)
		want := map[string]any{"sku": "mug-1", "on_hand": 10.0, "reserved": 0.0, "available": 10.0, "version": 1.0}
		if !reflect.DeepEqual(body, want) {
			t.Errorf("body = %v, want %v", body, want)
		}
		if got := e.Stock(t, "mug-1"); got != (apitest.Stock{OnHand: 10, Version: 1}) {
			t.Errorf("stock = %+v", got)
		}
	})

	e.PlaceOrder(t, apitest.CustomerToken(t, "u1"), apitest.NewOrder("u1", item("mug-1", 4)))

	t.Run("insufficient_stock", func(t *testing.T) {
		before := e.Snapshot(t)
		p := e.Do(t, post(adjustPath("mug-1"), admin, map[string]any{"delta": -7, "reason": "breakage"})).
			WantProblem(t, http.StatusConflict, domain.CodeInsufficientStock)
		if p.SKU != "mug-1" {
			t.Errorf("problem sku = %q, want mug-1", p.SKU)
		}
		e.WantUnchanged(t, before)
	})

	t.Run("counted out down to reserved", func(t *testing.T) {
		var lv apitest.Levels
		r := e.Do(t, post(adjustPath("mug-1"), admin, map[string]any{"delta": -6, "reason": "breakage"}))
		wantSuccess(t, r, http.StatusOK, "inventory", "mug-1", 3)
		r.JSON(t, &lv)
		if lv != (apitest.Levels{SKU: "mug-1", OnHand: 4, Reserved: 4, Available: 0, Version: 3}) {
			t.Errorf("levels = %+v", lv)
		}
	})

	t.Run("If-Match", func(t *testing.T) {
		before := e.Snapshot(t)
		e.Do(t, post(adjustPath("mug-1"), admin, map[string]any{"delta": 1, "reason": "found"}, "If-Match", `"2"`)).
			WantProblem(t, http.StatusPreconditionFailed, domain.CodeVersionMismatch)
		e.WantUnchanged(t, before)
		wantSuccess(t, e.Do(t, post(adjustPath("mug-1"), admin, map[string]any{"delta": 1, "reason": "found"}, "If-Match", `"3"`)),
			http.StatusOK, "inventory", "mug-1", 4)
	})

	for _, sku := range []string{"no-such-sku", "bad%21sku"} {
		t.Run("not_found/"+sku, func(t *testing.T) {
			before := e.Snapshot(t)
			e.Do(t, post(adjustPath(sku), admin, map[string]any{"delta": 1, "reason": "x"})).
				WantProblem(t, http.StatusNotFound, domain.CodeNotFound)
			e.WantUnchanged(t, before)
		})
	}

	for name, tc := range map[string]struct {
		body  map[string]any
		field string
	}{
		"delta zero":              {map[string]any{"delta": 0, "reason": "x"}, "delta"},
		"delta over the limit":    {map[string]any{"delta": domain.MaxAdjustment + 1, "reason": "x"}, "delta"},
		"delta under the limit":   {map[string]any{"delta": -domain.MaxAdjustment - 1, "reason": "x"}, "delta"},
		"delta missing":           {map[string]any{"reason": "x"}, "delta"},
		"reason missing":          {map[string]any{"delta": 1}, "reason"},
		"reason empty":            {map[string]any{"delta": 1, "reason": ""}, "reason"},
		"reason too long":         {map[string]any{"delta": 1, "reason": strings.Repeat("r", 501)}, "reason"},
		"reason with a line feed": {map[string]any{"delta": 1, "reason": "a\nb"}, "reason"},
	} {
		t.Run("invalid_request/"+name, func(t *testing.T) {
			before := e.Snapshot(t)
			p := e.Do(t, post(adjustPath("mug-1"), admin, tc.body)).WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
			if p.Field != tc.field {
				t.Errorf("field = %q, want %q", p.Field, tc.field)
			}
			e.WantUnchanged(t, before)
		})
	}
}

func TestPlaceOrder(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	alice := apitest.CustomerToken(t, "alice")
	e.CreateProduct(t, apitest.NewProduct("pen-1", "office", 250))
	e.CreateProduct(t, apitest.NewProduct("desk-2", "furniture", 19999))
	e.CreateProduct(t, apitest.NewProduct("empty-3", "office", 100))
	e.Restock(t, "pen-1", 10)
	e.Restock(t, "desk-2", 2)

	t.Run("placed", func(t *testing.T) {
		r := e.Do(t, post(ordersPath, alice, apitest.NewOrder("alice", item("pen-1", 3), item("desk-2", 1))))
		var body map[string]any
		r.JSON(t, &body)
		id, _ := body["order_id"].(string)
		if _, err := uuid.Parse(id); err != nil {
			t.Fatalf("order_id %q is not a UUID", id)
		}
		wantSuccess(t, r, http.StatusCreated, "order", id, 1)
		wantLocation(t, r, "/v1/orders/"+id)
		want := map[string]any{"order_id": id, "status": "placed", "total_cents": 3*250.0 + 19999, "version": 1.0}
		if !reflect.DeepEqual(body, want) {
			t.Errorf("body = %v, want %v", body, want)
		}
		if got := e.Stock(t, "pen-1"); got != (apitest.Stock{OnHand: 10, Reserved: 3, Version: 2}) {
			t.Errorf("pen-1 stock = %+v", got)
		}
		if got := e.Stock(t, "desk-2"); got != (apitest.Stock{OnHand: 2, Reserved: 1, Version: 2}) {
			t.Errorf("desk-2 stock = %+v", got)
		}
		var user, status, method string
		var total int64
		if err := e.Pool.QueryRow(t.Context(), `SELECT user_id, status, total_cents, payment_method FROM orders WHERE id = $1`, id).
			Scan(&user, &status, &total, &method); err != nil {
			t.Fatal(err)
		}
		if user != "alice" || status != "placed" || total != 20749 || method != "card" {
			t.Errorf("stored order %s %s %d %s", user, status, total, method)
		}
		if n := e.Int(t, `SELECT count(*) FROM order_items WHERE order_id = $1`, id); n != 2 {
			t.Errorf("%d order items stored, want 2", n)
		}
	})

	t.Run("admin for a customer", func(t *testing.T) {
		o := e.PlaceOrder(t, admin, apitest.NewOrder("bob", item("pen-1", 1)))
		if n := e.Int(t, `SELECT count(*) FROM orders WHERE id = $1 AND user_id = 'bob'`, o.OrderID); n != 1 {
			t.Error("the order is not bob's")
		}
	})

	t.Run("totals come from the catalog", func(t *testing.T) {
		before := e.Snapshot(t)
		body := `{"user_id":"alice","items":[{"sku":"pen-1","quantity":1,"price_cents":1}],"payment":{"method":"card","token":"t"}}`
		e.Do(t, post(ordersPath, alice, body)).WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
		body = `{"user_id":"alice","total_cents":1,"items":[{"sku":"pen-1","quantity":1}],"payment":{"method":"card","token":"t"}}`
		e.Do(t, post(ordersPath, alice, body)).WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
		e.WantUnchanged(t, before)
	})

	t.Run("unknown_sku", func(t *testing.T) {
		before := e.Snapshot(t)
		p := e.Do(t, post(ordersPath, alice, apitest.NewOrder("alice", item("pen-1", 1), item("ghost-9", 1)))).
			WantProblem(t, http.StatusNotFound, domain.CodeUnknownSKU)
		if p.SKU != "ghost-9" {
			t.Errorf("problem sku = %q, want ghost-9", p.SKU)
		}
		wantDetailMentions(t, p.Detail, "ghost-9")
		e.WantUnchanged(t, before)
	})

	for name, items := range map[string][]apitest.Item{
		"one line short":         {item("pen-1", 1), item("desk-2", 2)},
		"nothing in stock":       {item("empty-3", 1)},
		"more than ever counted": {item("pen-1", 11)},
	} {
		t.Run("insufficient_stock/"+name, func(t *testing.T) {
			short := items[len(items)-1].SKU
			before := e.Snapshot(t)
			p := e.Do(t, post(ordersPath, alice, apitest.NewOrder("alice", items...))).
				WantProblem(t, http.StatusConflict, domain.CodeInsufficientStock)
			if p.SKU != short {
				t.Errorf("problem sku = %q, want %q", p.SKU, short)
			}
			wantDetailMentions(t, p.Detail, short)
			e.WantUnchanged(t, before)
		})
	}

	t.Run("version_mismatch", func(t *testing.T) {
		before := e.Snapshot(t)
		e.Do(t, post(ordersPath, alice, apitest.NewOrder("alice", item("pen-1", 1)), "If-Match", `"1"`)).
			WantProblem(t, http.StatusPreconditionFailed, domain.CodeVersionMismatch)
		e.WantUnchanged(t, before)
	})

	t.Run("forbidden", func(t *testing.T) {
		before := e.Snapshot(t)
		e.Do(t, post(ordersPath, alice, apitest.NewOrder("bob", item("pen-1", 1)))).
			WantProblem(t, http.StatusForbidden, domain.CodeForbidden)
		e.WantUnchanged(t, before)
	})

	hundredAndOne := make([]apitest.Item, 101)
	for i := range hundredAndOne {
		hundredAndOne[i] = item("sku-"+strings.Repeat("x", i%50)+string(rune('a'+i%26)), 1)
	}
	order := func(mut func(*apitest.Order)) apitest.Order {
		o := apitest.NewOrder("alice", item("pen-1", 1))
		mut(&o)
		return o
	}
	for _, tc := range []struct {
		name  string
		order apitest.Order
		field string
	}{
		{"no items", order(func(o *apitest.Order) { o.Items = nil }), "items"},
		{"101 items", order(func(o *apitest.Order) { o.Items = hundredAndOne }), "items"},
		{"duplicate sku", order(func(o *apitest.Order) { o.Items = append(o.Items, item("pen-1", 2)) }), "items"},
		{"quantity 0", order(func(o *apitest.Order) { o.Items[0].Quantity = 0 }), "items.quantity"},
		{"quantity -1", order(func(o *apitest.Order) { o.Items[0].Quantity = -1 }), "items.quantity"},
		{"quantity 1001", order(func(o *apitest.Order) { o.Items[0].Quantity = 1001 }), "items.quantity"},
		{"bad sku", order(func(o *apitest.Order) { o.Items[0].SKU = "pen 1" }), "items.sku"},
		{"empty user", order(func(o *apitest.Order) { o.UserID = "" }), "user_id"},
		{"user too long", order(func(o *apitest.Order) { o.UserID = strings.Repeat("u", 129) }), "user_id"},
		{"unknown payment method", order(func(o *apitest.Order) { o.Payment.Method = "cash" }), "payment.method"},
		{"payment method in capitals", order(func(o *apitest.Order) { o.Payment.Method = "CARD" }), "payment.method"},
		{"empty payment token", order(func(o *apitest.Order) { o.Payment.Token = "" }), "payment.token"},
		{"payment token too long", order(func(o *apitest.Order) { o.Payment.Token = strings.Repeat("t", 513) }), "payment.token"},
	} {
		t.Run("invalid_request/"+tc.name, func(t *testing.T) {
			before := e.Snapshot(t)
			p := e.Do(t, post(ordersPath, admin, tc.order)).WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
			if p.Field != tc.field {
				t.Errorf("field = %q, want %q (%s)", p.Field, tc.field, p.Detail)
			}
			e.WantUnchanged(t, before)
		})
	}

	t.Run("limits accepted", func(t *testing.T) {
		e.CreateProduct(t, apitest.NewProduct("bulk-1", "office", 1))
		e.Restock(t, "bulk-1", 1000)
		o := e.PlaceOrder(t, admin, apitest.NewOrder(strings.Repeat("u", 128), item("bulk-1", 1000)))
		if o.TotalCents != 1000 {
			t.Errorf("total = %d, want 1000", o.TotalCents)
		}
	})
}

// TestOrderTransitions covers pay, ship, deliver and cancel, including the
// stock each moves and every transition the life cycle forbids.
func TestOrderTransitions(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	alice := apitest.CustomerToken(t, "alice")
	e.Stocked(t, 100, "tea-1", "cup-2")
	place := func(t *testing.T) string {
		return e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("tea-1", 2), item("cup-2", 1))).OrderID
	}
	transition := func(t *testing.T, token, id, action string, header ...string) *apitest.Response {
		return e.Do(t, post(orderPath(id, action), token, nil, header...))
	}
	wantOrder := func(t *testing.T, r *apitest.Response, id, status string, version int64) {
		t.Helper()
		wantSuccess(t, r, http.StatusOK, "order", id, version)
		wantLocation(t, r, "")
		var body map[string]any
		r.JSON(t, &body)
		want := map[string]any{"order_id": id, "status": status, "version": float64(version)}
		if !reflect.DeepEqual(body, want) {
			t.Errorf("body = %v, want %v", body, want)
		}
		if n := e.Int(t, `SELECT count(*) FROM orders WHERE id = $1 AND status = $2 AND version = $3`, id, status, version); n != 1 {
			t.Errorf("stored order is not %s at version %d", status, version)
		}
	}
	wantInvalid := func(t *testing.T, token, id, action string) {
		t.Helper()
		before := e.Snapshot(t)
		p := transition(t, token, id, action).WantProblem(t, http.StatusConflict, domain.CodeInvalidTransition)
		wantDetailMentions(t, p.Detail, id)
		e.WantUnchanged(t, before)
	}

	t.Run("life cycle", func(t *testing.T) {
		id := place(t)
		wantInvalid(t, admin, id, "ship")
		wantInvalid(t, admin, id, "deliver")
		wantOrder(t, transition(t, alice, id, "pay"), id, "paid", 2)
		wantInvalid(t, alice, id, "pay")
		wantInvalid(t, admin, id, "deliver")
		wantOrder(t, transition(t, admin, id, "ship", "Content-Type", "application/json"), id, "shipped", 3)
		if got := e.Stock(t, "tea-1"); got.OnHand != 98 || got.Reserved != 0 {
			t.Errorf("tea-1 after shipping = %+v, want on_hand 98 reserved 0", got)
		}
		wantInvalid(t, admin, id, "ship")
		wantInvalid(t, admin, id, "cancel")
		wantInvalid(t, admin, id, "pay")
		wantOrder(t, transition(t, admin, id, "deliver"), id, "delivered", 4)
		for _, action := range []string{"pay", "ship", "deliver", "cancel"} {
			wantInvalid(t, admin, id, action)
		}
	})

	t.Run("cancel placed", func(t *testing.T) {
		before := e.Stock(t, "cup-2")
		id := place(t)
		r := e.Do(t, post(orderPath(id, "cancel"), alice, map[string]string{"reason": "changed my mind"}))
		wantOrder(t, r, id, "cancelled", 2)
		if got := e.Stock(t, "cup-2"); got.OnHand != before.OnHand || got.Reserved != before.Reserved || got.Version != before.Version+2 {
			t.Errorf("cup-2 = %+v after place and cancel, want the levels of %+v two versions on", got, before)
		}
		wantInvalid(t, alice, id, "cancel")
		wantInvalid(t, alice, id, "pay")
		wantInvalid(t, admin, id, "ship")
	})

	t.Run("cancel paid", func(t *testing.T) {
		id := place(t)
		wantOrder(t, transition(t, admin, id, "pay"), id, "paid", 2)
		wantOrder(t, transition(t, admin, id, "cancel"), id, "cancelled", 3)
	})

	t.Run("If-Match", func(t *testing.T) {
		id := place(t)
		before := e.Snapshot(t)
		p := transition(t, alice, id, "pay", "If-Match", `"2"`).WantProblem(t, http.StatusPreconditionFailed, domain.CodeVersionMismatch)
		wantDetailMentions(t, p.Detail, "2", "1")
		e.WantUnchanged(t, before)
		wantOrder(t, transition(t, alice, id, "pay", "If-Match", `"1"`), id, "paid", 2)
		transition(t, alice, id, "cancel", "If-Match", `"1"`).WantProblem(t, http.StatusPreconditionFailed, domain.CodeVersionMismatch)
		wantOrder(t, transition(t, alice, id, "cancel", "If-Match", `"2"`), id, "cancelled", 3)
	})

	t.Run("cancel reason invalid", func(t *testing.T) {
		id := place(t)
		before := e.Snapshot(t)
		for _, reason := range []string{"a\x07b", strings.Repeat("r", 501)} {
			p := e.Do(t, post(orderPath(id, "cancel"), alice, map[string]string{"reason": reason})).
				WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
			if p.Field != "reason" {
				t.Errorf("field = %q, want reason", p.Field)
			}
		}
		e.WantUnchanged(t, before)
	})

	for _, id := range []string{newUUID(), "not-a-uuid", strings.ToUpper(newUUID())} {
		for _, action := range []string{"pay", "ship", "deliver", "cancel"} {
			t.Run("not_found/"+action+"/"+id[:8], func(t *testing.T) {
				before := e.Snapshot(t)
				e.Do(t, post(orderPath(id, action), admin, nil)).WantProblem(t, http.StatusNotFound, domain.CodeNotFound)
				e.WantUnchanged(t, before)
			})
		}
	}

	t.Run("order id in capitals", func(t *testing.T) {
		id := place(t)
		r := transition(t, alice, strings.ToUpper(id), "pay")
		wantOrder(t, r, id, "paid", 2)
	})

	t.Run("unknown action", func(t *testing.T) {
		id := place(t)
		before := e.Snapshot(t)
		transition(t, admin, id, "refund").WantProblem(t, http.StatusNotFound, domain.CodeNotFound)
		e.WantUnchanged(t, before)
	})
}
