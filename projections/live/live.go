// Package live serves queries from the live generation of each read model.
// The lifecycle manager reports every switch of generation (Models.Switch is
// its OnSwitch); the readers Models hands to the query API load the live
// store on every call, so a switch takes effect at once for every later read,
// while a read under way finishes on the generation it started on (which the
// manager retires only after a grace period).
package live

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

// The stores the query API reads, by read model (the names queryapi.Model*
// and the lifecycle's specs share).
type (
	// OrderStore is what the orders model's store serves.
	OrderStore interface {
		projections.OrderReader
		projections.VersionReader
	}
	// InventoryStore is what the inventory model's store serves.
	InventoryStore interface {
		projections.InventoryReader
		projections.VersionReader
	}
	// CatalogStore is what the catalog model's store serves.
	CatalogStore interface {
		projections.CatalogReader
		projections.VersionReader
	}
	// SalesStore is what the sales model's store serves.
	SalesStore = projections.SalesReader
)

// ErrNoLiveGeneration is returned by a reader of a model this process has
// no live generation of (it does not serve that model, or the manager has
// not opened it yet).
var ErrNoLiveGeneration = errors.New("no live generation of this read model in this process")

// Models holds the live generation of each read model of this process. The
// zero value is not usable; call New.
type Models struct {
	mu   sync.Mutex
	gens map[string]int

	orders    atomic.Pointer[OrderStore]
	inventory atomic.Pointer[InventoryStore]
	catalog   atomic.Pointer[CatalogStore]
	sales     atomic.Pointer[SalesStore]
}

// Switch is what the lifecycle manager calls back.
var _ func(string, int, lifecycle.Model) = (*Models)(nil).Switch

// New returns Models with no live generation.
func New() *Models { return &Models{gens: map[string]int{}} }

// Switch makes m generation gen of the named model the one every later read
// goes to. It has the signature of lifecycle.Config.OnSwitch. A model the
// query API does not read is only recorded. A store that does not serve
// what its model's readers need is a wiring error: Switch panics, at the
// first open.
func (l *Models) Switch(name string, gen int, m lifecycle.Model) {
	store := m.Store()
	mismatch := func() { panic(fmt.Sprintf("live: the %s store %T does not serve the %s readers", name, store, name)) }
	l.mu.Lock()
	defer l.mu.Unlock()
	switch name {
	case queryapi.ModelOrders:
		s, ok := store.(OrderStore)
		if !ok {
			mismatch()
		}
		l.orders.Store(&s)
	case queryapi.ModelInventory:
		s, ok := store.(InventoryStore)
		if !ok {
			mismatch()
		}
		l.inventory.Store(&s)
	case queryapi.ModelCatalog:
		s, ok := store.(CatalogStore)
		if !ok {
			mismatch()
		}
		l.catalog.Store(&s)
	case queryapi.ModelSales:
		s, ok := store.(SalesStore)
		if !ok {
			mismatch()
		}
		l.sales.Store(&s)
	}
	l.gens[name] = gen
}

// Generation returns the live generation of the named model, and false when
// this process has none.
func (l *Models) Generation(name string) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	gen, ok := l.gens[name]
	return gen, ok
}

// Readers returns the query API's readers, each going to the live
// generation of its model on every call, and the version readers its
// read-your-writes waits use.
func (l *Models) Readers() queryapi.Readers {
	orders, inventory, catalog := Orders{l}, Inventory{l}, Catalog{l}
	return queryapi.Readers{
		Orders: orders, Inventory: inventory, Catalog: catalog, Sales: Sales{l},
		Versions: map[string]map[string]projections.VersionReader{
			queryapi.ModelOrders:    {domain.AggregateOrder: orders},
			queryapi.ModelInventory: {domain.AggregateInventory: inventory},
			queryapi.ModelCatalog:   {domain.AggregateProduct: catalog, domain.AggregateInventory: catalog},
			// A report sums many orders: no token says it is up to date, so the
			// sales endpoint refuses every token (API.md).
			queryapi.ModelSales: {},
		},
	}
}

func load[T any](p *atomic.Pointer[T], name string) (T, error) {
	if s := p.Load(); s != nil {
		return *s, nil
	}
	var zero T
	return zero, fmt.Errorf("%s: %w", name, ErrNoLiveGeneration)
}

// The readers: each call goes to the live generation of its model.
type (
	Orders    struct{ l *Models }
	Inventory struct{ l *Models }
	Catalog   struct{ l *Models }
	Sales     struct{ l *Models }
)

var (
	_ OrderStore     = Orders{}
	_ InventoryStore = Inventory{}
	_ CatalogStore   = Catalog{}
	_ SalesStore     = Sales{}
)

// Orders returns the reader of the live orders generation.
func (l *Models) Orders() Orders { return Orders{l} }

func (o Orders) Order(ctx context.Context, id string) (projections.OrderView, error) {
	s, err := load(&o.l.orders, queryapi.ModelOrders)
	if err != nil {
		return projections.OrderView{}, err
	}
	return s.Order(ctx, id)
}

func (o Orders) OrderJSON(ctx context.Context, id string) (string, []byte, error) {
	s, err := load(&o.l.orders, queryapi.ModelOrders)
	if err != nil {
		return "", nil, err
	}
	return s.OrderJSON(ctx, id)
}

func (o Orders) UserOrders(ctx context.Context, userID string, limit int, cursor string) ([]projections.OrderListEntry, string, error) {
	s, err := load(&o.l.orders, queryapi.ModelOrders)
	if err != nil {
		return nil, "", err
	}
	return s.UserOrders(ctx, userID, limit, cursor)
}

func (o Orders) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	s, err := load(&o.l.orders, queryapi.ModelOrders)
	if err != nil {
		return 0, err
	}
	return s.AppliedVersion(ctx, aggregateType, aggregateID)
}

// Inventory returns the reader of the live inventory generation.
func (l *Models) Inventory() Inventory { return Inventory{l} }

func (i Inventory) Inventory(ctx context.Context, sku string) (projections.InventoryView, error) {
	s, err := load(&i.l.inventory, queryapi.ModelInventory)
	if err != nil {
		return projections.InventoryView{}, err
	}
	return s.Inventory(ctx, sku)
}

func (i Inventory) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	s, err := load(&i.l.inventory, queryapi.ModelInventory)
	if err != nil {
		return 0, err
	}
	return s.AppliedVersion(ctx, aggregateType, aggregateID)
}

// Catalog returns the reader of the live catalog generation.
func (l *Models) Catalog() Catalog { return Catalog{l} }

func (c Catalog) Product(ctx context.Context, sku string) (projections.ProductView, error) {
	s, err := load(&c.l.catalog, queryapi.ModelCatalog)
	if err != nil {
		return projections.ProductView{}, err
	}
	return s.Product(ctx, sku)
}

func (c Catalog) Search(ctx context.Context, q projections.SearchQuery) (projections.SearchResult, error) {
	s, err := load(&c.l.catalog, queryapi.ModelCatalog)
	if err != nil {
		return projections.SearchResult{}, err
	}
	return s.Search(ctx, q)
}

func (c Catalog) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	s, err := load(&c.l.catalog, queryapi.ModelCatalog)
	if err != nil {
		return 0, err
	}
	return s.AppliedVersion(ctx, aggregateType, aggregateID)
}

// Sales returns the reader of the live sales generation.
func (l *Models) Sales() Sales { return Sales{l} }

func (s Sales) Sales(ctx context.Context, q projections.SalesQuery) ([]projections.SalesRow, error) {
	st, err := load(&s.l.sales, queryapi.ModelSales)
	if err != nil {
		return nil, err
	}
	return st.Sales(ctx, q)
}
