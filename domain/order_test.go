package domain_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

func TestPlaceNewOrderEvents(t *testing.T) {
	t.Parallel()
	stock := fullStock(t)
	if _, err := stock["banana.2"].Adjust(admin, 5, "late delivery", t0); err != nil {
		t.Fatal(err)
	}
	before := levelsOf(stock)
	at := t0.Add(time.Hour)
	local := at.In(time.FixedZone("UTC+2", 2*3600))
	cmd := domain.PlaceOrder{
		UserID:        "alice",
		Items:         []domain.OrderLineRequest{line("banana.2", 3), line("free-4", 1), line("CHAIR_3", 2), line("apple-1", 4)},
		PaymentMethod: "invoice",
		PaymentToken:  "po-7781",
	}

	o, evs, err := domain.PlaceNewOrder("o-1", alice, cmd, testCatalog(), stock, local)
	if err != nil {
		t.Fatal(err)
	}

	wantSnap := domain.OrderSnapshot{
		OrderID: "o-1",
		UserID:  "alice",
		Status:  domain.StatusPlaced,
		Items: []domain.OrderLine{
			{SKU: "banana.2", Name: "Banana", Category: "fruit", Quantity: 3, PriceCents: 40},
			{SKU: "free-4", Name: "Sticker", Category: "gifts", Quantity: 1, PriceCents: 0},
			{SKU: "CHAIR_3", Name: "Chair", Category: "furniture", Quantity: 2, PriceCents: 4999},
			{SKU: "apple-1", Name: "Apple", Category: "fruit", Quantity: 4, PriceCents: 125},
		},
		TotalCents:    3*40 + 1*0 + 2*4999 + 4*125,
		PaymentMethod: "invoice",
		Version:       1,
		PlacedAt:      at,
		UpdatedAt:     at,
	}
	requireEqual(t, "order snapshot", o.Snapshot(), wantSnap)
	if o.ID() != "o-1" || o.UserID() != "alice" || o.Status() != domain.StatusPlaced || o.Version() != 1 {
		t.Fatalf("accessors = %s %s %s v%d", o.ID(), o.UserID(), o.Status(), o.Version())
	}
	requireEqual(t, "Lines", o.Lines(), wantSnap.Items)
	requireEqual(t, "SKUs", o.SKUs(), []string{"CHAIR_3", "apple-1", "banana.2", "free-4"})

	requireEqual(t, "event types", eventTypes(evs), []string{
		domain.EventOrderPlaced,
		domain.EventInventoryReserved, domain.EventInventoryReserved,
		domain.EventInventoryReserved, domain.EventInventoryReserved,
	})
	requireHeader(t, evs[0], domain.AggregateOrder, "o-1", 1, domain.EventOrderPlaced, at)
	requireEqual(t, "OrderPlaced payload", payloadAs[domain.OrderPlaced](t, evs[0]), domain.OrderPlaced{OrderSnapshot: wantSnap})

	if strings.Contains(fmt.Sprintf("%+v", evs), cmd.PaymentToken) {
		t.Error("an event carries the payment token")
	}

	qty := map[string]int64{"banana.2": 3, "free-4": 1, "CHAIR_3": 2, "apple-1": 4}
	for i, sku := range []string{"CHAIR_3", "apple-1", "banana.2", "free-4"} {
		ev := evs[i+1]
		prev := before[sku]
		want := domain.InventoryReserved{
			InventoryLevels: domain.InventoryLevels{
				SKU:       sku,
				OnHand:    prev.OnHand,
				Reserved:  prev.Reserved + qty[sku],
				Available: prev.Available - qty[sku],
				Version:   prev.Version + 1,
			},
			OrderID:  "o-1",
			Quantity: qty[sku],
		}
		requireHeader(t, ev, domain.AggregateInventory, sku, prev.Version+1, domain.EventInventoryReserved, at)
		requireEqual(t, "InventoryReserved payload of "+sku, payloadAs[domain.InventoryReserved](t, ev), want)
		requireEqual(t, "levels of "+sku, stock[sku].Levels(), want.InventoryLevels)
	}
}

func TestPlaceNewOrderPricesFromCatalogAtPlacement(t *testing.T) {
	t.Parallel()
	stock := fullStock(t)
	catalog := testCatalog()
	cmd := placeCmd("alice", line("apple-1", 2), line("CHAIR_3", 1))

	first, _, err := domain.PlaceNewOrder("o-1", alice, cmd, catalog, stock, t0)
	if err != nil {
		t.Fatal(err)
	}
	catalog["apple-1"] = domain.CatalogEntry{SKU: "apple-1", Name: "Green apple", Category: "produce", PriceCents: 300}
	second, _, err := domain.PlaceNewOrder("o-2", alice, cmd, catalog, stock, t0)
	if err != nil {
		t.Fatal(err)
	}

	if got, want := first.Snapshot().TotalCents, int64(2*125+4999); got != want {
		t.Errorf("first total = %d, want %d", got, want)
	}
	if got, want := second.Snapshot().TotalCents, int64(2*300+4999); got != want {
		t.Errorf("second total = %d, want %d", got, want)
	}
	if l := first.Lines()[0]; l.Name != "Apple" || l.Category != "fruit" || l.PriceCents != 125 {
		t.Errorf("first order line changed with the catalog: %+v", l)
	}
	if l := second.Lines()[0]; l.Name != "Green apple" || l.Category != "produce" || l.PriceCents != 300 {
		t.Errorf("second order line = %+v, want the new catalog entry", l)
	}
}

func TestPlaceNewOrderLargestTotal(t *testing.T) {
	t.Parallel()
	catalog := map[string]domain.CatalogEntry{}
	onHand := map[string]int64{}
	var items []domain.OrderLineRequest
	for i := range domain.MaxOrderItems {
		sku := "sku-" + string(rune('A'+i/26)) + string(rune('a'+i%26))
		catalog[sku] = domain.CatalogEntry{SKU: sku, Name: sku, Category: "c", PriceCents: domain.MaxPriceCents}
		onHand[sku] = domain.MaxQuantity
		items = append(items, line(sku, domain.MaxQuantity))
	}
	stock := stockOf(t, onHand)
	o, evs, err := domain.PlaceNewOrder("o-max", admin, placeCmd("alice", items...), catalog, stock, t0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := o.Snapshot().TotalCents, int64(domain.MaxOrderItems*domain.MaxQuantity*domain.MaxPriceCents); got != want {
		t.Fatalf("total = %d, want %d", got, want)
	}
	if len(evs) != 1+domain.MaxOrderItems {
		t.Fatalf("%d events, want %d", len(evs), 1+domain.MaxOrderItems)
	}
	for sku, inv := range stock {
		if lv := inv.Levels(); lv.Available != 0 || lv.Reserved != domain.MaxQuantity {
			t.Fatalf("levels of %s = %+v, want everything reserved", sku, lv)
		}
	}
}

func TestPlaceNewOrderUnknownSKU(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		items   []domain.OrderLineRequest
		catalog func(map[string]domain.CatalogEntry)
		stock   func(map[string]*domain.Inventory)
		wantSKU string
	}{
		{name: "only item unknown", items: []domain.OrderLineRequest{line("nope", 1)}, wantSKU: "nope"},
		{name: "last item unknown", items: []domain.OrderLineRequest{line("apple-1", 1), line("banana.2", 1), line("zzz", 1)}, wantSKU: "zzz"},
		{name: "first of two unknown reported", items: []domain.OrderLineRequest{line("apple-1", 1), line("x-1", 1), line("a-0", 1)}, wantSKU: "x-1"},
		{
			name:    "in catalog without inventory",
			items:   []domain.OrderLineRequest{line("apple-1", 1), line("banana.2", 1)},
			stock:   func(s map[string]*domain.Inventory) { delete(s, "banana.2") },
			wantSKU: "banana.2",
		},
		{
			name:    "inventory without catalog entry",
			items:   []domain.OrderLineRequest{line("CHAIR_3", 1), line("apple-1", 1)},
			catalog: func(c map[string]domain.CatalogEntry) { delete(c, "apple-1") },
			wantSKU: "apple-1",
		},
		{
			name:    "nil inventory",
			items:   []domain.OrderLineRequest{line("free-4", 1)},
			stock:   func(s map[string]*domain.Inventory) { s["free-4"] = nil },
			wantSKU: "free-4",
		},
		{name: "case matters", items: []domain.OrderLineRequest{line("Apple-1", 1)}, wantSKU: "Apple-1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			catalog, stock := testCatalog(), fullStock(t)
			if tc.catalog != nil {
				tc.catalog(catalog)
			}
			if tc.stock != nil {
				tc.stock(stock)
			}
			before := levelsOf(stock)
			o, evs, err := domain.PlaceNewOrder("o-1", alice, placeCmd("alice", tc.items...), catalog, stock, t0)
			de := requireCode(t, err, domain.CodeUnknownSKU)
			if de.SKU != tc.wantSKU {
				t.Errorf("SKU = %q, want %q", de.SKU, tc.wantSKU)
			}
			if o != nil || evs != nil {
				t.Errorf("got order %v and %d events with an error", o, len(evs))
			}
			requireEqual(t, "levels", levelsOf(stock), before)
		})
	}
}

func TestPlaceNewOrderInsufficientStock(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		onHand  map[string]int64
		prior   []domain.OrderLineRequest // placed first, reserving stock
		items   []domain.OrderLineRequest
		wantSKU string // "" when the order succeeds
	}{
		{name: "single sku one short", onHand: map[string]int64{"apple-1": 4}, items: []domain.OrderLineRequest{line("apple-1", 5)}, wantSKU: "apple-1"},
		{name: "single sku exact", onHand: map[string]int64{"apple-1": 5}, items: []domain.OrderLineRequest{line("apple-1", 5)}},
		{name: "zero stock", onHand: map[string]int64{"apple-1": 0}, items: []domain.OrderLineRequest{line("apple-1", 1)}, wantSKU: "apple-1"},
		{
			name:    "last sku in lock order lacks stock",
			onHand:  map[string]int64{"CHAIR_3": 9, "apple-1": 9, "banana.2": 9, "free-4": 1},
			items:   []domain.OrderLineRequest{line("free-4", 2), line("CHAIR_3", 1), line("apple-1", 1), line("banana.2", 1)},
			wantSKU: "free-4",
		},
		{
			name:    "last sku in request order lacks stock",
			onHand:  map[string]int64{"CHAIR_3": 0, "apple-1": 9, "banana.2": 9, "free-4": 9},
			items:   []domain.OrderLineRequest{line("free-4", 2), line("apple-1", 1), line("banana.2", 1), line("CHAIR_3", 1)},
			wantSKU: "CHAIR_3",
		},
		{
			name:    "stock reserved by an earlier order is not available",
			onHand:  map[string]int64{"apple-1": 10, "banana.2": 10},
			prior:   []domain.OrderLineRequest{line("banana.2", 7)},
			items:   []domain.OrderLineRequest{line("apple-1", 10), line("banana.2", 4)},
			wantSKU: "banana.2",
		},
		{
			name:   "remaining stock after an earlier order is available",
			onHand: map[string]int64{"apple-1": 10, "banana.2": 10},
			prior:  []domain.OrderLineRequest{line("banana.2", 7)},
			items:  []domain.OrderLineRequest{line("apple-1", 10), line("banana.2", 3)},
		},
		{
			name:    "several lacking, first in lock order named",
			onHand:  map[string]int64{"CHAIR_3": 0, "apple-1": 9, "banana.2": 0},
			items:   []domain.OrderLineRequest{line("banana.2", 1), line("apple-1", 1), line("CHAIR_3", 1)},
			wantSKU: "CHAIR_3",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stock := stockOf(t, tc.onHand)
			if tc.prior != nil {
				mustPlace(t, "o-0", bob, placeCmd("bob", tc.prior...), stock)
			}
			before := levelsOf(stock)
			o, evs, err := domain.PlaceNewOrder("o-1", alice, placeCmd("alice", tc.items...), testCatalog(), stock, t0)
			if tc.wantSKU == "" {
				if err != nil {
					t.Fatalf("PlaceNewOrder: %v", err)
				}
				for _, it := range tc.items {
					if got, want := stock[it.SKU].Levels().Reserved, before[it.SKU].Reserved+it.Quantity; got != want {
						t.Errorf("reserved of %s = %d, want %d", it.SKU, got, want)
					}
				}
				return
			}
			de := requireCode(t, err, domain.CodeInsufficientStock)
			if de.SKU != tc.wantSKU {
				t.Errorf("SKU = %q, want %q", de.SKU, tc.wantSKU)
			}
			if o != nil || evs != nil {
				t.Errorf("got order %v and %d events with an error", o, len(evs))
			}
			requireEqual(t, "levels", levelsOf(stock), before)
		})
	}
}

// applyOp runs one order command through Apply; "cancel" gives a fixed reason.
func applyOp(o *domain.Order, op string, actor domain.Actor, stock map[string]*domain.Inventory, now time.Time) ([]domain.Event, error) {
	return o.Apply(actor, domain.OrderTransition(op), "changed my mind", stock, now)
}

// pathTo lists the admin commands that bring a placed order to a state.
var pathTo = map[string][]string{
	"placed":              nil,
	"paid":                {"pay"},
	"shipped":             {"pay", "ship"},
	"delivered":           {"pay", "ship", "deliver"},
	"cancelled":           {"cancel"},
	"cancelled-after-pay": {"pay", "cancel"},
}

// orderAt places alice's order of 2 apple-1 and 3 banana.2 and walks it to state.
func orderAt(t testing.TB, state string) (*domain.Order, map[string]*domain.Inventory) {
	t.Helper()
	stock := fullStock(t)
	o, _ := mustPlace(t, "o-1", alice, placeCmd("alice", line("banana.2", 3), line("apple-1", 2)), stock)
	for i, op := range pathTo[state] {
		if _, err := applyOp(o, op, admin, stock, t0.Add(time.Duration(i+1)*time.Minute)); err != nil {
			t.Fatalf("%s on the way to %s: %v", op, state, err)
		}
	}
	return o, stock
}

func TestOrderTransitions(t *testing.T) {
	t.Parallel()
	shipTypes := []string{domain.EventOrderShipped, domain.EventInventoryShipped, domain.EventInventoryShipped}
	cancelTypes := []string{domain.EventOrderCancelled, domain.EventInventoryReleased, domain.EventInventoryReleased}
	tests := []struct {
		from      string
		op        string
		want      domain.OrderStatus // "" for a forbidden transition
		wantTypes []string
	}{
		{from: "placed", op: "pay", want: domain.StatusPaid, wantTypes: []string{domain.EventOrderPaid}},
		{from: "placed", op: "ship"},
		{from: "placed", op: "deliver"},
		{from: "placed", op: "cancel", want: domain.StatusCancelled, wantTypes: cancelTypes},
		{from: "paid", op: "pay"},
		{from: "paid", op: "ship", want: domain.StatusShipped, wantTypes: shipTypes},
		{from: "paid", op: "deliver"},
		{from: "paid", op: "cancel", want: domain.StatusCancelled, wantTypes: cancelTypes},
		{from: "shipped", op: "pay"},
		{from: "shipped", op: "ship"},
		{from: "shipped", op: "deliver", want: domain.StatusDelivered, wantTypes: []string{domain.EventOrderDelivered}},
		{from: "shipped", op: "cancel"},
		{from: "delivered", op: "pay"},
		{from: "delivered", op: "ship"},
		{from: "delivered", op: "deliver"},
		{from: "delivered", op: "cancel"},
		{from: "cancelled", op: "pay"},
		{from: "cancelled", op: "ship"},
		{from: "cancelled", op: "deliver"},
		{from: "cancelled", op: "cancel"},
		{from: "cancelled-after-pay", op: "pay"},
		{from: "cancelled-after-pay", op: "ship"},
		{from: "cancelled-after-pay", op: "deliver"},
		{from: "cancelled-after-pay", op: "cancel"},
	}
	for _, tc := range tests {
		t.Run(tc.from+"/"+tc.op, func(t *testing.T) {
			t.Parallel()
			o, stock := orderAt(t, tc.from)
			before, beforeLevels := o.Snapshot(), levelsOf(stock)
			now := t0.Add(time.Hour)

			evs, err := applyOp(o, tc.op, admin, stock, now)

			if tc.want == "" {
				requireCode(t, err, domain.CodeInvalidTransition)
				if evs != nil {
					t.Errorf("%d events with an error", len(evs))
				}
				requireEqual(t, "order after a forbidden transition", o.Snapshot(), before)
				requireEqual(t, "levels after a forbidden transition", levelsOf(stock), beforeLevels)
				return
			}
			if err != nil {
				t.Fatalf("%s from %s: %v", tc.op, tc.from, err)
			}
			if o.Status() != tc.want || o.Version() != before.Version+1 {
				t.Fatalf("order is %s v%d, want %s v%d", o.Status(), o.Version(), tc.want, before.Version+1)
			}
			requireEqual(t, "event types", eventTypes(evs), tc.wantTypes)
			requireHeader(t, evs[0], domain.AggregateOrder, "o-1", before.Version+1, tc.wantTypes[0], now)
			if len(evs) == 1 {
				requireEqual(t, "levels after an order-only transition", levelsOf(stock), beforeLevels)
				return
			}
			for i, sku := range []string{"apple-1", "banana.2"} {
				requireHeader(t, evs[i+1], domain.AggregateInventory, sku, beforeLevels[sku].Version+1, tc.wantTypes[i+1], now)
			}
		})
	}
}

// TestOrderStockToLock: the stock a transition would move is named only to an
// actor allowed to apply it, and only when the order's status allows it.
func TestOrderStockToLock(t *testing.T) {
	t.Parallel()
	lines := []string{"apple-1", "banana.2"}
	tests := []struct {
		from  string
		op    domain.OrderTransition
		actor domain.Actor
		want  []string
		code  domain.Code
	}{
		{from: "placed", op: domain.TransitionPay, actor: alice},
		{from: "placed", op: domain.TransitionPay, actor: bob, code: domain.CodeForbidden},
		{from: "paid", op: domain.TransitionShip, actor: admin, want: lines},
		{from: "paid", op: domain.TransitionShip, actor: alice, code: domain.CodeForbidden},
		{from: "placed", op: domain.TransitionShip, actor: admin},
		{from: "shipped", op: domain.TransitionDeliver, actor: admin},
		{from: "shipped", op: domain.TransitionDeliver, actor: alice, code: domain.CodeForbidden},
		{from: "placed", op: domain.TransitionCancel, actor: alice, want: lines},
		{from: "paid", op: domain.TransitionCancel, actor: admin, want: lines},
		{from: "paid", op: domain.TransitionCancel, actor: bob, code: domain.CodeForbidden},
		{from: "shipped", op: domain.TransitionCancel, actor: alice},
		{from: "cancelled", op: domain.TransitionCancel, actor: alice},
		{from: "placed", op: "refund", actor: admin, code: domain.CodeInvalidRequest},
	}
	for _, tc := range tests {
		t.Run(tc.from+"/"+string(tc.op)+"/"+tc.actor.Subject, func(t *testing.T) {
			t.Parallel()
			o, _ := orderAt(t, tc.from)
			before := o.Snapshot()
			skus, err := o.StockToLock(tc.actor, tc.op)
			if tc.code != "" {
				requireCode(t, err, tc.code)
			} else if err != nil {
				t.Fatal(err)
			}
			requireEqual(t, "stock to lock", skus, tc.want)
			requireEqual(t, "order", o.Snapshot(), before)
		})
	}
}

func TestOrderApplyUnknownTransition(t *testing.T) {
	t.Parallel()
	o, stock := orderAt(t, "placed")
	before, beforeLevels := o.Snapshot(), levelsOf(stock)
	evs, err := o.Apply(admin, "refund", "", stock, t0.Add(time.Hour))
	requireInvalid(t, err, "transition")
	if evs != nil {
		t.Errorf("%d events with an error", len(evs))
	}
	requireEqual(t, "order", o.Snapshot(), before)
	requireEqual(t, "levels", levelsOf(stock), beforeLevels)
}

func TestOrderLifecyclePayloads(t *testing.T) {
	t.Parallel()
	stock := fullStock(t)
	o, _ := mustPlace(t, "o-1", alice, placeCmd("alice", line("banana.2", 3), line("apple-1", 2)), stock)
	placed := o.Snapshot()
	reservedLevels := levelsOf(stock)

	paidAt := t0.Add(time.Minute)
	ev, err := o.Pay(alice, paidAt.In(time.FixedZone("UTC-5", -5*3600)))
	if err != nil {
		t.Fatal(err)
	}
	want := placed
	want.Status, want.Version, want.UpdatedAt = domain.StatusPaid, 2, paidAt
	requireHeader(t, ev, domain.AggregateOrder, "o-1", 2, domain.EventOrderPaid, paidAt)
	requireEqual(t, "OrderPaid", payloadAs[domain.OrderPaid](t, ev), domain.OrderPaid{OrderSnapshot: want})
	requireEqual(t, "levels after pay", levelsOf(stock), reservedLevels)

	shippedAt := t0.Add(2 * time.Minute)
	evs, err := o.Ship(admin, stock, shippedAt)
	if err != nil {
		t.Fatal(err)
	}
	want.Status, want.Version, want.UpdatedAt = domain.StatusShipped, 3, shippedAt
	requireEqual(t, "ship event types", eventTypes(evs), []string{domain.EventOrderShipped, domain.EventInventoryShipped, domain.EventInventoryShipped})
	requireHeader(t, evs[0], domain.AggregateOrder, "o-1", 3, domain.EventOrderShipped, shippedAt)
	requireEqual(t, "OrderShipped", payloadAs[domain.OrderShipped](t, evs[0]), domain.OrderShipped{OrderSnapshot: want})
	qty := map[string]int64{"apple-1": 2, "banana.2": 3}
	for i, sku := range []string{"apple-1", "banana.2"} {
		prev := reservedLevels[sku]
		lv := domain.InventoryLevels{
			SKU:       sku,
			OnHand:    prev.OnHand - qty[sku],
			Reserved:  prev.Reserved - qty[sku],
			Available: prev.Available,
			Version:   prev.Version + 1,
		}
		requireHeader(t, evs[i+1], domain.AggregateInventory, sku, prev.Version+1, domain.EventInventoryShipped, shippedAt)
		requireEqual(t, "InventoryShipped of "+sku, payloadAs[domain.InventoryShipped](t, evs[i+1]),
			domain.InventoryShipped{InventoryLevels: lv, OrderID: "o-1", Quantity: qty[sku]})
		requireEqual(t, "levels of "+sku, stock[sku].Levels(), lv)
	}
	shippedLevels := levelsOf(stock)

	deliveredAt := t0.Add(3 * time.Minute)
	ev, err = o.Deliver(admin, deliveredAt)
	if err != nil {
		t.Fatal(err)
	}
	want.Status, want.Version, want.UpdatedAt = domain.StatusDelivered, 4, deliveredAt
	requireHeader(t, ev, domain.AggregateOrder, "o-1", 4, domain.EventOrderDelivered, deliveredAt)
	requireEqual(t, "OrderDelivered", payloadAs[domain.OrderDelivered](t, ev), domain.OrderDelivered{OrderSnapshot: want})
	requireEqual(t, "order", o.Snapshot(), want)
	requireEqual(t, "levels after deliver", levelsOf(stock), shippedLevels)
}

func TestOrderCancelPayloads(t *testing.T) {
	t.Parallel()
	tests := []struct {
		from   string
		actor  domain.Actor
		reason string
	}{
		{from: "placed", actor: alice, reason: "found it cheaper"},
		{from: "placed", actor: admin, reason: ""},
		{from: "paid", actor: alice, reason: "wrong size"},
		{from: "paid", actor: admin, reason: runes("é", domain.MaxReasonLen)},
	}
	for _, tc := range tests {
		t.Run(tc.from+"/"+tc.actor.Subject, func(t *testing.T) {
			t.Parallel()
			o, stock := orderAt(t, tc.from)
			before, beforeLevels := o.Snapshot(), levelsOf(stock)
			at := t0.Add(time.Hour)

			evs, err := o.Cancel(tc.actor, tc.reason, stock, at)
			if err != nil {
				t.Fatal(err)
			}

			want := before
			want.Status, want.Version, want.UpdatedAt = domain.StatusCancelled, before.Version+1, at
			requireEqual(t, "order", o.Snapshot(), want)
			requireEqual(t, "event types", eventTypes(evs), []string{domain.EventOrderCancelled, domain.EventInventoryReleased, domain.EventInventoryReleased})
			requireHeader(t, evs[0], domain.AggregateOrder, "o-1", want.Version, domain.EventOrderCancelled, at)
			requireEqual(t, "OrderCancelled", payloadAs[domain.OrderCancelled](t, evs[0]),
				domain.OrderCancelled{OrderSnapshot: want, Reason: tc.reason, PreviousStatus: before.Status})
			qty := map[string]int64{"apple-1": 2, "banana.2": 3}
			initial := fullStock(t)
			for i, sku := range []string{"apple-1", "banana.2"} {
				prev := beforeLevels[sku]
				lv := domain.InventoryLevels{
					SKU:       sku,
					OnHand:    prev.OnHand,
					Reserved:  prev.Reserved - qty[sku],
					Available: prev.Available + qty[sku],
					Version:   prev.Version + 1,
				}
				requireHeader(t, evs[i+1], domain.AggregateInventory, sku, prev.Version+1, domain.EventInventoryReleased, at)
				requireEqual(t, "InventoryReleased of "+sku, payloadAs[domain.InventoryReleased](t, evs[i+1]),
					domain.InventoryReleased{InventoryLevels: lv, OrderID: "o-1", Quantity: qty[sku], Reason: domain.InventoryReasonCanceled})
				got, orig := stock[sku].Levels(), initial[sku].Levels()
				if got.OnHand != orig.OnHand || got.Reserved != 0 || got.Available != orig.Available {
					t.Errorf("levels of %s after cancel = %+v, want the stock before the order %+v", sku, got, orig)
				}
			}
		})
	}
}

func TestOrderCancelReason(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		reason string
		ok     bool
	}{
		{name: "empty", reason: "", ok: true},
		{name: "max length", reason: runes("x", domain.MaxReasonLen), ok: true},
		{name: "max length in runes", reason: runes("日", domain.MaxReasonLen), ok: true},
		{name: "too long", reason: runes("x", domain.MaxReasonLen+1)},
		{name: "invalid utf-8", reason: "bad \xff byte"},
		{name: "newline", reason: "line\nbreak"},
		{name: "nul", reason: "nul\x00"},
		{name: "escape", reason: "\x1b[31mred"},
		{name: "c1 control", reason: "next\u0085line"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o, stock := orderAt(t, "placed")
			before, beforeLevels := o.Snapshot(), levelsOf(stock)
			_, err := o.Cancel(alice, tc.reason, stock, t0.Add(time.Hour))
			if tc.ok {
				if err != nil {
					t.Fatalf("Cancel: %v", err)
				}
				return
			}
			requireInvalid(t, err, "reason")
			requireEqual(t, "order", o.Snapshot(), before)
			requireEqual(t, "levels", levelsOf(stock), beforeLevels)
		})
	}
}

func TestOrderMissingInventory(t *testing.T) {
	t.Parallel()
	for _, op := range []string{"ship", "cancel"} {
		t.Run(op, func(t *testing.T) {
			t.Parallel()
			o, stock := orderAt(t, "paid")
			delete(stock, "banana.2")
			_, err := applyOp(o, op, admin, stock, t0.Add(time.Hour))
			requireCode(t, err, domain.CodeConflict)
		})
	}
}

func TestOrderAuthorization(t *testing.T) {
	t.Parallel()
	nobody := domain.Actor{Role: domain.RoleCustomer}
	capitalAlice := domain.Actor{Subject: "Alice", Role: domain.RoleCustomer}
	tests := []struct {
		name  string
		from  string // "" places a new order for alice
		op    string
		actor domain.Actor
		ok    bool
	}{
		{name: "owner places", op: "place", actor: alice, ok: true},
		{name: "admin places for a customer", op: "place", actor: admin, ok: true},
		{name: "other customer places", op: "place", actor: bob},
		{name: "customer without subject places", op: "place", actor: nobody},
		{name: "subject differs in case places", op: "place", actor: capitalAlice},
		{name: "owner pays", from: "placed", op: "pay", actor: alice, ok: true},
		{name: "admin pays", from: "placed", op: "pay", actor: admin, ok: true},
		{name: "other customer pays", from: "placed", op: "pay", actor: bob},
		{name: "other customer pays a paid order", from: "paid", op: "pay", actor: bob},
		{name: "customer without subject pays", from: "placed", op: "pay", actor: nobody},
		{name: "owner cancels", from: "placed", op: "cancel", actor: alice, ok: true},
		{name: "owner cancels a paid order", from: "paid", op: "cancel", actor: alice, ok: true},
		{name: "admin cancels", from: "paid", op: "cancel", actor: admin, ok: true},
		{name: "other customer cancels", from: "placed", op: "cancel", actor: bob},
		{name: "other customer cancels a shipped order", from: "shipped", op: "cancel", actor: bob},
		{name: "owner ships", from: "paid", op: "ship", actor: alice},
		{name: "other customer ships", from: "paid", op: "ship", actor: bob},
		{name: "owner ships a placed order", from: "placed", op: "ship", actor: alice},
		{name: "admin ships", from: "paid", op: "ship", actor: admin, ok: true},
		{name: "owner delivers", from: "shipped", op: "deliver", actor: alice},
		{name: "owner delivers a placed order", from: "placed", op: "deliver", actor: alice},
		{name: "admin delivers", from: "shipped", op: "deliver", actor: admin, ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.op == "place" {
				stock := fullStock(t)
				before := levelsOf(stock)
				o, evs, err := domain.PlaceNewOrder("o-1", tc.actor, placeCmd("alice", line("apple-1", 1)), testCatalog(), stock, t0)
				if tc.ok {
					if err != nil {
						t.Fatalf("PlaceNewOrder: %v", err)
					}
					if o.UserID() != "alice" {
						t.Errorf("owner = %q, want alice", o.UserID())
					}
					return
				}
				requireCode(t, err, domain.CodeForbidden)
				if o != nil || evs != nil {
					t.Errorf("got an order and %d events with an error", len(evs))
				}
				requireEqual(t, "levels", levelsOf(stock), before)
				return
			}
			o, stock := orderAt(t, tc.from)
			before, beforeLevels := o.Snapshot(), levelsOf(stock)
			evs, err := applyOp(o, tc.op, tc.actor, stock, t0.Add(time.Hour))
			if tc.ok {
				if err != nil {
					t.Fatalf("%s: %v", tc.op, err)
				}
				return
			}
			requireCode(t, err, domain.CodeForbidden)
			if evs != nil {
				t.Errorf("%d events with an error", len(evs))
			}
			requireEqual(t, "order", o.Snapshot(), before)
			requireEqual(t, "levels", levelsOf(stock), beforeLevels)
		})
	}
}

func TestOrderSnapshotsAreCopies(t *testing.T) {
	t.Parallel()
	stock := fullStock(t)
	o, evs := mustPlace(t, "o-1", alice, placeCmd("alice", line("apple-1", 1), line("CHAIR_3", 2)), stock)
	want := o.Snapshot()

	payloadAs[domain.OrderPlaced](t, evs[0]).Items[0].Quantity = 999
	o.Snapshot().Items[0].PriceCents = 1
	o.Lines()[1].SKU = "tampered"
	requireEqual(t, "order after mutating copies", o.Snapshot(), want)
}

func TestRehydrateOrderRoundTrip(t *testing.T) {
	t.Parallel()
	for state := range pathTo {
		t.Run(state, func(t *testing.T) {
			t.Parallel()
			o, _ := orderAt(t, state)
			s := o.Snapshot()
			r := domain.RehydrateOrder(s)
			requireEqual(t, "round trip", r.Snapshot(), s)
			if r.ID() != o.ID() || r.UserID() != o.UserID() || r.Status() != o.Status() || r.Version() != o.Version() {
				t.Fatalf("accessors differ: %s %s %s v%d", r.ID(), r.UserID(), r.Status(), r.Version())
			}
			requireEqual(t, "SKUs", r.SKUs(), o.SKUs())
			s.Items[0].Quantity = 1000
			if r.Lines()[0].Quantity == 1000 {
				t.Fatal("RehydrateOrder kept a reference to the caller's items")
			}
		})
	}
}

func TestPlaceOrderSKUs(t *testing.T) {
	t.Parallel()
	cmd := placeCmd("alice", line("b", 1), line("a", 1), line("B", 1), line("_", 1), line("0", 1), line("a.", 1))
	items := slices.Clone(cmd.Items)
	requireEqual(t, "SKUs", cmd.SKUs(), []string{"0", "B", "_", "a", "a.", "b"})
	requireEqual(t, "items after SKUs", cmd.Items, items)
}
