package commandapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
)

// The request bodies of shared/API.md. Pointers tell "absent" from zero so
// that a missing required field is reported as missing.

type createProductRequest struct {
	SKU         *string           `json:"sku"`
	Name        *string           `json:"name"`
	Description *string           `json:"description"`
	Category    *string           `json:"category"`
	PriceCents  *int64            `json:"price_cents"`
	Attributes  map[string]string `json:"attributes"`
}

type updateProductRequest struct {
	Name        *string            `json:"name"`
	Description *string            `json:"description"`
	Category    *string            `json:"category"`
	PriceCents  *int64             `json:"price_cents"`
	Attributes  *map[string]string `json:"attributes"`
}

type adjustRequest struct {
	Delta  *int64  `json:"delta"`
	Reason *string `json:"reason"`
}

type placeOrderRequest struct {
	UserID  *string            `json:"user_id"`
	Items   []orderItemRequest `json:"items"`
	Payment *paymentRequest    `json:"payment"`
}

type orderItemRequest struct {
	SKU      *string `json:"sku"`
	Quantity *int64  `json:"quantity"`
}

type paymentRequest struct {
	Method *string `json:"method"`
	Token  *string `json:"token"`
}

type transitionRequest struct {
	Reason *string `json:"reason"`
}

func missing(field string) error {
	return &domain.Error{Code: domain.CodeInvalidRequest, Field: field, Message: "is required"}
}

// DecodeCreateProduct decodes and checks the presence of required fields.
func DecodeCreateProduct(body []byte) (domain.CreateProduct, error) {
	var req createProductRequest
	if err := httpx.DecodeStrict(body, &req, false); err != nil {
		return domain.CreateProduct{}, err
	}
	switch {
	case req.SKU == nil:
		return domain.CreateProduct{}, missing("sku")
	case req.Name == nil:
		return domain.CreateProduct{}, missing("name")
	case req.Category == nil:
		return domain.CreateProduct{}, missing("category")
	case req.PriceCents == nil:
		return domain.CreateProduct{}, missing("price_cents")
	}
	cmd := domain.CreateProduct{SKU: *req.SKU, Name: *req.Name, Category: *req.Category,
		PriceCents: *req.PriceCents, Attributes: req.Attributes}
	if req.Description != nil {
		cmd.Description = *req.Description
	}
	return cmd, cmd.Validate()
}

// DecodeUpdateProduct decodes a PATCH body.
func DecodeUpdateProduct(body []byte) (domain.UpdateProduct, error) {
	var req updateProductRequest
	if err := httpx.DecodeStrict(body, &req, false); err != nil {
		return domain.UpdateProduct{}, err
	}
	upd := domain.UpdateProduct{Name: req.Name, Description: req.Description, Category: req.Category,
		PriceCents: req.PriceCents, Attributes: req.Attributes}
	return upd, upd.Validate()
}

// DecodeAdjustment decodes an inventory adjustment.
func DecodeAdjustment(body []byte) (delta int64, reason string, err error) {
	var req adjustRequest
	if err := httpx.DecodeStrict(body, &req, false); err != nil {
		return 0, "", err
	}
	if req.Delta == nil {
		return 0, "", missing("delta")
	}
	if req.Reason == nil {
		return 0, "", missing("reason")
	}
	return *req.Delta, *req.Reason, nil
}

// DecodePlaceOrder decodes and validates a PlaceOrder body.
func DecodePlaceOrder(body []byte) (domain.PlaceOrder, error) {
	var req placeOrderRequest
	if err := httpx.DecodeStrict(body, &req, false); err != nil {
		return domain.PlaceOrder{}, err
	}
	if req.UserID == nil {
		return domain.PlaceOrder{}, missing("user_id")
	}
	if req.Payment == nil || req.Payment.Method == nil {
		return domain.PlaceOrder{}, missing("payment.method")
	}
	if req.Payment.Token == nil {
		return domain.PlaceOrder{}, missing("payment.token")
	}
	cmd := domain.PlaceOrder{UserID: *req.UserID, PaymentMethod: *req.Payment.Method, PaymentToken: *req.Payment.Token}
	for _, it := range req.Items {
		if it.SKU == nil {
			return domain.PlaceOrder{}, missing("items.sku")
		}
		if it.Quantity == nil {
			return domain.PlaceOrder{}, missing("items.quantity")
		}
		cmd.Items = append(cmd.Items, domain.OrderLineRequest{SKU: *it.SKU, Quantity: *it.Quantity})
	}
	return cmd, cmd.Validate()
}

// DecodeTransition decodes the optional body of pay/ship/deliver/cancel.
func DecodeTransition(body []byte) (reason string, err error) {
	var req transitionRequest
	if err := httpx.DecodeStrict(body, &req, true); err != nil {
		return "", err
	}
	if req.Reason != nil {
		reason = *req.Reason
	}
	return reason, nil
}

func (a *API) createProduct(ctx context.Context, _ *http.Request, body []byte, meta domain.CommandMeta) (domain.CommandResult, error) {
	if err := domain.AuthorizeCreate(meta.Actor); err != nil {
		return domain.CommandResult{}, err
	}
	cmd, err := DecodeCreateProduct(body)
	if err != nil {
		return domain.CommandResult{}, err
	}
	return a.cmds.CreateProduct(ctx, meta, cmd)
}

func (a *API) updateProduct(ctx context.Context, r *http.Request, body []byte, meta domain.CommandMeta) (domain.CommandResult, error) {
	if err := domain.AuthorizeUpdate(meta.Actor); err != nil {
		return domain.CommandResult{}, err
	}
	sku, err := skuParam(r)
	if err != nil {
		return domain.CommandResult{}, err
	}
	upd, err := DecodeUpdateProduct(body)
	if err != nil {
		return domain.CommandResult{}, err
	}
	return a.cmds.UpdateProduct(ctx, meta, sku, upd)
}

func (a *API) adjustInventory(ctx context.Context, r *http.Request, body []byte, meta domain.CommandMeta) (domain.CommandResult, error) {
	if err := domain.AuthorizeAdjust(meta.Actor); err != nil {
		return domain.CommandResult{}, err
	}
	sku, err := skuParam(r)
	if err != nil {
		return domain.CommandResult{}, err
	}
	delta, reason, err := DecodeAdjustment(body)
	if err != nil {
		return domain.CommandResult{}, err
	}
	return a.cmds.AdjustInventory(ctx, meta, sku, delta, reason)
}

func (a *API) placeOrder(ctx context.Context, _ *http.Request, body []byte, meta domain.CommandMeta) (domain.CommandResult, error) {
	cmd, err := DecodePlaceOrder(body)
	if err != nil {
		return domain.CommandResult{}, err
	}
	return a.cmds.PlaceOrder(ctx, meta, cmd)
}

func (a *API) transition(t domain.OrderTransition) handler {
	return func(ctx context.Context, r *http.Request, body []byte, meta domain.CommandMeta) (domain.CommandResult, error) {
		reason, err := DecodeTransition(body)
		if err != nil {
			return domain.CommandResult{}, err
		}
		return a.cmds.TransitionOrder(ctx, meta, chi.URLParam(r, "id"), t, reason)
	}
}

// skuParam returns the {sku} path parameter; a malformed SKU cannot exist, so
// it is 404 like any other unknown SKU.
func skuParam(r *http.Request) (string, error) {
	sku := chi.URLParam(r, "sku")
	if !domain.ValidSKU(sku) {
		return "", domain.Errorf(domain.CodeNotFound, "no product with sku %q", sku)
	}
	return sku, nil
}
