package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/jetcqrs/jetcqrs/adminapi"
	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/commandapi"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/internal/opsmetrics"
	"github.com/jetcqrs/jetcqrs/internal/telemetry"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/postgres"
	blevestore "github.com/jetcqrs/jetcqrs/projections/bleve"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	"github.com/jetcqrs/jetcqrs/projections/live"
	"github.com/jetcqrs/jetcqrs/queryapi"
	"github.com/jetcqrs/jetcqrs/readnode"
	"github.com/jetcqrs/jetcqrs/relay"
)

// The write store is the command API's port to PostgreSQL.
var _ commandapi.Commands = (*postgres.Store)(nil)

// Components selects what a process runs; `serve` runs all of them.
type Components struct {
	CommandAPI bool
	Relay      bool
	Projector  bool
	QueryAPI   bool
	// Broker runs the embedded NATS server for processes started apart,
	// which reach it through NATS_URL.
	Broker bool
}

// All is what `serve` runs.
var All = Components{CommandAPI: true, Relay: true, Projector: true, QueryAPI: true}

// Main is the wired process: built by NewMain with every dependency explicit,
// run by Run until its context ends, released by Close.
type Main struct {
	cfg      *Config
	comp     Components
	logger   *slog.Logger
	registry *prometheus.Registry
	tracing  *telemetry.Tracing
	// searchCache counts the catalog search cache's hits and misses across
	// every generation of the embedded index this process opens.
	searchCache *blevestore.SearchCacheMetrics

	pool  *pgxpool.Pool
	store *postgres.Store

	natsServer *jnats.Server
	nc         *natsgo.Conn
	natsURL    string
	// relayNC is the relay's own connection: its publishes and their acks
	// do not queue behind the projections' deliveries and acks.
	relayNC   *natsgo.Conn
	js        jetstream.JetStream
	streamCfg jnats.StreamConfig
	// replicas of the streams and bucket this process creates or raises.
	replicas int
	relay    *relay.Relay

	redis  *redis.Client
	ch     driver.Conn
	record *lifecycle.KVRecord
	live   *live.Models
	// models owns the read models' generations and, in a projector, applies
	// them.
	models *lifecycle.Manager
	// node keeps a read node's own read models.
	node *readnode.Node
	// edge follows an edge node's mirror of the hub's EVENTS.
	edge *readnode.EdgeMonitor

	checks   map[string]func(context.Context) error
	details  map[string]func(context.Context) any
	server   *http.Server
	listener net.Listener
	metrics  *metricsEndpoint // nil while /metrics is on the API listener
}

// NewMain opens what comp needs and builds the HTTP server. On error
// everything opened so far is closed.
func NewMain(ctx context.Context, cfg *Config, comp Components, logger *slog.Logger) (*Main, error) {
	m := &Main{cfg: cfg, comp: comp, logger: logger, registry: prometheus.NewRegistry(),
		checks: map[string]func(context.Context) error{}, details: map[string]func(context.Context) any{}}
	var err error
	if m.tracing, err = telemetry.Setup(ctx, cfg.Tracing); err != nil {
		return nil, err
	}
	m.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if m.searchCache, err = blevestore.NewSearchCacheMetrics(m.registry); err != nil {
		return nil, err
	}
	if err := m.open(ctx); err != nil {
		m.Close()
		return nil, err
	}
	if err := m.registerStatusMetrics(); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// registerStatusMetrics exports, read at each scrape, the state of what this
// process runs: the streams, the read models it applies, its relay.
func (m *Main) registerStatusMetrics() error {
	var cs []prometheus.Collector
	if m.js != nil {
		cs = append(cs, opsmetrics.NewStreams(m.js, m.logger, jnats.DefaultStreamName, jnats.DefaultDeadLetterStreamName))
	}
	if m.comp.Projector && m.models != nil {
		cs = append(cs, opsmetrics.NewModels(m.models.Status, m.js, jnats.DefaultStreamName, m.cfg.Partitions, m.logger))
	}
	if m.relay != nil {
		cs = append(cs, opsmetrics.NewRelay(m.relay.Status))
	}
	for _, c := range cs {
		if err := m.registry.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}

func (m *Main) open(ctx context.Context) error {
	secret, err := m.cfg.Secret()
	if err != nil {
		return err
	}
	tokens, err := auth.New(secret)
	if err != nil {
		return err
	}
	var mounts []func(chi.Router)

	if m.comp.CommandAPI {
		if err := m.openWriteStore(ctx); err != nil {
			return err
		}
		mounts = append(mounts, commandapi.New(m.tracing.Commands(m.store), tokens, m.tracing.Tracer(telemetry.ScopeCommandAPI), m.logger,
			commandapi.Config{CommandTimeout: m.cfg.CommandTimeout}).Mount)
	}
	if m.comp.Broker && m.cfg.NATSURL != "" {
		return errors.New("broker runs the embedded NATS server: unset NATS_URL for it (the other processes set it)")
	}
	if m.comp.Relay || m.comp.Projector || m.comp.QueryAPI || m.comp.Broker {
		if err := m.openBroker(ctx, "jetcqrs"); err != nil {
			return err
		}
		m.checks["nats"] = func(context.Context) error {
			if !m.nc.IsConnected() {
				return errors.New("not connected")
			}
			return nil
		}
	}
	if m.isReadNode() {
		mount, err := m.openReadNode(ctx, tokens)
		if err != nil {
			return err
		}
		mounts = append(mounts, mount)
	}
	if (m.comp.Projector || m.comp.QueryAPI) && !m.isReadNode() {
		if err := m.openClients(ctx); err != nil {
			return err
		}
		if m.record, err = lifecycle.EnsureKVRecord(ctx, m.js, m.replicas); err != nil {
			return err
		}
		m.raiseReplicas(ctx, "KV_"+lifecycle.Bucket)
		m.live = live.New()
		if err := m.openModels(ctx); err != nil {
			return err
		}
	}
	if m.comp.Projector {
		// A store the projector is waiting out makes the process not ready.
		m.checks["projections"] = m.models.Ready
	}
	if m.comp.QueryAPI && !m.isReadNode() {
		hub := queryapi.NewHub()
		if _, err := jnats.SubscribeApplied(m.nc, hub.Notify); err != nil {
			return err
		}
		var projStatus, relayStatus queryapi.StatusSource
		if m.comp.Projector {
			projStatus = statusFunc(func(ctx context.Context) (any, error) { return m.models.Status(ctx) })
		}
		if m.comp.Relay {
			relayStatus = statusFunc(func(context.Context) (any, error) { return m.relay.Status(), nil })
		}
		mounts = append(mounts, queryapi.New(m.live.Readers(), tokens, hub, projStatus, relayStatus, m.logger,
			queryapi.Config{ConsistencyWait: m.cfg.ConsistencyWait, Tracer: m.optionalTracer(telemetry.ScopeQueryAPI)}).Mount)
	}
	if m.comp.Relay {
		if err := m.openRelay(ctx); err != nil {
			return err
		}
	}
	// The admin routes the query API does not serve: dead letters and
	// rebuilds where the projectors run, the relay's status where no query
	// API reports it.
	var admin adminapi.Projections
	var relayStatus adminapi.Status
	if m.comp.Projector {
		admin = m.models
	}
	if m.comp.Relay && !m.comp.QueryAPI {
		relayStatus = func(context.Context) (any, error) { return m.relay.Status(), nil }
	}
	if admin != nil || relayStatus != nil {
		mounts = append(mounts, adminapi.New(admin, relayStatus, tokens, m.logger).Mount)
	}
	r, err := httpx.NewRouter(httpx.RouterConfig{Logger: m.logger, Registry: m.registry, Checks: m.checks, Details: m.details,
		MetricsElsewhere: m.cfg.MetricsAddr != "", Tracer: m.optionalTracer(telemetry.ScopeHTTP)}, mounts...)
	if err != nil {
		return err
	}
	if err := m.openMetrics(); err != nil {
		return err
	}

	m.server = &http.Server{
		Handler:           r,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      m.cfg.CommandTimeout + 10*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(m.logger.Handler(), slog.LevelWarn),
	}
	if m.listener, err = net.Listen("tcp", m.cfg.HTTPAddr); err != nil {
		return fmt.Errorf("http-addr: %w", err)
	}
	return nil
}

// optionalTracer is the named tracer while tracing is on, nil otherwise:
// components given nil start no spans at all.
func (m *Main) optionalTracer(name string) trace.Tracer {
	if !m.tracing.Enabled() {
		return nil
	}
	return m.tracing.Tracer(name)
}

type statusFunc func(context.Context) (any, error)

func (f statusFunc) Status(ctx context.Context) (any, error) { return f(ctx) }

func (m *Main) openWriteStore(ctx context.Context) error {
	if err := postgres.Migrate(ctx, m.cfg.DatabaseURL, m.logger); err != nil {
		return fmt.Errorf("%w (is PostgreSQL running? `bash scripts/services.sh` starts it)", err)
	}
	pcfg, err := pgxpool.ParseConfig(m.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database-url: %w", err)
	}
	pcfg.MaxConns = m.cfg.DBMaxConns
	if m.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	m.store = postgres.NewStore(m.pool)
	m.checks["postgres"] = m.store.Ping
	return nil
}

// Addr returns the address the HTTP server listens on.
func (m *Main) Addr() string { return m.listener.Addr().String() }

// Run serves until ctx ends, then drains: HTTP requests in flight finish, the
// relay confirms what was acknowledged, within the shutdown grace period.
func (m *Main) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		m.logger.Info("http listening", "addr", m.Addr())
		err := httpx.Serve(ctx, m.server, m.listener, m.cfg.ShutdownGrace)
		m.logger.Info("http stopped", "grace", m.cfg.ShutdownGrace, "err", err)
		return err
	})
	if m.metrics != nil {
		g.Go(func() error { return m.metrics.Run(ctx, m.cfg.ShutdownGrace) })
	}
	if m.store != nil {
		g.Go(func() error { return m.store.PruneIdempotencyKeysEvery(ctx, time.Hour, 24*time.Hour, m.logger) })
	}
	if m.models != nil {
		g.Go(func() error {
			if err := m.models.Run(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("read models: %w", err)
			}
			return nil
		})
	}
	if m.node != nil {
		g.Go(func() error { return m.node.Run(ctx) })
	}
	if m.edge != nil {
		g.Go(func() error { return m.edge.Run(ctx) })
	}
	if m.relay != nil {
		g.Go(func() error {
			if err := m.relay.Run(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("relay: %w", err)
			}
			return nil
		})
	}
	return g.Wait()
}

// Close releases everything NewMain opened, in reverse order.
func (m *Main) Close() {
	if m.listener != nil {
		_ = m.listener.Close()
	}
	if m.metrics != nil {
		m.metrics.Close()
	}
	if m.relayNC != nil {
		_ = m.relayNC.Drain()
	}
	if m.nc != nil {
		_ = m.nc.Drain()
	}
	m.closeReadModels()
	if m.node != nil {
		m.node.Close()
	}
	if m.natsServer != nil {
		m.natsServer.Shutdown()
	}
	if m.pool != nil {
		m.pool.Close()
	}
	if m.tracing != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := m.tracing.Shutdown(sctx); err != nil {
			m.logger.Warn("flushing traces", "err", err)
		}
	}
}
