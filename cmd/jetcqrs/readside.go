package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/elastic/go-elasticsearch/v8"
	natsgo "github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	chstore "github.com/jetcqrs/jetcqrs/projections/clickhouse"
	elasticstore "github.com/jetcqrs/jetcqrs/projections/elastic"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

// appliedSubject carries "these aggregates were just applied" notices from
// projectors to query APIs, which wake their read-your-writes waiters.
const appliedSubject = "jetcqrs.applied"

// modelSpecs are the read models and their place in the stream.
var modelSpecs = []lifecycle.Spec{
	{Name: "orders", AggregateTypes: []string{domain.AggregateOrder}},
	{Name: "inventory", AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
		EventTypes: redisstore.InventoryEventTypes},
	{Name: "catalog", AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
		CommitInterval: projections.CatalogCommitInterval},
	{Name: "sales", AggregateTypes: []string{domain.AggregateOrder}, EventTypes: chstore.EventTypes,
		CommitInterval: projections.SalesCommitInterval},
}

// catalogStore is the catalog read model, embedded (Bleve) or Elasticsearch.
type catalogStore interface {
	projections.Applier
	projections.CatalogReader
	projections.VersionReader
	projections.StockFlagReader
}

// readModel is one generation of one read model: the store its projection
// writes and the query API reads.
type readModel struct {
	name       string
	generation int
	store      projections.Applier
	// Exactly one of these is set, by name.
	orders    *redisstore.OrderStore
	inventory *redisstore.InventoryStore
	catalog   catalogStore
	sales     *chstore.SalesStore
	drop      func(context.Context) error
	close     func()
}

var (
	_ lifecycle.Model   = (*readModel)(nil)
	_ lifecycle.Marker  = markedModel{}
	_ lifecycle.Exposer = aliasedModel{}
	_ readModelOf       = markedModel{}
	_ readModelOf       = aliasedModel{}
)

func (rm *readModel) Store() projections.Applier     { return rm.store }
func (rm *readModel) Drop(ctx context.Context) error { return rm.drop(ctx) }
func (rm *readModel) Close()                         { rm.close() }
func (rm *readModel) base() *readModel               { return rm }

// readModelOf is every lifecycle.Model this process opens.
type readModelOf interface{ base() *readModel }

// markedModel is a Redis model: Redis can lose its data while the stream's
// consumers keep their progress, so each generation carries a marker.
type markedModel struct {
	*readModel
	lifecycle.Marker
}

// aliasedModel is the Elasticsearch catalog: readers of the index go
// through an alias that the promoted generation takes.
type aliasedModel struct {
	*readModel
	swap func(context.Context) error
}

func (a aliasedModel) Expose(ctx context.Context) error { return a.swap(ctx) }

// openClients connects to Redis and ClickHouse, which hold the read models
// that are not embedded.
func (m *Main) openClients(ctx context.Context) error {
	ropts, err := redis.ParseURL(m.cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("redis-url: %w", err)
	}
	m.redis = redis.NewClient(ropts)
	if err := m.redis.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w (is it running? `bash scripts/services.sh` starts it)", ropts.Addr, err)
	}
	m.checks["redis"] = func(ctx context.Context) error { return m.redis.Ping(ctx).Err() }

	chURL, _ := url.Parse(m.cfg.ClickHouseURL)
	db := strings.TrimPrefix(chURL.Path, "/")
	if db == "" {
		db = "default"
	}
	chOpts := &clickhouse.Options{Addr: []string{chURL.Host}, Auth: clickhouse.Auth{Database: db}}
	if u := chURL.User; u != nil {
		chOpts.Auth.Username = u.Username()
		chOpts.Auth.Password, _ = u.Password()
	}
	if m.ch, err = clickhouse.Open(chOpts); err != nil {
		return fmt.Errorf("clickhouse-url: %w", err)
	}
	if err := m.ch.Ping(ctx); err != nil {
		return fmt.Errorf("ClickHouse at %s: %w (is it running? `bash scripts/services.sh` installs and starts it)", chURL.Host, err)
	}
	m.checks["clickhouse"] = m.ch.Ping
	return nil
}

// servesCatalog reports whether this process keeps the catalog: the embedded
// index is read where it is written, so a projector without the query API
// beside it leaves the catalog to the process that has both, unless the
// catalog lives in Elasticsearch.
func (m *Main) servesCatalog() bool { return m.comp.QueryAPI || m.cfg.ElasticsearchURL != "" }

// openReadModel opens generation gen of the named read model. fresh deletes
// whatever that generation already holds first and marks it as created.
func (m *Main) openReadModel(ctx context.Context, name string, gen int, fresh bool) (lifecycle.Model, error) {
	g := lifecycle.GenerationName(gen)
	rm := &readModel{name: name, generation: gen, close: func() {}}
	var marker lifecycle.Marker
	switch name {
	case "orders":
		s := redisstore.NewOrderStore(m.redis, m.cfg.RedisPrefix+g+":")
		rm.store, rm.orders, rm.drop, marker = s, s, s.Drop, s
	case "inventory":
		s := redisstore.NewInventoryStore(m.redis, m.cfg.RedisPrefix+g+":")
		rm.store, rm.inventory, rm.drop, marker = s, s, s.Drop, s
	case "sales":
		s, err := chstore.NewSalesStore(m.ch, g)
		if err != nil {
			return nil, err
		}
		rm.store, rm.sales, rm.drop = s, s, s.Drop
	case "catalog":
		if m.cfg.ElasticsearchURL != "" {
			return m.openElasticCatalog(ctx, rm, fresh)
		}
		dir := filepath.Join(m.cfg.DataDir, "catalog", g)
		if fresh {
			if err := os.RemoveAll(dir); err != nil {
				return nil, fmt.Errorf("catalog index: %w", err)
			}
		}
		// An index of another schema (an older build's) is replaced by an
		// empty, unmarked one, which the lifecycle rebuilds from the stream
		// into the next generation.
		s, replaced, err := blevestore.OpenOrReplace(dir, blevestore.WithSearchCache(blevestore.DefaultSearchCacheEntries, m.searchCache))
		if err != nil {
			return nil, fmt.Errorf("catalog index: %w", err)
		}
		if replaced {
			m.logger.Warn("catalog index was built with another schema; replaced it, rebuilding from the stream", "dir", dir)
		}
		var once sync.Once
		rm.store, rm.catalog = s, s
		rm.close = func() { once.Do(func() { _ = s.Close() }) }
		rm.drop = func(context.Context) error { rm.close(); return os.RemoveAll(dir) }
		if fresh {
			if err := s.Mark(ctx); err != nil {
				rm.close()
				return nil, fmt.Errorf("catalog index: %w", err)
			}
		}
		return markedModel{rm, s}, nil
	default:
		return nil, fmt.Errorf("no read model %q", name)
	}
	if fresh {
		if err := rm.drop(ctx); err != nil {
			return nil, err
		}
		if marker != nil {
			if err := marker.Mark(ctx); err != nil {
				return nil, err
			}
		}
	}
	if rm.sales != nil {
		if err := rm.sales.EnsureSchema(ctx); err != nil {
			return nil, err
		}
	}
	if marker != nil {
		return markedModel{rm, marker}, nil
	}
	return rm, nil
}

func (m *Main) openElasticCatalog(ctx context.Context, rm *readModel, fresh bool) (lifecycle.Model, error) {
	es, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{m.cfg.ElasticsearchURL}})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch-url: %w", err)
	}
	ecfg := elasticstore.DefaultConfig()
	ecfg.Generation = rm.generation
	s, err := elasticstore.New(es, ecfg)
	if err != nil {
		return nil, err
	}
	gen := rm.generation
	rm.drop = func(ctx context.Context) error { return s.DropGeneration(ctx, gen) }
	if fresh {
		if err := rm.drop(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.EnsureIndex(ctx); err != nil {
		return nil, fmt.Errorf("Elasticsearch at %s: %w", m.cfg.ElasticsearchURL, err)
	}
	rm.store, rm.catalog = s, s
	return aliasedModel{rm, func(ctx context.Context) error { return s.SwapAlias(ctx, gen) }}, nil
}

// liveModels holds the live generation of each read model of this process.
// The query readers load the store on every call, so a switch of generation
// takes effect at once for every later read.
type liveModels struct {
	mu        sync.Mutex
	models    map[string]*readModel
	orders    atomic.Pointer[redisstore.OrderStore]
	inventory atomic.Pointer[redisstore.InventoryStore]
	catalog   atomic.Pointer[catalogStore]
	sales     atomic.Pointer[chstore.SalesStore]
}

func newLiveModels() *liveModels { return &liveModels{models: map[string]*readModel{}} }

// set makes rm the live generation of its model and returns the one it
// replaces, if any.
func (l *liveModels) set(rm *readModel) *readModel {
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.models[rm.name]
	l.models[rm.name] = rm
	switch {
	case rm.orders != nil:
		l.orders.Store(rm.orders)
	case rm.inventory != nil:
		l.inventory.Store(rm.inventory)
	case rm.catalog != nil:
		c := rm.catalog
		l.catalog.Store(&c)
	case rm.sales != nil:
		l.sales.Store(rm.sales)
	}
	return old
}

// get returns the live generation of the named model, nil when this process
// has none.
func (l *liveModels) get(name string) *readModel {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.models[name]
}

// The query readers: each call goes to the live generation.
type (
	liveOrders    struct{ l *liveModels }
	liveInventory struct{ l *liveModels }
	liveCatalog   struct{ l *liveModels }
	liveSales     struct{ l *liveModels }
)

var (
	_ projections.OrderReader      = liveOrders{}
	_ projections.VersionReader    = liveOrders{}
	_ projections.InventoryReader  = liveInventory{}
	_ projections.VersionReader    = liveInventory{}
	_ projections.StockLevelReader = liveInventory{}
	_ projections.CatalogReader    = liveCatalog{}
	_ projections.VersionReader    = liveCatalog{}
	_ projections.StockFlagReader  = liveCatalog{}
	_ projections.SalesReader      = liveSales{}
)

func (o liveOrders) Order(ctx context.Context, id string) (projections.OrderView, error) {
	return o.l.orders.Load().Order(ctx, id)
}

func (o liveOrders) OrderJSON(ctx context.Context, id string) (string, []byte, error) {
	return o.l.orders.Load().OrderJSON(ctx, id)
}

func (o liveOrders) UserOrders(ctx context.Context, userID string, limit int, cursor string) ([]projections.OrderListEntry, string, error) {
	return o.l.orders.Load().UserOrders(ctx, userID, limit, cursor)
}

func (o liveOrders) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	return o.l.orders.Load().AppliedVersion(ctx, aggregateType, aggregateID)
}

func (i liveInventory) Inventory(ctx context.Context, sku string) (projections.InventoryView, error) {
	return i.l.inventory.Load().Inventory(ctx, sku)
}

func (i liveInventory) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	return i.l.inventory.Load().AppliedVersion(ctx, aggregateType, aggregateID)
}

func (i liveInventory) Levels(ctx context.Context, skus []string) ([]int64, error) {
	return i.l.inventory.Load().Levels(ctx, skus)
}

func (c liveCatalog) InStock(ctx context.Context, sku string) (bool, error) {
	return (*c.l.catalog.Load()).InStock(ctx, sku)
}

func (c liveCatalog) Product(ctx context.Context, sku string) (projections.ProductView, error) {
	return (*c.l.catalog.Load()).Product(ctx, sku)
}

func (c liveCatalog) Search(ctx context.Context, q projections.SearchQuery) (projections.SearchResult, error) {
	return (*c.l.catalog.Load()).Search(ctx, q)
}

func (c liveCatalog) AppliedVersion(ctx context.Context, aggregateType, aggregateID string) (int64, error) {
	return (*c.l.catalog.Load()).AppliedVersion(ctx, aggregateType, aggregateID)
}

func (s liveSales) Sales(ctx context.Context, q projections.SalesQuery) ([]projections.SalesRow, error) {
	return s.l.sales.Load().Sales(ctx, q)
}

func (m *Main) queryReaders() queryapi.Readers {
	orders, inventory, catalog := liveOrders{m.live}, liveInventory{m.live}, liveCatalog{m.live}
	return queryapi.Readers{
		Orders: orders, Inventory: inventory, Catalog: catalog, Sales: liveSales{m.live},
		Stock: inventory, CatalogStock: catalog,
		Versions: map[string]map[string]projections.VersionReader{
			queryapi.ModelOrders:    {domain.AggregateOrder: orders},
			queryapi.ModelInventory: {domain.AggregateInventory: inventory},
			// An inventory token on a catalog read waits on the stock model
			// and the catalog's in-stock flag (queryapi.awaitCatalogToken).
			queryapi.ModelCatalog: {domain.AggregateProduct: catalog},
			// A report sums many orders: no token says it is up to date, so the
			// sales endpoint refuses every token (API.md).
			queryapi.ModelSales: {},
		},
	}
}

// appliedNotice is the body of an appliedSubject message.
type appliedNotice struct {
	Keys [][2]string `json:"keys"` // [aggregate type, aggregate id]
}

// publishApplied tells the query APIs what a batch applied.
func (m *Main) publishApplied(_ string, events []projections.Envelope) {
	n := appliedNotice{Keys: make([][2]string, len(events))}
	for i, e := range events {
		n.Keys[i] = [2]string{e.AggregateType, e.AggregateID}
	}
	if body, err := json.Marshal(n); err == nil {
		_ = m.nc.Publish(appliedSubject, body)
	}
}

// subscribeApplied feeds applied notices into the query API's hub.
func (m *Main) subscribeApplied(hub *queryapi.Hub) error {
	_, err := m.nc.Subscribe(appliedSubject, func(msg *natsgo.Msg) {
		var n appliedNotice
		if json.Unmarshal(msg.Data, &n) != nil {
			return
		}
		for _, k := range n.Keys {
			hub.Notify(k[0], k[1])
		}
	})
	return err
}

func (m *Main) closeReadModels() {
	if m.models != nil {
		m.models.Close()
	}
	if m.ch != nil {
		_ = m.ch.Close()
	}
	if m.redis != nil {
		_ = m.redis.Close()
	}
}
