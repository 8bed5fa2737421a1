package domain_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

var (
	t0    = time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)
	admin = domain.Actor{Subject: "admin-1", Role: domain.RoleAdmin}
	alice = domain.Actor{Subject: "alice", Role: domain.RoleCustomer}
	bob   = domain.Actor{Subject: "bob", Role: domain.RoleCustomer}
)

// testCatalog has SKUs whose byte order ("CHAIR_3" < "apple-1" < "banana.2" <
// "free-4") differs from the order the tests list them in, and prices that make
// every total distinguishable.
func testCatalog() map[string]domain.CatalogEntry {
	return map[string]domain.CatalogEntry{
		"apple-1":  {SKU: "apple-1", Name: "Apple", Category: "fruit", PriceCents: 125},
		"banana.2": {SKU: "banana.2", Name: "Banana", Category: "fruit", PriceCents: 40},
		"CHAIR_3":  {SKU: "CHAIR_3", Name: "Chair", Category: "furniture", PriceCents: 4999},
		"free-4":   {SKU: "free-4", Name: "Sticker", Category: "gifts", PriceCents: 0},
	}
}

// stockOf returns inventories counted in by an admin; a SKU with zero stock
// stays at version 0.
func stockOf(t testing.TB, onHand map[string]int64) map[string]*domain.Inventory {
	t.Helper()
	stock := make(map[string]*domain.Inventory, len(onHand))
	for sku, n := range onHand {
		inv := domain.NewInventory(sku)
		if n > 0 {
			if _, err := inv.Adjust(admin, n, "initial count", t0); err != nil {
				t.Fatalf("Adjust(%s, %d): %v", sku, n, err)
			}
		}
		stock[sku] = inv
	}
	return stock
}

func fullStock(t testing.TB) map[string]*domain.Inventory {
	t.Helper()
	return stockOf(t, map[string]int64{"apple-1": 10, "banana.2": 20, "CHAIR_3": 5, "free-4": 3})
}

func levelsOf(stock map[string]*domain.Inventory) map[string]domain.InventoryLevels {
	out := make(map[string]domain.InventoryLevels, len(stock))
	for sku, inv := range stock {
		if inv != nil {
			out[sku] = inv.Levels()
		}
	}
	return out
}

func line(sku string, qty int64) domain.OrderLineRequest {
	return domain.OrderLineRequest{SKU: sku, Quantity: qty}
}

func placeCmd(userID string, items ...domain.OrderLineRequest) domain.PlaceOrder {
	return domain.PlaceOrder{UserID: userID, Items: items, PaymentMethod: "card", PaymentToken: "tok_visa_4242"}
}

func mustPlace(t testing.TB, id string, actor domain.Actor, cmd domain.PlaceOrder, stock map[string]*domain.Inventory) (*domain.Order, []domain.Event) {
	t.Helper()
	o, evs, err := domain.PlaceNewOrder(id, actor, cmd, testCatalog(), stock, t0)
	if err != nil {
		t.Fatalf("PlaceNewOrder(%s): %v", id, err)
	}
	return o, evs
}

// requireCode fails unless err is a *domain.Error with the wanted code and
// returns it for further checks.
func requireCode(t testing.TB, err error, want domain.Code) *domain.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want code %q", want)
	}
	var de *domain.Error
	if !errors.As(err, &de) {
		t.Fatalf("err = %v (%T), want a *domain.Error with code %q", err, err, want)
	}
	if de.Code != want {
		t.Fatalf("code = %q (%v), want %q", de.Code, err, want)
	}
	return de
}

// requireInvalid fails unless err is invalid_request naming field.
func requireInvalid(t testing.TB, err error, field string) *domain.Error {
	t.Helper()
	de := requireCode(t, err, domain.CodeInvalidRequest)
	if de.Field != field {
		t.Fatalf("field = %q (%v), want %q", de.Field, err, field)
	}
	return de
}

func requireEqual(t testing.TB, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func payloadAs[T any](t testing.TB, ev domain.Event) T {
	t.Helper()
	p, ok := ev.Payload.(T)
	if !ok {
		var zero T
		t.Fatalf("payload of %s v%d is %T, want %T", ev.Type, ev.AggregateVersion, ev.Payload, zero)
	}
	return p
}

func requireHeader(t testing.TB, ev domain.Event, aggType, aggID string, version int64, typ string, at time.Time) {
	t.Helper()
	if ev.AggregateType != aggType || ev.AggregateID != aggID || ev.AggregateVersion != version || ev.Type != typ {
		t.Fatalf("event = %s %s/%s v%d, want %s %s/%s v%d",
			ev.Type, ev.AggregateType, ev.AggregateID, ev.AggregateVersion, typ, aggType, aggID, version)
	}
	if ev.SchemaVersion != domain.CurrentSchemaVersion {
		t.Fatalf("%s schema version = %d, want %d", ev.Type, ev.SchemaVersion, domain.CurrentSchemaVersion)
	}
	if !ev.OccurredAt.Equal(at) || ev.OccurredAt.Location() != time.UTC {
		t.Fatalf("%s occurred at %v, want %v in UTC", ev.Type, ev.OccurredAt, at)
	}
}

func eventTypes(evs []domain.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func runes(r string, n int) string { return strings.Repeat(r, n) }
