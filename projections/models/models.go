// Package models names jetcqrs's read models (Specs: their place in the
// stream) and opens generation N of each in its store (Opener.Open, the
// lifecycle manager's Opener): orders and inventory in Redis, sales in
// ClickHouse, the catalog in an embedded Bleve index or in Elasticsearch.
// Generation N is g<N> in each store's names: the Redis key prefix, the
// ClickHouse table, the index directory or the Elasticsearch index.
package models

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/elastic/go-elasticsearch/v8"
	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	chstore "github.com/jetcqrs/jetcqrs/projections/clickhouse"
	elasticstore "github.com/jetcqrs/jetcqrs/projections/elastic"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
)

// The read models, by name.
const (
	Orders    = "orders"
	Inventory = "inventory"
	Catalog   = "catalog"
	Sales     = "sales"
)

// Specs returns the read models and their place in the stream.
func Specs() []lifecycle.Spec {
	return []lifecycle.Spec{
		{Name: Orders, AggregateTypes: []string{domain.AggregateOrder}},
		{Name: Inventory, AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
			EventTypes: redisstore.InventoryEventTypes},
		{Name: Catalog, AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory},
			CommitInterval: projections.CatalogCommitInterval},
		{Name: Sales, AggregateTypes: []string{domain.AggregateOrder}, EventTypes: chstore.EventTypes,
			CommitInterval: projections.SalesCommitInterval},
	}
}

// Config is where the stores are.
type Config struct {
	// Redis holds orders and inventory, under RedisPrefix + "g<N>:".
	Redis       *redis.Client
	RedisPrefix string
	// ClickHouse holds sales, in table sales_lines_g<N>.
	ClickHouse driver.Conn
	// ElasticsearchURL, when set, holds the catalog (index per generation
	// behind an alias); otherwise the catalog is an embedded index in
	// DataDir/catalog/g<N>, whose search cache counts into SearchCache.
	ElasticsearchURL string
	DataDir          string
	SearchCache      *blevestore.SearchCacheMetrics
}

// Opener opens generations of the read models in the stores of its Config.
type Opener struct{ cfg Config }

// NewOpener returns an Opener over cfg's stores.
func NewOpener(cfg Config) *Opener { return &Opener{cfg: cfg} }

var _ lifecycle.Opener = (*Opener)(nil).Open

// ErrNoSuchModel is returned by Open for a name Specs does not list.
var ErrNoSuchModel = errors.New("no such read model")

// Open opens generation gen of the named model. fresh deletes whatever that
// generation already holds first and, for a Redis model, marks it as
// created. The Redis models are lifecycle.Markers, the Elasticsearch
// catalog a lifecycle.Exposer (its alias moves to the generation).
func (o *Opener) Open(ctx context.Context, name string, gen int, fresh bool) (lifecycle.Model, error) {
	g := lifecycle.GenerationName(gen)
	rm := &model{close: func() {}}
	var marker lifecycle.Marker
	var sales *chstore.SalesStore
	switch name {
	case Orders:
		s := redisstore.NewOrderStore(o.cfg.Redis, o.cfg.RedisPrefix+g+":")
		rm.store, rm.drop, marker = s, s.Drop, s
	case Inventory:
		s := redisstore.NewInventoryStore(o.cfg.Redis, o.cfg.RedisPrefix+g+":")
		rm.store, rm.drop, marker = s, s.Drop, s
	case Sales:
		s, err := chstore.NewSalesStore(o.cfg.ClickHouse, g)
		if err != nil {
			return nil, err
		}
		rm.store, rm.drop, sales = s, s.Drop, s
	case Catalog:
		if o.cfg.ElasticsearchURL != "" {
			return o.openElasticCatalog(ctx, rm, gen, fresh)
		}
		return o.openEmbeddedCatalog(rm, g, fresh)
	default:
		return nil, fmt.Errorf("%w: %q", ErrNoSuchModel, name)
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
	if sales != nil {
		if err := sales.EnsureSchema(ctx); err != nil {
			return nil, err
		}
	}
	if marker != nil {
		return markedModel{rm, marker}, nil
	}
	return rm, nil
}

func (o *Opener) openEmbeddedCatalog(rm *model, g string, fresh bool) (lifecycle.Model, error) {
	dir := filepath.Join(o.cfg.DataDir, "catalog", g)
	if fresh {
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("catalog index: %w", err)
		}
	}
	s, err := blevestore.Open(dir, blevestore.WithSearchCache(blevestore.DefaultSearchCacheEntries, o.cfg.SearchCache))
	if err != nil {
		return nil, fmt.Errorf("catalog index: %w", err)
	}
	var once sync.Once
	rm.store = s
	rm.close = func() { once.Do(func() { _ = s.Close() }) }
	rm.drop = func(context.Context) error { rm.close(); return os.RemoveAll(dir) }
	return rm, nil
}

func (o *Opener) openElasticCatalog(ctx context.Context, rm *model, gen int, fresh bool) (lifecycle.Model, error) {
	es, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{o.cfg.ElasticsearchURL}})
	if err != nil {
		return nil, fmt.Errorf("elasticsearch-url: %w", err)
	}
	ecfg := elasticstore.DefaultConfig()
	ecfg.Generation = gen
	s, err := elasticstore.New(es, ecfg)
	if err != nil {
		return nil, err
	}
	rm.drop = func(ctx context.Context) error { return s.DropGeneration(ctx, gen) }
	if fresh {
		if err := rm.drop(ctx); err != nil {
			return nil, err
		}
	}
	if err := s.EnsureIndex(ctx); err != nil {
		return nil, fmt.Errorf("Elasticsearch at %s: %w", o.cfg.ElasticsearchURL, err)
	}
	rm.store = s
	return aliasedModel{rm, func(ctx context.Context) error { return s.SwapAlias(ctx, gen) }}, nil
}

// model is one generation of one read model: the store its projection
// writes and the query API reads.
type model struct {
	store projections.Applier
	drop  func(context.Context) error
	close func()
}

var (
	_ lifecycle.Model   = (*model)(nil)
	_ lifecycle.Marker  = markedModel{}
	_ lifecycle.Exposer = aliasedModel{}
)

func (m *model) Store() projections.Applier     { return m.store }
func (m *model) Drop(ctx context.Context) error { return m.drop(ctx) }
func (m *model) Close()                         { m.close() }

// markedModel is a Redis model: Redis can lose its data while the stream's
// consumers keep their progress, so each generation carries a marker.
type markedModel struct {
	*model
	lifecycle.Marker
}

// aliasedModel is the Elasticsearch catalog: readers of the index go
// through an alias that the promoted generation takes.
type aliasedModel struct {
	*model
	swap func(context.Context) error
}

func (a aliasedModel) Expose(ctx context.Context) error { return a.swap(ctx) }
