package blevestore

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetcqrs/jetcqrs/projections"
)

// openCachedStore opens a store whose search cache counts into fresh
// metrics, returned with it.
func openCachedStore(t *testing.T, entries int) (*CatalogStore, *SearchCacheMetrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewSearchCacheMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(t.TempDir(), "catalog-g1"), WithSearchCache(entries, m))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, m, reg
}

func wantCacheCounts(t *testing.T, reg *prometheus.Registry, hits, misses float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[f.GetName()] += m.GetCounter().GetValue()
		}
	}
	if h, mi := got["jetcqrs_catalog_search_cache_hits_total"], got["jetcqrs_catalog_search_cache_misses_total"]; h != hits || mi != misses {
		t.Errorf("cache hits %v, misses %v; want %v, %v", h, mi, hits, misses)
	}
}

func searchOne(t *testing.T, s *CatalogStore, q projections.SearchQuery) projections.SearchResult {
	t.Helper()
	res, err := s.Search(t.Context(), q)
	if err != nil {
		t.Fatalf("Search(%+v): %v", q, err)
	}
	return res
}

// TestSearchCacheSharesNormalizedQueriesUntilNextBatch: queries that analyze
// to the same terms, with the same filters and page, share one entry; the
// next applied batch drops it, so the search after it shows the batch.
func TestSearchCacheSharesNormalizedQueriesUntilNextBatch(t *testing.T) {
	t.Parallel()
	s, _, reg := openCachedStore(t, 16)
	if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, 1, "SKU-1", "Steel kettle", 1500, 1)}); err != nil {
		t.Fatal(err)
	}
	first := searchOne(t, s, projections.SearchQuery{Q: "steel kettle", Category: "kitchen"})
	again := searchOne(t, s, projections.SearchQuery{Q: "  Kettles STEEL steel ", Category: "kitchen", Offset: -1})
	if first.Total != 1 || again.Total != 1 || again.Hits[0].PriceCents != 1500 {
		t.Fatalf("searches = %+v, %+v; want SKU-1 at 1500 both times", first, again)
	}
	wantCacheCounts(t, reg, 1, 1)

	other := searchOne(t, s, projections.SearchQuery{Q: "steel kettle", Category: "kitchen", MinPrice: new(int64)})
	if other.Total != 1 {
		t.Fatalf("search with a price filter = %+v", other)
	}
	wantCacheCounts(t, reg, 1, 2) // another filter is another entry

	if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, 2, "SKU-1", "Steel kettle", 2500, 2)}); err != nil {
		t.Fatal(err)
	}
	after := searchOne(t, s, projections.SearchQuery{Q: "steel kettle", Category: "kitchen"})
	if after.Total != 1 || after.Hits[0].PriceCents != 2500 || after.Hits[0].Version != 2 {
		t.Errorf("search after the next batch = %+v; want SKU-1 at 2500, version 2", after)
	}
	wantCacheCounts(t, reg, 1, 3)
}

// TestSearchCacheKeyMovesWithEveryBatch: every batch Apply writes moves the
// cache to a new generation and empties it; a batch that changes nothing
// writes nothing and keeps it.
func TestSearchCacheKeyMovesWithEveryBatch(t *testing.T) {
	t.Parallel()
	s, _, _ := openCachedStore(t, 16)
	q := projections.SearchQuery{Q: "kettle"}
	var keys []searchKey
	for i := range 3 {
		if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, uint64(1+i), "SKU-1", "Kettle", int64(100+i), int64(1+i))}); err != nil {
			t.Fatal(err)
		}
		if n := s.search.results.Len(); n != 0 {
			t.Errorf("after batch %d the cache holds %d results; want none", i, n)
		}
		searchOne(t, s, q)
		keys = append(keys, s.search.key(q, true, []string{"kettl"}, 0, projections.DefaultSearchLimit))
	}
	if keys[0] == keys[1] || keys[1] == keys[2] {
		t.Errorf("cache keys of one query across three batches = %+v; want each batch to change it", keys)
	}
	if !s.search.results.Contains(keys[2]) {
		t.Errorf("the last search was not cached under %+v", keys[2])
	}
	// A redelivered event changes no document: no batch, the cache stays.
	if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, 3, "SKU-1", "Kettle", 102, 3)}); err != nil {
		t.Fatal(err)
	}
	if !s.search.results.Contains(keys[2]) {
		t.Error("a batch that wrote nothing dropped the cache")
	}
}

// TestSearchCacheFreshSearchReadsTheIndex: a search a consistency token
// waited for (Fresh) must not answer from the cache, even from an entry of
// the current generation, because Apply writes its batch, where the token's
// wait sees it, before it moves the generation. The entry planted here
// stands for one filed in that window.
func TestSearchCacheFreshSearchReadsTheIndex(t *testing.T) {
	t.Parallel()
	s, _, reg := openCachedStore(t, 16)
	if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, 1, "SKU-1", "Kettle", 1500, 1)}); err != nil {
		t.Fatal(err)
	}
	q := projections.SearchQuery{Q: "kettle"}
	offset, limit, err := q.Page()
	if err != nil {
		t.Fatal(err)
	}
	stale := projections.SearchResult{Total: 1, Hits: []projections.ProductView{{SKU: "SKU-1", Name: "Kettle", PriceCents: 900}}}
	s.search.add(s.search.key(q, true, []string{"kettl"}, offset, limit), stale)

	if got := searchOne(t, s, q); got.Hits[0].PriceCents != 900 {
		t.Fatalf("a search without a token = %+v; want the planted entry (the test plants under the wrong key)", got)
	}
	q.Fresh = true
	if got := searchOne(t, s, q); got.Total != 1 || got.Hits[0].PriceCents != 1500 {
		t.Errorf("a fresh search = %+v; want the index's SKU-1 at 1500", got)
	}
	wantCacheCounts(t, reg, 1, 1)
}

// TestSearchAfterApplyNeverStaleUnderConcurrentSearches: while other
// goroutines keep searching (and filing results), every search made after
// an Apply returned shows that Apply's write.
func TestSearchAfterApplyNeverStaleUnderConcurrentSearches(t *testing.T) {
	t.Parallel()
	s, _, _ := openCachedStore(t, 16)
	q := projections.SearchQuery{Q: "kettle"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Search(t.Context(), q); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	for i := range 30 {
		price := int64(1000 + i)
		if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, uint64(1+i), "SKU-1", "Kettle", price, int64(1+i))}); err != nil {
			t.Fatal(err)
		}
		if got := searchOne(t, s, q); got.Total != 1 || got.Hits[0].PriceCents != price {
			t.Fatalf("search after batch %d = %+v; want price %d", i, got, price)
		}
	}
}

func TestSearchCacheOffCountsEveryMiss(t *testing.T) {
	t.Parallel()
	s, _, reg := openCachedStore(t, 0)
	if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, 1, "SKU-1", "Kettle", 1500, 1)}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if got := searchOne(t, s, projections.SearchQuery{Q: "kettle"}); got.Total != 1 {
			t.Fatalf("search = %+v", got)
		}
	}
	wantCacheCounts(t, reg, 0, 3)
}

// TestSearchCacheMetricNames: the names the mixed benchmark and dashboards
// read, and a second registration in one registry fails rather than
// counting twice.
func TestSearchCacheMetricNames(t *testing.T) {
	t.Parallel()
	_, m, reg := openCachedStore(t, 16)
	m.hits.Inc()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	if got, want := strings.Join(names, ","), "jetcqrs_catalog_search_cache_hits_total,jetcqrs_catalog_search_cache_misses_total"; got != want {
		t.Errorf("registered %s; want %s", got, want)
	}
	if _, err := NewSearchCacheMetrics(reg); err == nil {
		t.Error("registering the metrics twice in one registry succeeded")
	}
}
