package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/redis/go-redis/v9"
)

// openClients connects to Redis and ClickHouse, which hold the read models
// that are not embedded.
func (m *Main) openClients(ctx context.Context) error {
	if err := m.openRedis(ctx, "is it running? `bash scripts/services.sh` starts it"); err != nil {
		return err
	}
	return m.openClickHouse(ctx, "is it running? `bash scripts/services.sh` installs and starts it")
}

// openRedis connects to REDIS_URL; hint says what to do when it is down.
func (m *Main) openRedis(ctx context.Context, hint string) error {
	ropts, err := redis.ParseURL(m.cfg.RedisURL)
	if err != nil {
		return fmt.Errorf("redis-url: %w", err)
	}
	m.redis = redis.NewClient(ropts)
	if err := m.redis.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s: %w (%s)", ropts.Addr, err, hint)
	}
	m.checks["redis"] = func(ctx context.Context) error { return m.redis.Ping(ctx).Err() }
	return nil
}

// openClickHouse connects to CLICKHOUSE_URL; hint says what to do when it is
// down.
func (m *Main) openClickHouse(ctx context.Context, hint string) error {
	chURL, err := url.Parse(m.cfg.ClickHouseURL)
	if err != nil {
		return fmt.Errorf("clickhouse-url: %w", err)
	}
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
		return fmt.Errorf("ClickHouse at %s: %w (%s)", chURL.Host, err, hint)
	}
	m.checks["clickhouse"] = m.ch.Ping
	return nil
}

// servesCatalog reports whether this process keeps the catalog: the embedded
// index is read where it is written, so a projector without the query API
// beside it leaves the catalog to the process that has both, unless the
// catalog lives in Elasticsearch.
func (m *Main) servesCatalog() bool { return m.comp.QueryAPI || m.cfg.ElasticsearchURL != "" }

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
