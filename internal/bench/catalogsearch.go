package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/index/scorch"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

// CatalogSearchConfig configures the catalog-search benchmark.
type CatalogSearchConfig struct {
	Duration    time.Duration // of each measured run
	Concurrency int           // searching goroutines (default 2)
	WriteRates  []int         // batches/s of the churning runs (default 4 and 50)
	Log         io.Writer
}

// CatalogSearch compares the catalog store's Search (query building,
// analysis, the search, decoding the hits, facets, then the JSON the query
// API writes) with one bare Bleve query with the same filters and facets
// whose stored sources are copied out as raw JSON, on two indexes holding
// the mixed workload's 1,000 products, drawing the mixed workload's Zipf
// searches. The store runs with its result cache off and on, on a still
// index and on indexes taking one stock change per batch at each of
// WriteRates (the projection runtime's catalog commits at most every 250 ms,
// 4 batches/s). One change in flipEvery flips the product's in-stock flag,
// which writes the index and drops the cache; the others change only the
// units, which the catalog does not keep.
// It returns the markdown section.
func CatalogSearch(ctx context.Context, cfg CatalogSearchConfig) (string, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 2
	}
	if len(cfg.WriteRates) == 0 {
		cfg.WriteRates = []int{4, 50}
	}
	dir, err := os.MkdirTemp("", "jetcqrs-bench-search-*")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)

	catalog := mixedCatalog(1000, "SKU-")
	bare, err := bleve.NewUsing(dir+"/bare", blevestore.Mapping(), scorch.Name, scorch.Name, nil)
	if err != nil {
		return "", err
	}
	defer bare.Close()
	reg := prometheus.NewRegistry()
	metrics, err := blevestore.NewSearchCacheMetrics(reg)
	if err != nil {
		return "", err
	}
	uncached, err := blevestore.Open(dir+"/uncached", blevestore.WithSearchCache(0, nil))
	if err != nil {
		return "", err
	}
	defer uncached.Close()
	cached, err := blevestore.Open(dir+"/cached", blevestore.WithSearchCache(blevestore.DefaultSearchCacheEntries, metrics))
	if err != nil {
		return "", err
	}
	defer cached.Close()

	w := &searchWriter{catalog: catalog, bare: bare, stores: []*blevestore.CatalogStore{uncached, cached}, levels: map[string][2]int64{},
		docs: make(map[string]*projections.CatalogDoc, len(catalog))}
	if err := w.seed(ctx); err != nil {
		return "", err
	}

	queries := newQueryTable(1000)
	parsed := make([]projections.SearchQuery, len(queries.paths))
	values := make([]url.Values, len(queries.paths))
	for i, p := range queries.paths {
		q, err := queryapi.ParseSearch(httptest.NewRequest("GET", p, nil), 100)
		if err != nil {
			return "", fmt.Errorf("query %s: %w", p, err)
		}
		parsed[i] = q
		u, err := url.Parse(p)
		if err != nil {
			return "", err
		}
		values[i] = u.Query()
	}

	sides := []struct {
		name   string
		search func(ctx context.Context, i int) error
	}{
		{"bare Bleve query", func(ctx context.Context, i int) error {
			_, _, err := bareSearch(ctx, bare, values[i])
			return err
		}},
		{"store, cache off", storeSearch(uncached, parsed)},
		{"store, cache on", storeSearch(cached, parsed)},
	}
	type row struct {
		res             [3]Result
		cpu             [3]time.Duration
		hits, misses    float64
		scenario, label string
	}
	var rows []row
	for _, rate := range append([]int{0}, cfg.WriteRates...) {
		r := row{scenario: "still index", label: "still"}
		if rate > 0 {
			r.scenario, r.label = fmt.Sprintf("%d batches/s of one stock change", rate), fmt.Sprintf("%d batches/s", rate)
		}
		for i, side := range sides {
			h0, m0 := cacheCounts(reg)
			cpu0 := processCPUTime()
			res, err := searchRun(ctx, cfg, side.name+", "+r.label, queries, side.search, rate, w)
			if err != nil {
				return "", err
			}
			r.res[i], r.cpu[i] = res, processCPUTime()-cpu0
			if i == 2 {
				h1, m1 := cacheCounts(reg)
				r.hits, r.misses = h1-h0, m1-m0
			}
		}
		rows = append(rows, r)
	}

	var out strings.Builder
	out.WriteString("## Catalog search: the store's Search vs one bare Bleve query\n\n")
	fmt.Fprintf(&out, "`jetcqrs-bench catalog-search --duration %s` on %s, load average before the run %s.\n", cfg.Duration*time.Duration(3*len(rows)), Machine(), loadString())
	out.WriteString("Two indexes of the mixed workload's 1,000 products (the store's, filled through Apply, and a bare one with the\n")
	out.WriteString("same mapping and documents). ")
	fmt.Fprintf(&out, "%d goroutines search back to back for %s per run, drawing the mixed workload's 1,000\n", cfg.Concurrency, cfg.Duration)
	out.WriteString("Zipf-distributed searches. The bare side runs one Bleve query with the same filters and facets and copies the\n")
	out.WriteString("stored sources into its JSON; the store's side is `Search` plus the JSON the query API writes. The churning\n")
	out.WriteString("runs apply one stock change per batch to every index at the rate given, as orders do in production (where\n")
	out.WriteString("the projection runtime commits the catalog at most every 250 ms: 4 batches/s); one change in ")
	fmt.Fprintf(&out, "%d flips the product's in-stock flag, which writes the index and drops the store's\n", flipEvery)
	out.WriteString("result cache; the others change only units, which the catalog does not keep. CPU µs/search is the process's CPU time (user + system) over the\n")
	out.WriteString("run divided by the searches, writes and GC included: on a shared machine it varies less than searches/s.\n\n")
	out.WriteString("| index | side | searches/s | CPU µs/search | p50 ms | p99 ms | max ms | / bare (searches/s) | cache hit ratio |\n")
	out.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		for i, side := range sides {
			res := r.res[i]
			ratio, hit := "1", ""
			if i > 0 {
				ratio = fmt.Sprintf("%.2f", res.Throughput()/r.res[0].Throughput())
			}
			if i == 2 && r.hits+r.misses > 0 {
				hit = fmt.Sprintf("%.0f%%", 100*r.hits/(r.hits+r.misses))
			}
			perSearch := float64(r.cpu[i].Microseconds()) / float64(max(res.Ops, 1))
			fmt.Fprintf(&out, "| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s |\n", r.scenario, side.name, res.Throughput(),
				perSearch, ms(res.P50), ms(res.P99), ms(res.Max), ratio, hit)
		}
	}
	return out.String(), nil
}

func storeSearch(s *blevestore.CatalogStore, queries []projections.SearchQuery) func(context.Context, int) error {
	return func(ctx context.Context, i int) error {
		res, err := s.Search(ctx, queries[i])
		if err != nil {
			return err
		}
		_, err = json.Marshal(res)
		return err
	}
}

// searchRun searches with cfg.Concurrency goroutines for cfg.Duration,
// while w writes rate batches/s (none if 0); it returns the searches'
// latencies.
func searchRun(ctx context.Context, cfg CatalogSearchConfig, label string, queries queryTable,
	search func(context.Context, int) error, rate int, w *searchWriter) (Result, error) {
	rec := NewRecorder()
	var done atomic.Int64
	stop := Progress(cfg.Log, label, 5*time.Second, done.Load)
	defer stop()
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Concurrency+1)
	if rate > 0 {
		wg.Go(func() {
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			rng := rand.New(rand.NewPCG(3, uint64(rate)))
			for {
				select {
				case <-runCtx.Done():
					return
				case <-tick.C:
				}
				if err := w.change(ctx, rng); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	start := time.Now()
	for g := range cfg.Concurrency {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 5))
			z := queries.zipf(rng)
			for runCtx.Err() == nil {
				i := int(z.Uint64())
				t0 := time.Now()
				if err := search(ctx, i); err != nil {
					errs <- err
					return
				}
				rec.Observe(time.Since(t0))
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return Result{}, fmt.Errorf("%s: %w", label, err)
	}
	return rec.Result(label, elapsed), nil
}

// searchWriter writes the same catalog changes to the bare index and to
// every store.
type searchWriter struct {
	catalog []seedProduct
	bare    bleve.Index
	stores  []*blevestore.CatalogStore
	docs    map[string]*projections.CatalogDoc // the bare index's documents
	levels  map[string][2]int64                // each SKU's available units and inventory version
	seq     uint64
}

// flipEvery: one stock change in flipEvery flips the in-stock flag.
const flipEvery = 10

var benchTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// seed creates every product with its stock, in batches of 256 events.
func (w *searchWriter) seed(ctx context.Context) error {
	var events []projections.Envelope
	for _, p := range w.catalog {
		available := int64(0)
		if p.InStock {
			available = 100
		}
		pe, err := w.productEvent(p)
		if err != nil {
			return err
		}
		ie, err := w.stockEvent(p.SKU, available, 1)
		if err != nil {
			return err
		}
		events = append(events, pe, ie)
	}
	for _, b := range chunk(events, 256) {
		if err := w.apply(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// change sets a random product's stock to a new level in one batch: one
// change in flipEvery sells it out or restocks it, the others move the units
// of one in stock (or leave one sold out at zero).
func (w *searchWriter) change(ctx context.Context, rng *rand.Rand) error {
	p := w.catalog[rng.IntN(len(w.catalog))]
	l := w.levels[p.SKU]
	available := int64(0)
	if inStock := l[0] > 0; inStock != (rng.IntN(flipEvery) == 0) {
		available = 1 + rng.Int64N(100)
	}
	e, err := w.stockEvent(p.SKU, available, l[1]+1)
	if err != nil {
		return err
	}
	return w.apply(ctx, []projections.Envelope{e})
}

func (w *searchWriter) productEvent(p seedProduct) (projections.Envelope, error) {
	payload, err := json.Marshal(domain.ProductCreated{ProductSnapshot: domain.ProductSnapshot{SKU: p.SKU, Name: p.Name,
		Description: p.Description, Category: p.Category, PriceCents: p.PriceCents, Version: 1,
		CreatedAt: benchTime, UpdatedAt: benchTime}})
	w.seq++
	return projections.Envelope{Seq: w.seq, AggregateType: domain.AggregateProduct, AggregateID: p.SKU, AggregateVersion: 1,
		EventType: domain.EventProductCreated, SchemaVersion: domain.CurrentSchemaVersion, OccurredAt: benchTime, Payload: payload}, err
}

func (w *searchWriter) stockEvent(sku string, available, version int64) (projections.Envelope, error) {
	w.levels[sku] = [2]int64{available, version}
	payload, err := json.Marshal(domain.InventoryAdjusted{InventoryLevels: domain.InventoryLevels{SKU: sku,
		OnHand: available, Available: available, Version: version}})
	w.seq++
	return projections.Envelope{Seq: w.seq, AggregateType: domain.AggregateInventory, AggregateID: sku, AggregateVersion: version,
		EventType: domain.EventInventoryAdjusted, SchemaVersion: domain.CurrentSchemaVersion, OccurredAt: benchTime, Payload: payload}, err
}

// apply writes events to every store, and the documents they change to the
// bare index in one batch.
func (w *searchWriter) apply(ctx context.Context, events []projections.Envelope) error {
	for _, s := range w.stores {
		if err := s.Apply(ctx, events); err != nil {
			return err
		}
	}
	changes, err := projections.DecodeCatalogEvents(events)
	if err != nil {
		return err
	}
	b := w.bare.NewBatch()
	changed := map[string]bool{}
	for _, c := range changes {
		d := w.docs[c.SKU]
		if d == nil {
			d = &projections.CatalogDoc{SKU: c.SKU}
			w.docs[c.SKU] = d
		}
		if d.Apply(c) {
			changed[c.SKU] = true
		}
	}
	if len(changed) == 0 {
		return nil
	}
	for sku := range changed {
		d := w.docs[sku]
		source, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if err := b.Index(d.SKU, map[string]any{"name": d.Name, "description": d.Description, "category": d.Category,
			"price_cents": d.PriceCents, "in_stock": d.InStock, "has_product": d.HasProduct,
			"source": string(source)}); err != nil {
			return err
		}
	}
	return w.bare.Batch(b)
}

// cacheCounts reads the search cache's hit and miss counters from reg.
func cacheCounts(reg *prometheus.Registry) (hits, misses float64) {
	families, _ := reg.Gather()
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case strings.HasSuffix(f.GetName(), "_hits_total"):
				hits += m.GetCounter().GetValue()
			case strings.HasSuffix(f.GetName(), "_misses_total"):
				misses += m.GetCounter().GetValue()
			}
		}
	}
	return hits, misses
}

// processCPUTime is the CPU time this process has used, user and system.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadString() string {
	if l := loadAverage(); l != nil {
		return fmt.Sprintf("%.2f", *l)
	}
	return "unknown"
}
