package blevestore

import (
	"fmt"
	"strings"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetcqrs/jetcqrs/projections"
)

// DefaultSearchCacheEntries is how many search results a store keeps unless
// WithSearchCache says otherwise.
const DefaultSearchCacheEntries = 1024

// SearchCacheMetrics counts the answers of the catalog's search result
// cache. One value serves every store of a process (each read-model
// generation opens its own), since Prometheus registers a name once.
type SearchCacheMetrics struct {
	hits, misses prometheus.Counter
}

// NewSearchCacheMetrics registers jetcqrs_catalog_search_cache_hits_total
// and jetcqrs_catalog_search_cache_misses_total with reg.
func NewSearchCacheMetrics(reg prometheus.Registerer) (*SearchCacheMetrics, error) {
	m := &SearchCacheMetrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetcqrs_catalog_search_cache_hits_total",
			Help: "Catalog searches answered from the search result cache.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jetcqrs_catalog_search_cache_misses_total",
			Help: "Catalog searches answered by the index (not cached, or a fresh read a consistency token waited for).",
		}),
	}
	for _, c := range []prometheus.Collector{m.hits, m.misses} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("blevestore: search cache metrics: %w", err)
		}
	}
	return m, nil
}

// WithSearchCache sets how many search results the store keeps (0 turns the
// cache off) and where it counts hits and misses (nil: nowhere).
func WithSearchCache(entries int, m *SearchCacheMetrics) Option {
	return func(o *options) { o.cacheEntries, o.cacheMetrics = entries, m }
}

// searchCache holds search results of the index as it was at one
// generation: every applied batch moves to the next generation and drops
// what the cache held, as Elasticsearch's request cache is dropped at each
// refresh. A result is filed under the generation read before its search
// ran, so it shows at least every batch of that generation.
type searchCache struct {
	gen     atomic.Uint64
	results *lru.Cache[searchKey, projections.SearchResult] // nil: cache off
	metrics *SearchCacheMetrics
}

// searchKey is a SearchQuery after normalization: the analyzed terms of Q
// (so "Green  TEA" and "green tea" share an entry) and the page as Page
// resolves it.
type searchKey struct {
	gen                uint64
	text               bool   // Q has a word, analyzed or not
	terms              string // analyzed terms, sorted, NUL-separated
	category           string
	hasMin, hasMax     bool
	minPrice, maxPrice int64
	inStock            bool
	offset, limit      int
}

func newSearchCache(entries int, m *SearchCacheMetrics) (*searchCache, error) {
	c := &searchCache{metrics: m}
	if entries > 0 {
		results, err := lru.New[searchKey, projections.SearchResult](entries)
		if err != nil {
			return nil, fmt.Errorf("search cache: %w", err)
		}
		c.results = results
	}
	return c, nil
}

// key is the cache key of a search of terms (the analyzed Q) with the other
// criteria of q and the page offset, limit, at the current generation.
func (c *searchCache) key(q projections.SearchQuery, text bool, terms []string, offset, limit int) searchKey {
	k := searchKey{
		gen: c.gen.Load(), text: text, terms: strings.Join(terms, "\x00"), category: q.Category,
		inStock: q.InStock, offset: offset, limit: limit,
	}
	if q.MinPrice != nil {
		k.hasMin, k.minPrice = true, *q.MinPrice
	}
	if q.MaxPrice != nil {
		k.hasMax, k.maxPrice = true, *q.MaxPrice
	}
	return k
}

// get returns the cached result of k. A fresh search never reads the cache:
// the batch its consistency token waited for is searchable as soon as it is
// written, which is before the generation moves.
func (c *searchCache) get(k searchKey, fresh bool) (projections.SearchResult, bool) {
	if c.results != nil && !fresh {
		if res, ok := c.results.Get(k); ok {
			c.count(true)
			return res, true
		}
	}
	c.count(false)
	return projections.SearchResult{}, false
}

func (c *searchCache) add(k searchKey, res projections.SearchResult) {
	if c.results != nil {
		c.results.Add(k, res)
	}
}

// invalidate moves to the next generation; Apply calls it after every batch
// it writes, once the batch is searchable.
func (c *searchCache) invalidate() {
	c.gen.Add(1)
	if c.results != nil {
		c.results.Purge()
	}
}

func (c *searchCache) count(hit bool) {
	switch {
	case c.metrics == nil:
	case hit:
		c.metrics.hits.Inc()
	default:
		c.metrics.misses.Inc()
	}
}
