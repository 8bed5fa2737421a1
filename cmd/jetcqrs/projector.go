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
	host, _ := os.Hostname()
	lc, err := lifecycle.New(lifecycle.Config{
		Models: specs,
		Open: models.NewOpener(models.Config{Redis: m.redis, RedisPrefix: m.cfg.RedisPrefix, ClickHouse: m.ch,
			ElasticsearchURL: m.cfg.ElasticsearchURL, DataDir: m.cfg.DataDir, SearchCache: m.searchCache}).Open,
		Record: m.record,
		JS:     m.js,
		Runtime: projections.Config{
			Partitions: m.cfg.Partitions,
			Logger:     m.logger,
			Registry:   m.registry,
			OnApplied: func(_ string, events []projections.Envelope) {
				_ = jnats.PublishApplied(m.nc, projections.Aggregates(events))
			},
		},
		Project:  m.comp.Projector,
		Owner:    host + "/" + strconv.Itoa(os.Getpid()) + "/" + rand.Text()[:8],
		OnSwitch: m.live.Switch,
		Logger:   m.logger,
	})
	if err != nil {
		return err
	}
	m.models = lc
	return lc.Open(ctx)
}
