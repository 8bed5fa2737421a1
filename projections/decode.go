package projections

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

// DecodePayload decodes the payload of e into v, reporting what cannot be
// decoded as a *PoisonError.
func DecodePayload(e Envelope, v any) error {
	if e.SchemaVersion < 0 || e.SchemaVersion > domain.CurrentSchemaVersion {
		return &PoisonError{Seq: e.Seq, Reason: fmt.Sprintf("%s: unknown schema version %d", e.EventType, e.SchemaVersion)}
	}
	if err := json.Unmarshal(e.Payload, v); err != nil {
		return &PoisonError{Seq: e.Seq, Reason: fmt.Sprintf("%s: decode payload: %v", e.EventType, err)}
	}
	return nil
}

// MissingField reports an event whose payload lacks the field that names its key.
func MissingField(e Envelope, field string) error {
	return &PoisonError{Seq: e.Seq, Reason: fmt.Sprintf("%s: payload has no %s", e.EventType, field)}
}

// OrderChange is what an order event means to an order summary model: the
// summary to keep under OrderID at Version, and the entry of the order in
// its user's list.
type OrderChange struct {
	Seq     uint64
	OrderID string
	UserID  string
	Version int64
	// View is the OrderView as JSON, the body GET /v1/orders/{id} answers.
	View []byte
	// Member is the order's entry in its user's list (OrderListMember).
	Member string
}

// DecodeOrderEvent decodes an order event; ok is false for the events an
// order summary model does not follow. Every order event embeds the order's
// snapshot at its top level; OrderCancelled's extra fields are not part of
// the summary.
func DecodeOrderEvent(e Envelope) (c OrderChange, ok bool, err error) {
	switch e.EventType {
	case domain.EventOrderPlaced, domain.EventOrderPaid, domain.EventOrderShipped,
		domain.EventOrderDelivered, domain.EventOrderCancelled:
	default:
		return OrderChange{}, false, nil
	}
	var snap domain.OrderSnapshot
	if err := DecodePayload(e, &snap); err != nil {
		return OrderChange{}, false, err
	}
	if snap.OrderID == "" {
		return OrderChange{}, false, MissingField(e, "order_id")
	}
	if snap.UserID == "" {
		return OrderChange{}, false, MissingField(e, "user_id")
	}
	view := OrderView{
		OrderID:    snap.OrderID,
		UserID:     snap.UserID,
		Status:     string(snap.Status),
		Items:      make([]OrderLineView, 0, len(snap.Items)),
		TotalCents: snap.TotalCents,
		Version:    snap.Version,
		PlacedAt:   snap.PlacedAt.UTC(),
		UpdatedAt:  snap.UpdatedAt.UTC(),
	}
	for _, it := range snap.Items {
		view.Items = append(view.Items, OrderLineView{SKU: it.SKU, Quantity: it.Quantity, PriceCents: it.PriceCents})
	}
	encoded, err := encodeOrderView(view)
	if err != nil {
		return OrderChange{}, false, &PoisonError{Seq: e.Seq, Reason: fmt.Sprintf("%s: encode view: %v", e.EventType, err)}
	}
	return OrderChange{Seq: e.Seq, OrderID: snap.OrderID, UserID: snap.UserID, Version: snap.Version,
		View: encoded, Member: OrderListMember(view.PlacedAt, snap.OrderID)}, true, nil
}

// InventoryChange is what an event means to a stock model: the levels to
// keep for Levels.SKU, or, with OnlyIfAbsent (a product's creation), zero
// stock at version 0 kept only when the SKU has no levels yet, so that it
// never hides a level event whatever the order in which they arrive.
type InventoryChange struct {
	Seq          uint64
	OnlyIfAbsent bool
	Levels       domain.InventoryLevels
}

// DecodeInventoryEvent decodes an event of the stock model; ok is false for
// the events it does not follow.
func DecodeInventoryEvent(e Envelope) (c InventoryChange, ok bool, err error) {
	switch e.EventType {
	case domain.EventProductCreated:
		var p domain.ProductSnapshot
		if err := DecodePayload(e, &p); err != nil {
			return InventoryChange{}, false, err
		}
		if p.SKU == "" {
			return InventoryChange{}, false, MissingField(e, "sku")
		}
		return InventoryChange{Seq: e.Seq, OnlyIfAbsent: true, Levels: domain.InventoryLevels{SKU: p.SKU}}, true, nil
	case domain.EventInventoryAdjusted, domain.EventInventoryReserved,
		domain.EventInventoryReleased, domain.EventInventoryShipped:
		// Every inventory event embeds the levels at its top level.
		var l domain.InventoryLevels
		if err := DecodePayload(e, &l); err != nil {
			return InventoryChange{}, false, err
		}
		if l.SKU == "" {
			return InventoryChange{}, false, MissingField(e, "sku")
		}
		return InventoryChange{Seq: e.Seq, Levels: l}, true, nil
	default:
		return InventoryChange{}, false, nil
	}
}

// An order list member is "<micro><nano>|<order_id>": <micro> is the 16 hex
// digits of placed_at in Unix microseconds with the sign bit flipped (so
// that the hex order is the time order, before 1970 too) and <nano> the 3
// decimal digits of the nanoseconds below the microsecond. Sorted bytewise,
// members are in placement order; every order model keeps its users' lists
// in this form, so cursors mean the same on every engine.
const (
	orderMemberTimeLen = 19
	// OrderMemberIDOffset is where the order id starts in a member.
	OrderMemberIDOffset = orderMemberTimeLen + 1
)

// OrderListMember is the list entry of an order placed at placedAt.
func OrderListMember(placedAt time.Time, orderID string) string {
	b := make([]byte, 0, OrderMemberIDOffset+len(orderID))
	// %016x of the flipped microseconds, then %03d of the nanoseconds below them.
	us := uint64(placedAt.UnixMicro()) ^ (1 << 63)
	const hexDigits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[us>>uint(shift)&0xf])
	}
	ns := placedAt.Nanosecond() % 1000
	b = append(b, byte('0'+ns/100), byte('0'+ns/10%10), byte('0'+ns%10), '|')
	return string(append(b, orderID...))
}

// EncodeOrderCursor makes the cursor that follows member, the last of a
// page: base64url, opaque to clients.
func EncodeOrderCursor(member string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(member))
}

// DecodeOrderCursor reads a cursor back into its member, checking the
// member's shape; ok is false for anything EncodeOrderCursor did not make.
func DecodeOrderCursor(cursor string) (member string, ok bool) {
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil || len(raw) <= OrderMemberIDOffset || raw[orderMemberTimeLen] != '|' {
		return "", false
	}
	for i, c := range raw[:orderMemberTimeLen] {
		digit := '0' <= c && c <= '9' || i < 16 && 'a' <= c && c <= 'f'
		if !digit {
			return "", false
		}
	}
	return string(raw), true
}
