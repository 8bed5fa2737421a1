// Package adminapi serves the operator endpoints of the processes that run
// the projectors or the relay alone: dead letters (list, replay), rebuilds
// of read models and the relay's status; and the client the `jetcqrs dlq`
// command uses. Every route is for admins; bad input is an RFC 9457 problem
// with a stable code, never a 5xx.
package adminapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// Projections is the port to the read models' lifecycle of this process.
type Projections interface {
	// DeadLetters returns up to limit dead letters, oldest first, of the
	// named projection or, for "", of all. An error wrapping
	// lifecycle.ErrNotRunning while the projector is not running.
	DeadLetters(ctx context.Context, projection string, limit int) ([]projections.DeadLetter, error)
	// Replay applies dead letter dlqSeq to its projection again and removes
	// it once it applied. An error wrapping projections.ErrNoSuchDeadLetter
	// when there is none; any other error says why it did not apply.
	Replay(ctx context.Context, dlqSeq uint64) error
	// Rebuild starts (or takes over) a rebuild of the named read model and
	// returns the generation it builds. Errors wrap lifecycle.ErrNoSuchModel,
	// lifecycle.ErrRebuildUnderWay or lifecycle.ErrNotRunning.
	Rebuild(ctx context.Context, name string) (int, error)
}

var _ Projections = (*lifecycle.Manager)(nil)

// Status reports a component's state as a JSON-encodable snapshot.
type Status func(ctx context.Context) (any, error)

// MaxListLimit bounds GET /v1/admin/dlq?limit=.
const MaxListLimit = 10000

// API is the admin HTTP API. Routes of a nil part are not mounted.
type API struct {
	projections Projections
	relay       Status
	verifier    httpx.Verifier
	logger      *slog.Logger
}

// New returns the API. projections serves the dead-letter and rebuild
// routes, relay GET /v1/admin/relay; either may be nil when this process
// does not run that component (or another API serves its status).
func New(p Projections, relay Status, verifier httpx.Verifier, logger *slog.Logger) *API {
	return &API{projections: p, relay: relay, verifier: verifier, logger: logger}
}

// Mount adds the admin routes to r.
func (a *API) Mount(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(httpx.Authenticate(a.verifier), RequireAdmin)
		if a.projections != nil {
			r.Get("/v1/admin/dlq", a.listDeadLetters)
			r.Post("/v1/admin/dlq/{seq}/replay", a.replay)
			r.Post("/v1/admin/projections/{name}/rebuild", a.rebuild)
		}
		if a.relay != nil {
			r.Get("/v1/admin/relay", a.relayStatus)
		}
	})
}

// RequireAdmin answers 403 forbidden to an authenticated caller who is not
// an admin. It runs after httpx.Authenticate.
func RequireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a, _ := httpx.ActorFrom(r.Context()); !a.IsAdmin() {
			httpx.WriteProblem(w, r, domain.CodeForbidden, "admin endpoints are for admins")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// fail answers errors of the lifecycle that are not the caller's doing.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, lifecycle.ErrNotRunning) {
		httpx.WriteProblem(w, r, httpx.CodeUnavailable, "the projector is not running (starting or stopping); retry")
		return
	}
	httpx.WriteError(w, r, a.logger, err)
}

// validProjection reports whether name can be a projection's name: one
// subject token (the dead-letter stream's subjects are dlq.<projection>.…).
func validProjection(name string) bool {
	return len(name) <= 64 && !strings.ContainsAny(name, ".*> \t\r\n\x00")
}

func (a *API) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			httpx.WriteError(w, r, a.logger, &domain.Error{Code: domain.CodeInvalidRequest, Field: "limit",
				Message: "must be 1.." + strconv.Itoa(MaxListLimit)})
			return
		}
		limit = n
	}
	projection := q.Get("projection")
	if !validProjection(projection) {
		httpx.WriteError(w, r, a.logger, &domain.Error{Code: domain.CodeInvalidRequest, Field: "projection",
			Message: "is not a projection name"})
		return
	}
	dls, err := a.projections.DeadLetters(r.Context(), projection, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if dls == nil {
		dls = []projections.DeadLetter{}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"dead_letters": dls})
}

func (a *API) replay(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(chi.URLParam(r, "seq"), 10, 64)
	if err != nil || seq == 0 {
		httpx.WriteProblem(w, r, domain.CodeNotFound, "no such dead letter")
		return
	}
	switch err := a.projections.Replay(r.Context(), seq); {
	case err == nil:
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"replayed": seq})
	case errors.Is(err, projections.ErrNoSuchDeadLetter):
		httpx.WriteProblem(w, r, domain.CodeNotFound, err.Error())
	case errors.Is(err, lifecycle.ErrNotRunning), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		a.fail(w, r, err)
	default:
		// It still does not apply: the operator reads why.
		httpx.WriteProblem(w, r, domain.CodeConflict, err.Error())
	}
}

func (a *API) rebuild(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	gen, err := a.projections.Rebuild(r.Context(), name)
	switch {
	case err == nil:
		httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"name": name, "generation": lifecycle.GenerationName(gen)})
	case errors.Is(err, lifecycle.ErrNoSuchModel):
		httpx.WriteProblem(w, r, domain.CodeNotFound, err.Error())
	case errors.Is(err, lifecycle.ErrRebuildUnderWay):
		httpx.WriteProblem(w, r, domain.CodeConflict, err.Error())
	default:
		a.fail(w, r, err)
	}
}

func (a *API) relayStatus(w http.ResponseWriter, r *http.Request) {
	st, err := a.relay(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, st)
}
