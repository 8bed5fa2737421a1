package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// openModels builds the read models' lifecycle manager of this process and
// opens every model it applies or serves at its live generation.
func (m *Main) openModels(ctx context.Context) error {
	var specs []lifecycle.Spec
	for _, s := range modelSpecs {
		if s.Name == "catalog" && !m.servesCatalog() {
			m.logger.Info("catalog projection left to the process that serves queries (embedded index)")
			continue
		}
		specs = append(specs, s)
	}
	host, _ := os.Hostname()
	lc, err := lifecycle.New(lifecycle.Config{
		Models:    specs,
		Open:      m.openReadModel,
		WrapStore: m.tracing.Applier,
		Record:    m.record,
		JS:        m.js,
		Runtime: projections.Config{
			Partitions: m.cfg.Partitions,
			Logger:     m.logger,
			Registry:   m.registry,
			OnApplied:  m.publishApplied,
		},
		Project:  m.comp.Projector,
		Owner:    host + "/" + strconv.Itoa(os.Getpid()) + "/" + rand.Text()[:8],
		OnSwitch: func(_ string, _ int, md lifecycle.Model) { m.live.set(md.(readModelOf).base()) },
		Logger:   m.logger,
	})
	if err != nil {
		return err
	}
	m.models = lc
	return lc.Open(ctx)
}

// mountRebuild serves POST /v1/admin/projections/{name}/rebuild.
func (m *Main) mountRebuild(r chi.Router, tokens *auth.Tokens) {
	r.With(httpx.Authenticate(tokens), requireAdmin).Post("/v1/admin/projections/{name}/rebuild",
		func(w http.ResponseWriter, req *http.Request) {
			name := chi.URLParam(req, "name")
			gen, err := m.models.Rebuild(req.Context(), name)
			switch {
			case errors.Is(err, lifecycle.ErrNoSuchModel):
				httpx.WriteProblem(w, req, domain.CodeNotFound, err.Error())
			case errors.Is(err, lifecycle.ErrRebuildUnderWay):
				httpx.WriteProblem(w, req, domain.CodeConflict, err.Error())
			case err != nil:
				httpx.WriteError(w, req, m.logger, fmt.Errorf("rebuild %s: %w", name, err))
			default:
				httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"name": name, "generation": lifecycle.GenerationName(gen)})
			}
		})
}
