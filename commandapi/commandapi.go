// Package commandapi serves the write side of the HTTP API: it authenticates
// and decodes commands, hands them to the write store and renders the result,
// with idempotency keys, If-Match versions and consistency tokens.
package commandapi

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
)

// Commands is the write store as the API uses it. Every method either commits
// the state change with its events or changes nothing, and returns domain
// errors (*domain.Error) for everything the client can fix.
type Commands interface {
	CreateProduct(ctx context.Context, meta domain.CommandMeta, cmd domain.CreateProduct) (domain.CommandResult, error)
	UpdateProduct(ctx context.Context, meta domain.CommandMeta, sku string, upd domain.UpdateProduct) (domain.CommandResult, error)
	AdjustInventory(ctx context.Context, meta domain.CommandMeta, sku string, delta int64, reason string) (domain.CommandResult, error)
	PlaceOrder(ctx context.Context, meta domain.CommandMeta, cmd domain.PlaceOrder) (domain.CommandResult, error)
	TransitionOrder(ctx context.Context, meta domain.CommandMeta, orderID string, t domain.OrderTransition, reason string) (domain.CommandResult, error)
}

// Config configures the API.
type Config struct {
	// CommandTimeout bounds one command's time in the store.
	CommandTimeout time.Duration
}

// API is the command HTTP API.
type API struct {
	cmds     Commands
	verifier httpx.Verifier
	logger   *slog.Logger
	tracer   trace.Tracer
	cfg      Config
}

// New returns the API.
func New(cmds Commands, verifier httpx.Verifier, tracer trace.Tracer, logger *slog.Logger, cfg Config) *API {
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 10 * time.Second
	}
	return &API{cmds: cmds, verifier: verifier, logger: logger, tracer: tracer, cfg: cfg}
}

// Mount adds the command routes to r.
func (a *API) Mount(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(httpx.Authenticate(a.verifier))
		r.Post("/v1/products", a.command("create_product", http.StatusCreated, a.createProduct))
		r.Patch("/v1/products/{sku}", a.command("update_product", http.StatusOK, a.updateProduct))
		r.Post("/v1/inventory/{sku}/adjustments", a.command("adjust_inventory", http.StatusOK, a.adjustInventory))
		r.Post("/v1/orders", a.command("place_order", http.StatusCreated, a.placeOrder))
		for _, t := range domain.OrderTransitions {
			r.Post("/v1/orders/{id}/"+string(t), a.command(string(t)+"_order", http.StatusOK, a.transition(t)))
		}
	})
}

// handler runs one decoded command against the store.
type handler func(ctx context.Context, r *http.Request, body []byte, meta domain.CommandMeta) (domain.CommandResult, error)

func (a *API) command(name string, status int, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		actor, _ := httpx.ActorFrom(r.Context())
		body, err := httpx.ReadBody(w, r)
		if err != nil {
			httpx.WriteError(w, r, a.logger, err)
			return
		}
		meta := domain.CommandMeta{Actor: actor}
		if err := readPreconditions(r, body, &meta); err != nil {
			httpx.WriteError(w, r, a.logger, err)
			return
		}
		ctx := r.Context()
		if !trace.SpanContextFromContext(ctx).IsValid() {
			ctx = propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(r.Header))
		}
		ctx, span := a.tracer.Start(ctx, "command "+name, trace.WithSpanKind(trace.SpanKindInternal))
		defer span.End()
		meta.TraceParent = traceParent(ctx)
		ctx, cancel := context.WithTimeout(ctx, a.cfg.CommandTimeout)
		defer cancel()
		res, err := h(ctx, r, body, meta)
		if err != nil {
			httpx.WriteError(w, r, a.logger, err)
			return
		}
		writeResult(w, status, res)
	}
}

func traceParent(ctx context.Context) string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	return carrier["traceparent"]
}

// readPreconditions parses Idempotency-Key and If-Match.
func readPreconditions(r *http.Request, body []byte, meta *domain.CommandMeta) error {
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		if len(key) > 255 || strings.IndexFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) >= 0 {
			return &domain.Error{Code: domain.CodeInvalidRequest, Field: "Idempotency-Key",
				Message: "must be 1..255 printable ASCII characters"}
		}
		meta.IdempotencyKey = key
		meta.RequestHash = hashRequest(r.Method, r.URL.Path, body)
	}
	if im := strings.TrimSpace(r.Header.Get("If-Match")); im != "" && im != "*" {
		v, err := strconv.ParseInt(strings.Trim(strings.TrimPrefix(im, "W/"), `"`), 10, 64)
		if err != nil || v < 0 {
			return &domain.Error{Code: domain.CodeInvalidRequest, Field: "If-Match",
				Message: `must be a version such as "3"`}
		}
		meta.ExpectedVersion = &v
	}
	return nil
}

// hashRequest returns the fingerprint an idempotency key is bound to: a
// retry must repeat the method, the path and the body.
func hashRequest(method, path string, body []byte) []byte {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write(body)
	return h.Sum(nil)
}

// ConsistencyToken names the aggregate version a command produced; a query
// that sends it back waits until the read model has applied that version.
func ConsistencyToken(aggregateType, id string, version int64) string {
	return fmt.Sprintf("%s:%s:%d", aggregateType, id, version)
}

func writeResult(w http.ResponseWriter, status int, res domain.CommandResult) {
	h := w.Header()
	h.Set("X-Consistency-Token", ConsistencyToken(res.AggregateType, res.AggregateID, res.Version))
	h.Set("ETag", fmt.Sprintf(`"%d"`, res.Version))
	if res.Replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	var body any
	switch {
	case res.Order != nil:
		o := res.Order
		if status == http.StatusCreated {
			h.Set("Location", "/v1/orders/"+o.OrderID)
			body = placedResponse{OrderID: o.OrderID, Status: o.Status, TotalCents: o.TotalCents, Version: o.Version}
		} else {
			body = orderResponse{OrderID: o.OrderID, Status: o.Status, Version: o.Version}
		}
	case res.Product != nil:
		if status == http.StatusCreated {
			h.Set("Location", "/v1/products/"+res.Product.SKU)
		}
		body = productResponse{SKU: res.Product.SKU, Version: res.Product.Version}
	case res.Inventory != nil:
		body = *res.Inventory
	}
	httpx.WriteJSON(w, status, body)
}

type placedResponse struct {
	OrderID    string             `json:"order_id"`
	Status     domain.OrderStatus `json:"status"`
	TotalCents int64              `json:"total_cents"`
	Version    int64              `json:"version"`
}

type orderResponse struct {
	OrderID string             `json:"order_id"`
	Status  domain.OrderStatus `json:"status"`
	Version int64              `json:"version"`
}

type productResponse struct {
	SKU     string `json:"sku"`
	Version int64  `json:"version"`
}
