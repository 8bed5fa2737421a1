package main

import (
	"context"
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
// external one (which must be ≥ 2.11), connects, and provisions the EVENTS
// and DLQ streams. The embedded server admits only the user whose password
// it keeps in DATA_DIR/nats-password.
func (m *Main) openBroker(ctx context.Context, name string) error {
	url := m.cfg.NATSURL
	if url == "" {
		srv, err := jnats.StartEmbedded(jnats.ServerConfig{Port: m.cfg.NATSPort, StoreDir: filepath.Join(m.cfg.DataDir, "nats"),
			PasswordFile: m.cfg.natsPasswordFile()}, m.logger)
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
	m.streamCfg = jnats.StreamConfig{Partitions: m.cfg.Partitions, DuplicateWindow: m.cfg.DuplicateWindow}
	if _, err := jnats.EnsureStream(ctx, m.js, m.streamCfg); err != nil {
		return err
	}
	if _, err := jnats.EnsureDeadLetterStream(ctx, m.js, jnats.DeadLetterConfig{}); err != nil {
		return err
	}
	return nil
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
