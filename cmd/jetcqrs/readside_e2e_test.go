package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// shop is what the test expects the read side to show: the write-side state
// its commands imply, computed by the test itself.
type shop struct {
	s      *system
	stock  map[string]*projections.InventoryView
	prices map[string]int64
	cats   map[string]string
	orders map[string]*order
	placed []string // order ids in placement order
}

func newShop(s *system) *shop {
	return &shop{s: s, stock: map[string]*projections.InventoryView{}, prices: map[string]int64{},
		cats: map[string]string{}, orders: map[string]*order{}}
}

type catalogEntry struct {
	SKU, Name, Description, Category string
	PriceCents                       int64
}

// create adds a product and reads it back with the command's token.
func (sh *shop) create(admin string, p catalogEntry) {
	s := sh.s
	s.t.Helper()
	var created struct {
		SKU     string `json:"sku"`
		Version int64  `json:"version"`
	}
	resp := s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": p.SKU, "name": p.Name,
		"description": p.Description, "category": p.Category, "price_cents": p.PriceCents}, nil, &created)
	if created.SKU != p.SKU || created.Version != 1 {
		s.t.Fatalf("create %s: %+v", p.SKU, created)
	}
	sh.stock[p.SKU] = &projections.InventoryView{SKU: p.SKU}
	sh.prices[p.SKU], sh.cats[p.SKU] = p.PriceCents, p.Category
	var got projections.ProductView
	s.expect(http.StatusOK, http.MethodGet, "/v1/products/"+p.SKU, "", nil, consistency(resp), &got)
	want := projections.ProductView{SKU: p.SKU, Name: p.Name, Description: p.Description, Category: p.Category,
		PriceCents: p.PriceCents, Version: 1}
	if !equalProduct(got, want) {
		s.t.Fatalf("GET /v1/products/%s = %+v, want %+v", p.SKU, got, want)
	}
}

func equalProduct(a, b projections.ProductView) bool {
	return a.SKU == b.SKU && a.Name == b.Name && a.Description == b.Description && a.Category == b.Category &&
		a.PriceCents == b.PriceCents && a.Available == b.Available && a.Version == b.Version && len(a.Attributes) == len(b.Attributes)
}

// adjust counts stock in or out and reads the inventory back with the token.
func (sh *shop) adjust(admin, sku string, delta int64) {
	s := sh.s
	s.t.Helper()
	st := sh.stock[sku]
	st.OnHand += delta
	st.Available = st.OnHand - st.Reserved
	st.Version++
	var answer projections.InventoryView
	resp := s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/"+sku+"/adjustments", admin,
		map[string]any{"delta": delta, "reason": "count"}, nil, &answer)
	if answer != *st {
		s.t.Fatalf("adjust %s by %d answered %+v, want %+v", sku, delta, answer, *st)
	}
	sh.checkStock(sku, consistency(resp))
}

// checkStock reads GET /v1/inventory/{sku} (with header) and compares.
func (sh *shop) checkStock(sku string, header map[string]string) {
	sh.s.t.Helper()
	var got projections.InventoryView
	sh.s.expect(http.StatusOK, http.MethodGet, "/v1/inventory/"+sku, "", nil, header, &got)
	if got != *sh.stock[sku] {
		sh.s.t.Fatalf("GET /v1/inventory/%s = %+v, want %+v", sku, got, *sh.stock[sku])
	}
}

// place places an order as tok for user and reads it back with the token.
func (sh *shop) place(tok, user string, lines ...orderLine) string {
	s := sh.s
	s.t.Helper()
	items := make([]map[string]any, len(lines))
	o := &order{UserID: user, Status: string(domain.StatusPlaced), Version: 1}
	for i, l := range lines {
		items[i] = map[string]any{"sku": l.SKU, "quantity": l.Quantity}
		l.PriceCents, l.Category = sh.prices[l.SKU], sh.cats[l.SKU]
		o.Items = append(o.Items, l)
		o.TotalCents += l.Quantity * l.PriceCents
	}
	var placed struct {
		OrderID    string `json:"order_id"`
		Status     string `json:"status"`
		TotalCents int64  `json:"total_cents"`
		Version    int64  `json:"version"`
	}
	resp := s.expect(http.StatusCreated, http.MethodPost, "/v1/orders", tok, map[string]any{"user_id": user, "items": items,
		"payment": map[string]string{"method": "card", "token": "tok_visa"}}, nil, &placed)
	if placed.Status != "placed" || placed.TotalCents != o.TotalCents || placed.Version != 1 {
		s.t.Fatalf("place %v: %+v, want total %d", lines, placed, o.TotalCents)
	}
	o.ID = placed.OrderID
	sh.orders[o.ID] = o
	sh.placed = append(sh.placed, o.ID)
	for _, l := range o.Items {
		st := sh.stock[l.SKU]
		st.Reserved += l.Quantity
		st.Available = st.OnHand - st.Reserved
		st.Version++
	}
	sh.checkOrder(tok, o.ID, consistency(resp))
	return o.ID
}

// move sends pay, ship, deliver or cancel and reads the order back.
func (sh *shop) move(tok, id, action string) {
	s := sh.s
	s.t.Helper()
	o := sh.orders[id]
	var answer struct {
		OrderID string `json:"order_id"`
		Status  string `json:"status"`
		Version int64  `json:"version"`
	}
	resp := s.expect(http.StatusOK, http.MethodPost, "/v1/orders/"+id+"/"+action, tok, map[string]any{}, nil, &answer)
	o.Status = map[string]string{"pay": "paid", "ship": "shipped", "deliver": "delivered", "cancel": "cancelled"}[action]
	o.Version++
	if answer.OrderID != id || answer.Status != o.Status || answer.Version != o.Version {
		s.t.Fatalf("%s %s answered %+v, want %s v%d", action, id, answer, o.Status, o.Version)
	}
	for _, l := range o.Items {
		st := sh.stock[l.SKU]
		switch action {
		case "ship":
			st.OnHand -= l.Quantity
			st.Reserved -= l.Quantity
			st.Version++
		case "cancel":
			st.Reserved -= l.Quantity
			st.Version++
		}
		st.Available = st.OnHand - st.Reserved
	}
	sh.checkOrder(tok, id, consistency(resp))
}

// checkOrder reads GET /v1/orders/{id} and compares every field the test
// knows; it records the times the read model shows.
func (sh *shop) checkOrder(tok, id string, header map[string]string) {
	s := sh.s
	s.t.Helper()
	o := sh.orders[id]
	var got projections.OrderView
	s.expect(http.StatusOK, http.MethodGet, "/v1/orders/"+id, tok, nil, header, &got)
	ok := got.OrderID == id && got.UserID == o.UserID && got.Status == o.Status && got.TotalCents == o.TotalCents &&
		got.Version == o.Version && len(got.Items) == len(o.Items) && !got.PlacedAt.IsZero() && !got.UpdatedAt.Before(got.PlacedAt)
	for i := 0; ok && i < len(o.Items); i++ {
		ok = got.Items[i] == projections.OrderLineView{SKU: o.Items[i].SKU, Quantity: o.Items[i].Quantity, PriceCents: o.Items[i].PriceCents}
	}
	if !ok || (!o.PlacedAt.IsZero() && !got.PlacedAt.Equal(o.PlacedAt)) {
		s.t.Fatalf("GET /v1/orders/%s = %+v, want %+v", id, got, *o)
	}
	o.PlacedAt, o.UpdatedAt = got.PlacedAt, got.UpdatedAt
}

// TestReadSideServesWhatTheCommandsImply drives a small shop through the
// HTTP API of the whole running system and checks every query of the
// contract against the state the commands imply, reading each write back
// with its consistency token.
func TestReadSideServesWhatTheCommandsImply(t *testing.T) {
	s := startSystem(t, testConfig(t), All)
	admin := s.token("ops", domain.RoleAdmin)
	alice, bob, carol := s.token("alice", domain.RoleCustomer), s.token("bob", domain.RoleCustomer), s.token("carol", domain.RoleCustomer)
	sh := newShop(s)

	catalog := []catalogEntry{
		{"RS-LAMP-1", "Desk Lamp", "Warm brass finish with an adjustable arm", "lighting", 4500},
		{"RS-LAMP-2", "Floor Lamp", "Tall walnut pole under a linen shade", "lighting", 12900},
		{"RS-MUG-1", "Coffee Mug", "Stoneware, dishwasher safe, holds 350 ml", "kitchen", 899},
		{"RS-KETTLE", "Kettle", "Gooseneck spout for pour-over brewing", "kitchen", 5999},
		{"RS-RUG", "Rug", "Hand-knotted wool from Nepal", "textiles", 64000},
		{"RS-PILLOW", "Pillow", "Linen cover with a feather insert", "textiles", 2500},
	}
	for _, p := range catalog {
		sh.create(admin, p)
	}
	for sku, n := range map[string]int64{"RS-LAMP-1": 10, "RS-LAMP-2": 5, "RS-MUG-1": 100, "RS-KETTLE": 20, "RS-RUG": 3} {
		sh.adjust(admin, sku, n)
	}
	sh.adjust(admin, "RS-MUG-1", -4) // counted out: a broken box

	// Orders of three customers, through every transition.
	o1 := sh.place(alice, "alice", orderLine{SKU: "RS-LAMP-1", Quantity: 2}, orderLine{SKU: "RS-MUG-1", Quantity: 3})
	sh.move(alice, o1, "pay")
	sh.move(admin, o1, "ship")
	sh.move(admin, o1, "deliver")
	o2 := sh.place(alice, "alice", orderLine{SKU: "RS-KETTLE", Quantity: 1})
	sh.move(alice, o2, "cancel")
	o3 := sh.place(bob, "bob", orderLine{SKU: "RS-RUG", Quantity: 1}, orderLine{SKU: "RS-MUG-1", Quantity: 1})
	sh.move(bob, o3, "pay")
	sh.move(admin, o3, "cancel")
	o4 := sh.place(bob, "bob", orderLine{SKU: "RS-LAMP-2", Quantity: 2})
	sh.move(bob, o4, "pay")
	o5 := sh.place(admin, "carol", orderLine{SKU: "RS-MUG-1", Quantity: 5})
	// A new price and description: sales keep the price at placement.
	var updated struct {
		Version int64 `json:"version"`
	}
	resp := s.expect(http.StatusOK, http.MethodPatch, "/v1/products/RS-MUG-1", admin,
		map[string]any{"price_cents": 999, "description": "Stoneware with a bamboo lid"}, nil, &updated)
	if updated.Version != 2 {
		t.Fatalf("PATCH RS-MUG-1: version %d, want 2", updated.Version)
	}
	sh.prices["RS-MUG-1"] = 999
	var mug projections.ProductView
	s.expect(http.StatusOK, http.MethodGet, "/v1/products/RS-MUG-1", "", nil, consistency(resp), &mug)
	if mug.PriceCents != 999 || mug.Description != "Stoneware with a bamboo lid" || mug.Version != 2 || mug.Name != "Coffee Mug" {
		t.Fatalf("GET /v1/products/RS-MUG-1 after PATCH = %+v", mug)
	}
	o6 := sh.place(carol, "carol", orderLine{SKU: "RS-MUG-1", Quantity: 2})
	sh.move(carol, o6, "pay")
	_, p := s.expectProblem(http.StatusConflict, "insufficient_stock", http.MethodPost, "/v1/orders", carol, map[string]any{
		"user_id": "carol", "items": []map[string]any{{"sku": "RS-PILLOW", "quantity": 1}},
		"payment": map[string]string{"method": "card", "token": "tok_visa"}}, nil)
	if p.Detail == "" {
		t.Errorf("insufficient_stock without detail: %+v", p)
	}
	alices := []string{o2, o1} // newest first
	for q := int64(1); q <= 5; q++ {
		alices = append([]string{sh.place(alice, "alice", orderLine{SKU: "RS-MUG-1", Quantity: q})}, alices...)
	}

	// The write side agrees with what the test expects.
	written := s.writeOrders()
	for id, o := range sh.orders {
		w := written[id]
		if w == nil || w.Status != o.Status || w.Version != o.Version || w.TotalCents != o.TotalCents || w.UserID != o.UserID ||
			!w.PlacedAt.Equal(o.PlacedAt) || !slices.Equal(w.Items, o.Items) {
			t.Fatalf("order %s: PostgreSQL has %+v, the test expects %+v", id, w, *o)
		}
		// Both times as the write side stored them.
		var got projections.OrderView
		s.expect(http.StatusOK, http.MethodGet, "/v1/orders/"+id, admin, nil, nil, &got)
		if !got.PlacedAt.Equal(w.PlacedAt) || !got.UpdatedAt.Equal(w.UpdatedAt) || got.Version != w.Version || got.Status != w.Status {
			t.Errorf("GET /v1/orders/%s = %+v, PostgreSQL %+v", id, got, *w)
		}
	}
	for sku, st := range s.writeInventory() {
		if want := sh.stock[sku]; st.OnHand != want.OnHand || st.Reserved != want.Reserved || st.Version != want.Version {
			t.Fatalf("inventory %s: PostgreSQL has %+v, the test expects %+v", sku, st, *want)
		}
	}
	wantStock := map[string][3]int64{ // on_hand, reserved, available
		"RS-LAMP-1": {8, 0, 8}, "RS-LAMP-2": {5, 2, 3}, "RS-MUG-1": {93, 22, 71},
		"RS-KETTLE": {20, 0, 20}, "RS-RUG": {3, 0, 3}, "RS-PILLOW": {0, 0, 0},
	}
	for sku, w := range wantStock {
		if st := sh.stock[sku]; st.OnHand != w[0] || st.Reserved != w[1] || st.Available != w[2] {
			t.Fatalf("the test's own arithmetic: %s %+v, want %v", sku, *st, w)
		}
	}

	// Projections: wait (by polling the admin endpoint) until every model has
	// applied everything; the catalog's available stock and the sales report
	// follow events that no token of these commands names for them.
	status := s.awaitLive(admin, 30*time.Second)
	for i, st := range status {
		if st.Name != projectionNames[i] || st.Generation != "g1" || st.State != "live" || st.DeadLetters != 0 || st.LastSeq == 0 || st.LagMS != 0 {
			t.Errorf("GET /v1/admin/projections[%d] = %+v, want %s, g1, live, no dead letters", i, st, projectionNames[i])
		}
	}
	s.expectProblem(http.StatusForbidden, "forbidden", http.MethodGet, "/v1/admin/projections", alice, nil, nil)
	s.expectProblem(http.StatusUnauthorized, "unauthorized", http.MethodGet, "/v1/admin/projections", "", nil, nil)
	var relayStatus struct {
		Mode          string    `json:"mode"`
		Slot          string    `json:"slot"`
		ConfirmedLSN  string    `json:"confirmed_lsn"`
		SlotLagBytes  *int64    `json:"slot_lag_bytes"`
		Published     uint64    `json:"published"`
		LastPublishAt time.Time `json:"last_publish_at"`
	}
	s.expect(http.StatusOK, http.MethodGet, "/v1/admin/relay", admin, nil, nil, &relayStatus)
	if relayStatus.Mode != "cdc" || relayStatus.Slot != s.cfg.SlotName || relayStatus.ConfirmedLSN == "" || relayStatus.SlotLagBytes == nil ||
		relayStatus.Published != s.outboxCount() || relayStatus.LastPublishAt.IsZero() {
		t.Errorf("GET /v1/admin/relay = %+v, want cdc on slot %s with %d published", relayStatus, s.cfg.SlotName, s.outboxCount())
	}
	s.expectProblem(http.StatusForbidden, "forbidden", http.MethodGet, "/v1/admin/relay", bob, nil, nil)

	// Products and inventory: public, available follows inventory.
	for _, p := range catalog {
		var got projections.ProductView
		s.expect(http.StatusOK, http.MethodGet, "/v1/products/"+p.SKU, "", nil, nil, &got)
		want := projections.ProductView{SKU: p.SKU, Name: p.Name, Description: p.Description, Category: p.Category,
			PriceCents: sh.prices[p.SKU], Available: sh.stock[p.SKU].Available, Version: 1}
		if p.SKU == "RS-MUG-1" {
			want.Description, want.Version = "Stoneware with a bamboo lid", 2
		}
		if !equalProduct(got, want) {
			t.Errorf("GET /v1/products/%s = %+v, want %+v", p.SKU, got, want)
		}
		sh.checkStock(p.SKU, nil)
	}
	for _, path := range []string{"/v1/products/NOPE-1", "/v1/inventory/NOPE-1", "/v1/products/bad%20sku", "/v1/inventory/bad%20sku"} {
		s.expectProblem(http.StatusNotFound, "not_found", http.MethodGet, path, "", nil, nil)
	}

	// Search: words only in descriptions, filters, facets over all matches,
	// total against the page.
	noPrices := func(counts ...int64) []projections.FacetCount {
		out := make([]projections.FacetCount, len(projections.PriceRanges))
		for i, r := range projections.PriceRanges {
			out[i] = projections.FacetCount{Range: r.Name, Count: counts[i]}
		}
		return out
	}
	cat := func(pairs ...any) []projections.FacetCount {
		out := []projections.FacetCount{}
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, projections.FacetCount{Value: pairs[i].(string), Count: int64(pairs[i+1].(int))})
		}
		return out
	}
	allCategories, allPrices := cat("kitchen", 2, "lighting", 2, "textiles", 2), noPrices(1, 2, 1, 1, 1)
	for _, c := range []struct {
		query      string
		total      int64
		hits       []string
		categories []projections.FacetCount
		prices     []projections.FacetCount
	}{
		{"", 6, []string{"RS-KETTLE", "RS-LAMP-1", "RS-LAMP-2", "RS-MUG-1", "RS-PILLOW", "RS-RUG"}, allCategories, allPrices},
		{"limit=2&offset=2", 6, []string{"RS-LAMP-2", "RS-MUG-1"}, allCategories, allPrices},
		{"limit=4&offset=4", 6, []string{"RS-PILLOW", "RS-RUG"}, allCategories, allPrices},
		{"offset=6", 6, []string{}, allCategories, allPrices},
		{"q=brass", 1, []string{"RS-LAMP-1"}, cat("lighting", 1), noPrices(0, 1, 0, 0, 0)},
		{"q=NEPAL+wool", 1, []string{"RS-RUG"}, cat("textiles", 1), noPrices(0, 0, 0, 0, 1)},
		{"q=linen&limit=1", 2, nil, cat("lighting", 1, "textiles", 1), noPrices(0, 1, 0, 1, 0)},
		{"q=linen&in_stock=true", 1, []string{"RS-LAMP-2"}, cat("lighting", 1), noPrices(0, 0, 0, 1, 0)},
		{"q=bamboo+lid", 1, []string{"RS-MUG-1"}, cat("kitchen", 1), noPrices(1, 0, 0, 0, 0)},
		{"q=dishwasher", 0, []string{}, cat(), noPrices(0, 0, 0, 0, 0)},
		{"category=kitchen&min_price=999&max_price=5999", 2, []string{"RS-KETTLE", "RS-MUG-1"}, cat("kitchen", 2), noPrices(1, 0, 1, 0, 0)},
		{"category=kitchen&min_price=1000&max_price=5998", 0, []string{}, cat(), noPrices(0, 0, 0, 0, 0)},
		{"in_stock=true&max_price=12900", 4, []string{"RS-KETTLE", "RS-LAMP-1", "RS-LAMP-2", "RS-MUG-1"},
			cat("kitchen", 2, "lighting", 2), noPrices(1, 1, 1, 1, 0)},
	} {
		var res projections.SearchResult
		s.expect(http.StatusOK, http.MethodGet, "/v1/products?"+c.query, "", nil, nil, &res)
		got := []string{}
		for _, h := range res.Hits {
			got = append(got, h.SKU)
		}
		if res.Total != c.total || (c.hits != nil && !slices.Equal(got, c.hits)) || (c.hits == nil && len(got) != 1) ||
			!slices.Equal(res.Facets.Category, c.categories) || !slices.Equal(res.Facets.Price, c.prices) {
			t.Errorf("GET /v1/products?%s = total %d hits %v facets %+v, want total %d hits %v categories %+v prices %+v",
				c.query, res.Total, got, res.Facets, c.total, c.hits, c.categories, c.prices)
		}
		for _, h := range res.Hits {
			var one projections.ProductView
			s.expect(http.StatusOK, http.MethodGet, "/v1/products/"+h.SKU, "", nil, nil, &one)
			if !equalProduct(h, one) {
				t.Errorf("search hit %+v differs from GET /v1/products/%s %+v", h, h.SKU, one)
			}
		}
	}

	// A user's orders: newest first, page by page.
	listPage := func(tok, user, query string) (entries []projections.OrderListEntry, next *string) {
		t.Helper()
		var page map[string]json.RawMessage
		s.expect(http.StatusOK, http.MethodGet, "/v1/users/"+user+"/orders"+query, tok, nil, nil, &page)
		cur, ok := page["next_cursor"]
		if !ok {
			t.Fatalf("GET /v1/users/%s/orders%s: no next_cursor", user, query)
		}
		if err := json.Unmarshal(page["orders"], &entries); err != nil || entries == nil {
			t.Fatalf("GET /v1/users/%s/orders%s: orders %s: %v", user, query, page["orders"], err)
		}
		if err := json.Unmarshal(cur, &next); err != nil {
			t.Fatalf("GET /v1/users/%s/orders%s: next_cursor %s: %v", user, query, cur, err)
		}
		return entries, next
	}
	checkEntries := func(user string, got []projections.OrderListEntry, want []string) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s's orders: %d entries %+v, want %v", user, len(got), got, want)
		}
		for i, e := range got {
			o := sh.orders[want[i]]
			if e.OrderID != o.ID || e.Status != o.Status || e.TotalCents != o.TotalCents || !e.PlacedAt.Equal(o.PlacedAt) {
				t.Errorf("%s's orders[%d] = %+v, want %+v", user, i, e, *o)
			}
		}
	}
	var pages [][]string
	var cursor *string
	for q := "?limit=3"; ; q = "?limit=3&cursor=" + url.QueryEscape(*cursor) {
		entries, next := listPage(alice, "alice", q)
		ids := []string{}
		for _, e := range entries {
			ids = append(ids, e.OrderID)
		}
		pages = append(pages, ids)
		if cursor = next; cursor == nil || len(pages) > 5 {
			break
		}
	}
	if len(pages) != 3 || len(pages[0]) != 3 || len(pages[1]) != 3 || len(pages[2]) != 1 || cursor != nil {
		t.Fatalf("alice's 7 orders by 3: pages %v (last cursor %v), want 3+3+1 then null", pages, cursor)
	}
	all, next := listPage(alice, "alice", "")
	checkEntries("alice", all, alices)
	if next != nil || !slices.Equal(slices.Concat(pages...), alices) {
		t.Errorf("alice's orders paged %v, at once %v (next %v), want %v", pages, all, next, alices)
	}
	if _, next := listPage(alice, "alice", "?limit=7"); next != nil {
		// Seven orders on a page of seven: there is no next page.
		t.Errorf("alice's 7 orders with limit=7: next_cursor %q, want null", *next)
	}
	bobs, _ := listPage(admin, "bob", "?limit=100")
	checkEntries("bob", bobs, []string{o4, o3})
	carols, _ := listPage(carol, "carol", "")
	checkEntries("carol", carols, []string{o6, o5})
	if none, next := listPage(admin, "dave", ""); len(none) != 0 || next != nil {
		t.Errorf("dave's orders: %+v, next %v; want none", none, next)
	}

	// Authorization of order reads.
	s.expectProblem(http.StatusForbidden, "forbidden", http.MethodGet, "/v1/orders/"+o3, alice, nil, nil)
	s.expectProblem(http.StatusForbidden, "forbidden", http.MethodGet, "/v1/orders/"+o1, bob, nil, nil)
	s.expectProblem(http.StatusForbidden, "forbidden", http.MethodGet, "/v1/users/bob/orders", alice, nil, nil)
	s.expectProblem(http.StatusUnauthorized, "unauthorized", http.MethodGet, "/v1/orders/"+o1, "", nil, nil)
	s.expectProblem(http.StatusUnauthorized, "unauthorized", http.MethodGet, "/v1/users/alice/orders", "", nil, nil)
	s.expectProblem(http.StatusUnauthorized, "unauthorized", http.MethodGet, "/v1/orders/"+o1, "not-a-jwt", nil, nil)
	s.expectProblem(http.StatusNotFound, "not_found", http.MethodGet, "/v1/orders/"+uuid.NewString(), admin, nil, nil)

	// Sales: cancelled orders count nowhere; revenue at the price of placement.
	day := func(d int) string { return time.Now().UTC().AddDate(0, 0, d).Format(time.DateOnly) }
	sales := func(query string) []projections.SalesRow {
		t.Helper()
		var rep struct {
			Rows []projections.SalesRow `json:"rows"`
		}
		s.expect(http.StatusOK, http.MethodGet, "/v1/reports/sales?"+query, admin, nil, nil, &rep)
		if rep.Rows == nil {
			t.Fatalf("GET /v1/reports/sales?%s: rows is not a list", query)
		}
		return rep.Rows
	}
	window := "from=" + day(-1) + "&to=" + day(2)
	mugs := projections.SalesRow{Orders: 8, Units: 25, RevenueCents: 8*899 + 17*999}
	bySKU := []projections.SalesRow{
		{Key: "RS-LAMP-1", Orders: 1, Units: 2, RevenueCents: 9000},
		{Key: "RS-LAMP-2", Orders: 1, Units: 2, RevenueCents: 25800},
		{Key: "RS-MUG-1", Orders: mugs.Orders, Units: mugs.Units, RevenueCents: mugs.RevenueCents},
	}
	byCategory := []projections.SalesRow{
		{Key: "kitchen", Orders: mugs.Orders, Units: mugs.Units, RevenueCents: mugs.RevenueCents},
		{Key: "lighting", Orders: 2, Units: 4, RevenueCents: 34800},
	}
	if got := sales(window + "&group_by=sku"); !slices.Equal(got, bySKU) {
		t.Errorf("sales by sku = %+v, want %+v", got, bySKU)
	}
	if got := sales(window + "&group_by=category"); !slices.Equal(got, byCategory) {
		t.Errorf("sales by category = %+v, want %+v", got, byCategory)
	}
	var total projections.SalesRow
	byDay := sales(window + "&group_by=day")
	for _, r := range byDay {
		total.Orders, total.Units, total.RevenueCents = total.Orders+r.Orders, total.Units+r.Units, total.RevenueCents+r.RevenueCents
	}
	from, _ := time.Parse(time.DateOnly, day(-1))
	to, _ := time.Parse(time.DateOnly, day(2))
	if want := expectedSales(sh.orders, "day", from, to); !slices.Equal(byDay, want) || total.Orders != 9 || total.Units != 29 ||
		total.RevenueCents != 34800+mugs.RevenueCents {
		t.Errorf("sales by day = %+v, want %+v (9 orders, 29 units)", byDay, want)
	}
	if got := sales("group_by=day"); !slices.Equal(got, byDay) {
		t.Errorf("sales of the last 30 days = %+v, want %+v", got, byDay)
	}
	// from is inclusive, to exclusive, to the microsecond.
	first, last := sh.orders[o1].PlacedAt, sh.orders[alices[0]].PlacedAt
	exact := url.Values{"from": {first.Format(time.RFC3339Nano)}, "to": {last.Format(time.RFC3339Nano)}, "group_by": {"sku"}}
	if got, want := sales(exact.Encode()), expectedSales(sh.orders, "sku", first, last); !slices.Equal(got, want) ||
		len(got) != 3 || got[2].Orders != 7 || got[2].Units != 20 {
		t.Errorf("sales in [%s, %s) = %+v, want %+v (the last order left out)", first, last, got, want)
	}
	if got := sales("from=" + day(1) + "&to=" + day(3)); len(got) != 0 {
		t.Errorf("sales of the future = %+v, want none", got)
	}
	if got := expectedSales(s.writeOrders(), "sku", from, to); !slices.Equal(got, bySKU) {
		t.Fatalf("PostgreSQL implies sales %+v, the test %+v", got, bySKU)
	}
	s.expectProblem(http.StatusForbidden, "forbidden", http.MethodGet, "/v1/reports/sales", alice, nil, nil)
	s.expectProblem(http.StatusUnauthorized, "unauthorized", http.MethodGet, "/v1/reports/sales", "", nil, nil)

	// Bad query parameters.
	for _, bad := range []struct{ path, token, consistency string }{
		{"/v1/users/alice/orders?limit=0", alice, ""},
		{"/v1/users/alice/orders?limit=101", alice, ""},
		{"/v1/users/alice/orders?limit=ten", alice, ""},
		{"/v1/users/alice/orders?cursor=not-a-cursor", alice, ""},
		{"/v1/users/alice/orders?cursor=YWJj", alice, ""},
		{"/v1/products?limit=0", "", ""},
		{"/v1/products?offset=-1", "", ""},
		{"/v1/products?min_price=5000&max_price=100", "", ""},
		{"/v1/products?min_price=-1", "", ""},
		{"/v1/products?max_price=cheap", "", ""},
		{"/v1/products?in_stock=maybe", "", ""},
		{"/v1/reports/sales?group_by=week", admin, ""},
		{"/v1/reports/sales?from=2025-13-01", admin, ""},
		{"/v1/reports/sales?to=yesterday", admin, ""},
		{"/v1/reports/sales?from=" + day(1) + "&to=" + day(0), admin, ""},
		{"/v1/reports/sales?from=" + day(0) + "&to=" + day(0), admin, ""},
		{"/v1/orders/" + o1, admin, "garbage"},
		{"/v1/inventory/RS-MUG-1", "", "inventory:RS-MUG-1:0"},
	} {
		var header map[string]string
		if bad.consistency != "" {
			header = map[string]string{"X-Consistency-Token": bad.consistency}
		}
		s.expectProblem(http.StatusBadRequest, "invalid_request", http.MethodGet, bad.path, bad.token, nil, header)
	}
}
