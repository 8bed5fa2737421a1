package httpx

import (
	"context"
	"log/slog"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
)

// RouterConfig is what NewRouter wires around the routes.
type RouterConfig struct {
	Logger *slog.Logger
	// Registry receives the request metrics and is served on /metrics; nil
	// keeps the metrics middleware and serves no /metrics.
	Registry *prometheus.Registry
	// MetricsElsewhere keeps /metrics off this router: the process serves
	// the registry on a listener of its own.
	MetricsElsewhere bool
	// Checks are the dependencies /readyz checks.
	Checks map[string]func(context.Context) error
	// Details are facts /readyz reports beside the checks, by name.
	Details map[string]func(context.Context) any
	// Tracer, when set, starts a server span per request (Trace).
	Tracer trace.Tracer
}

// NewRouter builds the router of every jetcqrs HTTP server, in the binary,
// the API tests and the benchmarks alike: panic recovery and request
// metrics, problem answers for unknown routes and methods, the routes each
// mount adds (the command API, the query API, admin endpoints), /healthz,
// /readyz and /metrics.
func NewRouter(cfg RouterConfig, mounts ...func(chi.Router)) (chi.Router, error) {
	var reg prometheus.Registerer
	if cfg.Registry != nil {
		reg = cfg.Registry
	}
	metrics, err := NewMetrics(reg, "http")
	if err != nil {
		return nil, err
	}
	r := chi.NewRouter()
	r.Use(Recover(cfg.Logger), metrics.Middleware, Trace(cfg.Tracer))
	r.NotFound(NotFound)
	r.MethodNotAllowed(MethodNotAllowed)
	for _, mount := range mounts {
		mount(r)
	}
	Health(r, cfg.Checks, cfg.Logger, cfg.Details)
	if cfg.Registry != nil && !cfg.MetricsElsewhere {
		r.Handle("/metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{}))
	}
	return r, nil
}
