package queryapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/projections"
)

// A GET with X-Consistency-Token waits, bounded by Config.ConsistencyWait,
// until the read model that answers it has applied the version the token
// names. Which tokens a GET accepts is decided by its endpoint, from the
// request alone (any other token is 400 invalid_request):
//
//   - GET /v1/orders/{id}: a token of that order.
//   - GET /v1/users/{user_id}/orders: an order token, honoured only for an
//     order of user_id; any other order's token waits out the bound exactly
//     as a version that never arrives does.
//   - GET /v1/products/{sku}, GET /v1/products and GET /v1/inventory/{sku}: a
//     product or an inventory token.
//   - GET /v1/reports/sales: none (sales rows carry no aggregate versions).
//
// Authorization comes first wherever the resource is known, and no status,
// body or timing depends on a resource the caller may not read: an order is
// checked against its owner in the read model before its version is, so a
// stranger's token is answered at once, as without a token.

// token is a parsed X-Consistency-Token.
type token struct {
	aggType string
	id      string
	version int64
}

// errNeverHonoured is returned by a wait's readiness check for a token the
// endpoint accepts but must not honour: the wait runs out its bound, as for
// a version that never arrives.
var errNeverHonoured = errors.New("queryapi: the token names an aggregate this read does not cover")

// errNotReadable is returned by a wait's readiness check that found the
// resource belongs to someone the caller may not act for.
var errNotReadable = errors.New("queryapi: the caller may not read the resource")

// requestToken returns r's consistency token, nil without one, or an
// invalid_request error.
func requestToken(r *http.Request) (*token, error) {
	raw := r.Header.Get("X-Consistency-Token")
	if raw == "" {
		return nil, nil
	}
	aggType, id, version, err := ParseToken(raw)
	if err != nil {
		return nil, err
	}
	return &token{aggType: aggType, id: id, version: version}, nil
}

// ParseToken splits a consistency token "type:id:version".
func ParseToken(tok string) (aggType, id string, version int64, err error) {
	bad := &domain.Error{Code: domain.CodeInvalidRequest, Field: "X-Consistency-Token",
		Message: `must be "<aggregate_type>:<id>:<version>" as a command returned it`}
	first := strings.IndexByte(tok, ':')
	last := strings.LastIndexByte(tok, ':')
	if first <= 0 || last <= first+1 || len(tok) > 300 || !utf8.ValidString(tok) {
		return "", "", 0, bad
	}
	version, perr := strconv.ParseInt(tok[last+1:], 10, 64)
	if perr != nil || version < 1 {
		return "", "", 0, bad
	}
	return tok[:first], tok[first+1 : last], version, nil
}

// tokenRefused is the answer to a token the endpoint does not accept.
func tokenRefused(accepted string) error {
	return &domain.Error{Code: domain.CodeInvalidRequest, Field: "X-Consistency-Token",
		Message: "this endpoint accepts " + accepted + "; send a token to an endpoint that reads its aggregate"}
}

// versionReader returns the reader of model's applied versions of tok's
// aggregate type, or the refusal of a token that model cannot wait for.
func (a *API) versionReader(model string, tok *token, accepted string) (projections.VersionReader, error) {
	vr := a.r.Versions[model][tok.aggType]
	if vr == nil {
		return nil, tokenRefused(accepted)
	}
	return vr, nil
}

// reached reports whether vr shows tok's version.
func reached(ctx context.Context, vr projections.VersionReader, tok *token) (bool, error) {
	v, err := vr.AppliedVersion(ctx, tok.aggType, tok.id)
	return v >= tok.version, err
}

// await returns nil once ready reports true, checking it at once and again
// after each notification for tok's aggregate; ready's own error at once;
// or context.DeadlineExceeded when Config.ConsistencyWait runs out, which
// errNeverHonoured from ready waits out in full.
func (a *API) await(ctx context.Context, tok *token, ready func(context.Context) (bool, error)) (err error) {
	if a.cfg.Tracer != nil {
		var span trace.Span
		ctx, span = a.cfg.Tracer.Start(ctx, "await consistency token", trace.WithAttributes(
			attribute.String("jetcqrs.aggregate.type", tok.aggType), attribute.String("jetcqrs.aggregate.id", tok.id),
			attribute.Int64("jetcqrs.aggregate.version", tok.version)))
		defer func() {
			if err != nil {
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
		}()
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.ConsistencyWait)
	defer cancel()
	err = a.hub.WaitFor(ctx, tok.aggType, tok.id, ready)
	if errors.Is(err, errNeverHonoured) {
		<-ctx.Done()
		err = ctx.Err()
	}
	return err
}

// consistent handles r's consistency token, if any, with wait (one of the
// await…Token methods below). It returns true when the read may go on: no
// token, or the wait saw its version. Otherwise it has written the answer:
// 400 for a token that is malformed or refused; the 403 of a read without a
// token for an order of someone else; 503 consistency_timeout with
// Retry-After when the bound ran out, whose body names neither the token nor
// anything the read model holds, so that it is the same for a version that
// has not arrived and for one that never will.
func (a *API) consistent(w http.ResponseWriter, r *http.Request, wait func(*token) error) bool {
	tok, err := requestToken(r)
	if err == nil && tok != nil {
		err = wait(tok)
	}
	switch {
	case err == nil:
		return true
	case errors.Is(err, errNotReadable):
		a.forbidOrder(w, r)
	case errors.Is(err, context.DeadlineExceeded):
		w.Header().Set("Retry-After", "1")
		httpx.WriteProblem(w, r, httpx.CodeConsistencyTimeout,
			"the read model has not applied the version X-Consistency-Token names within "+a.cfg.ConsistencyWait.String()+"; retry")
	default:
		a.fail(w, r, err)
	}
	return false
}

// awaitCatalogToken waits, for a product, search or inventory read that the
// catalog answers, until the answer reflects tok (a product or an inventory
// token). A product token waits until the catalog has applied its version.
// The catalog keeps of the stock only an in-stock flag, which moves only
// when it flips, and the answer takes its available units from the stock
// model; so an inventory token waits until the stock model has applied its
// version and the catalog's flag agrees with the level the stock model
// holds: then the filter and the units both show that version or a later one.
func (a *API) awaitCatalogToken(ctx context.Context, tok *token) error {
	const accepted = "a product or an inventory token"
	switch tok.aggType {
	case domain.AggregateProduct:
		vr, err := a.versionReader(ModelCatalog, tok, accepted)
		if err != nil {
			return err
		}
		return a.await(ctx, tok, func(ctx context.Context) (bool, error) { return reached(ctx, vr, tok) })
	case domain.AggregateInventory:
		return a.await(ctx, tok, func(ctx context.Context) (bool, error) {
			inv, err := a.r.Inventory.Inventory(ctx, tok.id)
			switch {
			case errors.Is(err, projections.ErrNotFound):
				return false, nil
			case err != nil:
				return false, err
			case inv.Version < tok.version:
				return false, nil
			}
			inStock, err := a.r.CatalogStock.InStock(ctx, tok.id)
			return err == nil && inStock == (inv.Available > 0), err
		})
	}
	return tokenRefused(accepted)
}

// awaitInventoryToken waits, for GET /v1/inventory/{sku}, until the stock
// model has applied tok. An inventory token waits for its version; a
// product token for the stock entry of its SKU, which the product's
// creation makes: that is the only product event the stock model follows,
// so once the entry is there every version of the product is reflected.
func (a *API) awaitInventoryToken(ctx context.Context, tok *token) error {
	const accepted = "a product or an inventory token"
	switch tok.aggType {
	case domain.AggregateInventory:
		vr, err := a.versionReader(ModelInventory, tok, accepted)
		if err != nil {
			return err
		}
		return a.await(ctx, tok, func(ctx context.Context) (bool, error) { return reached(ctx, vr, tok) })
	case domain.AggregateProduct:
		return a.await(ctx, tok, func(ctx context.Context) (bool, error) {
			_, err := a.r.Inventory.Inventory(ctx, tok.id)
			if errors.Is(err, projections.ErrNotFound) {
				return false, nil
			}
			return err == nil, err
		})
	}
	return tokenRefused(accepted)
}

// awaitOrderToken waits, for GET /v1/orders/{id}, until the order model has
// applied tok, a token of that order, for a caller who may read it. The
// owner is checked first, each time the order is looked at: for an order of
// someone else the wait ends at once with errNotReadable, before its version
// is read, so the answer is the one a read without a token gets. An order
// the model does not hold yet is waited for, so that its owner reads the
// order they just placed; a stranger learns from that wait only what a read
// without a token tells when the order appears.
func (a *API) awaitOrderToken(ctx context.Context, actor domain.Actor, id string, tok *token) error {
	accepted := "only a token of this order, order:" + id + ":<version>"
	if tok.aggType != domain.AggregateOrder || tok.id != id {
		return tokenRefused(accepted)
	}
	vr, err := a.versionReader(ModelOrders, tok, accepted)
	if err != nil {
		return err
	}
	return a.await(ctx, tok, func(ctx context.Context) (bool, error) {
		owner, _, err := a.r.Orders.OrderJSON(ctx, id)
		switch {
		case errors.Is(err, projections.ErrNotFound):
			return false, nil
		case err != nil:
			return false, err
		case !actor.CanActFor(owner):
			return false, errNotReadable
		}
		return reached(ctx, vr, tok)
	})
}

// awaitUserOrderToken waits, for GET /v1/users/{user_id}/orders (whose
// caller may read user_id's orders), until the order model has applied tok,
// an order token. The token is honoured only for an order of userID: for any
// other order, whether it exists or not and whoever may read it, the wait
// runs out its bound, as for a version that never arrives.
func (a *API) awaitUserOrderToken(ctx context.Context, userID string, tok *token) error {
	const accepted = "an order token"
	if tok.aggType != domain.AggregateOrder {
		return tokenRefused(accepted)
	}
	vr, err := a.versionReader(ModelOrders, tok, accepted)
	if err != nil {
		return err
	}
	return a.await(ctx, tok, func(ctx context.Context) (bool, error) {
		owner, _, err := a.r.Orders.OrderJSON(ctx, tok.id)
		switch {
		case errors.Is(err, projections.ErrNotFound):
			return false, nil
		case err != nil:
			return false, err
		case owner != userID:
			return false, errNeverHonoured
		}
		return reached(ctx, vr, tok)
	})
}
