package projections

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
)

// List members sort, as bytes, like (placed_at, order_id), before 1970 and
// below the microsecond too.
func TestListMemberOrder(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	ordered := []string{
		OrderListMember(time.Date(1969, 12, 31, 23, 59, 59, 999999000, time.UTC), "z"),
		OrderListMember(time.Unix(0, 0), "a"),
		OrderListMember(base, "a"),
		OrderListMember(base, "b"),
		OrderListMember(base.Add(time.Nanosecond), "a"),
		OrderListMember(base.Add(time.Microsecond-time.Nanosecond), "a"),
		OrderListMember(base.Add(time.Microsecond), "a"),
		OrderListMember(base.Add(time.Hour), "a"),
		OrderListMember(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), "a"),
	}
	if !slices.IsSorted(ordered) {
		t.Errorf("members are not in time order: %q", ordered)
	}
	for _, m := range ordered {
		got, ok := DecodeOrderCursor(EncodeOrderCursor(m))
		if !ok || got != m {
			t.Errorf("DecodeOrderCursor(EncodeOrderCursor(%q)) = %q, %t", m, got, ok)
		}
	}
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add(EncodeOrderCursor(OrderListMember(time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC), "order-1")))
	f.Add("")
	f.Add("garbage")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, cursor string) {
		member, ok := DecodeOrderCursor(cursor)
		if !ok {
			return
		}
		if len(member) <= OrderMemberIDOffset || member[orderMemberTimeLen] != '|' {
			t.Fatalf("DecodeOrderCursor(%q) accepted %q", cursor, member)
		}
	})
}

func FuzzDecodeEvents(f *testing.F) {
	f.Add(domain.EventOrderPlaced, `{"order_id":"o-1","user_id":"u-1","status":"placed","items":[{"sku":"A","quantity":1,"price_cents":5}],"placed_at":"2025-05-01T12:00:00Z"}`)
	f.Add(domain.EventOrderCancelled, `{"order_id":"o-1","user_id":"u-1","reason":"x","previous_status":"paid"}`)
	f.Add(domain.EventInventoryReserved, `{"sku":"A","on_hand":3,"reserved":1,"available":2,"version":2,"order_id":"o-1","quantity":1}`)
	f.Add(domain.EventProductCreated, `{"sku":"A","name":"n"}`)
	f.Add(domain.EventOrderPaid, `{"order_id": 7}`)
	f.Add(domain.EventInventoryShipped, `null`)
	f.Fuzz(func(t *testing.T, eventType, payload string) {
		e := Envelope{Seq: 9, EventType: eventType, SchemaVersion: 1, Payload: []byte(payload)}
		var poison *PoisonError
		if _, _, err := DecodeOrderEvent(e); err != nil && (!errors.As(err, &poison) || poison.Seq != 9) {
			t.Fatalf("DecodeOrderEvent: %v, want nil or a *PoisonError of seq 9", err)
		}
		w, ok, err := DecodeInventoryEvent(e)
		if err != nil && (!errors.As(err, &poison) || poison.Seq != 9) {
			t.Fatalf("DecodeInventoryEvent: %v, want nil or a *PoisonError of seq 9", err)
		}
		if ok && w.Levels.SKU == "" {
			t.Fatalf("DecodeInventoryEvent accepted an event without a sku: %q", payload)
		}
	})
}
