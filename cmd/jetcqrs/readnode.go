package main

import (
	"context"
	"path/filepath"

	"github.com/go-chi/chi/v5"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/internal/telemetry"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	"github.com/jetcqrs/jetcqrs/projections/live"
	"github.com/jetcqrs/jetcqrs/projections/models"
	"github.com/jetcqrs/jetcqrs/queryapi"
	"github.com/jetcqrs/jetcqrs/readnode"
)

// engineNone is the value of REDIS_URL or CLICKHOUSE_URL that keeps the
// models of that engine inside a read node instead.
const engineNone = "none"

// isReadNode reports whether this process is a read node: the query API
// alone without Elasticsearch keeps its own catalog index, and its own
// orders, inventory and sales where REDIS_URL or CLICKHOUSE_URL is none.
func (m *Main) isReadNode() bool {
	return m.comp.QueryAPI && !m.comp.Projector && m.cfg.ElasticsearchURL == ""
}

// openReadNode opens the read node's local models, the shared ones it reads
// from Redis or ClickHouse, and returns the query API's mount.
func (m *Main) openReadNode(ctx context.Context, tokens *auth.Tokens) (func(chi.Router), error) {
	local := []string{readnode.Catalog}
	var shared []lifecycle.Spec
	for _, s := range models.Specs() {
		switch {
		case s.Name == "catalog":
		case s.Name == "sales" && m.cfg.ClickHouseURL == engineNone,
			s.Name != "sales" && m.cfg.RedisURL == engineNone:
			local = append(local, s.Name)
		default:
			shared = append(shared, s)
		}
	}
	hub := queryapi.NewHub()
	if len(shared) > 0 {
		if err := m.openSharedForReadNode(ctx, shared, hub); err != nil {
			return nil, err
		}
	}
	node, err := readnode.Open(ctx, readnode.Config{Dir: filepath.Join(m.cfg.DataDir, "readnode"), JS: m.js,
		Stream: m.streamCfg.Name, Models: local, Hub: hub, SearchCache: m.searchCache, Logger: m.logger})
	if err != nil {
		return nil, err
	}
	m.node = node
	m.checks["read_models"] = node.Ready
	m.logger.Info("read node", "local models", local, "data", filepath.Join(m.cfg.DataDir, "readnode"))

	lr := node.Readers()
	// An inventory token on a catalog read waits on the stock model and the
	// catalog's in-stock flag (queryapi.awaitCatalogToken).
	readers := queryapi.Readers{Catalog: lr.Catalog, CatalogStock: lr.Catalog, Versions: map[string]map[string]projections.VersionReader{
		queryapi.ModelCatalog: {domain.AggregateProduct: lr.Catalog},
		queryapi.ModelSales:   {},
	}}
	if node.Keeps(readnode.Orders) {
		readers.Orders, readers.Inventory, readers.Stock = lr.Orders, lr.Inventory, lr.Inventory
		readers.Versions[queryapi.ModelOrders] = map[string]projections.VersionReader{domain.AggregateOrder: lr.Orders}
		readers.Versions[queryapi.ModelInventory] = map[string]projections.VersionReader{domain.AggregateInventory: lr.Inventory}
	} else {
		orders, inventory := m.live.Orders(), m.live.Inventory()
		readers.Orders, readers.Inventory, readers.Stock = orders, inventory, inventory
		readers.Versions[queryapi.ModelOrders] = map[string]projections.VersionReader{domain.AggregateOrder: orders}
		readers.Versions[queryapi.ModelInventory] = map[string]projections.VersionReader{domain.AggregateInventory: inventory}
	}
	if node.Keeps(readnode.Sales) {
		readers.Sales = lr.Sales
	} else {
		readers.Sales = m.live.Sales()
	}
	api := queryapi.New(readers, tokens, hub, statusFunc(node.Status), nil, m.logger,
		queryapi.Config{ConsistencyWait: m.cfg.ConsistencyWait, Tracer: m.optionalTracer(telemetry.ScopeQueryAPI)})
	return func(r chi.Router) {
		r.Group(func(r chi.Router) {
			if m.edge != nil {
				r.Use(m.edge.Header)
			}
			r.Use(node.Gate)
			api.Mount(r)
		})
		if m.edge != nil {
			readnode.MountCommandForward(r, m.cfg.HubAPIURL, m.cfg.CommandTimeout, m.logger)
		}
		r.Group(func(r chi.Router) {
			r.Use(httpx.Authenticate(tokens))
			node.MountRebuild(r)
		})
	}, nil
}

// openSharedForReadNode opens the models a read node reads from the shared
// engines, as the projectors keep them: their live generations follow the
// deployment's record, and the projectors' applied notices wake the waits.
func (m *Main) openSharedForReadNode(ctx context.Context, specs []lifecycle.Spec, hub *queryapi.Hub) error {
	for _, s := range specs {
		switch {
		case s.Name == "sales" && m.ch == nil:
			if err := m.openClickHouse(ctx, "CLICKHOUSE_URL=none keeps sales in the read node"); err != nil {
				return err
			}
		case s.Name != "sales" && m.redis == nil:
			if err := m.openRedis(ctx, "REDIS_URL=none keeps orders and inventory in the read node"); err != nil {
				return err
			}
			if _, err := jnats.SubscribeApplied(m.nc, hub.Notify); err != nil {
				return err
			}
		}
	}
	var err error
	if m.record, err = lifecycle.EnsureKVRecord(ctx, m.js, m.replicas); err != nil {
		return err
	}
	m.live = live.New()
	return m.manageModels(ctx, specs, false)
}
