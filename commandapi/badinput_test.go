package commandapi_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/apitest"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
)

// badEndpoint is a command endpoint with one valid body (the bad inputs are
// variations of it) and bodies that break its own fields; "" where the
// endpoint has no such field.
type badEndpoint struct {
	name         string
	method, path string
	valid        string
	wrongType    string
	hugeFloat    string // 1e30 in an integer field
	overflow     string // 2^63 in an integer field
	negative     string // a negative number where none is allowed
	float        string // a fraction in an integer field
	badUTF8      string // invalid UTF-8 inside a string value
	nullField    string // a required field set to null
	optionalBody bool   // an empty body is a valid request
}

// TestBadInput sends malformed, mistyped, oversized and otherwise bad
// requests to every command: each must be the documented 4xx problem with a
// detail, never a 5xx, and must write nothing.
func TestBadInput(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	e.Stocked(t, 100, "bad-1")
	placed := e.PlaceOrder(t, admin, apitest.NewOrder("u1", item("bad-1", 1))).OrderID
	paid := e.PlaceOrder(t, admin, apitest.NewOrder("u1", item("bad-1", 1))).OrderID
	e.Transition(t, admin, paid, "pay")
	shipped := e.PlaceOrder(t, admin, apitest.NewOrder("u1", item("bad-1", 1))).OrderID
	e.Transition(t, admin, shipped, "pay")
	e.Transition(t, admin, shipped, "ship")

	transition := func(action, id string) badEndpoint {
		return badEndpoint{
			name: action, method: http.MethodPost, path: orderPath(id, action),
			valid:        `{"reason":"r"}`,
			wrongType:    `{"reason":["r"]}`,
			hugeFloat:    `{"reason":1e30}`,
			overflow:     `{"reason":9223372036854775808}`,
			badUTF8:      "{\"reason\":\"r\xff\xfe\"}",
			optionalBody: true,
		}
	}
	endpoints := []badEndpoint{
		{
			name: "create product", method: http.MethodPost, path: productsPath,
			valid:     `{"sku":"new-1","name":"n","description":"d","category":"c","price_cents":100}`,
			wrongType: `{"sku":1,"name":"n","description":"d","category":"c","price_cents":100}`,
			hugeFloat: `{"sku":"new-1","name":"n","description":"d","category":"c","price_cents":1e30}`,
			overflow:  `{"sku":"new-1","name":"n","description":"d","category":"c","price_cents":9223372036854775808}`,
			negative:  `{"sku":"new-1","name":"n","description":"d","category":"c","price_cents":-100}`,
			float:     `{"sku":"new-1","name":"n","description":"d","category":"c","price_cents":100.5}`,
			badUTF8:   "{\"sku\":\"new-1\",\"name\":\"n\xc3\x28\",\"description\":\"d\",\"category\":\"c\",\"price_cents\":100}",
			nullField: `{"sku":null,"name":"n","description":"d","category":"c","price_cents":100}`,
		},
		{
			name: "update product", method: http.MethodPatch, path: productPath("bad-1"),
			valid:     `{"name":"renamed","price_cents":120}`,
			wrongType: `{"name":"renamed","price_cents":"120"}`,
			hugeFloat: `{"price_cents":1e30}`,
			overflow:  `{"price_cents":9223372036854775808}`,
			negative:  `{"price_cents":-1}`,
			float:     `{"price_cents":0.5}`,
			badUTF8:   "{\"name\":\"\xed\xa0\x80\"}",
			nullField: `{"name":null}`,
		},
		{
			name: "adjust inventory", method: http.MethodPost, path: adjustPath("bad-1"),
			valid:     `{"delta":5,"reason":"count"}`,
			wrongType: `{"delta":true,"reason":"count"}`,
			hugeFloat: `{"delta":1e30,"reason":"count"}`,
			overflow:  `{"delta":-9223372036854775809,"reason":"count"}`,
			negative:  `{"delta":-9223372036854775808,"reason":"count"}`,
			float:     `{"delta":5.0,"reason":"count"}`,
			badUTF8:   "{\"delta\":5,\"reason\":\"\xff\"}",
			nullField: `{"delta":null,"reason":"count"}`,
		},
		{
			name: "place order", method: http.MethodPost, path: ordersPath,
			valid:     `{"user_id":"u1","items":[{"sku":"bad-1","quantity":1}],"payment":{"method":"card","token":"t"}}`,
			wrongType: `{"user_id":"u1","items":{"sku":"bad-1","quantity":1},"payment":{"method":"card","token":"t"}}`,
			hugeFloat: `{"user_id":"u1","items":[{"sku":"bad-1","quantity":1e30}],"payment":{"method":"card","token":"t"}}`,
			overflow:  `{"user_id":"u1","items":[{"sku":"bad-1","quantity":9223372036854775808}],"payment":{"method":"card","token":"t"}}`,
			negative:  `{"user_id":"u1","items":[{"sku":"bad-1","quantity":-1}],"payment":{"method":"card","token":"t"}}`,
			float:     `{"user_id":"u1","items":[{"sku":"bad-1","quantity":1.5}],"payment":{"method":"card","token":"t"}}`,
			badUTF8:   "{\"user_id\":\"u\x80\",\"items\":[{\"sku\":\"bad-1\",\"quantity\":1}],\"payment\":{\"method\":\"card\",\"token\":\"t\"}}",
			nullField: `{"user_id":"u1","items":[{"sku":"bad-1","quantity":null}],"payment":{"method":"card","token":"t"}}`,
		},
		transition("pay", placed),
		transition("ship", paid),
		transition("deliver", shipped),
		transition("cancel", placed),
	}

	type badCase struct {
		name        string
		body        string
		contentType string // "" sends application/json
		header      []string
		status      int
		code        domain.Code
	}
	for _, ep := range endpoints {
		twoMiB := append([]byte(ep.valid[:len(ep.valid)-1]+`,"pad":"`), bytes.Repeat([]byte("a"), 2<<20)...)
		twoMiB = append(twoMiB, `"}`...)
		cases := []badCase{
			{name: "malformed", body: `{"sku": }`},
			{name: "single quotes", body: strings.ReplaceAll(ep.valid, `"`, `'`)},
			{name: "truncated", body: ep.valid[:len(ep.valid)-2]},
			{name: "only an opening brace", body: `{`},
			{name: "array", body: `[` + ep.valid + `]`},
			{name: "string", body: `"hello"`},
			{name: "number", body: `42`},
			{name: "wrong type", body: ep.wrongType},
			{name: "1e30", body: ep.hugeFloat},
			{name: "2^63", body: ep.overflow},
			{name: "negative", body: ep.negative},
			{name: "float", body: ep.float},
			{name: "invalid UTF-8", body: ep.badUTF8},
			{name: "byte order mark", body: "\xef\xbb\xbf" + ep.valid},
			{name: "NUL byte", body: ep.valid[:1] + "\x00" + ep.valid[1:]},
			{name: "unknown field", body: `{"unknown_field":1,` + ep.valid[1:]},
			{name: "unknown nested field", body: `{"payment":{"method":"card","token":"t","cvv":"123"},` + ep.valid[1:]},
			{name: "trailing garbage", body: ep.valid + ` x`},
			{name: "two objects", body: ep.valid + ep.valid},
			{name: "extra closing brace", body: ep.valid + `}`},
			{name: "deep nesting", body: `{"reason":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`},
			{name: "duplicate key with another type", body: ep.valid[:len(ep.valid)-1] + `,"reason":{"a":1}}`},
			{name: "2 MiB", body: string(twoMiB), status: http.StatusRequestEntityTooLarge, code: httpx.CodePayloadTooLarge},
			{name: "text/plain", body: ep.valid, contentType: "text/plain", status: http.StatusUnsupportedMediaType, code: httpx.CodeUnsupportedMediaType},
			{name: "form", body: ep.valid, contentType: "application/x-www-form-urlencoded", status: http.StatusUnsupportedMediaType, code: httpx.CodeUnsupportedMediaType},
			{name: "json-patch", body: ep.valid, contentType: "application/json-patch+json", status: http.StatusUnsupportedMediaType, code: httpx.CodeUnsupportedMediaType},
			{name: "unparsable Content-Type", body: ep.valid, contentType: "application/json; =", status: http.StatusUnsupportedMediaType, code: httpx.CodeUnsupportedMediaType},
			{name: "no Content-Type", body: ep.valid, contentType: "none", status: http.StatusUnsupportedMediaType, code: httpx.CodeUnsupportedMediaType},
			{name: "If-Match not a number", body: ep.valid, header: []string{"If-Match", `"abc"`}},
			{name: "If-Match negative", body: ep.valid, header: []string{"If-Match", `"-1"`}},
			{name: "If-Match fraction", body: ep.valid, header: []string{"If-Match", `"1.5"`}},
			{name: "If-Match list", body: ep.valid, header: []string{"If-Match", `"1", "2"`}},
			{name: "If-Match overflow", body: ep.valid, header: []string{"If-Match", `"9223372036854775808"`}},
			{name: "Idempotency-Key with a space", body: ep.valid, header: []string{"Idempotency-Key", "a b"}},
			{name: "Idempotency-Key too long", body: ep.valid, header: []string{"Idempotency-Key", strings.Repeat("k", 256)}},
			{name: "Idempotency-Key not ASCII", body: ep.valid, header: []string{"Idempotency-Key", "clé"}},
		}
		if !ep.optionalBody {
			cases = append(cases,
				badCase{name: "empty body", body: ""},
				badCase{name: "blank body", body: " \r\n\t "},
				badCase{name: "null", body: "null"},
				badCase{name: "empty object", body: "{}"},
				badCase{name: "null field", body: ep.nullField},
			)
		}
		t.Run(ep.name, func(t *testing.T) {
			for _, c := range cases {
				if c.body == "" && c.name != "empty body" {
					continue // the endpoint has no such field
				}
				t.Run(c.name, func(t *testing.T) {
					if c.status == 0 {
						c.status, c.code = http.StatusBadRequest, domain.CodeInvalidRequest
					}
					h := headers(c.header...)
					switch c.contentType {
					case "":
					case "none":
						h.Set("Content-Type", "")
					default:
						h.Set("Content-Type", c.contentType)
					}
					var body any
					if c.body != "" {
						body = c.body
					}
					before := e.Snapshot(t)
					r := e.Do(t, apitest.Request{Method: ep.method, Path: ep.path, Token: admin, Body: body, Header: h})
					if r.Status >= 500 {
						t.Errorf("status %d for bad input; body %s", r.Status, r.Body)
					}
					r.WantProblem(t, c.status, c.code)
					e.WantUnchanged(t, before)
				})
			}
		})
	}

	// The valid bodies really are valid: the rejections above are about
	// what was changed, not about the base request.
	t.Run("valid bodies succeed", func(t *testing.T) {
		for _, ep := range endpoints {
			r := e.Do(t, apitest.Request{Method: ep.method, Path: ep.path, Token: admin, Body: ep.valid})
			if r.Status != http.StatusOK && r.Status != http.StatusCreated {
				t.Errorf("%s: valid body answered %d %s", ep.name, r.Status, r.Body)
			}
		}
	})
}

// TestEmptyBodyTransitions: the order transitions take an optional body, so
// no body, an empty object and {"reason": null} are all accepted.
func TestEmptyBodyTransitions(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	e.Stocked(t, 10, "opt-1")
	for i, body := range []any{nil, "{}", `{"reason":null}`, " \n"} {
		id := e.PlaceOrder(t, admin, apitest.NewOrder("u1", item("opt-1", 1))).OrderID
		r := e.Do(t, apitest.Request{Method: http.MethodPost, Path: orderPath(id, "cancel"), Token: admin, Body: body})
		if r.Status != http.StatusOK {
			t.Errorf("body %d (%v): status %d %s", i, body, r.Status, r.Body)
		}
	}
}

// TestFieldNamesAreExact: the contract's field names are fixed snake_case,
// so a field spelled in other letter case is an unknown field (400), not an
// alias; otherwise {"sku":"a","SKU":"b"} means b to the API and a to anything
// in front of it that reads the contract's names.
func TestFieldNamesAreExact(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	e.Stocked(t, 10, "case-1")
	id := e.PlaceOrder(t, admin, apitest.NewOrder("u1", item("case-1", 1))).OrderID
	for _, tc := range []struct {
		name, method, path, body string
	}{
		{"create: SKU", http.MethodPost, productsPath, `{"SKU":"case-2","name":"n","category":"c","price_cents":1}`},
		{"create: sku and SKU", http.MethodPost, productsPath, `{"sku":"case-3","name":"n","category":"c","price_cents":1,"SKU":"case-4"}`},
		{"create: Price_Cents", http.MethodPost, productsPath, `{"sku":"case-5","name":"n","category":"c","Price_Cents":1}`},
		{"update: NAME", http.MethodPatch, productPath("case-1"), `{"NAME":"shouted"}`},
		{"adjust: Delta", http.MethodPost, adjustPath("case-1"), `{"Delta":1,"reason":"x"}`},
		{"place: User_ID", http.MethodPost, ordersPath, `{"User_ID":"u1","items":[{"sku":"case-1","quantity":1}],"payment":{"method":"card","token":"t"}}`},
		{"place: Quantity", http.MethodPost, ordersPath, `{"user_id":"u1","items":[{"sku":"case-1","Quantity":1}],"payment":{"method":"card","token":"t"}}`},
		{"cancel: Reason", http.MethodPost, orderPath(id, "cancel"), `{"Reason":"x"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.Snapshot(t)
			r := e.Do(t, apitest.Request{Method: tc.method, Path: tc.path, Token: admin, Body: tc.body})
			if r.Status != http.StatusBadRequest {
				t.Errorf("%s %s %s: status %d %s; want 400 invalid_request for a field that is not in the contract",
					tc.method, tc.path, tc.body, r.Status, bytes.TrimSpace(r.Body))
				return
			}
			r.WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
			e.WantUnchanged(t, before)
		})
	}
}

// TestProblemDetailsAreForClients: a detail explains the problem in the
// contract's terms; Go type names of the implementation are not among them.
func TestProblemDetailsAreForClients(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	goSyntax := []string{"commandapi.", "map[", "[]", "*int64", "struct {"}
	for _, tc := range []struct{ path, body string }{
		{productsPath, `[]`},
		{productsPath, `{"attributes":["a"]}`},
		{ordersPath, `{"items":{"sku":"a"}}`},
		{ordersPath, `{"payment":"card"}`},
		{ordersPath, `{"items":["a"]}`},
		{orderPath(newUUID(), "cancel"), `["reason"]`},
	} {
		t.Run(tc.body, func(t *testing.T) {
			p := e.Do(t, post(tc.path, admin, tc.body)).WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
			for _, s := range goSyntax {
				if strings.Contains(p.Detail, s) {
					t.Errorf("POST %s %s: detail %q shows the Go type behind the field", tc.path, tc.body, p.Detail)
					break
				}
			}
		})
	}
}
