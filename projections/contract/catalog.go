package contract

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// CatalogUnderTest is a product catalog store as the catalog suite drives
// it. Whatever Apply wrote must be visible to Product, Search and
// AppliedVersion when Apply returns (an Elasticsearch store under test
// refreshes on every write).
type CatalogUnderTest interface {
	projections.Applier
	projections.CatalogReader
	projections.VersionReader
	projections.StockFlagReader
}

// Catalog runs the catalog read-model contract against the stores newStore
// returns: a new, empty store for every subtest, cleaned up with t.Cleanup.
// Subtests run in parallel.
func Catalog(t *testing.T, newStore func(t *testing.T) CatalogUnderTest) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, s CatalogUnderTest)
	}{
		{"CreateAndUpdate", catalogCreateAndUpdate},
		{"InventoryFlipsInStock", catalogInventoryFlipsInStock},
		{"FullText", catalogFullText},
		{"FiltersInclusive", catalogFiltersInclusive},
		{"Facets", catalogFacets},
		{"TotalAndPaging", catalogTotalAndPaging},
		{"SearchWindow", catalogSearchWindow},
		{"FreshSearch", catalogFreshSearch},
		{"RelevanceTiesBySKU", catalogRelevanceTiesBySKU},
		{"RedeliveryAndReplay", catalogRedeliveryAndReplay},
		{"StaleEventsIgnored", catalogStaleEventsIgnored},
		{"InventoryBeforeProduct", catalogInventoryBeforeProduct},
		{"NotFound", catalogNotFound},
		{"Poison", catalogPoison},
		{"OtherAggregatesIgnored", catalogOtherAggregatesIgnored},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newStore(t))
		})
	}
}

// catalogFixture is a small catalog: four categories, every price range but
// 10000-49999, stock on three SKUs (one of them reserved down to zero), and
// bounds on the price-range edges. Each event has its own sequence; the
// batches are how the suite first applies them.
func catalogFixture(t *testing.T) [][]projections.Envelope {
	t.Helper()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	lantern := catalogSnapshot("A-100", "Lantern", "Rechargeable camping light with a titanium hook", "outdoor", 2000, 1)
	lantern.Attributes = map[string]string{"color": "green"}
	lanternV2 := lantern
	lanternV2.Name, lanternV2.PriceCents, lanternV2.Version = "Trail Lantern", 2500, 2
	lanternV2.Attributes = map[string]string{"color": "green", "battery": "usb-c"}
	return [][]projections.Envelope{
		{
			catalogProductEvent(t, 1, domain.EventProductCreated, lantern, at),
			catalogProductEvent(t, 2, domain.EventProductCreated,
				catalogSnapshot("A-200", "Camping Stove", "Compact burner for backpacking trips", "outdoor", 5000, 1), at),
			catalogProductEvent(t, 3, domain.EventProductCreated,
				catalogSnapshot("B-100", "Mystery Novel", "A detective story set in Lisbon", "books", 999, 1), at),
		},
		{
			catalogProductEvent(t, 4, domain.EventProductCreated,
				catalogSnapshot("B-200", "Cookbook", "Recipes for camping and the outdoor kitchen", "books", 1000, 1), at),
			catalogProductEvent(t, 5, domain.EventProductCreated,
				catalogSnapshot("C-100", "Desk Lamp", "LED lamp with a dimmer", "home", 9999, 1), at),
			catalogProductEvent(t, 6, domain.EventProductCreated,
				catalogSnapshot("C-200", "Sofa", "Three-seat sofa in grey linen", "home", 50000, 1), at),
			catalogProductEvent(t, 7, domain.EventProductCreated,
				catalogSnapshot("D-100", "Gift Card", "Redeemable online", "gifts", 0, 1), at),
		},
		{
			catalogStockEvent(t, 8, domain.EventInventoryAdjusted, "A-100", 5, 0, 1, at),
			catalogProductEvent(t, 9, domain.EventProductUpdated, lanternV2, at),
			catalogStockEvent(t, 10, domain.EventInventoryAdjusted, "A-200", 2, 0, 1, at),
			catalogStockEvent(t, 11, domain.EventInventoryReserved, "A-200", 2, 2, 2, at),
			catalogStockEvent(t, 12, domain.EventInventoryAdjusted, "B-100", 3, 0, 1, at),
		},
	}
}

// catalogFixtureViews are the products after the whole fixture.
func catalogFixtureViews() map[string]projections.ProductView {
	return map[string]projections.ProductView{
		"A-100": {SKU: "A-100", Name: "Trail Lantern", Description: "Rechargeable camping light with a titanium hook",
			Category: "outdoor", PriceCents: 2500, Attributes: map[string]string{"color": "green", "battery": "usb-c"},
			InStock: true, Version: 2},
		"A-200": {SKU: "A-200", Name: "Camping Stove", Description: "Compact burner for backpacking trips",
			Category: "outdoor", PriceCents: 5000, Version: 1},
		"B-100": {SKU: "B-100", Name: "Mystery Novel", Description: "A detective story set in Lisbon",
			Category: "books", PriceCents: 999, InStock: true, Version: 1},
		"B-200": {SKU: "B-200", Name: "Cookbook", Description: "Recipes for camping and the outdoor kitchen",
			Category: "books", PriceCents: 1000, Version: 1},
		"C-100": {SKU: "C-100", Name: "Desk Lamp", Description: "LED lamp with a dimmer",
			Category: "home", PriceCents: 9999, Version: 1},
		"C-200": {SKU: "C-200", Name: "Sofa", Description: "Three-seat sofa in grey linen",
			Category: "home", PriceCents: 50000, Version: 1},
		"D-100": {SKU: "D-100", Name: "Gift Card", Description: "Redeemable online",
			Category: "gifts", PriceCents: 0, Version: 1},
	}
}

var catalogFixtureSKUs = []string{"A-100", "A-200", "B-100", "B-200", "C-100", "C-200", "D-100"}

func catalogApplyFixture(t *testing.T, s CatalogUnderTest) {
	t.Helper()
	for _, batch := range catalogFixture(t) {
		catalogApply(t, s, batch...)
	}
}

func catalogCreateAndUpdate(t *testing.T, s CatalogUnderTest) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p := catalogSnapshot("SKU-1", "Kettle", "Boils water fast", "kitchen", 3000, 1)
	catalogApply(t, s, catalogProductEvent(t, 1, domain.EventProductCreated, p, at))
	catalogWantProduct(t, s, projections.ProductView{
		SKU: "SKU-1", Name: "Kettle", Description: "Boils water fast", Category: "kitchen", PriceCents: 3000, Version: 1,
	})
	catalogWantVersion(t, s, domain.AggregateProduct, "SKU-1", 1)

	p.Name, p.Category, p.PriceCents, p.Version = "Electric Kettle", "appliances", 3500, 2
	p.Attributes = map[string]string{"volume": "1.7l"}
	catalogApply(t, s, catalogProductEvent(t, 2, domain.EventProductUpdated, p, at))
	want := projections.ProductView{
		SKU: "SKU-1", Name: "Electric Kettle", Description: "Boils water fast", Category: "appliances",
		PriceCents: 3500, Attributes: map[string]string{"volume": "1.7l"}, Version: 2,
	}
	catalogWantProduct(t, s, want)
	catalogWantVersion(t, s, domain.AggregateProduct, "SKU-1", 2)
	catalogWantSearch(t, s, projections.SearchQuery{Category: "appliances"}, 1, want)
	catalogWantSearch(t, s, projections.SearchQuery{Category: "kitchen"}, 0)
}

// catalogInventoryFlipsInStock: the catalog keeps whether a SKU is in
// stock, written only when a stock event flips it, so its inventory version
// is that of the last flip.
func catalogInventoryFlipsInStock(t *testing.T, s CatalogUnderTest) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	catalogApply(t, s, catalogProductEvent(t, 1, domain.EventProductCreated,
		catalogSnapshot("SKU-1", "Kettle", "Boils water fast", "kitchen", 3000, 1), at))
	inStock := projections.SearchQuery{InStock: true}
	catalogWantSearch(t, s, inStock, 0)

	steps := []struct {
		typ              string
		onHand, reserved int64
		wantVersion      int64 // of the last flip
	}{
		{domain.EventInventoryAdjusted, 10, 0, 1},
		{domain.EventInventoryReserved, 10, 3, 1},
		{domain.EventInventoryShipped, 7, 0, 1},
		{domain.EventInventoryReserved, 7, 7, 4},
		{domain.EventInventoryShipped, 5, 5, 4},
		{domain.EventInventoryReleased, 5, 2, 6},
		{domain.EventInventoryAdjusted, 2, 2, 7},
	}
	for i, st := range steps {
		seq, version := uint64(2+i), int64(1+i)
		catalogApply(t, s, catalogStockEvent(t, seq, st.typ, "SKU-1", st.onHand, st.reserved, version, at))
		view := projections.ProductView{
			SKU: "SKU-1", Name: "Kettle", Description: "Boils water fast", Category: "kitchen",
			PriceCents: 3000, InStock: st.onHand > st.reserved, Version: 1,
		}
		catalogWantProduct(t, s, view)
		catalogWantVersion(t, s, domain.AggregateInventory, "SKU-1", st.wantVersion)
		catalogWantVersion(t, s, domain.AggregateProduct, "SKU-1", 1)
		if view.InStock {
			catalogWantSearch(t, s, inStock, 1, view)
		} else {
			catalogWantSearch(t, s, inStock, 0)
		}
		catalogWantSearch(t, s, projections.SearchQuery{}, 1, view)
		if flag, err := s.InStock(t.Context(), "SKU-1"); err != nil || flag != view.InStock {
			t.Errorf("step %d: InStock(SKU-1) = %t, %v; want %t", i, flag, err, view.InStock)
		}
	}
	if flag, err := s.InStock(t.Context(), "NOPE"); err != nil || flag {
		t.Errorf("InStock of a SKU the catalog does not hold = %t, %v; want false", flag, err)
	}
}

func catalogFullText(t *testing.T, s CatalogUnderTest) {
	catalogApplyFixture(t, s)
	views := catalogFixtureViews()
	for _, tc := range []struct {
		q    string
		want []string
	}{
		{"titanium", []string{"A-100"}},                  // a word only in a description
		{"TITANIUM", []string{"A-100"}},                  // case does not matter
		{"lanterns", []string{"A-100"}},                  // stemming: the name says "Lantern"
		{"camping", []string{"A-100", "A-200", "B-200"}}, // name or description
		{"camping titanium", []string{"A-100"}},          // every word must match
		{"stove backpacking", []string{"A-200"}},         // one word in the name, one in the description
		{"camping sofa", nil},                            // no product has both
		{"nonexistentword", nil},
		{"the", nil}, // stop words alone match nothing
	} {
		res := catalogSearch(t, s, projections.SearchQuery{Q: tc.q, Limit: 10})
		if got := catalogSKUs(res.Hits); !catalogSameSet(got, tc.want) || res.Total != int64(len(tc.want)) {
			t.Errorf("Search(Q=%q) = total %d, hits %v; want total %d, hits %v", tc.q, res.Total, got, len(tc.want), tc.want)
		}
		for _, h := range res.Hits {
			if !reflect.DeepEqual(h, views[h.SKU]) {
				t.Errorf("Search(Q=%q) hit %+v; want %+v", tc.q, h, views[h.SKU])
			}
		}
	}
	res := catalogSearch(t, s, projections.SearchQuery{Q: "camping", Category: "books"})
	if got := catalogSKUs(res.Hits); !slices.Equal(got, []string{"B-200"}) || res.Total != 1 {
		t.Errorf("Search(Q=camping, category=books) = total %d, hits %v; want [B-200]", res.Total, got)
	}
}

func catalogFiltersInclusive(t *testing.T, s CatalogUnderTest) {
	catalogApplyFixture(t, s)
	for _, tc := range []struct {
		name string
		q    projections.SearchQuery
		want []string
	}{
		{"both bounds hit", projections.SearchQuery{MinPrice: catalogCents(1000), MaxPrice: catalogCents(4999)}, []string{"A-100", "B-200"}},
		{"min equals max", projections.SearchQuery{MinPrice: catalogCents(999), MaxPrice: catalogCents(999)}, []string{"B-100"}},
		{"min only", projections.SearchQuery{MinPrice: catalogCents(9999)}, []string{"C-100", "C-200"}},
		{"max zero", projections.SearchQuery{MaxPrice: catalogCents(0)}, []string{"D-100"}},
		{"empty range", projections.SearchQuery{MinPrice: catalogCents(10000), MaxPrice: catalogCents(49999)}, nil},
		{"category exact", projections.SearchQuery{Category: "books"}, []string{"B-100", "B-200"}},
		{"category is not a prefix or a word", projections.SearchQuery{Category: "book"}, nil},
		{"category is case-sensitive", projections.SearchQuery{Category: "Books"}, nil},
		{"in stock", projections.SearchQuery{InStock: true}, []string{"A-100", "B-100"}},
		{"in stock and category", projections.SearchQuery{InStock: true, Category: "outdoor"}, []string{"A-100"}},
		{"all filters", projections.SearchQuery{Q: "camping", Category: "outdoor", MinPrice: catalogCents(2500), MaxPrice: catalogCents(2500), InStock: true}, []string{"A-100"}},
	} {
		tc.q.Limit = 10
		res := catalogSearch(t, s, tc.q)
		if got := catalogSKUs(res.Hits); !catalogSameSet(got, tc.want) || res.Total != int64(len(tc.want)) {
			t.Errorf("%s: Search(%s) = total %d, hits %v; want %v", tc.name, catalogQueryString(tc.q), res.Total, got, tc.want)
		}
	}
}

func catalogFacets(t *testing.T, s CatalogUnderTest) {
	catalogApplyFixture(t, s)
	price := func(counts ...int64) []projections.FacetCount {
		out := make([]projections.FacetCount, len(projections.PriceRanges))
		for i, r := range projections.PriceRanges {
			out[i] = projections.FacetCount{Range: r.Name, Count: counts[i]}
		}
		return out
	}
	cat := func(pairs ...any) []projections.FacetCount {
		out := []projections.FacetCount{}
		for i := 0; i < len(pairs); i += 2 {
			out = append(out, projections.FacetCount{Value: pairs[i].(string), Count: int64(pairs[i+1].(int))})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		q    projections.SearchQuery
		want projections.Facets
	}{
		{"all products, one hit per page", projections.SearchQuery{Limit: 1},
			projections.Facets{Category: cat("books", 2, "home", 2, "outdoor", 2, "gifts", 1), Price: price(2, 2, 2, 0, 1)}},
		{"after a text query", projections.SearchQuery{Q: "camping", Limit: 1},
			projections.Facets{Category: cat("outdoor", 2, "books", 1), Price: price(0, 2, 1, 0, 0)}},
		{"after a category filter", projections.SearchQuery{Category: "home"},
			projections.Facets{Category: cat("home", 2), Price: price(0, 0, 1, 0, 1)}},
		{"after price and stock filters", projections.SearchQuery{MaxPrice: catalogCents(4999), InStock: true},
			projections.Facets{Category: cat("books", 1, "outdoor", 1), Price: price(1, 1, 0, 0, 0)}},
		{"no match", projections.SearchQuery{Q: "nonexistentword"},
			projections.Facets{Category: cat(), Price: price(0, 0, 0, 0, 0)}},
	} {
		res := catalogSearch(t, s, tc.q)
		if !reflect.DeepEqual(res.Facets, tc.want) {
			t.Errorf("%s: Search(%s) facets\n got %+v\nwant %+v", tc.name, catalogQueryString(tc.q), res.Facets, tc.want)
		}
	}
}

func catalogCents(v int64) *int64 { return &v }

func catalogTotalAndPaging(t *testing.T, s CatalogUnderTest) {
	catalogApplyFixture(t, s)
	views := catalogFixtureViews()
	for _, tc := range []struct {
		limit, offset int
		want          []string
	}{
		{3, 0, []string{"A-100", "A-200", "B-100"}},
		{3, 3, []string{"B-200", "C-100", "C-200"}},
		{3, 6, []string{"D-100"}},
		{3, 7, nil},
		{100, 0, catalogFixtureSKUs},
	} {
		res := catalogSearch(t, s, projections.SearchQuery{Limit: tc.limit, Offset: tc.offset})
		if got := catalogSKUs(res.Hits); !slices.Equal(got, tc.want) || res.Total != int64(len(catalogFixtureSKUs)) {
			t.Errorf("Search(limit=%d, offset=%d) = total %d, hits %v; want total %d, hits %v",
				tc.limit, tc.offset, res.Total, got, len(catalogFixtureSKUs), tc.want)
		}
		for _, h := range res.Hits {
			if !reflect.DeepEqual(h, views[h.SKU]) {
				t.Errorf("hit %+v; want %+v", h, views[h.SKU])
			}
		}
	}
	// Pages of a text query are stable: paging through equals one big page.
	var paged []string
	for offset := 0; offset < 3; offset++ {
		paged = append(paged, catalogSKUs(catalogSearch(t, s, projections.SearchQuery{Q: "camping", Limit: 1, Offset: offset}).Hits)...)
	}
	whole := catalogSKUs(catalogSearch(t, s, projections.SearchQuery{Q: "camping", Limit: 3}).Hits)
	if !slices.Equal(paged, whole) || len(whole) != 3 {
		t.Errorf("Search(Q=camping) page by page = %v; in one page = %v", paged, whole)
	}
}

// catalogSearchWindow checks that every engine pages up to
// projections.MaxSearchWindow and refuses a query past it with
// ErrBeyondSearchWindow, whatever its filters: the same query answers alike on
// every engine (Elasticsearch's max_result_window is the bound).
func catalogSearchWindow(t *testing.T, s CatalogUnderTest) {
	catalogApplyFixture(t, s)
	for _, tc := range []struct {
		q     projections.SearchQuery
		total int64
	}{
		{projections.SearchQuery{Offset: projections.MaxSearchWindow - 10, Limit: 10}, int64(len(catalogFixtureSKUs))},
		{projections.SearchQuery{Offset: projections.MaxSearchWindow - projections.DefaultSearchLimit}, int64(len(catalogFixtureSKUs))},
		{projections.SearchQuery{Offset: projections.MaxSearchWindow - 1, Limit: 1, Q: "camping"}, 3},
	} {
		if res := catalogSearch(t, s, tc.q); res.Total != tc.total || len(res.Hits) != 0 {
			t.Errorf("Search(%s) = total %d, %d hits; want total %d, no hits", catalogQueryString(tc.q), res.Total, len(res.Hits), tc.total)
		}
	}
	for _, q := range []projections.SearchQuery{
		{Offset: projections.MaxSearchWindow - 9, Limit: 10},
		{Offset: projections.MaxSearchWindow - projections.DefaultSearchLimit + 1},
		{Offset: projections.MaxSearchWindow, Limit: 1, InStock: true},
		{Offset: projections.MaxSearchWindow, Limit: 1, Fresh: true},
	} {
		if res, err := s.Search(t.Context(), q); !errors.Is(err, projections.ErrBeyondSearchWindow) {
			t.Errorf("Search(%s) = %+v, %v; want ErrBeyondSearchWindow", catalogQueryString(q), res, err)
		}
	}
}

// catalogFreshSearch checks that a search asked to be fresh answers exactly
// as any other search over the same applied writes, right after Apply.
func catalogFreshSearch(t *testing.T, s CatalogUnderTest) {
	catalogApplyFixture(t, s)
	views := catalogFixtureViews()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	lamp := catalogSnapshot("C-100", "Desk Lamp", "LED lamp with a dimmer and a clamp", "home", 8999, 2)
	catalogApply(t, s, catalogProductEvent(t, 13, domain.EventProductUpdated, lamp, at))
	want := views["C-100"]
	want.Description, want.PriceCents, want.Version = lamp.Description, lamp.PriceCents, 2
	catalogWantSearch(t, s, projections.SearchQuery{Q: "clamp", Fresh: true}, 1, want)
	catalogWantSearch(t, s, projections.SearchQuery{Q: "clamp"}, 1, want)
}

func catalogRelevanceTiesBySKU(t *testing.T, s CatalogUnderTest) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// Identical text scores the same; written in reverse SKU order, one batch
	// each, so that neither insertion order nor segment order gives SKU order.
	for i, sku := range []string{"K-3", "K-1", "K-2"} {
		catalogApply(t, s, catalogProductEvent(t, uint64(1+i), domain.EventProductCreated,
			catalogSnapshot(sku, "Kettle", "Boils water fast", "kitchen", 3000, 1), at))
	}
	res := catalogSearch(t, s, projections.SearchQuery{Q: "kettle water", Limit: 10})
	if got := catalogSKUs(res.Hits); !slices.Equal(got, []string{"K-1", "K-2", "K-3"}) {
		t.Errorf("Search(Q=kettle water) over equally relevant products = %v; want SKU order [K-1 K-2 K-3]", got)
	}
}

func catalogRedeliveryAndReplay(t *testing.T, s CatalogUnderTest) {
	history := catalogFixture(t)
	for _, batch := range history {
		catalogApply(t, s, batch...)
	}
	before := catalogState(t, s)
	if want := catalogFixtureViews(); !reflect.DeepEqual(before.products, catalogViewsAsState(want)) {
		t.Fatalf("after the fixture: products %+v; want %+v", before.products, want)
	}

	catalogApply(t, s, history[len(history)-1]...) // the last batch, redelivered
	catalogWantState(t, s, before, "after redelivering the last batch")

	all := slices.Concat(history...)
	catalogApply(t, s, all...) // the whole history, replayed in one batch
	catalogWantState(t, s, before, "after replaying the whole history")

	for i := 0; i < len(all); i += 2 { // and again in other batches
		catalogApply(t, s, all[i:min(i+2, len(all))]...)
	}
	catalogWantState(t, s, before, "after replaying the history two events at a time")
}

func catalogStaleEventsIgnored(t *testing.T, s CatalogUnderTest) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	v1 := catalogSnapshot("SKU-1", "Kettle", "Boils water fast", "kitchen", 3000, 1)
	v2 := v1
	v2.Name, v2.PriceCents, v2.Version = "Electric Kettle", 3500, 2
	v3 := v2
	v3.PriceCents, v3.Version = 3200, 3

	catalogApply(t, s,
		catalogProductEvent(t, 10, domain.EventProductUpdated, v2, at),
		catalogStockEvent(t, 12, domain.EventInventoryAdjusted, "SKU-1", 4, 0, 2, at),
	)
	want := projections.ProductView{
		SKU: "SKU-1", Name: "Electric Kettle", Description: "Boils water fast", Category: "kitchen",
		PriceCents: 3500, InStock: true, Version: 2,
	}
	catalogWantProduct(t, s, want)

	// Lower sequences than the ones applied, each of its own kind.
	catalogApply(t, s, catalogProductEvent(t, 5, domain.EventProductCreated, v1, at))
	catalogApply(t, s, catalogStockEvent(t, 11, domain.EventInventoryAdjusted, "SKU-1", 9, 0, 1, at))
	catalogApply(t, s, catalogProductEvent(t, 10, domain.EventProductUpdated, v1, at)) // same sequence, other data
	catalogApply(t, s, catalogStockEvent(t, 12, domain.EventInventoryAdjusted, "SKU-1", 9, 0, 1, at))
	catalogWantProduct(t, s, want)
	catalogWantVersion(t, s, domain.AggregateProduct, "SKU-1", 2)
	catalogWantVersion(t, s, domain.AggregateInventory, "SKU-1", 2)
	catalogWantSearch(t, s, projections.SearchQuery{Q: "electric"}, 1, want)
	catalogWantSearch(t, s, projections.SearchQuery{MaxPrice: catalogCents(3000)}, 0)

	// A newer event and then a stale one in the same batch.
	catalogApply(t, s,
		catalogProductEvent(t, 20, domain.EventProductUpdated, v3, at),
		catalogProductEvent(t, 15, domain.EventProductUpdated, v1, at),
	)
	want.PriceCents, want.Version = 3200, 3
	catalogWantProduct(t, s, want)
	catalogWantVersion(t, s, domain.AggregateProduct, "SKU-1", 3)

	// Older and same versions re-published under new, higher sequences (as
	// the stream appends an event published again after its duplicate
	// window): each part of the document keeps its own newest version, and
	// the whole stays byte for byte the same.
	before := catalogState(t, s)
	catalogApply(t, s, catalogProductEvent(t, 30, domain.EventProductCreated, v1, at))
	catalogApply(t, s, catalogStockEvent(t, 31, domain.EventInventoryAdjusted, "SKU-1", 9, 0, 1, at))
	catalogApply(t, s,
		catalogStockEvent(t, 32, domain.EventInventoryAdjusted, "SKU-1", 4, 0, 2, at), // the same version
		catalogProductEvent(t, 33, domain.EventProductUpdated, v2, at),
		catalogProductEvent(t, 34, domain.EventProductUpdated, v3, at), // the same version
	)
	catalogWantProduct(t, s, want)
	catalogWantVersion(t, s, domain.AggregateInventory, "SKU-1", 2)
	catalogWantState(t, s, before, "after re-published older events")

	// A newer version of one part still applies, whatever the other's.
	catalogApply(t, s, catalogStockEvent(t, 35, domain.EventInventoryReserved, "SKU-1", 4, 4, 3, at))
	want.InStock = false
	catalogWantProduct(t, s, want)
	catalogWantVersion(t, s, domain.AggregateInventory, "SKU-1", 3)
}

func catalogInventoryBeforeProduct(t *testing.T, s CatalogUnderTest) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	other := catalogSnapshot("SKU-2", "Teapot", "Porcelain teapot", "kitchen", 2000, 1)
	catalogApply(t, s,
		catalogProductEvent(t, 1, domain.EventProductCreated, other, at),
		catalogStockEvent(t, 2, domain.EventInventoryAdjusted, "SKU-1", 5, 0, 1, at),
	)
	otherView := projections.ProductView{SKU: "SKU-2", Name: "Teapot", Description: "Porcelain teapot", Category: "kitchen", PriceCents: 2000, Version: 1}

	if _, err := s.Product(t.Context(), "SKU-1"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Product(SKU-1) with stock but no product: err = %v; want ErrNotFound", err)
	}
	catalogWantVersion(t, s, domain.AggregateProduct, "SKU-1", 0)
	catalogWantVersion(t, s, domain.AggregateInventory, "SKU-1", 1)
	catalogWantSearch(t, s, projections.SearchQuery{}, 1, otherView)
	catalogWantSearch(t, s, projections.SearchQuery{InStock: true}, 0)
	res := catalogSearch(t, s, projections.SearchQuery{})
	wantFacets := []projections.FacetCount{{Value: "kitchen", Count: 1}}
	if !reflect.DeepEqual(res.Facets.Category, wantFacets) || res.Facets.Price[1].Count != 1 || res.Facets.Price[0].Count != 0 {
		t.Errorf("facets count a SKU without product data: %+v", res.Facets)
	}

	catalogApply(t, s, catalogProductEvent(t, 3, domain.EventProductCreated,
		catalogSnapshot("SKU-1", "Kettle", "Boils water fast", "kitchen", 3000, 1), at))
	view := projections.ProductView{
		SKU: "SKU-1", Name: "Kettle", Description: "Boils water fast", Category: "kitchen", PriceCents: 3000, InStock: true, Version: 1,
	}
	catalogWantProduct(t, s, view)
	catalogWantVersion(t, s, domain.AggregateProduct, "SKU-1", 1)
	catalogWantSearch(t, s, projections.SearchQuery{InStock: true}, 1, view)
	catalogWantSearch(t, s, projections.SearchQuery{}, 2, view, otherView)
}

func catalogNotFound(t *testing.T, s CatalogUnderTest) {
	if _, err := s.Product(t.Context(), "NOPE"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Product(NOPE) on an empty store: err = %v; want ErrNotFound", err)
	}
	catalogWantVersion(t, s, domain.AggregateProduct, "NOPE", 0)
	res := catalogSearch(t, s, projections.SearchQuery{})
	if res.Total != 0 || res.Hits == nil || len(res.Hits) != 0 || res.Facets.Category == nil || len(res.Facets.Price) != len(projections.PriceRanges) {
		t.Errorf("Search on an empty store = %+v; want total 0, empty (not nil) hits and category facets, every price range", res)
	}

	catalogApplyFixture(t, s)
	if _, err := s.Product(t.Context(), "NOPE"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Product(NOPE): err = %v; want ErrNotFound", err)
	}
	if _, err := s.Product(t.Context(), "A-10"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Product(A-10), a prefix of A-100: err = %v; want ErrNotFound", err)
	}
}

func catalogPoison(t *testing.T, s CatalogUnderTest) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	good1 := catalogProductEvent(t, 1, domain.EventProductCreated,
		catalogSnapshot("SKU-1", "Kettle", "Boils water fast", "kitchen", 3000, 1), at)
	good3 := catalogStockEvent(t, 3, domain.EventInventoryAdjusted, "SKU-1", 4, 0, 1, at)

	undecodable := catalogProductEvent(t, 2, domain.EventProductUpdated,
		catalogSnapshot("SKU-1", "Kettle", "Boils water fast", "kitchen", 1, 2), at)
	undecodable.Payload = json.RawMessage(`{"sku": "SKU-1", "price_cents": "cheap"`)
	otherSKU := catalogProductEvent(t, 2, domain.EventProductUpdated,
		catalogSnapshot("SKU-9", "Kettle", "Boils water fast", "kitchen", 1, 2), at)
	otherSKU.AggregateID = "SKU-1"
	newerSchema := catalogStockEvent(t, 2, domain.EventInventoryAdjusted, "SKU-1", 1, 0, 2, at)
	newerSchema.SchemaVersion = domain.CurrentSchemaVersion + 1
	unknownType := catalogProductEvent(t, 2, "ProductTeleported",
		catalogSnapshot("SKU-1", "Kettle", "Boils water fast", "kitchen", 1, 2), at)

	for name, poison := range map[string]projections.Envelope{
		"undecodable payload":        undecodable,
		"payload of another sku":     otherSKU,
		"unknown schema version":     newerSchema,
		"unknown product event type": unknownType,
	} {
		err := s.Apply(t.Context(), []projections.Envelope{good1, poison, good3})
		var pe *projections.PoisonError
		if !errors.As(err, &pe) || pe.Seq != 2 || pe.Reason == "" {
			t.Errorf("%s: Apply = %v; want a *PoisonError for seq 2 with a reason", name, err)
		}
	}

	// The runtime dead-letters the poison event and retries the rest.
	catalogApply(t, s, good1, good3)
	catalogWantProduct(t, s, projections.ProductView{
		SKU: "SKU-1", Name: "Kettle", Description: "Boils water fast", Category: "kitchen", PriceCents: 3000, InStock: true, Version: 1,
	})
}

func catalogOtherAggregatesIgnored(t *testing.T, s CatalogUnderTest) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	order := projections.Envelope{
		Seq: 2, ID: "evt-2", AggregateType: domain.AggregateOrder, AggregateID: "5f0c6f8e-8a43-4a5e-9d7c-0d7b1d1d1b11",
		AggregateVersion: 1, EventType: domain.EventOrderPlaced, SchemaVersion: domain.CurrentSchemaVersion,
		OccurredAt: at, Payload: json.RawMessage(`{"order_id": "5f0c6f8e-8a43-4a5e-9d7c-0d7b1d1d1b11"}`),
	}
	catalogApply(t, s, order) // nothing the catalog reads
	catalogApply(t, s, catalogProductEvent(t, 1, domain.EventProductCreated,
		catalogSnapshot("SKU-1", "Kettle", "Boils water fast", "kitchen", 3000, 1), at), order)
	catalogWantSearch(t, s, projections.SearchQuery{}, 1, projections.ProductView{
		SKU: "SKU-1", Name: "Kettle", Description: "Boils water fast", Category: "kitchen", PriceCents: 3000, Version: 1,
	})
}

// catalogSnapshot is a product's state as product events carry it.
func catalogSnapshot(sku, name, description, category string, priceCents, version int64) domain.ProductSnapshot {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return domain.ProductSnapshot{
		SKU: sku, Name: name, Description: description, Category: category, PriceCents: priceCents,
		Attributes: map[string]string{}, Version: version, CreatedAt: at, UpdatedAt: at,
	}
}

// catalogProductEvent is a ProductCreated or ProductUpdated envelope with
// stream sequence seq, encoded as the write side encodes it.
func catalogProductEvent(t *testing.T, seq uint64, eventType string, p domain.ProductSnapshot, at time.Time) projections.Envelope {
	t.Helper()
	var payload any = domain.ProductCreated{ProductSnapshot: p}
	if eventType != domain.EventProductCreated {
		payload = domain.ProductUpdated{ProductSnapshot: p, Changed: []string{"name", "price_cents"}}
	}
	return catalogEnvelope(t, seq, domain.AggregateProduct, p.SKU, p.Version, eventType, payload, at)
}

// catalogStockEvent is an inventory event envelope for sku with stream
// sequence seq; available is onHand - reserved.
func catalogStockEvent(t *testing.T, seq uint64, eventType, sku string, onHand, reserved, version int64, at time.Time) projections.Envelope {
	t.Helper()
	levels := domain.InventoryLevels{SKU: sku, OnHand: onHand, Reserved: reserved, Available: onHand - reserved, Version: version}
	var payload any
	switch eventType {
	case domain.EventInventoryAdjusted:
		payload = domain.InventoryAdjusted{InventoryLevels: levels, Delta: onHand, Reason: "count"}
	case domain.EventInventoryReserved:
		payload = domain.InventoryReserved{InventoryLevels: levels, OrderID: "5f0c6f8e-8a43-4a5e-9d7c-0d7b1d1d1b11", Quantity: 1}
	case domain.EventInventoryReleased:
		payload = domain.InventoryReleased{InventoryLevels: levels, OrderID: "5f0c6f8e-8a43-4a5e-9d7c-0d7b1d1d1b11", Quantity: 1, Reason: domain.InventoryReasonCanceled}
	case domain.EventInventoryShipped:
		payload = domain.InventoryShipped{InventoryLevels: levels, OrderID: "5f0c6f8e-8a43-4a5e-9d7c-0d7b1d1d1b11", Quantity: 1}
	default:
		t.Fatalf("catalogStockEvent: not an inventory event type: %s", eventType)
	}
	return catalogEnvelope(t, seq, domain.AggregateInventory, sku, version, eventType, payload, at)
}

func catalogEnvelope(t *testing.T, seq uint64, aggType, aggID string, version int64, eventType string, payload any, at time.Time) projections.Envelope {
	t.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		t.Fatalf("encode %s payload: %v", eventType, err)
	}
	return projections.Envelope{
		Seq: seq, ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", seq),
		AggregateType: aggType, AggregateID: aggID, AggregateVersion: version,
		EventType: eventType, SchemaVersion: domain.CurrentSchemaVersion, OccurredAt: at, Payload: raw,
	}
}

func catalogApply(t *testing.T, s CatalogUnderTest, events ...projections.Envelope) {
	t.Helper()
	if err := s.Apply(t.Context(), events); err != nil {
		t.Fatalf("Apply(%d events): %v", len(events), err)
	}
}

func catalogSearch(t *testing.T, s CatalogUnderTest, q projections.SearchQuery) projections.SearchResult {
	t.Helper()
	res, err := s.Search(t.Context(), q)
	if err != nil {
		t.Fatalf("Search(%s): %v", catalogQueryString(q), err)
	}
	if res.Hits == nil || res.Facets.Category == nil || res.Facets.Price == nil {
		t.Errorf("Search(%s): hits and facets must be empty lists, not nil: %+v", catalogQueryString(q), res)
	}
	return res
}

func catalogWantProduct(t *testing.T, s CatalogUnderTest, want projections.ProductView) {
	t.Helper()
	got, err := s.Product(t.Context(), want.SKU)
	if err != nil {
		t.Fatalf("Product(%s): %v", want.SKU, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Product(%s)\n got %+v\nwant %+v", want.SKU, got, want)
	}
}

func catalogWantVersion(t *testing.T, s CatalogUnderTest, aggType, id string, want int64) {
	t.Helper()
	got, err := s.AppliedVersion(t.Context(), aggType, id)
	if err != nil {
		t.Fatalf("AppliedVersion(%s, %s): %v", aggType, id, err)
	}
	if got != want {
		t.Errorf("AppliedVersion(%s, %s) = %d; want %d", aggType, id, got, want)
	}
}

// catalogWantSearch checks the total and that the hits are exactly want, in
// any order (the query must fit one default page).
func catalogWantSearch(t *testing.T, s CatalogUnderTest, q projections.SearchQuery, total int64, want ...projections.ProductView) {
	t.Helper()
	res := catalogSearch(t, s, q)
	got := slices.Clone(res.Hits)
	slices.SortFunc(got, func(a, b projections.ProductView) int { return strings.Compare(a.SKU, b.SKU) })
	want = slices.Clone(want)
	slices.SortFunc(want, func(a, b projections.ProductView) int { return strings.Compare(a.SKU, b.SKU) })
	if res.Total != total || !reflect.DeepEqual(got, append([]projections.ProductView{}, want...)) {
		t.Errorf("Search(%s) = total %d, hits %+v; want total %d, hits %+v", catalogQueryString(q), res.Total, got, total, want)
	}
}

// catalogSnapshotState is everything the readers show for the fixture.
type catalogSnapshotState struct {
	products map[string]string // sku → view, or "not found"
	versions map[string]int64  // "type/sku" → applied version
	searches map[string]projections.SearchResult
}

var catalogStateQueries = []projections.SearchQuery{
	{Limit: 100},
	{Q: "camping", Limit: 100},
	{InStock: true, Limit: 100},
	{Category: "books", MinPrice: catalogCents(999), Limit: 100},
}

func catalogState(t *testing.T, s CatalogUnderTest) catalogSnapshotState {
	t.Helper()
	st := catalogSnapshotState{products: map[string]string{}, versions: map[string]int64{}, searches: map[string]projections.SearchResult{}}
	for _, sku := range append(slices.Clone(catalogFixtureSKUs), "NOPE") {
		v, err := s.Product(t.Context(), sku)
		switch {
		case errors.Is(err, projections.ErrNotFound):
			st.products[sku] = "not found"
		case err != nil:
			t.Fatalf("Product(%s): %v", sku, err)
		default:
			st.products[sku] = fmt.Sprintf("%+v", v)
		}
		for _, typ := range []string{domain.AggregateProduct, domain.AggregateInventory} {
			n, err := s.AppliedVersion(t.Context(), typ, sku)
			if err != nil {
				t.Fatalf("AppliedVersion(%s, %s): %v", typ, sku, err)
			}
			st.versions[typ+"/"+sku] = n
		}
	}
	for _, q := range catalogStateQueries {
		st.searches[catalogQueryString(q)] = catalogSearch(t, s, q)
	}
	return st
}

func catalogViewsAsState(views map[string]projections.ProductView) map[string]string {
	out := map[string]string{"NOPE": "not found"}
	for sku, v := range views {
		out[sku] = fmt.Sprintf("%+v", v)
	}
	return out
}

func catalogWantState(t *testing.T, s CatalogUnderTest, want catalogSnapshotState, when string) {
	t.Helper()
	got := catalogState(t, s)
	for sku, v := range want.products {
		if got.products[sku] != v {
			t.Errorf("%s: Product(%s) = %s; was %s", when, sku, got.products[sku], v)
		}
	}
	for key, v := range want.versions {
		if got.versions[key] != v {
			t.Errorf("%s: AppliedVersion(%s) = %d; was %d", when, key, got.versions[key], v)
		}
	}
	for q, res := range want.searches {
		if !reflect.DeepEqual(got.searches[q], res) {
			t.Errorf("%s: Search(%s)\n = %+v\nwas %+v", when, q, got.searches[q], res)
		}
	}
}

func catalogSKUs(hits []projections.ProductView) []string {
	var out []string
	for _, h := range hits {
		out = append(out, h.SKU)
	}
	return out
}

func catalogSameSet(got, want []string) bool {
	got, want = slices.Clone(got), slices.Clone(want)
	slices.Sort(got)
	slices.Sort(want)
	return slices.Equal(got, want)
}

func catalogQueryString(q projections.SearchQuery) string {
	s := fmt.Sprintf("q=%q category=%q in_stock=%t limit=%d offset=%d fresh=%t", q.Q, q.Category, q.InStock, q.Limit, q.Offset, q.Fresh)
	if q.MinPrice != nil {
		s += fmt.Sprintf(" min_price=%d", *q.MinPrice)
	}
	if q.MaxPrice != nil {
		s += fmt.Sprintf(" max_price=%d", *q.MaxPrice)
	}
	return s
}
