package commandapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/apitest"
)

// TestOutboxEvents runs place, pay, ship, deliver and place, cancel and reads
// the outbox: per aggregate the versions are contiguous from 1 and the event
// types come in order; payloads carry the state the read side needs; headers
// carry the trace context the request came with.
func TestOutboxEvents(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	alice := apitest.CustomerToken(t, "alice")
	e.CreateProduct(t, apitest.Product{SKU: "ev-tea", Name: "Green tea", Category: "drinks", PriceCents: 450})
	e.CreateProduct(t, apitest.Product{SKU: "ev-pot", Name: "Tea pot", Category: "kitchen", PriceCents: 3200})
	e.Restock(t, "ev-tea", 10)
	e.Restock(t, "ev-pot", 3)
	startSeq := e.Int(t, `SELECT coalesce(max(seq), 0) FROM outbox_events`)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	traced := func(r apitest.Request, span string) apitest.Request {
		r.Header = headers("traceparent", "00-"+traceID+"-"+span+"-01", "Idempotency-Key", "ev-"+span)
		return r
	}
	var shipped, cancelled apitest.OrderResult
	e.Do(t, traced(post(ordersPath, alice, apitest.NewOrder("alice", item("ev-tea", 3), item("ev-pot", 1))), "00f067aa0ba902b7")).
		WantStatus(t, http.StatusCreated).JSON(t, &shipped)
	e.Do(t, traced(post(orderPath(shipped.OrderID, "pay"), alice, nil), "00f067aa0ba902b8")).WantStatus(t, http.StatusOK)
	e.Do(t, traced(post(orderPath(shipped.OrderID, "ship"), admin, nil), "00f067aa0ba902b9")).WantStatus(t, http.StatusOK)
	e.Transition(t, admin, shipped.OrderID, "deliver")
	cancelled = e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("ev-tea", 2)))
	e.Do(t, post(orderPath(cancelled.OrderID, "cancel"), alice, map[string]string{"reason": "too slow"})).WantStatus(t, http.StatusOK)

	all := e.Outbox(t)
	var events []apitest.OutboxEvent
	for _, ev := range all {
		if ev.Seq > startSeq {
			events = append(events, ev)
		}
	}

	t.Run("versions and order per aggregate", func(t *testing.T) {
		byAggregate := map[string][]string{}
		for _, ev := range all {
			key := ev.AggregateType + ":" + ev.AggregateID
			if want := int64(len(byAggregate[key]) + 1); ev.AggregateVersion != want {
				t.Errorf("%s event %s has version %d, want %d (contiguous from 1)", key, ev.EventType, ev.AggregateVersion, want)
			}
			byAggregate[key] = append(byAggregate[key], ev.EventType)
			if ev.SchemaVersion != domain.CurrentSchemaVersion {
				t.Errorf("%s schema version %d", ev.EventType, ev.SchemaVersion)
			}
		}
		want := map[string][]string{
			"product:ev-tea":             {"ProductCreated"},
			"product:ev-pot":             {"ProductCreated"},
			"inventory:ev-tea":           {"InventoryAdjusted", "InventoryReserved", "InventoryShipped", "InventoryReserved", "InventoryReleased"},
			"inventory:ev-pot":           {"InventoryAdjusted", "InventoryReserved", "InventoryShipped"},
			"order:" + shipped.OrderID:   {"OrderPlaced", "OrderPaid", "OrderShipped", "OrderDelivered"},
			"order:" + cancelled.OrderID: {"OrderPlaced", "OrderCancelled"},
		}
		if !reflect.DeepEqual(byAggregate, want) {
			t.Errorf("events per aggregate:\n got %v\nwant %v", byAggregate, want)
		}
		// Within a command the order event comes first, then stock in SKU order.
		var types []string
		for _, ev := range events {
			types = append(types, ev.EventType+":"+ev.AggregateID)
		}
		o1, o2 := shipped.OrderID, cancelled.OrderID
		wantTypes := []string{
			"OrderPlaced:" + o1, "InventoryReserved:ev-pot", "InventoryReserved:ev-tea",
			"OrderPaid:" + o1,
			"OrderShipped:" + o1, "InventoryShipped:ev-pot", "InventoryShipped:ev-tea",
			"OrderDelivered:" + o1,
			"OrderPlaced:" + o2, "InventoryReserved:ev-tea",
			"OrderCancelled:" + o2, "InventoryReleased:ev-tea",
		}
		if !reflect.DeepEqual(types, wantTypes) {
			t.Errorf("outbox order:\n got %v\nwant %v", types, wantTypes)
		}
	})

	find := func(t *testing.T, typ, aggID string) apitest.OutboxEvent {
		t.Helper()
		for _, ev := range events {
			if ev.EventType == typ && ev.AggregateID == aggID {
				return ev
			}
		}
		t.Fatalf("no %s event of %s", typ, aggID)
		return apitest.OutboxEvent{}
	}
	decode := func(t *testing.T, raw json.RawMessage) map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	t.Run("OrderPlaced carries the order", func(t *testing.T) {
		ev := find(t, "OrderPlaced", shipped.OrderID)
		p := decode(t, ev.Payload)
		wantItems := []any{
			map[string]any{"sku": "ev-tea", "name": "Green tea", "category": "drinks", "quantity": 3.0, "price_cents": 450.0},
			map[string]any{"sku": "ev-pot", "name": "Tea pot", "category": "kitchen", "quantity": 1.0, "price_cents": 3200.0},
		}
		for k, want := range map[string]any{
			"order_id": shipped.OrderID, "user_id": "alice", "status": "placed", "total_cents": 3*450.0 + 3200,
			"payment_method": "card", "version": 1.0, "items": wantItems,
		} {
			if !reflect.DeepEqual(p[k], want) {
				t.Errorf("payload %s = %v, want %v", k, p[k], want)
			}
		}
		if strings.Contains(string(ev.Payload), "tok_visa") {
			t.Errorf("the payment token is in the event: %s", ev.Payload)
		}
		placedAt, err := time.Parse(time.RFC3339Nano, fmt.Sprint(p["placed_at"]))
		if err != nil || placedAt.Location() != time.UTC || !placedAt.Equal(ev.OccurredAt) {
			t.Errorf("placed_at %v (%v), want the UTC time the event occurred, %v", p["placed_at"], err, ev.OccurredAt)
		}
	})

	t.Run("inventory events carry levels", func(t *testing.T) {
		for _, tc := range []struct {
			typ, sku string
			want     map[string]any
		}{
			{"InventoryReserved", "ev-tea", map[string]any{"on_hand": 10.0, "reserved": 3.0, "available": 7.0, "version": 2.0, "quantity": 3.0, "order_id": shipped.OrderID}},
			{"InventoryShipped", "ev-pot", map[string]any{"on_hand": 2.0, "reserved": 0.0, "available": 2.0, "version": 3.0, "quantity": 1.0, "order_id": shipped.OrderID}},
			{"InventoryReleased", "ev-tea", map[string]any{"on_hand": 7.0, "reserved": 0.0, "available": 7.0, "version": 5.0, "quantity": 2.0, "order_id": cancelled.OrderID}},
		} {
			p := decode(t, find(t, tc.typ, tc.sku).Payload)
			tc.want["sku"] = tc.sku
			for k, want := range tc.want {
				if p[k] != want {
					t.Errorf("%s %s: %s = %v, want %v", tc.typ, tc.sku, k, p[k], want)
				}
			}
		}
	})

	t.Run("order transitions carry the order", func(t *testing.T) {
		for typ, status := range map[string]string{"OrderPaid": "paid", "OrderShipped": "shipped", "OrderDelivered": "delivered"} {
			p := decode(t, find(t, typ, shipped.OrderID).Payload)
			if p["status"] != status || p["user_id"] != "alice" || p["total_cents"] != 4550.0 || len(p["items"].([]any)) != 2 {
				t.Errorf("%s payload = %v", typ, p)
			}
		}
		p := decode(t, find(t, "OrderCancelled", cancelled.OrderID).Payload)
		if p["status"] != "cancelled" || p["reason"] != "too slow" || p["previous_status"] != "placed" || p["total_cents"] != 900.0 {
			t.Errorf("OrderCancelled payload = %v", p)
		}
	})

	t.Run("headers", func(t *testing.T) {
		for _, ev := range events {
			h := decode(t, ev.Headers)
			tp, _ := h["traceparent"].(string)
			parts := strings.Split(tp, "-")
			if len(parts) != 4 || parts[0] != "00" || len(parts[1]) != 32 || len(parts[2]) != 16 {
				t.Errorf("%s: traceparent %q is not W3C trace context", ev.EventType, tp)
				continue
			}
			tracedCommand := ev.EventType == "OrderPaid" || ev.EventType == "OrderShipped" ||
				(ev.EventType == "OrderPlaced" && ev.AggregateID == shipped.OrderID) ||
				(ev.EventType == "InventoryReserved" && h["idempotency_key"] == "ev-00f067aa0ba902b7") ||
				ev.EventType == "InventoryShipped"
			if tracedCommand != (parts[1] == traceID) {
				t.Errorf("%s %s: trace id %s; want the request's %s exactly for traced requests", ev.EventType, ev.AggregateID, parts[1], traceID)
			}
			if h["actor"] == nil || h["role"] == nil {
				t.Errorf("%s: headers lack actor and role: %v", ev.EventType, h)
			}
		}
		h := decode(t, find(t, "OrderShipped", shipped.OrderID).Headers)
		if h["actor"] != "admin" || h["role"] != "admin" || h["idempotency_key"] != "ev-00f067aa0ba902b9" {
			t.Errorf("OrderShipped headers = %v", h)
		}
	})
}
