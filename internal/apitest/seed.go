package apitest

import (
	"fmt"
	"net/http"
	"testing"
)

// Product is the body of POST /v1/products.
type Product struct {
	SKU         string            `json:"sku"`
	Name        string            `json:"name"`
	Description string            `json:"description"`
	Category    string            `json:"category"`
	PriceCents  int64             `json:"price_cents"`
	Attributes  map[string]string `json:"attributes,omitempty"`
}

// NewProduct returns a valid product named after its SKU.
func NewProduct(sku, category string, priceCents int64) Product {
	return Product{SKU: sku, Name: "Product " + sku, Description: "A fine " + category + " item.",
		Category: category, PriceCents: priceCents}
}

// Item is one line of an order request.
type Item struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

// Payment is the payment of an order request.
type Payment struct {
	Method string `json:"method"`
	Token  string `json:"token"`
}

// Order is the body of POST /v1/orders.
type Order struct {
	UserID  string  `json:"user_id"`
	Items   []Item  `json:"items"`
	Payment Payment `json:"payment"`
}

// NewOrder returns an order of userID for items, paid by card.
func NewOrder(userID string, items ...Item) Order {
	return Order{UserID: userID, Items: items, Payment: Payment{Method: "card", Token: "tok_visa_4242"}}
}

// ProductResult is the success body of the product commands.
type ProductResult struct {
	SKU     string `json:"sku"`
	Version int64  `json:"version"`
}

// Levels is the success body of an inventory adjustment.
type Levels struct {
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
	Version   int64  `json:"version"`
}

// OrderResult is the success body of the order commands; TotalCents is only
// in the answer to POST /v1/orders.
type OrderResult struct {
	OrderID    string `json:"order_id"`
	Status     string `json:"status"`
	TotalCents int64  `json:"total_cents"`
	Version    int64  `json:"version"`
}

// CreateProduct creates p as the admin and fails the test unless the answer
// is 201.
func (e *Env) CreateProduct(t testing.TB, p Product) ProductResult {
	t.Helper()
	var out ProductResult
	e.Do(t, Request{Method: http.MethodPost, Path: "/v1/products", Token: AdminToken(t), Body: p}).
		WantStatus(t, http.StatusCreated).JSON(t, &out)
	return out
}

// Restock adjusts the stock of sku by delta as the admin and fails the test
// unless the answer is 200.
func (e *Env) Restock(t testing.TB, sku string, delta int64) Levels {
	t.Helper()
	var out Levels
	e.Do(t, Request{Method: http.MethodPost, Path: "/v1/inventory/" + sku + "/adjustments", Token: AdminToken(t),
		Body: map[string]any{"delta": delta, "reason": "restock"}}).
		WantStatus(t, http.StatusOK).JSON(t, &out)
	return out
}

// Stocked creates one product per SKU (category "general", price 100 cents
// unless priced) with onHand units in stock.
func (e *Env) Stocked(t testing.TB, onHand int64, skus ...string) {
	t.Helper()
	for _, sku := range skus {
		e.CreateProduct(t, NewProduct(sku, "general", 100))
		if onHand > 0 {
			e.Restock(t, sku, onHand)
		}
	}
}

// PlaceOrder places o with token and fails the test unless the answer is 201.
func (e *Env) PlaceOrder(t testing.TB, token string, o Order) OrderResult {
	t.Helper()
	var out OrderResult
	e.Do(t, Request{Method: http.MethodPost, Path: "/v1/orders", Token: token, Body: o}).
		WantStatus(t, http.StatusCreated).JSON(t, &out)
	return out
}

// Transition sends POST /v1/orders/{orderID}/{action} (pay, ship, deliver or
// cancel) with an empty body and fails the test unless the answer is 200.
func (e *Env) Transition(t testing.TB, token, orderID, action string) OrderResult {
	t.Helper()
	var out OrderResult
	e.Do(t, Request{Method: http.MethodPost, Path: fmt.Sprintf("/v1/orders/%s/%s", orderID, action), Token: token}).
		WantStatus(t, http.StatusOK).JSON(t, &out)
	return out
}
