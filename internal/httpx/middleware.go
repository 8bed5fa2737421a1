package httpx

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetcqrs/jetcqrs/domain"
)

// Verifier turns a bearer token into an actor.
type Verifier interface {
	// Verify returns the token's actor or an error when the token is missing a
	// valid signature, has expired or lacks sub/role.
	Verify(token string) (domain.Actor, error)
}

type actorKey struct{}

// ActorFrom returns the authenticated actor of the request, if any.
func ActorFrom(ctx context.Context) (domain.Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(domain.Actor)
	return a, ok
}

// WithActor returns ctx carrying actor.
func WithActor(ctx context.Context, a domain.Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

// Authenticate requires a valid bearer token and puts its actor in the request
// context; a missing or invalid token is 401 with WWW-Authenticate.
func Authenticate(v Verifier) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := r.Header.Get("Authorization")
			scheme, token, ok := strings.Cut(h, " ")
			if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="jetcqrs"`)
				WriteProblem(w, r, domain.CodeUnauthorized, "a bearer token is required")
				return
			}
			actor, err := v.Verify(strings.TrimSpace(token))
			if err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="jetcqrs", error="invalid_token"`)
				WriteProblem(w, r, domain.CodeUnauthorized, err.Error())
				return
			}
			next.ServeHTTP(w, r.WithContext(WithActor(r.Context(), actor)))
		})
	}
}

// Metrics records request counts and latencies per route pattern.
type Metrics struct {
	duration *prometheus.HistogramVec
}

// NewMetrics registers the HTTP metrics of api ("command" or "query") with reg.
func NewMetrics(reg prometheus.Registerer, api string) (*Metrics, error) {
	m := &Metrics{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:        "jetcqrs_http_request_duration_seconds",
		Help:        "HTTP request latency by route and status.",
		ConstLabels: prometheus.Labels{"api": api},
		Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"method", "route", "status"})}
	if reg != nil {
		if err := reg.Register(m.duration); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
			m.duration = are.ExistingCollector.(*prometheus.HistogramVec)
		}
	}
	return m, nil
}

// Middleware observes every request.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		m.duration.WithLabelValues(r.Method, route, strconv.Itoa(sw.status)).Observe(time.Since(start).Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Recover turns a panic into a logged 500 problem instead of a dropped
// connection.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					logger.ErrorContext(r.Context(), "panic in handler", "method", r.Method, "path", r.URL.Path, "panic", v)
					WriteProblem(w, r, CodeInternal, "internal error; it has been logged")
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// Check states /readyz reports; the reason of a failure is logged, not
// served, so an unauthenticated endpoint does not show addresses, versions
// or store replies to whoever asks.
const (
	CheckOK      = "ok"
	CheckFailing = "failing"
)

// Health serves /healthz (process alive) and /readyz (every check passes):
// each check's name and state, CheckOK or CheckFailing, with a failing
// check's error logged through logger; and, under "detail", what each of
// details reports.
func Health(r chi.Router, checks map[string]func(context.Context) error, logger *slog.Logger, details map[string]func(context.Context) any) {
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	r.Get("/readyz", func(w http.ResponseWriter, req *http.Request) {
		ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
		defer cancel()
		out := map[string]string{}
		ok := true
		for name, check := range checks {
			if err := check(ctx); err != nil {
				logger.WarnContext(req.Context(), "readiness check failing", "check", name, "err", err)
				out[name] = CheckFailing
				ok = false
			} else {
				out[name] = CheckOK
			}
		}
		status := http.StatusOK
		if !ok {
			status = http.StatusServiceUnavailable
			w.Header().Set("Retry-After", "1")
		}
		body := map[string]any{"ready": ok, "checks": out}
		if len(details) > 0 {
			d := map[string]any{}
			for name, detail := range details {
				d[name] = detail(ctx)
			}
			body["detail"] = d
		}
		WriteJSON(w, status, body)
	})
}

// Trace starts each request's server span, child of the caller's
// traceparent if it sent one, and names it by its route once routed. A nil
// tracer (tracing off) adds nothing.
func Trace(tracer trace.Tracer) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if tracer == nil {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := propagation.TraceContext{}.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			ctx, span := tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
			defer span.End()
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			next.ServeHTTP(sw, r.WithContext(ctx))
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				span.SetName(r.Method + " " + rc.RoutePattern())
				span.SetAttributes(attribute.String("http.route", rc.RoutePattern()))
			}
			span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
			if sw.status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(sw.status))
			}
		})
	}
}
