package domain

import "time"

// Inventory is the stock of one SKU. Its invariants: on_hand ≥ 0,
// reserved ≥ 0 and available = on_hand − reserved ≥ 0, after every command.
type Inventory struct {
	s InventoryLevels
}

// NewInventory returns the empty stock record created with a product, at
// version 0: it exists but no inventory event has happened yet.
func NewInventory(sku string) *Inventory {
	return &Inventory{s: InventoryLevels{SKU: sku}}
}

// RehydrateInventory rebuilds stock from stored state.
func RehydrateInventory(s InventoryLevels) *Inventory {
	s.Available = s.OnHand - s.Reserved
	return &Inventory{s: s}
}

// Levels returns the current stock levels.
func (i *Inventory) Levels() InventoryLevels {
	s := i.s
	s.Available = s.OnHand - s.Reserved
	return s
}

// SKU returns the stock keeping unit.
func (i *Inventory) SKU() string { return i.s.SKU }

// Version returns the inventory version.
func (i *Inventory) Version() int64 { return i.s.Version }

// Available returns on_hand − reserved.
func (i *Inventory) Available() int64 { return i.s.OnHand - i.s.Reserved }

func (i *Inventory) bump() InventoryLevels {
	i.s.Version++
	return i.Levels()
}

// AuthorizeAdjust checks that actor may count stock in or out.
func AuthorizeAdjust(actor Actor) error { return requireAdmin(actor, "adjust inventory") }

// Adjust counts stock in (delta > 0) or out (delta < 0). Counting out more
// than is unreserved fails with insufficient_stock and changes nothing.
func (i *Inventory) Adjust(actor Actor, delta int64, reason string, now time.Time) (Event, error) {
	if err := AuthorizeAdjust(actor); err != nil {
		return Event{}, err
	}
	if delta == 0 || delta > MaxAdjustment || delta < -MaxAdjustment {
		return Event{}, invalid("delta", "must be a non-zero integer between -%d and %d", int64(MaxAdjustment), int64(MaxAdjustment))
	}
	if err := checkText("reason", reason, 1, MaxReasonLen, false); err != nil {
		return Event{}, err
	}
	next := i.s.OnHand + delta
	if next < i.s.Reserved {
		return Event{}, &Error{Code: CodeInsufficientStock, SKU: i.s.SKU,
			Message: "adjustment would leave on_hand below reserved"}
	}
	if next > MaxOnHand {
		return Event{}, invalid("delta", "on_hand would exceed %d", int64(MaxOnHand))
	}
	i.s.OnHand = next
	lv := i.bump()
	return newEvent(AggregateInventory, i.s.SKU, lv.Version, EventInventoryAdjusted, now,
		InventoryAdjusted{InventoryLevels: lv, Delta: delta, Reason: reason}), nil
}

func (i *Inventory) reserve(orderID string, qty int64, now time.Time) (Event, error) {
	if qty <= 0 {
		return Event{}, invalid("quantity", "must be positive")
	}
	if i.Available() < qty {
		return Event{}, &Error{Code: CodeInsufficientStock, SKU: i.s.SKU,
			Message: "not enough stock for sku " + i.s.SKU}
	}
	i.s.Reserved += qty
	lv := i.bump()
	return newEvent(AggregateInventory, i.s.SKU, lv.Version, EventInventoryReserved, now,
		InventoryReserved{InventoryLevels: lv, OrderID: orderID, Quantity: qty}), nil
}

func (i *Inventory) release(orderID string, qty int64, reason string, now time.Time) (Event, error) {
	if qty <= 0 || qty > i.s.Reserved {
		return Event{}, Errorf(CodeConflict, "cannot release %d units of %s: %d reserved", qty, i.s.SKU, i.s.Reserved)
	}
	i.s.Reserved -= qty
	lv := i.bump()
	return newEvent(AggregateInventory, i.s.SKU, lv.Version, EventInventoryReleased, now,
		InventoryReleased{InventoryLevels: lv, OrderID: orderID, Quantity: qty, Reason: reason}), nil
}

func (i *Inventory) ship(orderID string, qty int64, now time.Time) (Event, error) {
	if qty <= 0 || qty > i.s.Reserved || qty > i.s.OnHand {
		return Event{}, Errorf(CodeConflict, "cannot ship %d units of %s: %d reserved, %d on hand", qty, i.s.SKU, i.s.Reserved, i.s.OnHand)
	}
	i.s.Reserved -= qty
	i.s.OnHand -= qty
	lv := i.bump()
	return newEvent(AggregateInventory, i.s.SKU, lv.Version, EventInventoryShipped, now,
		InventoryShipped{InventoryLevels: lv, OrderID: orderID, Quantity: qty}), nil
}
