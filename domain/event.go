package domain

import "time"

// Aggregate types, as they appear in the outbox and in stream subjects.
const (
	AggregateOrder     = "order"
	AggregateProduct   = "product"
	AggregateInventory = "inventory"
)

// Event types. Each names a fact that happened; the payload types below carry
// the state after it so that a projection needs nothing else.
const (
	EventProductCreated     = "ProductCreated"
	EventProductUpdated     = "ProductUpdated"
	EventInventoryAdjusted  = "InventoryAdjusted"
	EventInventoryReserved  = "InventoryReserved"
	EventInventoryReleased  = "InventoryReleased"
	EventInventoryShipped   = "InventoryShipped"
	EventOrderPlaced        = "OrderPlaced"
	EventOrderPaid          = "OrderPaid"
	EventOrderShipped       = "OrderShipped"
	EventOrderDelivered     = "OrderDelivered"
	EventOrderCancelled     = "OrderCancelled"
	CurrentSchemaVersion    = 1
	InventoryReasonCanceled = "order_cancelled"
)

// EventTypes lists every event type the domain emits.
var EventTypes = []string{
	EventProductCreated, EventProductUpdated,
	EventInventoryAdjusted, EventInventoryReserved, EventInventoryReleased, EventInventoryShipped,
	EventOrderPlaced, EventOrderPaid, EventOrderShipped, EventOrderDelivered, EventOrderCancelled,
}

// eventAggregates maps each event type to the aggregate type that emits it.
var eventAggregates = map[string]string{
	EventProductCreated: AggregateProduct, EventProductUpdated: AggregateProduct,
	EventInventoryAdjusted: AggregateInventory, EventInventoryReserved: AggregateInventory,
	EventInventoryReleased: AggregateInventory, EventInventoryShipped: AggregateInventory,
	EventOrderPlaced: AggregateOrder, EventOrderPaid: AggregateOrder, EventOrderShipped: AggregateOrder,
	EventOrderDelivered: AggregateOrder, EventOrderCancelled: AggregateOrder,
}

// AggregateOf returns the aggregate type whose events include eventType;
// false for an unknown event type.
func AggregateOf(eventType string) (string, bool) {
	a, ok := eventAggregates[eventType]
	return a, ok
}

// Event is a domain event as the aggregate emits it. The store gives it an id
// and writes it to the outbox in the same transaction as the state change.
type Event struct {
	AggregateType    string
	AggregateID      string
	AggregateVersion int64
	Type             string
	SchemaVersion    int
	OccurredAt       time.Time
	Payload          any
}

func newEvent(aggType, aggID string, version int64, typ string, at time.Time, payload any) Event {
	return Event{
		AggregateType:    aggType,
		AggregateID:      aggID,
		AggregateVersion: version,
		Type:             typ,
		SchemaVersion:    CurrentSchemaVersion,
		OccurredAt:       at.UTC(),
		Payload:          payload,
	}
}

// ProductSnapshot is a product's full catalog state; ProductCreated and
// ProductUpdated carry it.
type ProductSnapshot struct {
	SKU         string            `json:"sku"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Category    string            `json:"category"`
	PriceCents  int64             `json:"price_cents"`
	Attributes  map[string]string `json:"attributes"`
	Version     int64             `json:"version"`
	CreatedAt   time.Time         `json:"created_at"`
	UpdatedAt   time.Time         `json:"updated_at"`
}

// ProductCreated: a product entered the catalog (with zero stock).
type ProductCreated struct {
	ProductSnapshot
}

// ProductUpdated: catalog data changed; Changed lists the fields that did.
type ProductUpdated struct {
	ProductSnapshot
	Changed []string `json:"changed"`
}

// InventoryLevels is the stock of one SKU after an inventory event.
type InventoryLevels struct {
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
	Version   int64  `json:"version"`
}

// InventoryAdjusted: stock was counted in or out by an admin.
type InventoryAdjusted struct {
	InventoryLevels
	Delta  int64  `json:"delta"`
	Reason string `json:"reason"`
}

// InventoryReserved: an order reserved units.
type InventoryReserved struct {
	InventoryLevels
	OrderID  string `json:"order_id"`
	Quantity int64  `json:"quantity"`
}

// InventoryReleased: a reservation was given back (the order was cancelled).
type InventoryReleased struct {
	InventoryLevels
	OrderID  string `json:"order_id"`
	Quantity int64  `json:"quantity"`
	Reason   string `json:"reason"`
}

// InventoryShipped: reserved units left the warehouse with a shipped order, so
// on_hand and reserved both fell by Quantity and available is unchanged.
type InventoryShipped struct {
	InventoryLevels
	OrderID  string `json:"order_id"`
	Quantity int64  `json:"quantity"`
}

// OrderLine is one line of an order with the catalog data at placement.
type OrderLine struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	Category   string `json:"category"`
	Quantity   int64  `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
}

// OrderSnapshot is an order's full state; every order event carries it.
type OrderSnapshot struct {
	OrderID       string      `json:"order_id"`
	UserID        string      `json:"user_id"`
	Status        OrderStatus `json:"status"`
	Items         []OrderLine `json:"items"`
	TotalCents    int64       `json:"total_cents"`
	PaymentMethod string      `json:"payment_method"`
	Version       int64       `json:"version"`
	PlacedAt      time.Time   `json:"placed_at"`
	UpdatedAt     time.Time   `json:"updated_at"`
}

// OrderPlaced: a customer placed an order; its stock is reserved.
type OrderPlaced struct{ OrderSnapshot }

// OrderPaid: the order was paid.
type OrderPaid struct{ OrderSnapshot }

// OrderShipped: the order left the warehouse.
type OrderShipped struct{ OrderSnapshot }

// OrderDelivered: the order reached the customer.
type OrderDelivered struct{ OrderSnapshot }

// OrderCancelled: the order was cancelled and its reservations released.
type OrderCancelled struct {
	OrderSnapshot
	Reason         string      `json:"reason"`
	PreviousStatus OrderStatus `json:"previous_status"`
}
