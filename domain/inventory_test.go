package domain_test

import (
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

func TestNewInventory(t *testing.T) {
	t.Parallel()
	inv := domain.NewInventory("apple-1")
	requireEqual(t, "levels", inv.Levels(), domain.InventoryLevels{SKU: "apple-1"})
	if inv.SKU() != "apple-1" || inv.Version() != 0 || inv.Available() != 0 {
		t.Fatalf("accessors = %s v%d available %d", inv.SKU(), inv.Version(), inv.Available())
	}
}

func TestInventoryAdjust(t *testing.T) {
	t.Parallel()
	at := t0.Add(time.Hour)
	tests := []struct {
		name      string
		start     domain.InventoryLevels
		actor     domain.Actor
		delta     int64
		reason    string
		wantCode  domain.Code // "" on success
		wantField string
	}{
		{name: "count in", start: domain.InventoryLevels{OnHand: 0}, delta: 10},
		{name: "count out", start: domain.InventoryLevels{OnHand: 10, Reserved: 3, Version: 4}, delta: -5},
		{name: "count out down to reserved", start: domain.InventoryLevels{OnHand: 10, Reserved: 3, Version: 4}, delta: -7},
		{name: "count out all", start: domain.InventoryLevels{OnHand: 10, Version: 1}, delta: -10},
		{name: "count out below reserved", start: domain.InventoryLevels{OnHand: 10, Reserved: 3, Version: 4}, delta: -8, wantCode: domain.CodeInsufficientStock},
		{name: "count out below zero", start: domain.InventoryLevels{OnHand: 2, Version: 1}, delta: -3, wantCode: domain.CodeInsufficientStock},
		{name: "count out of empty stock", delta: -1, wantCode: domain.CodeInsufficientStock},
		{name: "largest count in", delta: domain.MaxAdjustment},
		{name: "largest count out", start: domain.InventoryLevels{OnHand: domain.MaxAdjustment}, delta: -domain.MaxAdjustment},
		{name: "delta 0", start: domain.InventoryLevels{OnHand: 5}, delta: 0, wantCode: domain.CodeInvalidRequest, wantField: "delta"},
		{name: "delta over limit", delta: domain.MaxAdjustment + 1, wantCode: domain.CodeInvalidRequest, wantField: "delta"},
		{name: "delta under limit", start: domain.InventoryLevels{OnHand: 2 * domain.MaxAdjustment}, delta: -domain.MaxAdjustment - 1, wantCode: domain.CodeInvalidRequest, wantField: "delta"},
		{name: "on hand at ceiling", start: domain.InventoryLevels{OnHand: domain.MaxOnHand - 5}, delta: 5},
		{name: "on hand over ceiling", start: domain.InventoryLevels{OnHand: domain.MaxOnHand - 5}, delta: 6, wantCode: domain.CodeInvalidRequest, wantField: "delta"},
		{name: "customer", actor: alice, delta: 5, wantCode: domain.CodeForbidden},
		{name: "actor without role", actor: domain.Actor{Subject: "admin-1"}, delta: 5, wantCode: domain.CodeForbidden},
		{name: "reason empty", delta: 5, reason: "", wantCode: domain.CodeInvalidRequest, wantField: "reason"},
		{name: "reason blank", delta: 5, reason: "  ", wantCode: domain.CodeInvalidRequest, wantField: "reason"},
		{name: "reason max length", delta: 5, reason: runes("r", domain.MaxReasonLen)},
		{name: "reason too long", delta: 5, reason: runes("r", domain.MaxReasonLen+1), wantCode: domain.CodeInvalidRequest, wantField: "reason"},
		{name: "reason invalid utf-8", delta: 5, reason: "\xff", wantCode: domain.CodeInvalidRequest, wantField: "reason"},
		{name: "reason control char", delta: 5, reason: "a\nb", wantCode: domain.CodeInvalidRequest, wantField: "reason"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.actor == (domain.Actor{}) {
				tc.actor = admin
			}
			if tc.reason == "" && tc.wantField != "reason" {
				tc.reason = "stock count"
			}
			tc.start.SKU = "apple-1"
			inv := domain.RehydrateInventory(tc.start)
			before := inv.Levels()

			ev, err := inv.Adjust(tc.actor, tc.delta, tc.reason, at)

			if tc.wantCode != "" {
				de := requireCode(t, err, tc.wantCode)
				if de.Field != tc.wantField {
					t.Errorf("field = %q, want %q", de.Field, tc.wantField)
				}
				if tc.wantCode == domain.CodeInsufficientStock && de.SKU != "apple-1" {
					t.Errorf("SKU = %q, want apple-1", de.SKU)
				}
				if ev.Type != "" {
					t.Errorf("got a %s event with an error", ev.Type)
				}
				requireEqual(t, "levels", inv.Levels(), before)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := domain.InventoryLevels{
				SKU:       "apple-1",
				OnHand:    before.OnHand + tc.delta,
				Reserved:  before.Reserved,
				Available: before.Available + tc.delta,
				Version:   before.Version + 1,
			}
			requireEqual(t, "levels", inv.Levels(), want)
			requireHeader(t, ev, domain.AggregateInventory, "apple-1", want.Version, domain.EventInventoryAdjusted, at)
			requireEqual(t, "InventoryAdjusted", payloadAs[domain.InventoryAdjusted](t, ev),
				domain.InventoryAdjusted{InventoryLevels: want, Delta: tc.delta, Reason: tc.reason})
		})
	}
}

func TestRehydrateInventory(t *testing.T) {
	t.Parallel()
	s := domain.InventoryLevels{SKU: "apple-1", OnHand: 9, Reserved: 4, Available: 12345, Version: 7}
	inv := domain.RehydrateInventory(s)
	want := s
	want.Available = 5
	requireEqual(t, "levels", inv.Levels(), want)
	if inv.Available() != 5 || inv.Version() != 7 || inv.SKU() != "apple-1" {
		t.Fatalf("accessors = %s v%d available %d", inv.SKU(), inv.Version(), inv.Available())
	}
	requireEqual(t, "round trip", domain.RehydrateInventory(inv.Levels()).Levels(), want)
}

// TestInventoryArithmetic follows one SKU through adjustments and the stock
// effects of orders: reserve on place, release on cancel, ship on ship.
func TestInventoryArithmetic(t *testing.T) {
	t.Parallel()
	stock := stockOf(t, map[string]int64{"apple-1": 10})
	inv := stock["apple-1"]
	check := func(step string, onHand, reserved, version int64) {
		t.Helper()
		want := domain.InventoryLevels{SKU: "apple-1", OnHand: onHand, Reserved: reserved, Available: onHand - reserved, Version: version}
		requireEqual(t, step, inv.Levels(), want)
		if inv.Available() != onHand-reserved {
			t.Fatalf("%s: Available() = %d, want %d", step, inv.Available(), onHand-reserved)
		}
	}
	check("initial", 10, 0, 1)

	o1, _ := mustPlace(t, "o-1", alice, placeCmd("alice", line("apple-1", 4)), stock)
	check("reserve 4", 10, 4, 2)
	o2, _ := mustPlace(t, "o-2", bob, placeCmd("bob", line("apple-1", 6)), stock)
	check("reserve 6", 10, 10, 3)

	_, _, err := domain.PlaceNewOrder("o-3", alice, placeCmd("alice", line("apple-1", 1)), testCatalog(), stock, t0)
	requireCode(t, err, domain.CodeInsufficientStock)
	check("nothing available", 10, 10, 3)
	_, err = inv.Adjust(admin, -1, "shrinkage", t0)
	requireCode(t, err, domain.CodeInsufficientStock)
	check("cannot count out reserved stock", 10, 10, 3)

	if _, err := o1.Cancel(alice, "", stock, t0); err != nil {
		t.Fatal(err)
	}
	check("release 4", 10, 6, 4)
	if _, err := inv.Adjust(admin, -4, "shrinkage", t0); err != nil {
		t.Fatal(err)
	}
	check("count out 4", 6, 6, 5)

	if _, err := o2.Pay(bob, t0); err != nil {
		t.Fatal(err)
	}
	check("pay changes no stock", 6, 6, 5)
	if _, err := o2.Ship(admin, stock, t0); err != nil {
		t.Fatal(err)
	}
	check("ship 6", 0, 0, 6)
	if _, err := o2.Deliver(admin, t0); err != nil {
		t.Fatal(err)
	}
	check("deliver changes no stock", 0, 0, 6)
	if _, err := inv.Adjust(admin, 3, "restock", t0); err != nil {
		t.Fatal(err)
	}
	check("count in 3", 3, 0, 7)
}

func TestCheckVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		expected *int64
		actual   int64
		ok       bool
	}{
		{name: "no expectation", expected: nil, actual: 7, ok: true},
		{name: "match", expected: ptr[int64](7), actual: 7, ok: true},
		{name: "match at zero", expected: ptr[int64](0), actual: 0, ok: true},
		{name: "stale", expected: ptr[int64](6), actual: 7},
		{name: "ahead", expected: ptr[int64](8), actual: 7},
		{name: "negative", expected: ptr[int64](-1), actual: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := domain.CheckVersion(tc.expected, tc.actual)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			de := requireCode(t, err, domain.CodeVersionMismatch)
			if de.Error() == "" {
				t.Error("empty error text")
			}
		})
	}
}
