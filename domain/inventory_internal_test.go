package domain

import (
	"testing"
	"time"
)

// The guards of reserve, release and ship cannot be reached through the
// order commands, which check availability first; they are tested here.
func TestInventoryStockGuards(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		op       func(*Inventory) (Event, error)
		wantCode Code
	}{
		{name: "reserve zero", op: func(i *Inventory) (Event, error) { return i.reserve("o", 0, at) }, wantCode: CodeInvalidRequest},
		{name: "reserve negative", op: func(i *Inventory) (Event, error) { return i.reserve("o", -1, at) }, wantCode: CodeInvalidRequest},
		{name: "reserve more than available", op: func(i *Inventory) (Event, error) { return i.reserve("o", 7, at) }, wantCode: CodeInsufficientStock},
		{name: "reserve all available", op: func(i *Inventory) (Event, error) { return i.reserve("o", 6, at) }},
		{name: "release zero", op: func(i *Inventory) (Event, error) { return i.release("o", 0, "r", at) }, wantCode: CodeConflict},
		{name: "release more than reserved", op: func(i *Inventory) (Event, error) { return i.release("o", 5, "r", at) }, wantCode: CodeConflict},
		{name: "release all reserved", op: func(i *Inventory) (Event, error) { return i.release("o", 4, "r", at) }},
		{name: "ship zero", op: func(i *Inventory) (Event, error) { return i.ship("o", 0, at) }, wantCode: CodeConflict},
		{name: "ship more than reserved", op: func(i *Inventory) (Event, error) { return i.ship("o", 5, at) }, wantCode: CodeConflict},
		{name: "ship all reserved", op: func(i *Inventory) (Event, error) { return i.ship("o", 4, at) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inv := RehydrateInventory(InventoryLevels{SKU: "s", OnHand: 10, Reserved: 4, Version: 3})
			before := inv.Levels()
			ev, err := tc.op(inv)
			if tc.wantCode == "" {
				if err != nil {
					t.Fatal(err)
				}
				if ev.AggregateVersion != 4 || inv.Version() != 4 {
					t.Fatalf("version = %d (event %d), want 4", inv.Version(), ev.AggregateVersion)
				}
				lv := inv.Levels()
				if lv.OnHand < 0 || lv.Reserved < 0 || lv.Available < 0 {
					t.Fatalf("levels went negative: %+v", lv)
				}
				return
			}
			if got := ErrorCode(err); got != tc.wantCode {
				t.Fatalf("code = %q (%v), want %q", got, err, tc.wantCode)
			}
			if inv.Levels() != before {
				t.Fatalf("levels changed on error: %+v, want %+v", inv.Levels(), before)
			}
		})
	}
}
