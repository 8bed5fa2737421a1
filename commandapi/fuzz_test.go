package commandapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/jetcqrs/jetcqrs/commandapi"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/apitest"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
)

// Run one target at a time, for example:
//
//	go test -run '^$' -fuzz '^FuzzDecodePlaceOrder$' -fuzztime 20s ./commandapi/

// wantClientError fails unless err is nil or a *domain.Error whose code
// maps to a 4xx status and that says what is wrong.
func wantClientError(t *testing.T, body []byte, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var de *domain.Error
	if !errors.As(err, &de) {
		t.Fatalf("decode %q: %T %v, want a *domain.Error", body, err, err)
	}
	if s := httpx.StatusOf(de.Code); s < 400 || s > 499 {
		t.Fatalf("decode %q: code %q maps to %d, want a 4xx", body, de.Code, s)
	}
	if de.Message == "" {
		t.Fatalf("decode %q: error %q without a message", body, de.Code)
	}
}

// seedBodies adds valid and broken bodies shared by the decoders' corpora.
func seedBodies(f *testing.F, valid ...string) {
	for _, v := range valid {
		f.Add([]byte(v))
		f.Add([]byte(v[:len(v)/2]))
		f.Add([]byte(v + "x"))
		f.Add([]byte(strings.Replace(v, "1", "1e30", 1)))
	}
	for _, s := range []string{"", "null", "{}", "[]", `"x"`, "{\"a\":\"\xff\"}", `{"reason":null}`, "\xef\xbb\xbf{}", "{}{}"} {
		f.Add([]byte(s))
	}
}

func FuzzDecodeCreateProduct(f *testing.F) {
	seedBodies(f,
		`{"sku":"a-1","name":"n","description":"d","category":"c","price_cents":1,"attributes":{"k":"v"}}`,
		`{"sku":"a-1","name":"n","category":"c","price_cents":100000000000}`,
		`{"sku":"a-1","name":"n","category":"c","price_cents":-1,"attributes":{"":"v"}}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		cmd, err := commandapi.DecodeCreateProduct(body)
		wantClientError(t, body, err)
		if err == nil {
			if verr := cmd.Validate(); verr != nil {
				t.Fatalf("decoded %q into an invalid command: %v", body, verr)
			}
			if !utf8.ValidString(cmd.Name) || !utf8.ValidString(cmd.Description) {
				t.Fatalf("decoded %q into invalid UTF-8", body)
			}
		}
	})
}

func FuzzDecodeUpdateProduct(f *testing.F) {
	seedBodies(f, `{"name":"n","description":"d","category":"c","price_cents":1,"attributes":{"k":"v"}}`,
		`{"attributes":null,"price_cents":0}`, `{"name":null}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		upd, err := commandapi.DecodeUpdateProduct(body)
		wantClientError(t, body, err)
		if err == nil {
			if verr := upd.Validate(); verr != nil {
				t.Fatalf("decoded %q into an invalid update: %v", body, verr)
			}
		}
	})
}

func FuzzDecodeAdjustment(f *testing.F) {
	seedBodies(f, `{"delta":1,"reason":"r"}`, `{"delta":-1000000000,"reason":"count"}`, `{"delta":null,"reason":"r"}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		_, reason, err := commandapi.DecodeAdjustment(body)
		wantClientError(t, body, err)
		if err == nil && !utf8.ValidString(reason) {
			t.Fatalf("decoded %q into an invalid UTF-8 reason", body)
		}
	})
}

func FuzzDecodePlaceOrder(f *testing.F) {
	seedBodies(f,
		`{"user_id":"u1","items":[{"sku":"a-1","quantity":1},{"sku":"b","quantity":1000}],"payment":{"method":"card","token":"t"}}`,
		`{"user_id":"u1","items":[{"sku":"a-1","quantity":1},{"sku":"a-1","quantity":1}],"payment":{"method":"invoice","token":"t"}}`,
		`{"user_id":"u1","items":[null],"payment":{"method":"paypal","token":"t"}}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		cmd, err := commandapi.DecodePlaceOrder(body)
		wantClientError(t, body, err)
		if err == nil {
			if verr := cmd.Validate(); verr != nil {
				t.Fatalf("decoded %q into an invalid command: %v", body, verr)
			}
			if len(cmd.Items) < 1 || len(cmd.Items) > domain.MaxOrderItems {
				t.Fatalf("decoded %q into %d items", body, len(cmd.Items))
			}
		}
	})
}

func FuzzDecodeTransition(f *testing.F) {
	seedBodies(f, `{"reason":"r"}`, `{"reason":1}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) == 0 {
			body = nil // the handler passes an empty body as nil
		}
		reason, err := commandapi.DecodeTransition(body)
		wantClientError(t, body, err)
		if err == nil && !utf8.ValidString(reason) {
			t.Fatalf("decoded %q into an invalid UTF-8 reason", body)
		}
	})
}

// recordingCommands is a fake of the API's port: it accepts every command,
// checks that what reached it is valid, and counts the calls.
type recordingCommands struct {
	mu      sync.Mutex
	calls   int
	invalid error
}

var _ commandapi.Commands = (*recordingCommands)(nil)

func (c *recordingCommands) record(validate func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if err := validate(); err != nil && c.invalid == nil {
		c.invalid = err
	}
}

func (c *recordingCommands) take() (calls int, invalid error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls, invalid = c.calls, c.invalid
	c.calls, c.invalid = 0, nil
	return calls, invalid
}

func (c *recordingCommands) CreateProduct(_ context.Context, _ domain.CommandMeta, cmd domain.CreateProduct) (domain.CommandResult, error) {
	c.record(cmd.Validate)
	snap := domain.ProductSnapshot{SKU: cmd.SKU, Version: 1}
	return domain.CommandResult{AggregateType: domain.AggregateProduct, AggregateID: cmd.SKU, Version: 1, Product: &snap}, nil
}

func (c *recordingCommands) UpdateProduct(_ context.Context, _ domain.CommandMeta, sku string, upd domain.UpdateProduct) (domain.CommandResult, error) {
	c.record(upd.Validate)
	snap := domain.ProductSnapshot{SKU: sku, Version: 2}
	return domain.CommandResult{AggregateType: domain.AggregateProduct, AggregateID: sku, Version: 2, Product: &snap}, nil
}

func (c *recordingCommands) AdjustInventory(_ context.Context, _ domain.CommandMeta, sku string, _ int64, _ string) (domain.CommandResult, error) {
	c.record(func() error { return nil })
	lv := domain.InventoryLevels{SKU: sku, Version: 1}
	return domain.CommandResult{AggregateType: domain.AggregateInventory, AggregateID: sku, Version: 1, Inventory: &lv}, nil
}

func (c *recordingCommands) PlaceOrder(_ context.Context, _ domain.CommandMeta, cmd domain.PlaceOrder) (domain.CommandResult, error) {
	c.record(cmd.Validate)
	snap := domain.OrderSnapshot{OrderID: "0190c0de-0000-7000-8000-000000000001", UserID: cmd.UserID, Status: domain.StatusPlaced, Version: 1}
	return domain.CommandResult{AggregateType: domain.AggregateOrder, AggregateID: snap.OrderID, Version: 1, Order: &snap}, nil
}

func (c *recordingCommands) TransitionOrder(_ context.Context, _ domain.CommandMeta, id string, _ domain.OrderTransition, reason string) (domain.CommandResult, error) {
	c.record(func() error {
		if !utf8.ValidString(reason) {
			return errors.New("reason is not UTF-8")
		}
		return nil
	})
	snap := domain.OrderSnapshot{OrderID: id, Status: domain.StatusPaid, Version: 2}
	return domain.CommandResult{AggregateType: domain.AggregateOrder, AggregateID: id, Version: 2, Order: &snap}, nil
}

// FuzzCommandHandler sends arbitrary bodies and headers to every command
// route of the wired router: the answer is never a 5xx; a 4xx is a problem
// with a detail and reached no store; a 2xx came from exactly one valid
// command.
func FuzzCommandHandler(f *testing.F) {
	cmds := &recordingCommands{}
	// A 5xx fails the target with its body; the log would go to f, which the
	// fuzz function must not use.
	router := apitest.NewRouter(f, apitest.Deps{Commands: cmds, Logger: slog.New(slog.DiscardHandler)})
	tokens := []string{apitest.AdminToken(f), apitest.CustomerToken(f, "u1")}
	routes := []struct{ method, path string }{
		{http.MethodPost, "/v1/products"},
		{http.MethodPatch, "/v1/products/sku-1"},
		{http.MethodPost, "/v1/inventory/sku-1/adjustments"},
		{http.MethodPost, "/v1/orders"},
		{http.MethodPost, "/v1/orders/0190c0de-0000-7000-8000-000000000001/pay"},
		{http.MethodPost, "/v1/orders/0190c0de-0000-7000-8000-000000000001/ship"},
		{http.MethodPost, "/v1/orders/0190c0de-0000-7000-8000-000000000001/deliver"},
		{http.MethodPost, "/v1/orders/0190c0de-0000-7000-8000-000000000001/cancel"},
	}
	for i := range routes {
		for _, body := range []string{
			`{"sku":"a-1","name":"n","category":"c","price_cents":1}`,
			`{"name":"n"}`,
			`{"delta":3,"reason":"r"}`,
			`{"user_id":"u1","items":[{"sku":"a-1","quantity":2}],"payment":{"method":"card","token":"t"}}`,
			`{"reason":"r"}`, "", "{", "null",
		} {
			f.Add(uint8(i), uint8(0), []byte(body), "application/json", "", "")
		}
	}
	f.Add(uint8(3), uint8(1), []byte(`{"user_id":"u2","items":[{"sku":"a","quantity":1}],"payment":{"method":"card","token":"t"}}`), "application/json", `"0"`, "k")
	f.Add(uint8(0), uint8(0), []byte(`{}`), "text/plain", "W/\"1\"", "key with space")

	f.Fuzz(func(t *testing.T, route, who uint8, body []byte, contentType, ifMatch, idemKey string) {
		rt := routes[int(route)%len(routes)]
		r := httptest.NewRequest(rt.method, rt.path, strings.NewReader(string(body)))
		r.Header.Set("Authorization", "Bearer "+tokens[int(who)%len(tokens)])
		for name, value := range map[string]string{"Content-Type": contentType, "If-Match": ifMatch, "Idempotency-Key": idemKey} {
			if value != "" {
				r.Header.Set(name, value)
			}
		}
		resp := apitest.Serve(t, router, r)
		calls, invalid := cmds.take()
		if resp.Status >= 500 {
			t.Fatalf("%s %s %q: status %d %s", rt.method, rt.path, body, resp.Status, resp.Body)
		}
		if invalid != nil {
			t.Fatalf("%s %s %q reached the store with an invalid command: %v", rt.method, rt.path, body, invalid)
		}
		switch {
		case resp.Status >= 400:
			if calls != 0 {
				t.Fatalf("%s %s %q: status %d after %d store calls", rt.method, rt.path, body, resp.Status, calls)
			}
			var p httpx.Problem
			if resp.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(resp.Body, &p) != nil ||
				p.Status != resp.Status || p.Detail == "" || p.Code == "" {
				t.Fatalf("%s %s %q: status %d without a complete problem: %s", rt.method, rt.path, body, resp.Status, resp.Body)
			}
		case calls != 1:
			t.Fatalf("%s %s %q: status %d after %d store calls, want 1", rt.method, rt.path, body, resp.Status, calls)
		case resp.Header.Get("X-Consistency-Token") == "":
			t.Fatalf("%s %s %q: status %d without X-Consistency-Token", rt.method, rt.path, body, resp.Status)
		}
	})
}
