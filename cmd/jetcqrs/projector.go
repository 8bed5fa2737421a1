package main

import (
	"context"
	"crypto/rand"
	"os"
	"strconv"

	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
	"github.com/jetcqrs/jetcqrs/projections/models"
)

// openModels builds the read models' lifecycle manager of this process and
// opens every model it applies or serves at its live generation.
func (m *Main) openModels(ctx context.Context) error {
	var specs []lifecycle.Spec
	for _, s := range models.Specs() {
		if s.Name == models.Catalog && !m.servesCatalog() {
			m.logger.Info("catalog projection left to the process that serves queries (embedded index)")
			continue
		}
		specs = append(specs, s)
	}
	return m.manageModels(ctx, specs, m.comp.Projector)
}

// manageModels opens specs at their live generations under a lifecycle
// manager (m.models) that switches m.live's readers; with project, this
// process also applies the stream to them and announces what it applied.
func (m *Main) manageModels(ctx context.Context, specs []lifecycle.Spec, project bool) error {
	rcfg := projections.Config{Partitions: m.cfg.Partitions, Logger: m.logger, Registry: m.registry}
	if project {
		rcfg.OnApplied = func(_ string, events []projections.Envelope) {
			_ = jnats.PublishApplied(m.nc, projections.Aggregates(events))
		}
	}
	host, _ := os.Hostname()
	lc, err := lifecycle.New(lifecycle.Config{
		Models: specs,
		Open: models.NewOpener(models.Config{Redis: m.redis, RedisPrefix: m.cfg.RedisPrefix, ClickHouse: m.ch,
			ElasticsearchURL: m.cfg.ElasticsearchURL, DataDir: m.cfg.DataDir, SearchCache: m.searchCache, Logger: m.logger}).Open,
		WrapStore: m.tracing.Applier,
		Record:    m.record,
		JS:        m.js,
		Runtime:   rcfg,
		Project:   project,
		Owner:     host + "/" + strconv.Itoa(os.Getpid()) + "/" + rand.Text()[:8],
		OnSwitch:  m.live.Switch,
		Logger:    m.logger,
	})
	if err != nil {
		return err
	}
	m.models = lc
	return lc.Open(ctx)
}
