package blevestore

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/search/query"

	"github.com/jetcqrs/jetcqrs/projections"
)

const (
	// maxCategoryFacets bounds the category facet (the Elasticsearch store
	// has the same bound); the catalog has far fewer categories.
	maxCategoryFacets = 10000

	facetCategory = "category"
	facetPrice    = "price"
)

// Search implements projections.CatalogReader. Every word of Q (after
// English analysis: lower case, stemming, stop words dropped) must occur in
// the name or the description; an empty Q matches every product, and a Q of
// stop words only matches none. Hits are ordered by relevance, then SKU
// (SKU alone for an empty Q). Limit <= 0 means 20.
//
// Results are cached until the next batch Apply writes (see WithSearchCache);
// callers share them and must not modify them. A batch is searchable once
// Apply returns; a q.Fresh search skips the cache, so that it shows every
// batch written before it was called.
func (s *CatalogStore) Search(ctx context.Context, q projections.SearchQuery) (projections.SearchResult, error) {
	offset, limit, err := q.Page()
	if err != nil {
		return projections.SearchResult{}, fmt.Errorf("blevestore: %w", err)
	}
	hasText := strings.TrimSpace(q.Q) != ""
	var terms []string
	if hasText {
		if terms, err = s.analyze(q.Q); err != nil {
			return projections.SearchResult{}, err
		}
	}
	key := s.search.key(q, hasText, terms, offset, limit)
	if res, ok := s.search.get(key, q.Fresh); ok {
		return res, nil
	}
	res, err := s.searchIndex(ctx, q, hasText, terms, offset, limit)
	if err != nil {
		return projections.SearchResult{}, err
	}
	s.search.add(key, res)
	return res, nil
}

// searchIndex runs the search of Search on the index's current snapshot.
func (s *CatalogStore) searchIndex(ctx context.Context, q projections.SearchQuery, hasText bool, terms []string, offset, limit int) (projections.SearchResult, error) {
	hasProduct := bleve.NewBoolFieldQuery(true)
	hasProduct.SetField(fieldHasProduct)
	conjuncts := []query.Query{hasProduct}
	order := []string{"_id"}
	if hasText {
		conjuncts = append(conjuncts, textQuery(terms))
		order = []string{"-_score", "_id"}
	}
	if q.Category != "" {
		category := bleve.NewTermQuery(q.Category)
		category.SetField(fieldCategory)
		conjuncts = append(conjuncts, category)
	}
	if q.MinPrice != nil || q.MaxPrice != nil {
		conjuncts = append(conjuncts, numericRange(fieldPrice, q.MinPrice, q.MaxPrice))
	}
	if q.InStock {
		inStock := bleve.NewBoolFieldQuery(true)
		inStock.SetField(fieldInStock)
		conjuncts = append(conjuncts, inStock)
	}

	req := bleve.NewSearchRequestOptions(bleve.NewConjunctionQuery(conjuncts...), limit, offset, false)
	req.Fields = []string{fieldSource}
	req.SortBy(order)
	req.AddFacet(facetCategory, bleve.NewFacetRequest(fieldCategory, maxCategoryFacets))
	// The size of a numeric facet also caps how many of its ranges Bleve
	// reports, so it must cover them all.
	price := bleve.NewFacetRequest(fieldPrice, len(projections.PriceRanges))
	for _, r := range projections.PriceRanges {
		// Bleve ranges are [min, max); ours are whole cents [Min, Max].
		lo := float64(r.Min)
		var hi *float64
		if r.Max >= 0 {
			v := float64(r.Max + 1)
			hi = &v
		}
		price.AddNumericRange(r.Name, &lo, hi)
	}
	req.AddFacet(facetPrice, price)

	res, err := s.idx.SearchInContext(ctx, req)
	if err != nil {
		return projections.SearchResult{}, fmt.Errorf("blevestore: search: %w", err)
	}

	out := projections.SearchResult{
		Total: int64(min(res.Total, math.MaxInt64)),
		Hits:  make([]projections.ProductView, 0, len(res.Hits)),
	}
	for _, h := range res.Hits {
		source, ok := h.Fields[fieldSource].(string)
		if !ok {
			return projections.SearchResult{}, fmt.Errorf("blevestore: search: hit %s has no stored source", h.ID)
		}
		var d projections.CatalogDoc
		if err := json.Unmarshal([]byte(source), &d); err != nil {
			return projections.SearchResult{}, fmt.Errorf("blevestore: search: hit %s: %w", h.ID, err)
		}
		out.Hits = append(out.Hits, d.View())
	}
	out.Facets = facets(res)
	return out, nil
}

// analyze returns the distinct terms the name field's analyzer makes of
// text, sorted: every word must match, so the order of the words changes
// nothing, and "green tea" and "Tea green" make one search (and one cache
// entry).
func (s *CatalogStore) analyze(text string) ([]string, error) {
	m := s.idx.Mapping()
	name := m.AnalyzerNameForPath(fieldName)
	analyzer := m.AnalyzerNamed(name)
	if analyzer == nil {
		return nil, fmt.Errorf("blevestore: search: the index has no analyzer %q for %s", name, fieldName)
	}
	tokens := analyzer.Analyze([]byte(text))
	terms := make([]string, 0, len(tokens))
	for _, tok := range tokens {
		terms = append(terms, string(tok.Term))
	}
	slices.Sort(terms)
	return slices.Compact(terms), nil
}

// textQuery requires every term in the name or the description. Bleve's
// match queries apply their operator per field, so the cross-field form is
// built from the terms the field analyzer produces; no terms match nothing.
func textQuery(terms []string) query.Query {
	if len(terms) == 0 {
		return bleve.NewMatchNoneQuery()
	}
	perTerm := make([]query.Query, 0, len(terms))
	for _, t := range terms {
		inName, inDescription := bleve.NewTermQuery(t), bleve.NewTermQuery(t)
		inName.SetField(fieldName)
		inDescription.SetField(fieldDescription)
		perTerm = append(perTerm, bleve.NewDisjunctionQuery(inName, inDescription))
	}
	return bleve.NewConjunctionQuery(perTerm...)
}

// numericRange is the inclusive range [lo, hi] over a whole-number field; a
// nil bound is open.
func numericRange(field string, lo, hi *int64) query.Query {
	var from, to *float64
	if lo != nil {
		v := float64(*lo)
		from = &v
	}
	if hi != nil {
		v := float64(*hi)
		to = &v
	}
	inclusive := true
	q := bleve.NewNumericRangeInclusiveQuery(from, to, &inclusive, &inclusive)
	q.SetField(field)
	return q
}

// facets converts Bleve's facet results: categories by count descending,
// then value; every price range in projections.PriceRanges order, zero
// counts included (Bleve leaves out empty ranges and orders by count).
func facets(res *bleve.SearchResult) projections.Facets {
	out := projections.Facets{Category: []projections.FacetCount{}}
	if f := res.Facets[facetCategory]; f != nil && f.Terms != nil {
		for _, t := range f.Terms.Terms() {
			out.Category = append(out.Category, projections.FacetCount{Value: t.Term, Count: int64(t.Count)})
		}
	}
	slices.SortFunc(out.Category, func(a, b projections.FacetCount) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Value, b.Value)
	})

	counts := make(map[string]int64)
	if f := res.Facets[facetPrice]; f != nil {
		for _, r := range f.NumericRanges {
			counts[r.Name] = int64(r.Count)
		}
	}
	out.Price = make([]projections.FacetCount, 0, len(projections.PriceRanges))
	for _, r := range projections.PriceRanges {
		out.Price = append(out.Price, projections.FacetCount{Range: r.Name, Count: counts[r.Name]})
	}
	return out
}
