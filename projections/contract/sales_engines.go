package contract

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/projections"
)

// Engine is a sales adapter over one database engine, named for messages.
type Engine struct {
	Name  string
	Store SalesUnderTest
}

// SalesEnginesAgree applies the sales suite's fixture to two empty stores,
// the same adapter over two engines, and compares every report of the suite
// row by row: once after the fixture, and again after redelivery and a stale
// placement. Each engine also has to pass Sales; this is what shows that the
// two engines read the same SQL alike, including the queries whose answer
// the suite does not spell out.
func SalesEnginesAgree(t *testing.T, a, b Engine) {
	f := newSalesFixture(t)
	for _, e := range []Engine{a, b} {
		f.apply(t, e.Store)
	}
	compareSalesReports(t, f, a, b)

	for _, e := range []Engine{a, b} {
		applyOK(t, e.Store, []projections.Envelope{f.cancelled})
		for _, batch := range f.batches {
			applyOK(t, e.Store, batch)
		}
	}
	compareSalesReports(t, f, a, b)
}

// salesEngineQueries are the reports the sales suite reads, each grouped
// every way.
func salesEngineQueries(f *salesFixture) []projections.SalesQuery {
	plus2 := time.FixedZone("UTC+2", 2*60*60)
	ranges := [][2]time.Time{
		{salesDay0, salesDay4},
		{salesDay1, salesDay2},
		{salesDay1, salesDay3},
		{salesDay2, salesDay3},
		{f.dayTwo, salesDay3},
		{salesDay1, f.lastPlace},
		{salesDay1, f.lastPlace.Add(time.Microsecond)},
		{f.lastPlace.Add(time.Microsecond), salesDay2.Add(time.Hour)},
		{salesDay1.In(plus2), salesDay3.In(plus2)},
		{salesDay4, salesDay4.AddDate(0, 1, 0)},
		{salesDay2, salesDay2},
		{salesDay3, salesDay1},
	}
	var qs []projections.SalesQuery
	for _, r := range ranges {
		for _, groupBy := range []string{"day", "sku", "category"} {
			qs = append(qs, projections.SalesQuery{From: r[0], To: r[1], GroupBy: groupBy})
		}
	}
	return qs
}

func compareSalesReports(t *testing.T, f *salesFixture, a, b Engine) {
	t.Helper()
	for _, q := range salesEngineQueries(f) {
		desc := fmt.Sprintf("Sales(%s, [%s, %s))", q.GroupBy, q.From.Format(time.RFC3339Nano), q.To.Format(time.RFC3339Nano))
		rowsA, errA := a.Store.Sales(t.Context(), q)
		rowsB, errB := b.Store.Sales(t.Context(), q)
		if errA != nil || errB != nil {
			// Every report runs the same SQL: the first failure says it all.
			t.Fatalf("%s:\n %s: %v\n %s: %v", desc, a.Name, errOrOK(errA), b.Name, errOrOK(errB))
		}
		for i := range max(len(rowsA), len(rowsB)) {
			ra, rb := "no row", "no row"
			if i < len(rowsA) {
				ra = fmt.Sprintf("%+v", rowsA[i])
			}
			if i < len(rowsB) {
				rb = fmt.Sprintf("%+v", rowsB[i])
			}
			if ra != rb {
				t.Errorf("%s row %d:\n %s: %s\n %s: %s", desc, i, a.Name, ra, b.Name, rb)
			}
		}
	}
}

func errOrOK(err error) string {
	if err != nil {
		return err.Error()
	}
	return "ok"
}
