package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/internal/relaypub"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/postgres"
	"github.com/jetcqrs/jetcqrs/relay"
)

// openBroker starts the embedded nats-server unless NATS_URL names an
// external one or a cluster (≥ 2.11), connects, and provisions the EVENTS
// and DLQ streams at NATS_REPLICAS replicas (0: 3 on a cluster, else 1),
// raising streams created with fewer. The embedded server admits only the
// user whose password it keeps in DATA_DIR/nats-password.
func (m *Main) openBroker(ctx context.Context, name string) error {
	url := m.cfg.NATSURL
	if url == "" {
		srv, err := jnats.StartEmbedded(jnats.ServerConfig{Port: m.cfg.NATSPort, StoreDir: filepath.Join(m.cfg.DataDir, "nats"),
			PasswordFile: m.cfg.natsPasswordFile(), Domain: m.cfg.NATSDomain, Hub: m.cfg.leafRemote(), LeafAddr: m.cfg.NATSLeafAddr, Name: m.cfg.embeddedServerName()}, m.logger)
		if err != nil {
			return fmt.Errorf("embedded NATS: %w (set NATS_PORT to another port, or NATS_URL to use an external server)", err)
		}
		m.natsServer = srv
		url = srv.ClientURL() // carries the credentials: never logged
	}
	nc, err := m.connectNATS(ctx, url, name)
	if err != nil {
		return err
	}
	m.nc, m.natsURL = nc, url
	if err := jnats.RequireServerVersion(nc, "2.11.0"); err != nil {
		return err
	}
	if m.js, err = jetstream.New(nc); err != nil {
		return err
	}
	if m.cfg.isEdge() {
		return m.openMirror(ctx)
	}
	m.replicas = m.cfg.NATSReplicas
	if m.replicas == 0 {
		m.replicas = jnats.ClusterReplicas(nc)
	}
	m.streamCfg = jnats.StreamConfig{Partitions: m.cfg.Partitions, DuplicateWindow: m.cfg.DuplicateWindow, Replicas: m.replicas}
	if _, err := jnats.EnsureStream(ctx, m.js, m.streamCfg); err != nil {
		return m.replicasHint(err)
	}
	if _, err := jnats.EnsureDeadLetterStream(ctx, m.js, jnats.DeadLetterConfig{Replicas: m.replicas}); err != nil {
		return m.replicasHint(err)
	}
	m.raiseReplicas(ctx, jnats.DefaultStreamName)
	m.raiseReplicas(ctx, jnats.DefaultDeadLetterStreamName)
	return nil
}

// replicasHint says what to set when the server cannot hold the replicas.
func (m *Main) replicasHint(err error) error {
	if !errors.Is(err, jnats.ErrReplicasUnavailable) {
		return err
	}
	how := "picked from the server: 3 as it names a cluster"
	if m.cfg.NATSReplicas != 0 {
		how = "from nats-replicas ($NATS_REPLICAS)"
	}
	return fmt.Errorf("%w (%d replicas, %s; a first start needs that many JetStream servers online, "+
		"or set NATS_REPLICAS to the number the cluster has)", err, m.replicas, how)
}

// raiseReplicas brings a stream created with fewer replicas (a deployment
// grown from one server to a cluster) to the configured count. A failure,
// such as a cluster with fewer servers than replicas, is logged and the process
// runs on: the stream serves at its count, and the next start tries again.
func (m *Main) raiseReplicas(ctx context.Context, stream string) {
	had, err := jnats.RaiseReplicas(ctx, m.js, stream, m.replicas)
	switch {
	case err != nil:
		m.logger.Warn("nats: stream keeps fewer replicas than configured; the next start raises them again",
			"stream", stream, "replicas", had, "want", m.replicas, "err", err)
	case had < m.replicas:
		m.logger.Info("nats: stream raised to the configured replicas", "stream", stream, "from", had, "to", m.replicas)
	}
}

// openRelay builds the relay that publishes the outbox to the stream and
// installs its publication and slot. Events committed before the slot existed
// are not lost either way: the relay backfills them from the outbox before it
// streams; installing first only spares that backfill.
func (m *Main) openRelay(ctx context.Context) error {
	if m.store == nil { // the relay alone: the outbox table must exist first
		if err := postgres.Migrate(ctx, m.cfg.DatabaseURL, m.logger); err != nil {
			return fmt.Errorf("%w (is PostgreSQL running? `bash scripts/services.sh` starts it)", err)
		}
		// Readiness: the command API's pool answers it where there is one.
		pcfg, err := pgxpool.ParseConfig(m.cfg.DatabaseURL)
		if err != nil {
			return fmt.Errorf("database-url: %w", err)
		}
		pcfg.MaxConns = 1
		if m.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
			return fmt.Errorf("connect to PostgreSQL: %w", err)
		}
		m.checks["postgres"] = m.pool.Ping
	}
	relayNC, err := m.connectNATS(ctx, m.natsURL, "jetcqrs-relay")
	if err != nil {
		return err
	}
	m.relayNC = relayNC
	relayJS, err := jetstream.New(m.relayNC)
	if err != nil {
		return err
	}
	pub, err := jnats.NewPublisher(relayJS, jnats.PublisherConfig{Partitions: m.cfg.Partitions}, m.logger)
	if err != nil {
		return err
	}
	m.relay, err = relay.New(relay.Config{
		DatabaseURL:     m.cfg.DatabaseURL,
		Mode:            relay.Mode(m.cfg.RelayMode),
		SlotName:        m.cfg.SlotName,
		PublicationName: m.cfg.SlotName,
		Logger:          m.logger,
		Registerer:      m.registry,
	}, m.tracing.Publisher(relaypub.New(pub)))
	if err != nil {
		return err
	}
	return m.relay.Install(ctx)
}
