package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/blevesearch/bleve/v2"
	"github.com/blevesearch/bleve/v2/search/query"
	index "github.com/blevesearch/bleve_index_api"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// bareMixed is the raw baseline of the mixed workload: bare net/http
// handlers on the same paths making the same store calls as the system,
// and nothing else (no authentication, no consistency tokens, no
// decoding or re-encoding of stored views): HMGET for an order or a stock
// level, one Bleve document lookup for a product, one Bleve query with the
// same filters and facets for a search, one outbox INSERT for a write. It
// reads the stores the system left: its Redis keys and its catalog index.
type bareMixed struct {
	rdb    *redis.Client
	prefix string // the read models' Redis prefix, generation included
	idx    bleve.Index
	pool   *pgxpool.Pool
}

func (b *bareMixed) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/orders/{id}", b.order)
	mux.HandleFunc("GET /v1/inventory/{sku}", b.inventory)
	mux.HandleFunc("GET /v1/products/{sku}", b.product)
	mux.HandleFunc("GET /v1/products", b.search)
	mux.HandleFunc("POST /v1/orders", b.place)
	mux.HandleFunc("POST /v1/orders/{id}/{action}", b.transition)
	return mux
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (b *bareMixed) order(w http.ResponseWriter, r *http.Request) {
	vals, err := b.rdb.HMGet(r.Context(), b.prefix+"order:"+r.PathValue("id"), "user", "view").Result()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	view, ok := vals[1].(string)
	if !ok {
		http.NotFound(w, r)
		return
	}
	writeJSON(w, http.StatusOK, []byte(view))
}

func (b *bareMixed) inventory(w http.ResponseWriter, r *http.Request) {
	sku := r.PathValue("sku")
	vals, err := b.rdb.HMGet(r.Context(), b.prefix+"inventory:"+sku, "on_hand", "reserved", "available", "version").Result()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if vals[3] == nil {
		http.NotFound(w, r)
		return
	}
	writeJSON(w, http.StatusOK, fmt.Appendf(nil, `{"sku":%q,"on_hand":%v,"reserved":%v,"available":%v,"version":%v}`,
		sku, vals[0], vals[1], vals[2], vals[3]))
}

func (b *bareMixed) product(w http.ResponseWriter, r *http.Request) {
	source, err := b.document(r.PathValue("sku"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if source == nil {
		http.NotFound(w, r)
		return
	}
	if err := b.levels(r.Context(), []string{r.PathValue("sku")}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, source)
}

// levels reads the available units of skus in one pipeline, as the
// system fills them into its catalog answers (the bare side reads them and
// serves the stored sources as they are).
func (b *bareMixed) levels(ctx context.Context, skus []string) error {
	_, err := b.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, sku := range skus {
			pipe.HGet(ctx, b.prefix+"inventory:"+sku, "available")
		}
		return nil
	})
	if errors.Is(err, redis.Nil) {
		err = nil
	}
	return err
}

// document returns the stored source of a catalog document, nil if none.
func (b *bareMixed) document(sku string) ([]byte, error) {
	adv, err := b.idx.Advanced()
	if err != nil {
		return nil, err
	}
	rd, err := adv.Reader()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	doc, err := rd.Document(sku)
	if err != nil || doc == nil {
		return nil, err
	}
	var source []byte
	doc.VisitFields(func(f index.Field) {
		if f.Name() == "source" {
			source = f.Value()
		}
	})
	return source, nil
}

// search runs the catalog's query on the bare index: every word in the
// name or the description, the same filters, the category and price facets.
func (b *bareMixed) search(w http.ResponseWriter, r *http.Request) {
	body, skus, err := bareSearch(r.Context(), b.idx, r.URL.Query())
	if err == nil && len(skus) > 0 {
		err = b.levels(r.Context(), skus)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// bareSearch is the bare baseline's search of the URL query v on idx, as
// the JSON body it answers with, and the SKUs of its hits.
func bareSearch(ctx context.Context, idx bleve.Index, v url.Values) ([]byte, []string, error) {
	conjuncts := []query.Query{}
	for _, word := range strings.Fields(strings.ToLower(v.Get("q"))) {
		inName, inDescription := bleve.NewMatchQuery(word), bleve.NewMatchQuery(word)
		inName.SetField("name")
		inDescription.SetField("description")
		conjuncts = append(conjuncts, bleve.NewDisjunctionQuery(inName, inDescription))
	}
	if c := v.Get("category"); c != "" {
		t := bleve.NewTermQuery(c)
		t.SetField("category")
		conjuncts = append(conjuncts, t)
	}
	inclusive := true
	price := func(name string) *float64 {
		n, err := strconv.ParseFloat(v.Get(name), 64)
		if err != nil {
			return nil
		}
		return &n
	}
	if lo, hi := price("min_price"), price("max_price"); lo != nil || hi != nil {
		q := bleve.NewNumericRangeInclusiveQuery(lo, hi, &inclusive, &inclusive)
		q.SetField("price_cents")
		conjuncts = append(conjuncts, q)
	}
	if v.Get("in_stock") == "true" {
		q := bleve.NewBoolFieldQuery(true)
		q.SetField("in_stock")
		conjuncts = append(conjuncts, q)
	}
	limit, err := strconv.Atoi(v.Get("limit"))
	if err != nil || limit <= 0 {
		limit = 20
	}
	req := bleve.NewSearchRequestOptions(bleve.NewConjunctionQuery(conjuncts...), limit, 0, false)
	req.Fields = []string{"source"}
	req.SortBy([]string{"-_score", "_id"})
	req.AddFacet("category", bleve.NewFacetRequest("category", 10000))
	pf := bleve.NewFacetRequest("price_cents", len(projections.PriceRanges))
	for _, pr := range projections.PriceRanges {
		lo := float64(pr.Min)
		var hi *float64
		if pr.Max >= 0 {
			h := float64(pr.Max + 1)
			hi = &h
		}
		pf.AddNumericRange(pr.Name, &lo, hi)
	}
	req.AddFacet("price", pf)
	res, err := idx.SearchInContext(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	hits := make([]json.RawMessage, 0, len(res.Hits))
	skus := make([]string, 0, len(res.Hits))
	for _, h := range res.Hits {
		if s, ok := h.Fields["source"].(string); ok {
			hits = append(hits, json.RawMessage(s))
			skus = append(skus, h.ID)
		}
	}
	body, err := json.Marshal(map[string]any{"total": res.Total, "hits": hits, "facets": res.Facets})
	return body, skus, err
}

// place commits the order's outbox rows (the order and one reservation per
// line) in one INSERT. A reservation's aggregate is the line, not the SKU:
// the bare write reads no stock level to take the next version from.
func (b *bareMixed) place(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Items []struct {
			SKU      string `json:"sku"`
			Quantity int    `json:"quantity"`
		} `json:"items"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil {
		err = json.Unmarshal(body, &in)
	}
	if err != nil || len(in.Items) == 0 {
		http.Error(w, "bad order", http.StatusBadRequest)
		return
	}
	id := uuid.NewString()
	aggTypes, aggIDs, versions := []string{domain.AggregateOrder}, []string{id}, []int64{1}
	types, payloads := []string{domain.EventOrderPlaced}, []string{string(body)}
	for _, it := range in.Items {
		aggTypes, aggIDs, versions = append(aggTypes, domain.AggregateInventory), append(aggIDs, it.SKU+"@"+id), append(versions, 2)
		types = append(types, domain.EventInventoryReserved)
		payloads = append(payloads, fmt.Sprintf(`{"sku":%q,"order_id":%q,"quantity":%d}`, it.SKU, id, it.Quantity))
	}
	if err := b.insert(r.Context(), aggTypes, aggIDs, versions, types, payloads); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Location", "/v1/orders/"+id)
	writeJSON(w, http.StatusCreated, fmt.Appendf(nil, `{"order_id":%q,"status":"placed"}`, id))
}

// transition commits one outbox row for a pay or a cancel.
func (b *bareMixed) transition(w http.ResponseWriter, r *http.Request) {
	id, action := r.PathValue("id"), r.PathValue("action")
	event := map[string]string{"pay": domain.EventOrderPaid, "cancel": domain.EventOrderCancelled}[action]
	if event == "" {
		http.NotFound(w, r)
		return
	}
	if err := b.insert(r.Context(), []string{domain.AggregateOrder}, []string{id}, []int64{2}, []string{event},
		[]string{fmt.Sprintf(`{"order_id":%q}`, id)}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, fmt.Appendf(nil, `{"order_id":%q}`, id))
}

func (b *bareMixed) insert(ctx context.Context, aggTypes, aggIDs []string, versions []int64, types, payloads []string) error {
	_, err := b.pool.Exec(ctx, bareOutboxSQL, aggTypes, aggIDs, versions, types, payloads)
	return err
}
