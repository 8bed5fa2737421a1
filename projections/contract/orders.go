// Package contract holds the test suites every read-model adapter runs: one
// exported function per port, taking a factory of empty stores, so that the
// Redis, ClickHouse, Bleve, Elasticsearch and embedded adapters are held to
// the same behaviour. The suites build events with the domain's payload types,
// exactly as the write side emits them.
package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// OrdersUnderTest is an order summary adapter.
type OrdersUnderTest interface {
	projections.Applier
	projections.OrderReader
	projections.VersionReader
}

// Orders runs the order summary suite. newStore returns an empty store of its
// own, cleaned up by t.Cleanup; subtests run in parallel.
func Orders(t *testing.T, newStore func(t *testing.T) OrdersUnderTest) {
	t.Run("life cycle", func(t *testing.T) {
		t.Parallel()
		testOrderLifeCycle(t, newStore(t))
	})
	t.Run("redelivery and replay change nothing", func(t *testing.T) {
		t.Parallel()
		testOrderRedelivery(t, newStore(t))
	})
	t.Run("events at or below the applied version are ignored", func(t *testing.T) {
		t.Parallel()
		testOrderOutOfDate(t, newStore(t))
	})
	t.Run("events re-published under new sequences change nothing", func(t *testing.T) {
		t.Parallel()
		testOrderRepublished(t, newStore(t))
	})
	t.Run("user orders page newest first", func(t *testing.T) {
		t.Parallel()
		testOrderPagination(t, newStore(t))
	})
	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		testOrderNotFound(t, newStore(t))
	})
	t.Run("cursor not issued by the store", func(t *testing.T) {
		t.Parallel()
		testOrderInvalidCursor(t, newStore(t))
	})
	t.Run("poison payload", func(t *testing.T) {
		t.Parallel()
		testOrderPoison(t, newStore(t))
	})
}

// orderFixture is a small shop's history: three orders of two users, with the
// product and inventory events an order store must skip in between.
type orderFixture struct {
	log     *streamLog
	batches [][]projections.Envelope
	final   map[string]domain.OrderSnapshot // by order id
}

var (
	orderT0  = time.Date(2025, 3, 10, 9, 0, 0, 123456000, time.UTC)
	bookLine = domain.OrderLine{SKU: "BOOK-1", Name: "The Go Programming Language", Category: "books", Quantity: 2, PriceCents: 1999}
	mugLine  = domain.OrderLine{SKU: "MUG-7", Name: "Gopher mug", Category: "kitchen", Quantity: 1, PriceCents: 850}
	mugsLine = domain.OrderLine{SKU: "MUG-7", Name: "Gopher mug", Category: "kitchen", Quantity: 3, PriceCents: 850}
	oneBook  = domain.OrderLine{SKU: "BOOK-1", Name: "The Go Programming Language", Category: "books", Quantity: 1, PriceCents: 1999}
	orderIDA = "0195a1b2-0000-7000-8000-00000000000a"
	orderIDB = "0195a1b2-0000-7000-8000-00000000000b"
	orderIDC = "0195a1b2-0000-7000-8000-00000000000c"
)

func newOrderFixture(t *testing.T) *orderFixture {
	l := newStreamLog(t)
	f := &orderFixture{log: l, final: map[string]domain.OrderSnapshot{}}
	a := orderSnapshot(orderIDA, "u1", domain.StatusPlaced, 1, orderT0, orderT0, bookLine, mugLine)
	b := orderSnapshot(orderIDB, "u2", domain.StatusPlaced, 1, orderT0.Add(10*time.Minute), orderT0.Add(10*time.Minute), oneBook)
	c := orderSnapshot(orderIDC, "u1", domain.StatusPlaced, 1, orderT0.Add(time.Hour), orderT0.Add(time.Hour), mugsLine)

	product := domain.ProductSnapshot{SKU: "BOOK-1", Name: bookLine.Name, Category: "books", PriceCents: 1999,
		Attributes: map[string]string{}, Version: 1, CreatedAt: orderT0.Add(-time.Hour), UpdatedAt: orderT0.Add(-time.Hour)}
	f.batches = append(f.batches, []projections.Envelope{
		l.append(domain.AggregateProduct, "BOOK-1", 1, domain.EventProductCreated, domain.ProductCreated{ProductSnapshot: product}),
		l.append(domain.AggregateInventory, "BOOK-1", 1, domain.EventInventoryAdjusted, domain.InventoryAdjusted{
			InventoryLevels: domain.InventoryLevels{SKU: "BOOK-1", OnHand: 10, Available: 10, Version: 1}, Delta: 10, Reason: "count"}),
		l.orderEvent(domain.EventOrderPlaced, a),
		l.append(domain.AggregateInventory, "BOOK-1", 2, domain.EventInventoryReserved, domain.InventoryReserved{
			InventoryLevels: domain.InventoryLevels{SKU: "BOOK-1", OnHand: 10, Reserved: 2, Available: 8, Version: 2},
			OrderID:         orderIDA,
			Quantity:        2,
		}),
	})

	a = a.next(domain.StatusPaid, orderT0.Add(5*time.Minute))
	f.batches = append(f.batches, []projections.Envelope{
		l.orderEvent(domain.EventOrderPlaced, b),
		l.orderEvent(domain.EventOrderPaid, a),
		l.orderEvent(domain.EventOrderPlaced, c),
	})

	a = a.next(domain.StatusShipped, orderT0.Add(24*time.Hour))
	c = c.next(domain.StatusCancelled, orderT0.Add(2*time.Hour))
	aDelivered := a.next(domain.StatusDelivered, orderT0.Add(72*time.Hour))
	f.batches = append(f.batches, []projections.Envelope{
		l.orderEvent(domain.EventOrderShipped, a),
		l.orderEvent(domain.EventOrderCancelled, c),
		l.append("loyalty", "u1", 1, "LoyaltyPointsEarned", map[string]any{"points": 12}),
		l.orderEvent(domain.EventOrderDelivered, aDelivered),
	})
	f.final[orderIDA] = aDelivered.OrderSnapshot
	f.final[orderIDB] = b.OrderSnapshot
	f.final[orderIDC] = c.OrderSnapshot
	return f
}

func testOrderLifeCycle(t *testing.T, s OrdersUnderTest) {
	f := newOrderFixture(t)
	applyOK(t, s, f.batches[0])
	applyOK(t, s, f.batches[1])

	paid, err := s.Order(t.Context(), orderIDA)
	if err != nil {
		t.Fatalf("Order(A) after payment: %v", err)
	}
	if paid.Status != string(domain.StatusPaid) || paid.Version != 2 || !paid.UpdatedAt.Equal(orderT0.Add(5*time.Minute)) {
		t.Errorf("Order(A) after payment = status %q version %d updated_at %s, want paid, 2, %s",
			paid.Status, paid.Version, paid.UpdatedAt, orderT0.Add(5*time.Minute))
	}

	applyOK(t, s, f.batches[2])
	for id, snap := range f.final {
		got, err := s.Order(t.Context(), id)
		if err != nil {
			t.Fatalf("Order(%s): %v", id, err)
		}
		checkOrderView(t, got, orderView(snap))
		user, raw, err := s.OrderJSON(t.Context(), id)
		if err != nil {
			t.Fatalf("OrderJSON(%s): %v", id, err)
		}
		if want, _ := json.Marshal(got); user != got.UserID || !bytes.Equal(raw, want) {
			t.Errorf("OrderJSON(%s) = %q, %s\nwant %q, %s", id, user, raw, got.UserID, want)
		}
	}

	checkUserOrders(t, s, "u1", []projections.OrderListEntry{
		listEntry(f.final[orderIDC]), listEntry(f.final[orderIDA]),
	})
	checkUserOrders(t, s, "u2", []projections.OrderListEntry{listEntry(f.final[orderIDB])})

	for id, want := range map[string]int64{orderIDA: 4, orderIDB: 1, orderIDC: 2, "0195a1b2-0000-7000-8000-0000000000ff": 0} {
		got, err := s.AppliedVersion(t.Context(), domain.AggregateOrder, id)
		if err != nil || got != want {
			t.Errorf("AppliedVersion(order, %s) = %d, %v; want %d", id, got, err, want)
		}
	}
}

func testOrderRedelivery(t *testing.T, s OrdersUnderTest) {
	f := newOrderFixture(t)
	for _, b := range f.batches {
		applyOK(t, s, b)
	}
	before := orderModelState(t, s, f)

	applyOK(t, s, f.batches[2])
	applyOK(t, s, f.batches[1])
	applyOK(t, s, f.log.all)
	for _, e := range f.log.all {
		applyOK(t, s, []projections.Envelope{e})
	}
	if after := orderModelState(t, s, f); after != before {
		t.Errorf("the model changed on redelivery and replay\nbefore: %s\nafter:  %s", before, after)
	}
}

func testOrderOutOfDate(t *testing.T, s OrdersUnderTest) {
	l := newStreamLog(t)
	placed := orderSnapshot(orderIDA, "u1", domain.StatusPlaced, 1, orderT0, orderT0, bookLine)
	paid := placed.next(domain.StatusPaid, orderT0.Add(time.Minute))
	shipped := paid.next(domain.StatusShipped, orderT0.Add(time.Hour))
	history := []projections.Envelope{
		l.orderEvent(domain.EventOrderPlaced, placed),
		l.orderEvent(domain.EventOrderPaid, paid),
		l.orderEvent(domain.EventOrderShipped, shipped),
	}
	applyOK(t, s, history)

	// An event of a version already applied (or an older one) is ignored
	// whatever its sequence: the version decides.
	cancelled := paid.next(domain.StatusCancelled, orderT0.Add(2*time.Hour))
	stale := func(seq uint64, typ string, snap orderState) projections.Envelope {
		e := l.orderEvent(typ, snap)
		e.Seq = seq
		return e
	}
	for _, batch := range [][]projections.Envelope{
		{history[1]},
		{history[0]},
		{history[1], history[0]},
		{stale(3, domain.EventOrderCancelled, cancelled)},
		{stale(2, domain.EventOrderCancelled, cancelled)},
		{stale(90, domain.EventOrderPlaced, placed)}, // the OrderPlaced, re-published
		{stale(91, domain.EventOrderCancelled, cancelled)},
	} {
		applyOK(t, s, batch)
	}
	got, err := s.Order(t.Context(), orderIDA)
	if err != nil {
		t.Fatalf("Order: %v", err)
	}
	checkOrderView(t, got, orderView(shipped.OrderSnapshot))
	checkUserOrders(t, s, "u1", []projections.OrderListEntry{listEntry(shipped.OrderSnapshot)})
}

// testOrderRepublished applies the fixture, then every event again under a
// new, higher sequence (as the stream appends an event re-published after
// its duplicate window), one by one and all at once in reverse: no order moves
// back to an older version, and the model stays byte for byte the same.
func testOrderRepublished(t *testing.T, s OrdersUnderTest) {
	f := newOrderFixture(t)
	for _, b := range f.batches {
		applyOK(t, s, b)
	}
	before := orderModelState(t, s, f)
	history := slices.Clone(f.log.all)
	for _, e := range history {
		applyOK(t, s, []projections.Envelope{f.log.republish(e)})
	}
	var reversed []projections.Envelope
	for _, e := range slices.Backward(history) {
		reversed = append(reversed, f.log.republish(e))
	}
	applyOK(t, s, reversed)
	if after := orderModelState(t, s, f); after != before {
		t.Errorf("re-published events changed the model\nbefore: %s\nafter:  %s", before, after)
	}
}

func testOrderPagination(t *testing.T, s OrdersUnderTest) {
	l := newStreamLog(t)
	const user, other = "u-pages", "u-other"
	var want []string // u-pages' order ids
	var events []projections.Envelope
	place := func(id, userID string, at time.Time) {
		events = append(events, l.orderEvent(domain.EventOrderPlaced,
			orderSnapshot(id, userID, domain.StatusPlaced, 1, at, at, oneBook)))
		if userID == user {
			want = append(want, id)
		}
	}
	// Placed out of sequence order, so the list order can only come from
	// placed_at; three orders share one placed_at; another user's orders sit
	// in between.
	const n = 20
	for i := range n {
		k := (i * 7) % n
		place(fmt.Sprintf("0195a1b2-0000-7000-8000-0000000001%02d", k), user, orderT0.Add(time.Duration(k)*time.Minute))
	}
	for _, id := range []string{"0195a1b2-0000-7000-8000-0000000002a2", "0195a1b2-0000-7000-8000-0000000002a1", "0195a1b2-0000-7000-8000-0000000002a3"} {
		place(id, user, orderT0.Add(30*time.Minute))
	}
	place("0195a1b2-0000-7000-8000-000000000900", other, orderT0.Add(90*time.Second))
	place("0195a1b2-0000-7000-8000-000000000901", other, orderT0.Add(45*time.Minute))
	applyOK(t, s, events)

	walk := func(limit int) []projections.OrderListEntry {
		t.Helper()
		var all []projections.OrderListEntry
		cursor := ""
		for page := 0; ; page++ {
			if page > n+3 {
				t.Fatalf("limit %d: pagination does not end", limit)
			}
			entries, next, err := s.UserOrders(t.Context(), user, limit, cursor)
			if err != nil {
				t.Fatalf("UserOrders(limit %d, page %d): %v", limit, page, err)
			}
			if len(entries) == 0 || len(entries) > limit {
				t.Fatalf("UserOrders(limit %d, page %d) returned %d entries", limit, page, len(entries))
			}
			all = append(all, entries...)
			if next == "" {
				return all
			}
			cursor = next
		}
	}
	first := walk(4)
	if got := entryIDs(first); !sameSet(got, want) || len(got) != len(want) {
		t.Fatalf("pages hold %v,\nwant each of %v once", got, want)
	}
	for i := 1; i < len(first); i++ {
		if first[i].PlacedAt.After(first[i-1].PlacedAt) {
			t.Errorf("entry %d (%s, placed %s) is newer than entry %d (%s, placed %s)",
				i, first[i].OrderID, first[i].PlacedAt, i-1, first[i-1].OrderID, first[i-1].PlacedAt)
		}
	}
	for _, limit := range []int{1, 3, len(want), 100} {
		if got := entryIDs(walk(limit)); !slices.Equal(got, entryIDs(first)) {
			t.Errorf("limit %d lists %v,\nlimit 4 lists %v", limit, got, entryIDs(first))
		}
	}

	// A cursor is a position: an order placed after the first page was read
	// does not shift the pages that follow.
	page1, next, err := s.UserOrders(t.Context(), user, 5, "")
	if err != nil || next == "" {
		t.Fatalf("UserOrders first page: next %q, %v", next, err)
	}
	applyOK(t, s, []projections.Envelope{l.orderEvent(domain.EventOrderPlaced,
		orderSnapshot("0195a1b2-0000-7000-8000-000000000999", user, domain.StatusPlaced, 1, orderT0.Add(48*time.Hour), orderT0.Add(48*time.Hour), oneBook))})
	rest := slices.Clone(page1)
	for next != "" {
		var page []projections.OrderListEntry
		page, next, err = s.UserOrders(t.Context(), user, 5, next)
		if err != nil {
			t.Fatalf("UserOrders: %v", err)
		}
		rest = append(rest, page...)
	}
	if got := entryIDs(rest); !slices.Equal(got, entryIDs(first)) {
		t.Errorf("pages read across a new order list %v,\nwant %v", got, entryIDs(first))
	}
}

func testOrderNotFound(t *testing.T, s OrdersUnderTest) {
	f := newOrderFixture(t)
	applyOK(t, s, f.log.all)
	if _, err := s.Order(t.Context(), "0195a1b2-0000-7000-8000-0000000000ff"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Order(unknown) error = %v, want ErrNotFound", err)
	}
	if _, _, err := s.OrderJSON(t.Context(), "0195a1b2-0000-7000-8000-0000000000ff"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("OrderJSON(unknown) error = %v, want ErrNotFound", err)
	}
	entries, next, err := s.UserOrders(t.Context(), "u-nobody", 10, "")
	if err != nil || len(entries) != 0 || next != "" {
		t.Errorf("UserOrders(unknown user) = %v, %q, %v; want no entries, no cursor, no error", entries, next, err)
	}
}

func testOrderInvalidCursor(t *testing.T, s OrdersUnderTest) {
	f := newOrderFixture(t)
	applyOK(t, s, f.log.all)
	if _, next, err := s.UserOrders(t.Context(), "u1", 1, ""); err != nil || next == "" {
		t.Fatalf("UserOrders(u1, 1): next %q, %v", next, err)
	}
	for _, cursor := range []string{"garbage", "%%%", "AAAA", "aGVsbG8gd29ybGQ", "0195a1b2-0000-7000-8000-00000000000a", strings.Repeat("z", 300)} {
		_, _, err := s.UserOrders(t.Context(), "u1", 1, cursor)
		var invalid *projections.InvalidCursorError
		if !errors.As(err, &invalid) {
			t.Errorf("UserOrders(cursor %q) error = %v, want *InvalidCursorError", cursor, err)
		}
	}
}

func testOrderPoison(t *testing.T, s OrdersUnderTest) {
	l := newStreamLog(t)
	a := orderSnapshot(orderIDA, "u1", domain.StatusPlaced, 1, orderT0, orderT0, bookLine)
	b := orderSnapshot(orderIDB, "u1", domain.StatusPlaced, 1, orderT0, orderT0, bookLine)
	placedA := l.orderEvent(domain.EventOrderPlaced, a)
	bad := l.raw(domain.AggregateOrder, orderIDA, 2, domain.EventOrderPaid, `{"order_id": "`+orderIDA+`", "status": `)
	placedB := l.orderEvent(domain.EventOrderPlaced, b)

	checkPoison(t, s, []projections.Envelope{placedA, bad, placedB}, bad.Seq)
	if _, err := s.Order(t.Context(), orderIDB); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("the event after the poison one was applied: Order(B) error = %v, want ErrNotFound", err)
	}
	applyOK(t, s, []projections.Envelope{placedA, placedB})
	if _, err := s.Order(t.Context(), orderIDB); err != nil {
		t.Errorf("Order(B) after the batch without the poison event: %v", err)
	}

	for name, e := range map[string]projections.Envelope{
		"not JSON":        l.raw(domain.AggregateOrder, orderIDA, 2, domain.EventOrderShipped, `not json`),
		"wrong JSON type": l.raw(domain.AggregateOrder, orderIDA, 2, domain.EventOrderShipped, `{"order_id": 42, "user_id": "u1"}`),
		"not an object":   l.raw(domain.AggregateOrder, orderIDA, 2, domain.EventOrderCancelled, `"cancelled"`),
		"no order id":     l.raw(domain.AggregateOrder, orderIDA, 2, domain.EventOrderPaid, `{"user_id": "u1", "status": "paid"}`),
		"unknown schema":  withSchema(l.orderEvent(domain.EventOrderPaid, a.next(domain.StatusPaid, orderT0)), domain.CurrentSchemaVersion+1),
		"negative schema": withSchema(l.orderEvent(domain.EventOrderPaid, a.next(domain.StatusPaid, orderT0)), -1),
		"null payload":    l.raw(domain.AggregateOrder, orderIDA, 2, domain.EventOrderPaid, `null`),
	} {
		t.Run(name, func(t *testing.T) { checkPoison(t, s, []projections.Envelope{e}, e.Seq) })
	}

	// Events the model does not follow are not its to judge.
	applyOK(t, s, []projections.Envelope{
		l.raw("loyalty", "u1", 1, "LoyaltyPointsEarned", `not json`),
		l.raw(domain.AggregateProduct, "BOOK-1", 2, domain.EventProductUpdated, `{"sku": 7}`),
	})
}

// orderState is an order snapshot and the next state of its life cycle.
type orderState struct{ domain.OrderSnapshot }

func orderSnapshot(id, userID string, status domain.OrderStatus, version int64, placed, updated time.Time, lines ...domain.OrderLine) orderState {
	var total int64
	for _, l := range lines {
		total += l.Quantity * l.PriceCents
	}
	return orderState{domain.OrderSnapshot{
		OrderID: id, UserID: userID, Status: status, Items: lines, TotalCents: total,
		PaymentMethod: "card", Version: version, PlacedAt: placed, UpdatedAt: updated,
	}}
}

// next is the snapshot after a transition to status at time at.
func (o orderState) next(status domain.OrderStatus, at time.Time) orderState {
	n := o
	n.Items = slices.Clone(o.Items)
	n.Status = status
	n.Version++
	n.UpdatedAt = at
	return n
}

// orderEvent appends the order event typ carrying snap, with the payload type
// the domain uses for it.
func (l *streamLog) orderEvent(typ string, snap orderState) projections.Envelope {
	var payload any
	switch typ {
	case domain.EventOrderPlaced:
		payload = domain.OrderPlaced{OrderSnapshot: snap.OrderSnapshot}
	case domain.EventOrderPaid:
		payload = domain.OrderPaid{OrderSnapshot: snap.OrderSnapshot}
	case domain.EventOrderShipped:
		payload = domain.OrderShipped{OrderSnapshot: snap.OrderSnapshot}
	case domain.EventOrderDelivered:
		payload = domain.OrderDelivered{OrderSnapshot: snap.OrderSnapshot}
	case domain.EventOrderCancelled:
		payload = domain.OrderCancelled{OrderSnapshot: snap.OrderSnapshot, Reason: "changed my mind", PreviousStatus: domain.StatusPlaced}
	default:
		l.t.Fatalf("orderEvent: %s is not an order event", typ)
	}
	return l.append(domain.AggregateOrder, snap.OrderID, snap.Version, typ, payload)
}

func orderView(s domain.OrderSnapshot) projections.OrderView {
	v := projections.OrderView{
		OrderID: s.OrderID, UserID: s.UserID, Status: string(s.Status), TotalCents: s.TotalCents,
		Version: s.Version, PlacedAt: s.PlacedAt, UpdatedAt: s.UpdatedAt,
	}
	for _, it := range s.Items {
		v.Items = append(v.Items, projections.OrderLineView{SKU: it.SKU, Quantity: it.Quantity, PriceCents: it.PriceCents})
	}
	return v
}

func listEntry(s domain.OrderSnapshot) projections.OrderListEntry {
	return projections.OrderListEntry{OrderID: s.OrderID, Status: string(s.Status), TotalCents: s.TotalCents, PlacedAt: s.PlacedAt}
}

func checkOrderView(t *testing.T, got, want projections.OrderView) {
	t.Helper()
	same := got.OrderID == want.OrderID && got.UserID == want.UserID && got.Status == want.Status &&
		slices.Equal(got.Items, want.Items) && got.TotalCents == want.TotalCents && got.Version == want.Version &&
		got.PlacedAt.Equal(want.PlacedAt) && got.UpdatedAt.Equal(want.UpdatedAt)
	if !same {
		t.Errorf("order %s:\n got %+v\nwant %+v", want.OrderID, got, want)
	}
}

func checkUserOrders(t *testing.T, s OrdersUnderTest, userID string, want []projections.OrderListEntry) {
	t.Helper()
	got, next, err := s.UserOrders(t.Context(), userID, 50, "")
	if err != nil {
		t.Fatalf("UserOrders(%s): %v", userID, err)
	}
	same := len(got) == len(want) && next == ""
	for i := 0; same && i < len(got); i++ {
		g, w := got[i], want[i]
		same = g.OrderID == w.OrderID && g.Status == w.Status && g.TotalCents == w.TotalCents && g.PlacedAt.Equal(w.PlacedAt)
	}
	if !same {
		t.Errorf("UserOrders(%s) = %+v, next %q\nwant %+v, no next", userID, got, next, want)
	}
}

// orderModelState renders everything the model answers about the fixture's
// orders and users, for comparisons.
func orderModelState(t *testing.T, s OrdersUnderTest, f *orderFixture) string {
	t.Helper()
	var b strings.Builder
	ids := make([]string, 0, len(f.final))
	users := map[string]bool{}
	for id, snap := range f.final {
		ids = append(ids, id)
		users[snap.UserID] = true
	}
	slices.Sort(ids)
	for _, id := range ids {
		v, err := s.Order(t.Context(), id)
		if err != nil {
			t.Fatalf("Order(%s): %v", id, err)
		}
		version, err := s.AppliedVersion(t.Context(), domain.AggregateOrder, id)
		if err != nil {
			t.Fatalf("AppliedVersion(%s): %v", id, err)
		}
		fmt.Fprintf(&b, "%s v%d %s\n", mustJSON(t, v), version, id)
	}
	for _, u := range slices.Sorted(maps.Keys(users)) {
		entries, next, err := s.UserOrders(t.Context(), u, 1, "")
		for err == nil {
			fmt.Fprintf(&b, "%s: %s\n", u, mustJSON(t, entries))
			if next == "" {
				break
			}
			entries, next, err = s.UserOrders(t.Context(), u, 1, next)
		}
		if err != nil {
			t.Fatalf("UserOrders(%s): %v", u, err)
		}
	}
	return b.String()
}

func entryIDs(entries []projections.OrderListEntry) []string {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.OrderID
	}
	return ids
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// streamLog builds a stream: each appended event gets the next sequence.
type streamLog struct {
	t   *testing.T
	seq uint64
	all []projections.Envelope
}

func newStreamLog(t *testing.T) *streamLog { return &streamLog{t: t} }

// append adds an event whose payload is the JSON encoding of payload.
func (l *streamLog) append(aggType, aggID string, version int64, typ string, payload any) projections.Envelope {
	l.t.Helper()
	return l.raw(aggType, aggID, version, typ, string(mustJSON(l.t, payload)))
}

// raw adds an event with the payload bytes as given, valid JSON or not.
func (l *streamLog) raw(aggType, aggID string, version int64, typ, payload string) projections.Envelope {
	l.seq++
	e := projections.Envelope{
		Seq:              l.seq,
		ID:               fmt.Sprintf("0195a1b2-ffff-7000-8000-%012d", l.seq),
		AggregateType:    aggType,
		AggregateID:      aggID,
		AggregateVersion: version,
		EventType:        typ,
		SchemaVersion:    domain.CurrentSchemaVersion,
		OccurredAt:       orderT0.Add(time.Duration(l.seq) * time.Second),
		TraceParent:      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		Payload:          json.RawMessage(payload),
	}
	l.all = append(l.all, e)
	return e
}

// republish appends e again under the next sequence, as the stream does for
// an event published again after its duplicate window.
func (l *streamLog) republish(e projections.Envelope) projections.Envelope {
	l.seq++
	e.Seq = l.seq
	l.all = append(l.all, e)
	return e
}

func withSchema(e projections.Envelope, version int) projections.Envelope {
	e.SchemaVersion = version
	return e
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal(%T): %v", v, err)
	}
	return b
}

func applyOK(t *testing.T, s projections.Applier, events []projections.Envelope) {
	t.Helper()
	if err := s.Apply(t.Context(), events); err != nil {
		seqs := make([]uint64, len(events))
		for i, e := range events {
			seqs[i] = e.Seq
		}
		t.Fatalf("Apply(events of seq %v): %v", seqs, err)
	}
}

// checkPoison applies events and expects a *PoisonError naming seq.
func checkPoison(t *testing.T, s projections.Applier, events []projections.Envelope, seq uint64) {
	t.Helper()
	err := s.Apply(t.Context(), events)
	var poison *projections.PoisonError
	if !errors.As(err, &poison) {
		t.Fatalf("Apply error = %v, want *projections.PoisonError", err)
	}
	if poison.Seq != seq || poison.Reason == "" {
		t.Errorf("PoisonError = {Seq: %d, Reason: %q}, want Seq %d and a reason", poison.Seq, poison.Reason, seq)
	}
}
