// Package queryapi serves the read side of the HTTP API from the read models
// only: it never imports or touches the write store. A request carrying
// X-Consistency-Token waits, bounded and without polling, until the read
// model has applied the version the token names, after authorization and
// only for the tokens its endpoint accepts (see consistency.go).
package queryapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/projections"
)

// Readers are the read models the API serves from.
type Readers struct {
	Orders    projections.OrderReader
	Inventory projections.InventoryReader
	Catalog   projections.CatalogReader
	// Stock fills in the available units of the catalog's answers: the
	// catalog keeps only whether a SKU is in stock (projections.CatalogDoc).
	Stock projections.StockLevelReader
	// CatalogStock reads the catalog's in-stock flags, for the wait of an
	// inventory token on a catalog read.
	CatalogStock projections.StockFlagReader
	Sales        projections.SalesReader
	// Versions maps each read model (ModelOrders, ModelInventory,
	// ModelCatalog, ModelSales) to the aggregate types it can wait for and
	// the reader of its applied versions. A GET waits on the model that
	// answers it, for the tokens its endpoint accepts (consistency.go); a
	// token naming an aggregate that model does not track is refused,
	// because waiting elsewhere could still answer stale data.
	Versions map[string]map[string]projections.VersionReader
}

// StatusSource reports operational state for the admin endpoints.
type StatusSource interface {
	// Status returns a JSON-encodable snapshot.
	Status(ctx context.Context) (any, error)
}

// Config configures the API.
type Config struct {
	// ConsistencyWait bounds a read-your-writes wait (default 2s).
	ConsistencyWait time.Duration
	// MaxPageSize bounds limit (default 100).
	MaxPageSize int
	// Tracer, when set, records each read-your-writes wait as a span of the
	// request's trace.
	Tracer trace.Tracer
}

// The read models, as Readers.Versions names them.
const (
	ModelOrders    = "orders"
	ModelInventory = "inventory"
	ModelCatalog   = "catalog"
	ModelSales     = "sales"
)

// API is the query HTTP API.
type API struct {
	r           Readers
	verifier    httpx.Verifier
	hub         *Hub
	logger      *slog.Logger
	cfg         Config
	projections StatusSource
	relay       StatusSource
}

// New returns the API. hub delivers "applied" notifications from the
// projectors; projections and relay may be nil when this process does not
// know them.
func New(r Readers, verifier httpx.Verifier, hub *Hub, projectionStatus, relayStatus StatusSource, logger *slog.Logger, cfg Config) *API {
	if cfg.ConsistencyWait <= 0 {
		cfg.ConsistencyWait = 2 * time.Second
	}
	if cfg.MaxPageSize <= 0 {
		cfg.MaxPageSize = 100
	}
	return &API{r: r, verifier: verifier, hub: hub, logger: logger, cfg: cfg,
		projections: projectionStatus, relay: relayStatus}
}

// Mount adds the query routes to r.
func (a *API) Mount(r chi.Router) {
	r.Get("/v1/products/{sku}", a.getProduct)
	r.Get("/v1/products", a.searchProducts)
	r.Get("/v1/inventory/{sku}", a.getInventory)
	r.Group(func(r chi.Router) {
		r.Use(httpx.Authenticate(a.verifier))
		r.Get("/v1/orders/{id}", a.getOrder)
		r.Get("/v1/users/{user_id}/orders", a.listUserOrders)
		r.Get("/v1/reports/sales", a.salesReport)
		r.Get("/v1/admin/projections", a.adminStatus(func() StatusSource { return a.projections }))
		r.Get("/v1/admin/relay", a.adminStatus(func() StatusSource { return a.relay }))
	})
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, projections.ErrNotFound) {
		httpx.WriteProblem(w, r, domain.CodeNotFound, "no such entry in the read model")
		return
	}
	if errors.Is(err, projections.ErrBeyondSearchWindow) {
		httpx.WriteError(w, r, a.logger, &domain.Error{Code: domain.CodeInvalidRequest, Field: "offset",
			Message: "offset + limit must not exceed " + strconv.Itoa(projections.MaxSearchWindow)})
		return
	}
	var ic *projections.InvalidCursorError
	if errors.As(err, &ic) {
		httpx.WriteError(w, r, a.logger, &domain.Error{Code: domain.CodeInvalidRequest, Field: "cursor", Message: "is not a cursor this API issued"})
		return
	}
	httpx.WriteError(w, r, a.logger, err)
}

func (a *API) getOrder(w http.ResponseWriter, r *http.Request) {
	actor, _ := httpx.ActorFrom(r.Context())
	id := chi.URLParam(r, "id")
	if !a.consistent(w, r, func(tok *token) error { return a.awaitOrderToken(r.Context(), actor, id, tok) }) {
		return
	}
	// The stored view is served as it is: the store wrote it from the
	// OrderView this endpoint returns.
	userID, view, err := a.r.Orders.OrderJSON(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !actor.CanActFor(userID) {
		a.forbidOrder(w, r)
		return
	}
	httpx.WriteRawJSON(w, http.StatusOK, view)
}

// forbidOrder is the answer to a customer reading another's orders, with a
// consistency token or without.
func (a *API) forbidOrder(w http.ResponseWriter, r *http.Request) {
	httpx.WriteProblem(w, r, domain.CodeForbidden, "customers read only their own orders")
}

type orderList struct {
	Orders     []projections.OrderListEntry `json:"orders"`
	NextCursor *string                      `json:"next_cursor"`
}

func (a *API) listUserOrders(w http.ResponseWriter, r *http.Request) {
	actor, _ := httpx.ActorFrom(r.Context())
	userID := chi.URLParam(r, "user_id")
	if !actor.CanActFor(userID) {
		a.forbidOrder(w, r)
		return
	}
	q := r.URL.Query()
	limit, err := intParam(q.Get("limit"), "limit", 20, 1, a.cfg.MaxPageSize)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !a.consistent(w, r, func(tok *token) error { return a.awaitUserOrderToken(r.Context(), userID, tok) }) {
		return
	}
	orders, next, err := a.r.Orders.UserOrders(r.Context(), userID, limit, q.Get("cursor"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := orderList{Orders: orders}
	if out.Orders == nil {
		out.Orders = []projections.OrderListEntry{}
	}
	if next != "" {
		out.NextCursor = &next
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (a *API) getProduct(w http.ResponseWriter, r *http.Request) {
	sku := chi.URLParam(r, "sku")
	if !domain.ValidSKU(sku) {
		httpx.WriteProblem(w, r, domain.CodeNotFound, "no product with that sku")
		return
	}
	if !a.consistent(w, r, func(tok *token) error { return a.awaitCatalogToken(r.Context(), tok) }) {
		return
	}
	p, err := a.r.Catalog.Product(r.Context(), sku)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	levels, err := a.r.Stock.Levels(r.Context(), []string{sku})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p.Available = levels[0]
	httpx.WriteJSON(w, http.StatusOK, p)
}

func (a *API) getInventory(w http.ResponseWriter, r *http.Request) {
	sku := chi.URLParam(r, "sku")
	if !domain.ValidSKU(sku) {
		httpx.WriteProblem(w, r, domain.CodeNotFound, "no inventory for that sku")
		return
	}
	if !a.consistent(w, r, func(tok *token) error { return a.awaitInventoryToken(r.Context(), tok) }) {
		return
	}
	inv, err := a.r.Inventory.Inventory(r.Context(), sku)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, inv)
}

func (a *API) searchProducts(w http.ResponseWriter, r *http.Request) {
	q, err := ParseSearch(r, a.cfg.MaxPageSize)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !a.consistent(w, r, func(tok *token) error {
		// The wait sees the version through a real-time read; the search
		// must not answer from an index that has not caught up with it.
		q.Fresh = true
		return a.awaitCatalogToken(r.Context(), tok)
	}) {
		return
	}
	res, err := a.r.Catalog.Search(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if res.Hits, err = a.withLevels(r.Context(), res.Hits); err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}

// withLevels returns a copy of hits (a search's result may be shared with
// the catalog's cache) with Available filled in from the stock model.
func (a *API) withLevels(ctx context.Context, hits []projections.ProductView) ([]projections.ProductView, error) {
	out := make([]projections.ProductView, len(hits))
	if len(hits) == 0 {
		return out, nil
	}
	skus := make([]string, len(hits))
	for i, h := range hits {
		skus[i] = h.SKU
	}
	levels, err := a.r.Stock.Levels(ctx, skus)
	if err != nil {
		return nil, err
	}
	for i, h := range hits {
		h.Available = levels[i]
		out[i] = h
	}
	return out, nil
}

// ParseSearch reads and validates the query of GET /v1/products.
func ParseSearch(r *http.Request, maxPage int) (projections.SearchQuery, error) {
	v := r.URL.Query()
	var q projections.SearchQuery
	q.Q = v.Get("q")
	if !utf8.ValidString(q.Q) || utf8.RuneCountInString(q.Q) > 200 {
		return q, &domain.Error{Code: domain.CodeInvalidRequest, Field: "q", Message: "must be valid UTF-8, at most 200 characters"}
	}
	q.Category = v.Get("category")
	if !utf8.ValidString(q.Category) || len(q.Category) > domain.MaxCategoryLen*4 {
		return q, &domain.Error{Code: domain.CodeInvalidRequest, Field: "category", Message: "is not a valid category"}
	}
	var err error
	for _, p := range []struct {
		name string
		dst  **int64
	}{{"min_price", &q.MinPrice}, {"max_price", &q.MaxPrice}} {
		if s := v.Get(p.name); s != "" {
			n, perr := strconv.ParseInt(s, 10, 64)
			if perr != nil || n < 0 || n > domain.MaxPriceCents {
				return q, &domain.Error{Code: domain.CodeInvalidRequest, Field: p.name, Message: "must be an integer number of cents from 0 to 10^11"}
			}
			*p.dst = &n
		}
	}
	if q.MinPrice != nil && q.MaxPrice != nil && *q.MinPrice > *q.MaxPrice {
		return q, &domain.Error{Code: domain.CodeInvalidRequest, Field: "min_price", Message: "must not exceed max_price"}
	}
	switch s := v.Get("in_stock"); s {
	case "", "false", "0":
	case "true", "1":
		q.InStock = true
	default:
		return q, &domain.Error{Code: domain.CodeInvalidRequest, Field: "in_stock", Message: "must be true or false"}
	}
	if q.Limit, err = intParam(v.Get("limit"), "limit", 20, 1, maxPage); err != nil {
		return q, err
	}
	if q.Offset, err = intParam(v.Get("offset"), "offset", 0, 0, projections.MaxSearchWindow-q.Limit); err != nil {
		return q, &domain.Error{Code: domain.CodeInvalidRequest, Field: "offset",
			Message: "must be an integer from 0 to " + strconv.Itoa(projections.MaxSearchWindow-q.Limit) +
				": offset + limit must not exceed " + strconv.Itoa(projections.MaxSearchWindow)}
	}
	return q, nil
}

func intParam(s, field string, def, lo, hi int) (int, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, &domain.Error{Code: domain.CodeInvalidRequest, Field: field,
			Message: "must be an integer from " + strconv.Itoa(lo) + " to " + strconv.Itoa(hi)}
	}
	return n, nil
}

type salesReport struct {
	Rows []projections.SalesRow `json:"rows"`
}

func (a *API) salesReport(w http.ResponseWriter, r *http.Request) {
	actor, _ := httpx.ActorFrom(r.Context())
	if !actor.IsAdmin() {
		httpx.WriteProblem(w, r, domain.CodeForbidden, "sales reports are for admins")
		return
	}
	q, err := ParseSales(r, time.Now())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !a.consistent(w, r, func(*token) error {
		return tokenRefused("no token: sales rows carry no aggregate versions")
	}) {
		return
	}
	rows, err := a.r.Sales.Sales(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if rows == nil {
		rows = []projections.SalesRow{}
	}
	httpx.WriteJSON(w, http.StatusOK, salesReport{Rows: rows})
}

// ParseSales reads GET /v1/reports/sales: from (inclusive) and to (exclusive)
// as RFC 3339 timestamps or dates (default: the 30 days before now), group_by
// day, sku or category (default day).
func ParseSales(r *http.Request, now time.Time) (projections.SalesQuery, error) {
	v := r.URL.Query()
	q := projections.SalesQuery{GroupBy: v.Get("group_by"), To: now.UTC(), From: now.UTC().AddDate(0, 0, -30)}
	if q.GroupBy == "" {
		q.GroupBy = "day"
	}
	if q.GroupBy != "day" && q.GroupBy != "sku" && q.GroupBy != "category" {
		return q, &domain.Error{Code: domain.CodeInvalidRequest, Field: "group_by", Message: "must be day, sku or category"}
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		s := v.Get(p.name)
		if s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t, err = time.Parse(time.DateOnly, s)
		}
		if err != nil || t.Year() < 1970 || t.Year() > 2200 {
			return q, &domain.Error{Code: domain.CodeInvalidRequest, Field: p.name, Message: "must be an RFC 3339 timestamp or a date (YYYY-MM-DD)"}
		}
		*p.dst = t.UTC()
	}
	if !q.From.Before(q.To) {
		return q, &domain.Error{Code: domain.CodeInvalidRequest, Field: "from", Message: "must be before to"}
	}
	return q, nil
}

func (a *API) adminStatus(src func() StatusSource) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		actor, _ := httpx.ActorFrom(r.Context())
		if !actor.IsAdmin() {
			httpx.WriteProblem(w, r, domain.CodeForbidden, "admin endpoints are for admins")
			return
		}
		s := src()
		if s == nil {
			httpx.WriteProblem(w, r, domain.CodeNotFound, "this process does not run that component")
			return
		}
		st, err := s.Status(r.Context())
		if err != nil {
			a.fail(w, r, err)
			return
		}
		httpx.WriteJSON(w, http.StatusOK, st)
	}
}
