package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2"
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

// readModel is one generation of one read model: the store its projection
// writes and the query API reads.
type readModel struct {
	store projections.Applier
	drop  func(context.Context) error
	close func()
}

var (
	_ lifecycle.Model   = (*readModel)(nil)
	_ lifecycle.Marker  = markedModel{}
	_ lifecycle.Exposer = aliasedModel{}
)

func (rm *readModel) Store() projections.Applier     { return rm.store }
func (rm *readModel) Drop(ctx context.Context) error { return rm.drop(ctx) }
func (rm *readModel) Close()                         { rm.close() }

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
	rm := &readModel{close: func() {}}
	var marker lifecycle.Marker
	var sales *chstore.SalesStore
	switch name {
	case "orders":
		s := redisstore.NewOrderStore(m.redis, m.cfg.RedisPrefix+g+":")
		rm.store, rm.drop, marker = s, s.Drop, s
	case "inventory":
		s := redisstore.NewInventoryStore(m.redis, m.cfg.RedisPrefix+g+":")
		rm.store, rm.drop, marker = s, s.Drop, s
	case "sales":
		s, err := chstore.NewSalesStore(m.ch, g)
		if err != nil {
			return nil, err
		}
		rm.store, rm.drop, sales = s, s.Drop, s
	case "catalog":
		if m.cfg.ElasticsearchURL != "" {
			return m.openElasticCatalog(ctx, rm, gen, fresh)
		}
		dir := filepath.Join(m.cfg.DataDir, "catalog", g)
		if fresh {
			if err := os.RemoveAll(dir); err != nil {
				return nil, fmt.Errorf("catalog index: %w", err)
			}
		}
		s, err := blevestore.Open(dir, blevestore.WithSearchCache(blevestore.DefaultSearchCacheEntries, m.searchCache))
		if err != nil {
			return nil, fmt.Errorf("catalog index: %w", err)
		}
		var once sync.Once
		rm.store = s
		rm.close = func() { once.Do(func() { _ = s.Close() }) }
		rm.drop = func(context.Context) error { rm.close(); return os.RemoveAll(dir) }
		return rm, nil
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

func (m *Main) openElasticCatalog(ctx context.Context, rm *readModel, gen int, fresh bool) (lifecycle.Model, error) {
	es, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{m.cfg.ElasticsearchURL}})
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
		return nil, fmt.Errorf("Elasticsearch at %s: %w", m.cfg.ElasticsearchURL, err)
	}
	rm.store = s
	return aliasedModel{rm, func(ctx context.Context) error { return s.SwapAlias(ctx, gen) }}, nil
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
