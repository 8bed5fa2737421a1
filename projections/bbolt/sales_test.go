package boltstore_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// The report sums whole days from the totals and reads the partial days at
// its ends from the orders: over a week of orders, ranges that start and end
// anywhere (on a day's first instant, within a day, a microsecond apart,
// within one day) answer what summing the orders' lines directly gives.
func TestSalesReportsMatchTheOrdersOverAnyRange(t *testing.T) {
	events := shopStream(t, 1500) // an order every 7 minutes, for a week
	s := openSales(t, tempPath(t))
	for _, b := range batches(events, 100) {
		applyOK(t, s, b)
	}
	orders := finalOrders(t, events)

	day := func(d int) time.Time { return time.Date(2026, 3, 1+d, 0, 0, 0, 0, time.UTC) }
	plus5 := time.FixedZone("UTC+5", 5*60*60)
	placed := orders[len(orders)/2].PlacedAt
	for _, r := range [][2]time.Time{
		{day(0), day(8)},
		{day(1), day(4)},
		{day(1).Add(13*time.Hour + 17*time.Minute), day(5).Add(2*time.Hour + 3*time.Minute)},
		{day(2).Add(time.Hour), day(2).Add(20 * time.Hour)},
		{day(2).Add(time.Hour), day(3).Add(time.Hour)},
		{day(0).Add(-time.Hour), day(2).Add(time.Nanosecond)},
		{placed, placed.Add(time.Microsecond)},
		{placed.Add(time.Nanosecond), day(6)},
		{placed.Add(-24 * time.Hour), placed},
		{day(1).In(plus5), day(3).Add(30 * time.Minute).In(plus5)},
	} {
		for _, groupBy := range []string{"day", "sku", "category"} {
			q := projections.SalesQuery{From: r[0], To: r[1], GroupBy: groupBy}
			got, err := s.Sales(t.Context(), q)
			if err != nil {
				t.Fatalf("Sales(%s, [%s, %s)): %v", groupBy, r[0], r[1], err)
			}
			if want := salesByHand(orders, q); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("Sales(%s, [%s, %s)) =\n %v\nwant\n %v", groupBy, r[0], r[1], got, want)
			}
		}
	}
}

// finalOrders is each order's last OrderPlaced or OrderCancelled snapshot.
func finalOrders(t *testing.T, events []projections.Envelope) []domain.OrderSnapshot {
	t.Helper()
	last := map[string]domain.OrderSnapshot{}
	var ids []string
	for _, e := range events {
		if e.EventType != domain.EventOrderPlaced && e.EventType != domain.EventOrderCancelled {
			continue
		}
		var snap domain.OrderSnapshot
		if err := json.Unmarshal(e.Payload, &snap); err != nil {
			t.Fatal(err)
		}
		if _, ok := last[snap.OrderID]; !ok {
			ids = append(ids, snap.OrderID)
		}
		last[snap.OrderID] = snap
	}
	out := make([]domain.OrderSnapshot, len(ids))
	for i, id := range ids {
		out[i] = last[id]
	}
	return out
}

// salesByHand is the report of q over orders, summed line by line.
func salesByHand(orders []domain.OrderSnapshot, q projections.SalesQuery) []projections.SalesRow {
	rows := map[string]*projections.SalesRow{}
	for _, o := range orders {
		if o.Status == domain.StatusCancelled || o.PlacedAt.Before(q.From) || !o.PlacedAt.Before(q.To) {
			continue
		}
		counted := map[string]bool{}
		for _, l := range o.Items {
			key := map[string]string{"day": o.PlacedAt.UTC().Format(time.DateOnly), "sku": l.SKU, "category": l.Category}[q.GroupBy]
			r := rows[key]
			if r == nil {
				r = &projections.SalesRow{Key: key}
				rows[key] = r
			}
			if !counted[key] {
				counted[key] = true
				r.Orders++
			}
			r.Units += l.Quantity
			r.RevenueCents += l.Quantity * l.PriceCents
		}
	}
	out := []projections.SalesRow{}
	for _, k := range slices.Sorted(maps.Keys(rows)) {
		out = append(out, *rows[k])
	}
	return out
}
