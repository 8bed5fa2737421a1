package contract

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// SalesUnderTest is a sales analytics adapter.
type SalesUnderTest interface {
	projections.Applier
	projections.SalesReader
}

// Sales runs the sales report suite. newStore returns an empty store of its
// own, cleaned up by t.Cleanup; subtests run in parallel.
func Sales(t *testing.T, newStore func(t *testing.T) SalesUnderTest) {
	t.Run("report by day, sku and category", func(t *testing.T) {
		t.Parallel()
		testSalesReport(t, newStore(t))
	})
	t.Run("from is inclusive, to exclusive", func(t *testing.T) {
		t.Parallel()
		testSalesRanges(t, newStore(t))
	})
	t.Run("redelivery and replay change nothing", func(t *testing.T) {
		t.Parallel()
		testSalesRedelivery(t, newStore(t))
	})
	t.Run("a cancelled order stays cancelled", func(t *testing.T) {
		t.Parallel()
		testSalesOutOfDate(t, newStore(t))
	})
	t.Run("poison payload", func(t *testing.T) {
		t.Parallel()
		testSalesPoison(t, newStore(t))
	})
	t.Run("unknown group_by", func(t *testing.T) {
		t.Parallel()
		s := newStore(t)
		if rows, err := s.Sales(t.Context(), projections.SalesQuery{From: salesDay1, To: salesDay3, GroupBy: "user"}); err == nil {
			t.Errorf("Sales(group_by user) = %v, want an error", rows)
		}
	})
}

var (
	salesDay0 = time.Date(2025, 3, 9, 0, 0, 0, 0, time.UTC)
	salesDay1 = salesDay0.AddDate(0, 0, 1)
	salesDay2 = salesDay0.AddDate(0, 0, 2)
	salesDay3 = salesDay0.AddDate(0, 0, 3)
	salesDay4 = salesDay0.AddDate(0, 0, 4)

	book1 = domain.OrderLine{SKU: "BOOK-1", Name: "Go in Action", Category: "books", PriceCents: 1000}
	book2 = domain.OrderLine{SKU: "BOOK-2", Name: "Concurrency in Go", Category: "books", PriceCents: 2500}
	game1 = domain.OrderLine{SKU: "GAME-1", Name: "Gopher Quest", Category: "games", PriceCents: 5999}
)

func salesLine(l domain.OrderLine, quantity int64) domain.OrderLine {
	l.Quantity = quantity
	return l
}

// salesFixture is four days of orders, one of them cancelled after payment.
type salesFixture struct {
	log       *streamLog
	batches   [][]projections.Envelope
	cancelled projections.Envelope // the OrderPlaced of the order cancelled later
	lastPlace time.Time            // o2's placed_at, a microsecond before the end of day 1
	dayTwo    time.Time            // o3's placed_at, the first instant of day 2
}

func newSalesFixture(t *testing.T) *salesFixture {
	l := newStreamLog(t)
	f := &salesFixture{log: l}
	id := func(n int) string { return fmt.Sprintf("0195a1b2-0000-7000-8000-%012d", 500+n) }

	o1 := orderSnapshot(id(1), "u1", domain.StatusPlaced, 1, salesDay1.Add(10*time.Hour), salesDay1.Add(10*time.Hour),
		salesLine(book1, 2), salesLine(game1, 1))
	f.lastPlace = salesDay2.Add(-time.Microsecond)
	o2 := orderSnapshot(id(2), "u2", domain.StatusPlaced, 1, f.lastPlace, f.lastPlace, salesLine(book2, 1))
	f.dayTwo = salesDay2
	o3 := orderSnapshot(id(3), "u1", domain.StatusPlaced, 1, f.dayTwo, f.dayTwo, salesLine(book1, 1), salesLine(book2, 3))
	o4 := orderSnapshot(id(4), "u3", domain.StatusPlaced, 1, salesDay2.Add(12*time.Hour), salesDay2.Add(12*time.Hour),
		salesLine(game1, 2))
	o5 := orderSnapshot(id(5), "u2", domain.StatusPlaced, 1, salesDay3.Add(8*time.Hour), salesDay3.Add(8*time.Hour),
		salesLine(book1, 5))
	o6 := orderSnapshot(id(6), "u4", domain.StatusPlaced, 1, salesDay0.Add(23*time.Hour), salesDay0.Add(23*time.Hour),
		salesLine(game1, 1))

	o4Paid := o4.next(domain.StatusPaid, o4.PlacedAt.Add(time.Minute))
	f.batches = append(f.batches, []projections.Envelope{
		l.orderEvent(domain.EventOrderPlaced, o6),
		l.productCreated("BOOK-1"),
		l.orderEvent(domain.EventOrderPlaced, o1),
		l.orderEvent(domain.EventOrderPaid, o1.next(domain.StatusPaid, o1.PlacedAt.Add(time.Minute))),
		l.orderEvent(domain.EventOrderPlaced, o2),
	})
	placedO3 := l.orderEvent(domain.EventOrderPlaced, o3)
	f.cancelled = l.orderEvent(domain.EventOrderPlaced, o4)
	f.batches = append(f.batches, []projections.Envelope{
		placedO3,
		f.cancelled,
		l.stockEvent(domain.EventInventoryReserved,
			projections.InventoryView{SKU: "GAME-1", OnHand: 5, Reserved: 2, Available: 3, Version: 4}, 2),
		l.orderEvent(domain.EventOrderPaid, o4Paid),
	})
	o1Shipped := o1.next(domain.StatusPaid, o1.PlacedAt.Add(time.Minute)).next(domain.StatusShipped, salesDay3)
	f.batches = append(f.batches, []projections.Envelope{
		l.orderEvent(domain.EventOrderCancelled, o4Paid.next(domain.StatusCancelled, o4.PlacedAt.Add(time.Hour))),
		l.orderEvent(domain.EventOrderPlaced, o5),
		l.orderEvent(domain.EventOrderShipped, o1Shipped),
	})
	return f
}

func (f *salesFixture) apply(t *testing.T, s SalesUnderTest) {
	t.Helper()
	for _, b := range f.batches {
		applyOK(t, s, b)
	}
}

func testSalesReport(t *testing.T, s SalesUnderTest) {
	f := newSalesFixture(t)
	f.apply(t, s)
	for _, tc := range []struct {
		groupBy string
		want    []projections.SalesRow
	}{
		{"day", []projections.SalesRow{
			{Key: "2025-03-10", Orders: 2, Units: 4, RevenueCents: 2*1000 + 5999 + 2500},
			{Key: "2025-03-11", Orders: 1, Units: 4, RevenueCents: 1000 + 3*2500},
		}},
		{"sku", []projections.SalesRow{
			{Key: "BOOK-1", Orders: 2, Units: 3, RevenueCents: 3000},
			{Key: "BOOK-2", Orders: 2, Units: 4, RevenueCents: 10000},
			{Key: "GAME-1", Orders: 1, Units: 1, RevenueCents: 5999},
		}},
		{"category", []projections.SalesRow{
			{Key: "books", Orders: 3, Units: 7, RevenueCents: 13000},
			{Key: "games", Orders: 1, Units: 1, RevenueCents: 5999},
		}},
	} {
		checkSales(t, s, projections.SalesQuery{From: salesDay1, To: salesDay3, GroupBy: tc.groupBy}, tc.want)
	}
}

func testSalesRanges(t *testing.T, s SalesUnderTest) {
	f := newSalesFixture(t)
	f.apply(t, s)
	day1 := projections.SalesRow{Key: "2025-03-10", Orders: 2, Units: 4, RevenueCents: 10499}
	day1WithoutO2 := projections.SalesRow{Key: "2025-03-10", Orders: 1, Units: 3, RevenueCents: 7999}
	day2 := projections.SalesRow{Key: "2025-03-11", Orders: 1, Units: 4, RevenueCents: 8500}
	plus2 := time.FixedZone("UTC+2", 2*60*60)
	for _, tc := range []struct {
		name     string
		from, to time.Time
		want     []projections.SalesRow
	}{
		{"every day", salesDay0, salesDay4, []projections.SalesRow{
			{Key: "2025-03-09", Orders: 1, Units: 1, RevenueCents: 5999}, day1, day2,
			{Key: "2025-03-12", Orders: 1, Units: 5, RevenueCents: 5000},
		}},
		{"one day", salesDay1, salesDay2, []projections.SalesRow{day1}},
		{"from is the first order of day 2", f.dayTwo, salesDay3, []projections.SalesRow{day2}},
		{"to is an order's placed_at", salesDay1, f.lastPlace, []projections.SalesRow{day1WithoutO2}},
		{"to is a microsecond later", salesDay1, f.lastPlace.Add(time.Microsecond), []projections.SalesRow{day1}},
		{"from is a microsecond later", f.lastPlace.Add(time.Microsecond), salesDay2.Add(time.Hour), []projections.SalesRow{day2}},
		{"bounds in another zone", salesDay1.In(plus2), salesDay3.In(plus2), []projections.SalesRow{day1, day2}},
		{"no orders", salesDay4, salesDay4.AddDate(0, 1, 0), nil},
		{"empty range", salesDay2, salesDay2, nil},
		{"reversed range", salesDay3, salesDay1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkSales(t, s, projections.SalesQuery{From: tc.from, To: tc.to, GroupBy: "day"}, tc.want)
		})
	}
}

func testSalesRedelivery(t *testing.T, s SalesUnderTest) {
	f := newSalesFixture(t)
	f.apply(t, s)
	before := salesModelState(t, s)

	applyOK(t, s, f.batches[1])
	applyOK(t, s, f.batches[2])
	for _, b := range f.batches {
		applyOK(t, s, b)
	}
	var all []projections.Envelope
	for _, b := range f.batches {
		all = append(all, b...)
	}
	applyOK(t, s, all)
	if after := salesModelState(t, s); after != before {
		t.Errorf("the report changed on redelivery and replay\nbefore: %s\nafter:  %s", before, after)
	}
}

func testSalesOutOfDate(t *testing.T, s SalesUnderTest) {
	f := newSalesFixture(t)
	f.apply(t, s)
	before := salesModelState(t, s)
	// The placement of the cancelled order, redelivered after its
	// cancellation, must not bring it back.
	applyOK(t, s, []projections.Envelope{f.cancelled})
	applyOK(t, s, f.batches[1])
	// Nor must it once re-published, under a new and higher sequence.
	applyOK(t, s, []projections.Envelope{f.log.republish(f.cancelled)})
	var again []projections.Envelope
	for _, b := range f.batches {
		for _, e := range b {
			again = append(again, f.log.republish(e))
		}
	}
	applyOK(t, s, again)
	if after := salesModelState(t, s); after != before {
		t.Errorf("older events changed the report\nbefore: %s\nafter:  %s", before, after)
	}
	checkSales(t, s, projections.SalesQuery{From: salesDay2, To: salesDay3, GroupBy: "sku"}, []projections.SalesRow{
		{Key: "BOOK-1", Orders: 1, Units: 1, RevenueCents: 1000},
		{Key: "BOOK-2", Orders: 1, Units: 3, RevenueCents: 7500},
	})
}

func testSalesPoison(t *testing.T, s SalesUnderTest) {
	l := newStreamLog(t)
	at := salesDay1.Add(time.Hour)
	first := l.orderEvent(domain.EventOrderPlaced, orderSnapshot(orderIDA, "u1", domain.StatusPlaced, 1, at, at, salesLine(book1, 1)))
	bad := l.raw(domain.AggregateOrder, orderIDC, 1, domain.EventOrderPlaced, `{"order_id": "`+orderIDC+`", "items": [{"sku": 1}]}`)
	after := l.orderEvent(domain.EventOrderPlaced, orderSnapshot(orderIDB, "u1", domain.StatusPlaced, 1, at, at, salesLine(book2, 1)))
	q := projections.SalesQuery{From: salesDay1, To: salesDay2, GroupBy: "sku"}

	checkPoison(t, s, []projections.Envelope{first, bad, after}, bad.Seq)
	rows, err := s.Sales(t.Context(), q)
	if err != nil {
		t.Fatalf("Sales: %v", err)
	}
	for _, r := range rows {
		if r.Key == "BOOK-2" {
			t.Errorf("the event after the poison one was applied: %+v", rows)
		}
	}
	applyOK(t, s, []projections.Envelope{first, after})
	checkSales(t, s, q, []projections.SalesRow{
		{Key: "BOOK-1", Orders: 1, Units: 1, RevenueCents: 1000},
		{Key: "BOOK-2", Orders: 1, Units: 1, RevenueCents: 2500},
	})

	for name, e := range map[string]projections.Envelope{
		"not JSON":       l.raw(domain.AggregateOrder, orderIDC, 2, domain.EventOrderCancelled, `}{`),
		"no order id":    l.raw(domain.AggregateOrder, orderIDC, 1, domain.EventOrderPlaced, `{"items": []}`),
		"unknown schema": withSchema(l.orderEvent(domain.EventOrderPlaced, orderSnapshot(orderIDC, "u1", domain.StatusPlaced, 1, at, at, salesLine(game1, 1))), 7),
	} {
		t.Run(name, func(t *testing.T) { checkPoison(t, s, []projections.Envelope{e}, e.Seq) })
	}

	applyOK(t, s, []projections.Envelope{
		l.raw(domain.AggregateProduct, "BOOK-1", 2, domain.EventProductUpdated, `not json`),
		l.raw(domain.AggregateInventory, "BOOK-1", 2, domain.EventInventoryAdjusted, `not json`),
		l.raw("loyalty", "u1", 1, "LoyaltyPointsEarned", `not json`),
	})
	checkSales(t, s, q, []projections.SalesRow{
		{Key: "BOOK-1", Orders: 1, Units: 1, RevenueCents: 1000},
		{Key: "BOOK-2", Orders: 1, Units: 1, RevenueCents: 2500},
	})
}

func checkSales(t *testing.T, s SalesUnderTest, q projections.SalesQuery, want []projections.SalesRow) {
	t.Helper()
	got, err := s.Sales(t.Context(), q)
	if err != nil {
		t.Fatalf("Sales(%s, [%s, %s)): %v", q.GroupBy, q.From, q.To, err)
	}
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		same = got[i] == want[i]
	}
	if !same {
		t.Errorf("Sales(%s, [%s, %s)) =\n %+v\nwant\n %+v", q.GroupBy, q.From, q.To, got, want)
	}
}

// salesModelState renders every report over the whole fixture.
func salesModelState(t *testing.T, s SalesUnderTest) string {
	t.Helper()
	var out string
	for _, groupBy := range []string{"day", "sku", "category"} {
		rows, err := s.Sales(t.Context(), projections.SalesQuery{From: salesDay0, To: salesDay4, GroupBy: groupBy})
		if err != nil {
			t.Fatalf("Sales(%s): %v", groupBy, err)
		}
		out += fmt.Sprintf("%s: %+v\n", groupBy, rows)
	}
	return out
}
