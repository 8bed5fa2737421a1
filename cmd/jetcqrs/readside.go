package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/elastic/go-elasticsearch/v8"
	natsgo "github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	chstore "github.com/jetcqrs/jetcqrs/projections/clickhouse"
	elasticstore "github.com/jetcqrs/jetcqrs/projections/elastic"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

// appliedSubject carries "these aggregates were just applied" notices from
// projectors to query APIs, which wake their read-your-writes waiters.
const appliedSubject = "jetcqrs.applied"

// The live read-model generation: "g1" in key prefixes, table and consumer
// names, 1 in the Elasticsearch index name.
const (
	generation       = "g1"
	generationNumber = 1
)

// readModels are the stores of every projection.
type readModels struct {
	orders    *redisstore.OrderStore
	inventory *redisstore.InventoryStore
	catalog   catalogStore
	sales     *chstore.SalesStore
}

// catalogStore is the catalog read model, embedded (Bleve) or Elasticsearch.
type catalogStore interface {
	projections.Applier
	projections.CatalogReader
	projections.VersionReader
}

func (m *Main) openReadModels(ctx context.Context) error {
	ropts, err := redis.ParseURL(m.cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("redis-url: %w", err)
	}
	m.redis = redis.NewClient(ropts)
	if err := m.redis.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w (is it running? `bash scripts/services.sh` starts it)", ropts.Addr, err)
	}
	m.checks["redis"] = func(ctx context.Context) error { return m.redis.Ping(ctx).Err() }
	prefix := m.cfg.RedisPrefix + generation + ":"
	m.models.orders = redisstore.NewOrderStore(m.redis, prefix)
	m.models.inventory = redisstore.NewInventoryStore(m.redis, prefix)

	// The embedded catalog index is read where it is written: a projector
	// without the query API beside it leaves the catalog to the process that
	// has both, unless the catalog lives in Elasticsearch.
	if m.comp.QueryAPI || m.cfg.ElasticsearchURL != "" {
		if err := m.openCatalog(ctx); err != nil {
			return err
		}
	}

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
	if m.models.sales, err = chstore.NewSalesStore(m.ch, generation); err != nil {
		return err
	}
	return m.models.sales.EnsureSchema(ctx)
}

func (m *Main) openCatalog(ctx context.Context) error {
	if m.cfg.ElasticsearchURL == "" {
		bs, err := blevestore.Open(filepath.Join(m.cfg.DataDir, "catalog", generation))
		if err != nil {
			return fmt.Errorf("catalog index: %w", err)
		}
		m.models.catalog, m.bleve = bs, bs
		return nil
	}
	es, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{m.cfg.ElasticsearchURL}})
	if err != nil {
		return fmt.Errorf("elasticsearch-url: %w", err)
	}
	ecfg := elasticstore.DefaultConfig()
	ecfg.Generation = generationNumber
	store, err := elasticstore.New(es, ecfg)
	if err != nil {
		return err
	}
	if err := store.EnsureIndex(ctx); err != nil {
		return fmt.Errorf("Elasticsearch at %s: %w", m.cfg.ElasticsearchURL, err)
	}
	if err := store.SwapAlias(ctx, generationNumber); err != nil {
		return fmt.Errorf("Elasticsearch alias: %w", err)
	}
	m.models.catalog = store
	return nil
}

func (m *Main) projectionsList() []projections.Projection {
	list := []projections.Projection{
		{Name: "orders", AggregateTypes: []string{domain.AggregateOrder}, Store: m.models.orders},
		{Name: "inventory", AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory}, Store: m.models.inventory},
	}
	if m.models.catalog != nil {
		list = append(list, projections.Projection{Name: "catalog",
			AggregateTypes: []string{domain.AggregateProduct, domain.AggregateInventory}, Store: m.models.catalog,
			CommitInterval: projections.CatalogCommitInterval})
	} else {
		m.logger.Info("catalog projection left to the process that serves queries (embedded index)")
	}
	return append(list, projections.Projection{Name: "sales", AggregateTypes: []string{domain.AggregateOrder}, Store: m.models.sales,
		CommitInterval: projections.SalesCommitInterval})
}

// appliedNotice is the body of an appliedSubject message.
type appliedNotice struct {
	Keys [][2]string `json:"keys"` // [aggregate type, aggregate id]
}

func (m *Main) openProjector() error {
	nc := m.nc
	rt, err := projections.NewRuntime(m.js, projections.Config{
		Partitions: m.cfg.Partitions,
		Generation: generation,
		Logger:     m.logger,
		Registry:   m.registry,
		OnApplied: func(_ string, events []projections.Envelope) {
			n := appliedNotice{Keys: make([][2]string, len(events))}
			for i, e := range events {
				n.Keys[i] = [2]string{e.AggregateType, e.AggregateID}
			}
			if body, err := json.Marshal(n); err == nil {
				_ = nc.Publish(appliedSubject, body)
			}
		},
	}, m.projectionsList())
	m.runtime = rt
	return err
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

func (m *Main) queryReaders() queryapi.Readers {
	return queryapi.Readers{
		Orders: m.models.orders, Inventory: m.models.inventory, Catalog: m.models.catalog, Sales: m.models.sales,
		Versions: map[string]map[string]projections.VersionReader{
			queryapi.ModelOrders:    {domain.AggregateOrder: m.models.orders},
			queryapi.ModelInventory: {domain.AggregateInventory: m.models.inventory},
			queryapi.ModelCatalog:   {domain.AggregateProduct: m.models.catalog, domain.AggregateInventory: m.models.catalog},
			// Sales rows carry no aggregate versions: a token there is refused.
			queryapi.ModelSales: {},
		},
	}
}

func (m *Main) closeReadModels() {
	if m.bleve != nil {
		_ = m.bleve.Close()
	}
	if m.ch != nil {
		_ = m.ch.Close()
	}
	if m.redis != nil {
		_ = m.redis.Close()
	}
}
