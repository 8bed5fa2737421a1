package elasticstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/jetcqrs/jetcqrs/projections"
)

// maxCategoryFacets is the terms aggregation's size: every category, up to
// a bound far below search.max_buckets (65536 by default).
const maxCategoryFacets = 10000

// Search implements projections.CatalogReader with one _search through the
// alias. Every word of Q (after English analysis) must occur in the name or
// the description (multi_match, cross_fields, operator and); an empty Q
// matches every product and a Q of stop words only matches none. Filters
// are bool filters; hits are ordered by score, then SKU (SKU alone for an
// empty Q); track_total_hits makes Total exact; the category terms and price
// range aggregations run over all matches. Limit <= 0 means 20. A query past
// projections.MaxSearchWindow (the index's max_result_window) sends nothing.
//
// Writes are searchable after the index refreshes (see Config.Refresh),
// while Product and AppliedVersion read in real time: a query with Fresh set
// (a read-your-writes wait saw its version through AppliedVersion) first
// refreshes the alias, so that it never answers from before that write.
func (s *CatalogStore) Search(ctx context.Context, q projections.SearchQuery) (projections.SearchResult, error) {
	offset, limit, err := q.Page()
	if err != nil {
		return projections.SearchResult{}, fmt.Errorf("elasticstore: %w", err)
	}
	if q.Fresh {
		if err := s.refresh(ctx); err != nil {
			return projections.SearchResult{}, err
		}
	}
	body, err := json.Marshal(searchBody(q, offset, limit))
	if err != nil {
		return projections.SearchResult{}, fmt.Errorf("elasticstore: search: %w", err)
	}
	res, err := s.es.Search(s.es.Search.WithContext(ctx), s.es.Search.WithIndex(s.cfg.Alias),
		s.es.Search.WithBody(bytes.NewReader(body)))
	var out searchResponse
	if err := decodeResponse("search "+s.cfg.Alias, res, err, &out); err != nil {
		return projections.SearchResult{}, err
	}
	return out.result()
}

// refresh makes every write indexed so far through the alias searchable. A
// shard that failed to refresh could still answer from before a write, so
// it fails the call.
func (s *CatalogStore) refresh(ctx context.Context) error {
	res, err := s.es.Indices.Refresh(s.es.Indices.Refresh.WithContext(ctx), s.es.Indices.Refresh.WithIndex(s.cfg.Alias))
	var out struct {
		Shards struct {
			Failed int `json:"failed"`
		} `json:"_shards"`
	}
	if err := decodeResponse("refresh "+s.cfg.Alias, res, err, &out); err != nil {
		return err
	}
	if out.Shards.Failed > 0 {
		return fmt.Errorf("elasticstore: refresh %s: %d shards failed", s.cfg.Alias, out.Shards.Failed)
	}
	return nil
}

// searchBody is the _search request body of q, for the page q.Page gave.
func searchBody(q projections.SearchQuery, offset, limit int) map[string]any {
	filter := []any{term("has_product", true)}
	if q.Category != "" {
		filter = append(filter, term("category", q.Category))
	}
	if q.MinPrice != nil || q.MaxPrice != nil {
		bounds := map[string]any{}
		if q.MinPrice != nil {
			bounds["gte"] = *q.MinPrice
		}
		if q.MaxPrice != nil {
			bounds["lte"] = *q.MaxPrice
		}
		filter = append(filter, map[string]any{"range": map[string]any{"price_cents": bounds}})
	}
	if q.InStock {
		filter = append(filter, term("in_stock", true))
	}
	boolQuery := map[string]any{"filter": filter}
	sort := []any{map[string]any{"sku": "asc"}}
	if strings.TrimSpace(q.Q) != "" {
		boolQuery["must"] = []any{map[string]any{"multi_match": map[string]any{
			"query":    q.Q,
			"fields":   []string{"name", "description"},
			"type":     "cross_fields",
			"operator": "and",
		}}}
		sort = append([]any{map[string]any{"_score": "desc"}}, sort...)
	}

	ranges := make([]any, 0, len(projections.PriceRanges))
	for _, r := range projections.PriceRanges {
		bucket := map[string]any{"key": r.Name, "from": r.Min}
		if r.Max >= 0 {
			bucket["to"] = r.Max + 1 // "to" is exclusive; our bounds are whole cents, inclusive
		}
		ranges = append(ranges, bucket)
	}
	return map[string]any{
		"query":            map[string]any{"bool": boolQuery},
		"from":             offset,
		"size":             limit,
		"sort":             sort,
		"track_total_hits": true,
		"aggs": map[string]any{
			"category": map[string]any{"terms": map[string]any{
				"field": "category",
				"size":  maxCategoryFacets,
				"order": []any{map[string]any{"_count": "desc"}, map[string]any{"_key": "asc"}},
			}},
			"price": map[string]any{"range": map[string]any{
				"field":  "price_cents",
				"ranges": ranges,
			}},
		},
	}
}

func term(field string, value any) map[string]any {
	return map[string]any{"term": map[string]any{field: value}}
}

type searchResponse struct {
	TimedOut bool `json:"timed_out"`
	Shards   struct {
		Failed int `json:"failed"`
	} `json:"_shards"`
	Hits struct {
		Total struct {
			Value    int64  `json:"value"`
			Relation string `json:"relation"`
		} `json:"total"`
		Hits []struct {
			ID     string          `json:"_id"`
			Source json.RawMessage `json:"_source"`
		} `json:"hits"`
	} `json:"hits"`
	Aggregations struct {
		Category struct {
			Buckets []struct {
				Key      string `json:"key"`
				DocCount int64  `json:"doc_count"`
			} `json:"buckets"`
		} `json:"category"`
		Price struct {
			Buckets []struct {
				Key      string `json:"key"`
				DocCount int64  `json:"doc_count"`
			} `json:"buckets"`
		} `json:"price"`
	} `json:"aggregations"`
}

// result converts the response. A partial answer (timed out, failed shards,
// a total that is only a lower bound) is an error, not a silently short page.
func (r *searchResponse) result() (projections.SearchResult, error) {
	switch {
	case r.TimedOut:
		return projections.SearchResult{}, fmt.Errorf("elasticstore: search: timed out")
	case r.Shards.Failed > 0:
		return projections.SearchResult{}, fmt.Errorf("elasticstore: search: %d shards failed", r.Shards.Failed)
	case r.Hits.Total.Relation != "eq":
		return projections.SearchResult{}, fmt.Errorf("elasticstore: search: total is %q %d, not exact", r.Hits.Total.Relation, r.Hits.Total.Value)
	}
	out := projections.SearchResult{
		Total: r.Hits.Total.Value,
		Hits:  make([]projections.ProductView, 0, len(r.Hits.Hits)),
		Facets: projections.Facets{
			Category: make([]projections.FacetCount, 0, len(r.Aggregations.Category.Buckets)),
			Price:    make([]projections.FacetCount, 0, len(projections.PriceRanges)),
		},
	}
	for _, h := range r.Hits.Hits {
		d := projections.CatalogDoc{SKU: h.ID}
		if err := json.Unmarshal(h.Source, &d); err != nil {
			return projections.SearchResult{}, fmt.Errorf("elasticstore: search: hit %s: %w", h.ID, err)
		}
		out.Hits = append(out.Hits, d.View())
	}
	for _, b := range r.Aggregations.Category.Buckets {
		out.Facets.Category = append(out.Facets.Category, projections.FacetCount{Value: b.Key, Count: b.DocCount})
	}
	slices.SortStableFunc(out.Facets.Category, func(a, b projections.FacetCount) int {
		if a.Count != b.Count {
			if a.Count > b.Count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Value, b.Value)
	})
	counts := make(map[string]int64, len(r.Aggregations.Price.Buckets))
	for _, b := range r.Aggregations.Price.Buckets {
		counts[b.Key] = b.DocCount
	}
	for _, pr := range projections.PriceRanges {
		out.Facets.Price = append(out.Facets.Price, projections.FacetCount{Range: pr.Name, Count: counts[pr.Name]})
	}
	return out, nil
}
