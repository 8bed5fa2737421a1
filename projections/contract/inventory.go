package contract

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// InventoryUnderTest is a stock adapter.
type InventoryUnderTest interface {
	projections.Applier
	projections.InventoryReader
	projections.VersionReader
	projections.StockLevelReader
}

// Inventory runs the stock suite. newStore returns an empty store of its own,
// cleaned up by t.Cleanup; subtests run in parallel.
func Inventory(t *testing.T, newStore func(t *testing.T) InventoryUnderTest) {
	t.Run("a created product has zero stock", func(t *testing.T) {
		t.Parallel()
		testInventoryCreated(t, newStore(t))
	})
	t.Run("levels follow the stock events", func(t *testing.T) {
		t.Parallel()
		testInventoryLevels(t, newStore(t))
	})
	t.Run("levels of many SKUs at once", func(t *testing.T) {
		t.Parallel()
		testInventoryLevelsBatch(t, newStore(t))
	})
	t.Run("product created never resets stock", func(t *testing.T) {
		t.Parallel()
		testInventoryCreatedLate(t, newStore(t))
	})
	t.Run("redelivery and replay change nothing", func(t *testing.T) {
		t.Parallel()
		testInventoryRedelivery(t, newStore(t))
	})
	t.Run("events at or below the applied version are ignored", func(t *testing.T) {
		t.Parallel()
		testInventoryOutOfDate(t, newStore(t))
	})
	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		testInventoryNotFound(t, newStore(t))
	})
	t.Run("poison payload", func(t *testing.T) {
		t.Parallel()
		testInventoryPoison(t, newStore(t))
	})
}

// stockStep is one stock event and the view after it.
type stockStep struct {
	event projections.Envelope
	want  projections.InventoryView
}

// stockHistory is the life of sku's stock: created, counted in, reserved by
// two orders, one released on cancel, the other shipped, counted out.
func stockHistory(l *streamLog, sku string) []stockStep {
	level := func(onHand, reserved, version int64) projections.InventoryView {
		return projections.InventoryView{SKU: sku, OnHand: onHand, Reserved: reserved, Available: onHand - reserved, Version: version}
	}
	return []stockStep{
		{l.productCreated(sku), level(0, 0, 0)},
		{l.stockEvent(domain.EventInventoryAdjusted, level(10, 0, 1), 10), level(10, 0, 1)},
		{l.stockEvent(domain.EventInventoryReserved, level(10, 3, 2), 3), level(10, 3, 2)},
		{l.stockEvent(domain.EventInventoryReserved, level(10, 5, 3), 2), level(10, 5, 3)},
		{l.stockEvent(domain.EventInventoryReleased, level(10, 3, 4), 2), level(10, 3, 4)},
		{l.stockEvent(domain.EventInventoryShipped, level(7, 0, 5), 3), level(7, 0, 5)},
		{l.stockEvent(domain.EventInventoryAdjusted, level(5, 0, 6), -2), level(5, 0, 6)},
	}
}

func testInventoryCreated(t *testing.T, s InventoryUnderTest) {
	l := newStreamLog(t)
	applyOK(t, s, []projections.Envelope{l.productCreated("BOOK-1")})
	checkInventory(t, s, projections.InventoryView{SKU: "BOOK-1"})
	checkStockVersion(t, s, "BOOK-1", 0)
}

func testInventoryLevels(t *testing.T, s InventoryUnderTest) {
	l := newStreamLog(t)
	// One event per batch for one SKU, the whole history in one batch for
	// another: the same levels.
	for _, step := range stockHistory(l, "BOOK-1") {
		applyOK(t, s, []projections.Envelope{step.event})
		checkInventory(t, s, step.want)
		checkStockVersion(t, s, "BOOK-1", step.want.Version)
	}
	other := stockHistory(l, "MUG-7")
	var batch []projections.Envelope
	for _, step := range other {
		batch = append(batch, step.event)
	}
	applyOK(t, s, batch)
	checkInventory(t, s, other[len(other)-1].want)
	checkInventory(t, s, projections.InventoryView{SKU: "BOOK-1", OnHand: 5, Available: 5, Version: 6})
}

func testInventoryLevelsBatch(t *testing.T, s InventoryUnderTest) {
	l := newStreamLog(t)
	if got, err := s.Levels(t.Context(), nil); err != nil || len(got) != 0 {
		t.Errorf("Levels(nil) = %v, %v; want none", got, err)
	}
	var batch []projections.Envelope
	for _, step := range stockHistory(l, "BOOK-1") {
		batch = append(batch, step.event)
	}
	batch = append(batch, l.productCreated("MUG-7"))
	applyOK(t, s, batch)
	// In the order asked, a SKU twice, unknown SKUs at zero.
	skus := []string{"NOPE", "BOOK-1", "MUG-7", "BOOK-1"}
	got, err := s.Levels(t.Context(), skus)
	if err != nil {
		t.Fatalf("Levels(%v): %v", skus, err)
	}
	if want := []int64{0, 5, 0, 5}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Levels(%v) = %v; want %v", skus, got, want)
	}
	for sku, want := range map[string]int64{"BOOK-1": 5, "MUG-7": 0, "NOPE": 0} {
		if got, err := s.Levels(t.Context(), []string{sku}); err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("Levels([%s]) = %v, %v; want [%d]", sku, got, err, want)
		}
	}
}

func testInventoryCreatedLate(t *testing.T, s InventoryUnderTest) {
	l := newStreamLog(t)
	history := stockHistory(l, "BOOK-1")
	for _, step := range history {
		applyOK(t, s, []projections.Envelope{step.event})
	}
	want := history[len(history)-1].want
	// ProductCreated again, at a higher sequence: stock exists, it stays.
	applyOK(t, s, []projections.Envelope{l.productCreated("BOOK-1")})
	checkInventory(t, s, want)

	// A stream read from the middle: levels first, then the product's
	// creation (it travels on another subject, so it can come later).
	level := projections.InventoryView{SKU: "MUG-7", OnHand: 4, Reserved: 1, Available: 3, Version: 2}
	applyOK(t, s, []projections.Envelope{l.stockEvent(domain.EventInventoryReserved, level, 1)})
	checkInventory(t, s, level)
	applyOK(t, s, []projections.Envelope{l.productCreated("MUG-7")})
	checkInventory(t, s, level)
	checkStockVersion(t, s, "MUG-7", 2)
}

func testInventoryRedelivery(t *testing.T, s InventoryUnderTest) {
	l := newStreamLog(t)
	skus := []string{"BOOK-1", "MUG-7", "PEN-3"}
	for _, sku := range skus {
		stockHistory(l, sku)
	}
	half := len(l.all) / 2
	applyOK(t, s, l.all[:half])
	applyOK(t, s, l.all[half:])
	before := inventoryModelState(t, s, skus)

	applyOK(t, s, l.all[half:])
	applyOK(t, s, l.all)
	for _, e := range l.all {
		applyOK(t, s, []projections.Envelope{e})
	}
	if after := inventoryModelState(t, s, skus); after != before {
		t.Errorf("the model changed on redelivery and replay\nbefore: %s\nafter:  %s", before, after)
	}
}

// testInventoryOutOfDate applies part of a history, then its events again in
// other orders, under their own sequences and re-published under new, higher
// ones: an event of a version at or below the applied one changes nothing,
// whatever its sequence, down to the bytes.
func testInventoryOutOfDate(t *testing.T, s InventoryUnderTest) {
	l := newStreamLog(t)
	history := stockHistory(l, "BOOK-1")[:4]
	for _, step := range history {
		applyOK(t, s, []projections.Envelope{step.event})
	}
	want := history[len(history)-1].want
	before := inventoryModelState(t, s, []string{"BOOK-1"})

	for _, batch := range [][]projections.Envelope{
		{history[1].event},
		{history[2].event, history[1].event},
		{l.republish(history[1].event)},
		{l.republish(history[2].event), l.republish(history[0].event)},
		{l.republish(history[3].event)}, // the same version: the same event
	} {
		applyOK(t, s, batch)
	}
	checkInventory(t, s, want)
	checkStockVersion(t, s, "BOOK-1", want.Version)
	if after := inventoryModelState(t, s, []string{"BOOK-1"}); after != before {
		t.Errorf("older events changed the model\nbefore: %s\nafter:  %s", before, after)
	}
}

func testInventoryNotFound(t *testing.T, s InventoryUnderTest) {
	l := newStreamLog(t)
	stockHistory(l, "BOOK-1")
	applyOK(t, s, l.all)
	if _, err := s.Inventory(t.Context(), "NOPE-0"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Inventory(unknown) error = %v, want ErrNotFound", err)
	}
	checkStockVersion(t, s, "NOPE-0", 0)
}

func testInventoryPoison(t *testing.T, s InventoryUnderTest) {
	l := newStreamLog(t)
	first := l.stockEvent(domain.EventInventoryAdjusted, projections.InventoryView{SKU: "BOOK-1", OnHand: 5, Available: 5, Version: 1}, 5)
	bad := l.raw(domain.AggregateInventory, "BOOK-1", 2, domain.EventInventoryReserved, `{"sku": "BOOK-1", "on_hand": "five"}`)
	after := l.stockEvent(domain.EventInventoryAdjusted, projections.InventoryView{SKU: "MUG-7", OnHand: 2, Available: 2, Version: 1}, 2)

	checkPoison(t, s, []projections.Envelope{first, bad, after}, bad.Seq)
	if _, err := s.Inventory(t.Context(), "MUG-7"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("the event after the poison one was applied: Inventory(MUG-7) error = %v, want ErrNotFound", err)
	}
	applyOK(t, s, []projections.Envelope{first, after})
	checkInventory(t, s, projections.InventoryView{SKU: "MUG-7", OnHand: 2, Available: 2, Version: 1})

	for name, e := range map[string]projections.Envelope{
		"not JSON":                 l.raw(domain.AggregateInventory, "BOOK-1", 2, domain.EventInventoryShipped, `{`),
		"no sku":                   l.raw(domain.AggregateInventory, "BOOK-1", 2, domain.EventInventoryReleased, `{"on_hand": 1, "version": 2}`),
		"product created, no JSON": l.raw(domain.AggregateProduct, "PEN-3", 1, domain.EventProductCreated, `<product/>`),
		"product created, no sku":  l.raw(domain.AggregateProduct, "PEN-3", 1, domain.EventProductCreated, `{"name": "Pen"}`),
		"unknown schema": withSchema(l.stockEvent(domain.EventInventoryAdjusted,
			projections.InventoryView{SKU: "BOOK-1", OnHand: 6, Available: 6, Version: 2}, 1), domain.CurrentSchemaVersion+1),
	} {
		t.Run(name, func(t *testing.T) { checkPoison(t, s, []projections.Envelope{e}, e.Seq) })
	}

	applyOK(t, s, []projections.Envelope{
		l.raw(domain.AggregateOrder, orderIDA, 1, domain.EventOrderPlaced, `not json`),
		l.raw(domain.AggregateProduct, "BOOK-1", 2, domain.EventProductUpdated, `not json`),
		l.raw("loyalty", "u1", 1, "LoyaltyPointsEarned", `not json`),
	})
	checkInventory(t, s, projections.InventoryView{SKU: "BOOK-1", OnHand: 5, Available: 5, Version: 1})
}

// productCreated appends the creation of a product: zero stock.
func (l *streamLog) productCreated(sku string) projections.Envelope {
	at := orderT0.Add(-24 * time.Hour)
	return l.append(domain.AggregateProduct, sku, 1, domain.EventProductCreated, domain.ProductCreated{
		ProductSnapshot: domain.ProductSnapshot{
			SKU: sku, Name: "Product " + sku, Description: "A product to count.", Category: "misc",
			PriceCents: 1000, Attributes: map[string]string{"color": "blue"}, Version: 1, CreatedAt: at, UpdatedAt: at,
		},
	})
}

// stockEvent appends an inventory event of type typ that leaves the levels
// v; quantity is its delta or reserved, released or shipped quantity.
func (l *streamLog) stockEvent(typ string, v projections.InventoryView, quantity int64) projections.Envelope {
	levels := domain.InventoryLevels{SKU: v.SKU, OnHand: v.OnHand, Reserved: v.Reserved, Available: v.Available, Version: v.Version}
	var payload any
	switch typ {
	case domain.EventInventoryAdjusted:
		payload = domain.InventoryAdjusted{InventoryLevels: levels, Delta: quantity, Reason: "stock count"}
	case domain.EventInventoryReserved:
		payload = domain.InventoryReserved{InventoryLevels: levels, OrderID: orderIDA, Quantity: quantity}
	case domain.EventInventoryReleased:
		payload = domain.InventoryReleased{InventoryLevels: levels, OrderID: orderIDA, Quantity: quantity, Reason: domain.InventoryReasonCanceled}
	case domain.EventInventoryShipped:
		payload = domain.InventoryShipped{InventoryLevels: levels, OrderID: orderIDB, Quantity: quantity}
	default:
		l.t.Fatalf("stockEvent: %s is not an inventory event", typ)
	}
	return l.append(domain.AggregateInventory, v.SKU, v.Version, typ, payload)
}

func checkInventory(t *testing.T, s InventoryUnderTest, want projections.InventoryView) {
	t.Helper()
	got, err := s.Inventory(t.Context(), want.SKU)
	if err != nil {
		t.Fatalf("Inventory(%s): %v", want.SKU, err)
	}
	if got != want {
		t.Errorf("Inventory(%s) = %+v, want %+v", want.SKU, got, want)
	}
}

func checkStockVersion(t *testing.T, s InventoryUnderTest, sku string, want int64) {
	t.Helper()
	got, err := s.AppliedVersion(t.Context(), domain.AggregateInventory, sku)
	if err != nil || got != want {
		t.Errorf("AppliedVersion(inventory, %s) = %d, %v; want %d", sku, got, err, want)
	}
}

func inventoryModelState(t *testing.T, s InventoryUnderTest, skus []string) string {
	t.Helper()
	var b strings.Builder
	for _, sku := range skus {
		v, err := s.Inventory(t.Context(), sku)
		if err != nil {
			t.Fatalf("Inventory(%s): %v", sku, err)
		}
		version, err := s.AppliedVersion(t.Context(), domain.AggregateInventory, sku)
		if err != nil {
			t.Fatalf("AppliedVersion(%s): %v", sku, err)
		}
		fmt.Fprintf(&b, "%+v applied v%d\n", v, version)
	}
	return b.String()
}
