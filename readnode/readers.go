package readnode

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/projections"
	boltstore "github.com/jetcqrs/jetcqrs/projections/bbolt"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// The readers of the local models: each call goes to the live generation.
type (
	liveOrders    struct{ m *model }
	liveInventory struct{ m *model }
	liveCatalog   struct{ m *model }
	liveSales     struct{ m *model }
)

var (
	_ projections.OrderReader     = liveOrders{}
	_ projections.VersionReader   = liveOrders{}
	_ projections.InventoryReader = liveInventory{}
	_ projections.VersionReader   = liveInventory{}
	_ projections.CatalogReader   = liveCatalog{}
	_ projections.VersionReader   = liveCatalog{}
	_ projections.SalesReader     = liveSales{}
)

func (o liveOrders) s() *boltstore.OrderStore {
	return o.m.live.Load().st.(boltStore).boltModel.(*boltstore.OrderStore)
}

func (o liveOrders) Order(ctx context.Context, id string) (projections.OrderView, error) {
	return o.s().Order(ctx, id)
}

func (o liveOrders) OrderJSON(ctx context.Context, id string) (string, []byte, error) {
	return o.s().OrderJSON(ctx, id)
}

func (o liveOrders) UserOrders(ctx context.Context, userID string, limit int, cursor string) ([]projections.OrderListEntry, string, error) {
	return o.s().UserOrders(ctx, userID, limit, cursor)
}

func (o liveOrders) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	return o.s().AppliedVersion(ctx, aggregateType, aggregateID)
}

func (i liveInventory) s() *boltstore.InventoryStore {
	return i.m.live.Load().st.(boltStore).boltModel.(*boltstore.InventoryStore)
}

func (i liveInventory) Inventory(ctx context.Context, sku string) (projections.InventoryView, error) {
	return i.s().Inventory(ctx, sku)
}

func (i liveInventory) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	return i.s().AppliedVersion(ctx, aggregateType, aggregateID)
}

func (c liveCatalog) s() catalogStore { return c.m.live.Load().st.(catalogStore) }

func (c liveCatalog) Product(ctx context.Context, sku string) (projections.ProductView, error) {
	return c.s().Product(ctx, sku)
}

func (c liveCatalog) Search(ctx context.Context, q projections.SearchQuery) (projections.SearchResult, error) {
	return c.s().Search(ctx, q)
}

func (c liveCatalog) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	return c.s().AppliedVersion(ctx, aggregateType, aggregateID)
}

func (s liveSales) Sales(ctx context.Context, q projections.SalesQuery) ([]projections.SalesRow, error) {
	return s.m.live.Load().st.(boltStore).boltModel.(*boltstore.SalesStore).Sales(ctx, q)
}

// Readers are the readers of the models the node keeps; nil for the others.
type Readers struct {
	Orders interface {
		projections.OrderReader
		projections.VersionReader
	}
	Inventory interface {
		projections.InventoryReader
		projections.VersionReader
	}
	Catalog interface {
		projections.CatalogReader
		projections.VersionReader
	}
	Sales projections.SalesReader
}

// Readers returns the live readers of the local models.
func (n *Node) Readers() Readers {
	var r Readers
	if mm := n.models[Orders]; mm != nil {
		r.Orders = liveOrders{mm}
	}
	if mm := n.models[Inventory]; mm != nil {
		r.Inventory = liveInventory{mm}
	}
	if mm := n.models[Catalog]; mm != nil {
		r.Catalog = liveCatalog{mm}
	}
	if mm := n.models[Sales]; mm != nil {
		r.Sales = liveSales{mm}
	}
	return r
}

// Gate answers 503 unavailable, with Retry-After, to every read until the
// node is ready: before it has caught up its models would answer with data
// older than the stream it was started on. The admin endpoints stay open,
// so that the catch-up can be watched.
func (n *Node) Gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/admin/") && n.Ready(r.Context()) != nil {
			w.Header().Set("Retry-After", "1")
			httpx.WriteProblem(w, r, httpx.CodeUnavailable, "this read node is catching up with the stream; retry")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// MountRebuild serves POST /v1/admin/projections/{name}/rebuild for the
// models the node keeps; r must authenticate, and the handler checks the
// caller is an admin.
func (n *Node) MountRebuild(r chi.Router) {
	r.Post("/v1/admin/projections/{name}/rebuild", func(w http.ResponseWriter, req *http.Request) {
		if a, _ := httpx.ActorFrom(req.Context()); !a.IsAdmin() {
			httpx.WriteProblem(w, req, domain.CodeForbidden, "admin endpoints are for admins")
			return
		}
		name := chi.URLParam(req, "name")
		gen, err := n.Rebuild(req.Context(), name)
		switch {
		case errors.Is(err, ErrNoSuchModel):
			httpx.WriteProblem(w, req, domain.CodeNotFound, "this read node does not keep that model")
		case errors.Is(err, lifecycle.ErrRebuildUnderWay):
			httpx.WriteProblem(w, req, domain.CodeConflict, err.Error())
		case err != nil:
			httpx.WriteError(w, req, n.cfg.Logger, fmt.Errorf("rebuild %s: %w", name, err))
		default:
			httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"name": name, "generation": lifecycle.GenerationName(gen)})
		}
	})
}
