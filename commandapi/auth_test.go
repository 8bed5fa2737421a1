package commandapi_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/apitest"
)

// signHS signs claims with method and key.
func signHS(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rawJWT assembles a token from a header and claims of our choosing, signed
// with HMAC-SHA256 over the secret whatever the header says.
func rawJWT(t *testing.T, header, claims map[string]any, secret string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(header) + "." + enc(claims)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// TestAuthentication sends every command with every kind of missing or bad
// credentials: each is 401 with WWW-Authenticate and changes nothing.
func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	e.Stocked(t, 10, "auth-1")
	order := e.PlaceOrder(t, apitest.CustomerToken(t, "alice"), apitest.NewOrder("alice", item("auth-1", 1)))

	secret := []byte(apitest.Secret)
	exp := time.Now().Add(time.Hour).Unix()
	valid := jwt.MapClaims{"sub": "admin", "role": "admin", "exp": exp}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for key, val := range valid {
			c[key] = val
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	customer := apitest.CustomerToken(t, "alice")
	parts := strings.Split(customer, ".")
	claims, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(
		[]byte(strings.Replace(string(claims), `"customer"`, `"admin"`, 1))) + "." + parts[2]
	noneToken := signHS(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid)

	credentials := []struct {
		name          string
		authorization string // the whole header; "" sends none
	}{
		{"no Authorization header", ""},
		{"Basic credentials", "Basic YWRtaW46YWRtaW4="},
		{"Bearer without a token", "Bearer"},
		{"Bearer with blanks", "Bearer    "},
		{"token without a scheme", signHS(t, jwt.SigningMethodHS256, secret, valid)},
		{"other scheme", "Token " + signHS(t, jwt.SigningMethodHS256, secret, valid)},
		{"garbage", "Bearer not.a.jwt"},
		{"two segments", "Bearer " + strings.Join(parts[:2], ".")},
		{"tampered claims", "Bearer " + tampered},
		{"expired a minute ago", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("exp", time.Now().Add(-time.Minute).Unix()))},
		{"not yet valid", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("nbf", time.Now().Add(time.Hour).Unix()))},
		{"no exp", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("exp", nil))},
		{"other secret", "Bearer " + signHS(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes!!"), valid)},
		{"HS512 with the right secret", "Bearer " + signHS(t, jwt.SigningMethodHS512, secret, valid)},
		{"alg none", "Bearer " + noneToken},
		{"alg none, empty signature", "Bearer " + strings.TrimSuffix(noneToken, ".") + "."},
		{"RS256", "Bearer " + signHS(t, jwt.SigningMethodRS256, rsaKey, valid)},
		{"RS256 header, HMAC signature", "Bearer " + rawJWT(t, map[string]any{"alg": "RS256", "typ": "JWT"}, valid, apitest.Secret)},
		{"no role", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("role", nil))},
		{"unknown role", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("role", "root"))},
		{"role in capitals", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("role", "Admin"))},
		{"role not a string", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("role", 1))},
		{"no sub", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("sub", nil))},
		{"empty sub", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("sub", ""))},
		{"sub too long", "Bearer " + signHS(t, jwt.SigningMethodHS256, secret, with("sub", strings.Repeat("a", 129)))},
	}
	endpoints := []apitest.Request{
		post(productsPath, "", apitest.NewProduct("auth-2", "c", 1)),
		patch(productPath("auth-1"), "", map[string]any{"name": "x"}),
		post(adjustPath("auth-1"), "", map[string]any{"delta": 1, "reason": "x"}),
		post(ordersPath, "", apitest.NewOrder("admin", item("auth-1", 1))),
		post(orderPath(order.OrderID, "pay"), "", nil),
		post(orderPath(order.OrderID, "ship"), "", nil),
		post(orderPath(order.OrderID, "deliver"), "", nil),
		post(orderPath(order.OrderID, "cancel"), "", nil),
	}
	before := e.Snapshot(t)
	for _, c := range credentials {
		t.Run(c.name, func(t *testing.T) {
			for _, req := range endpoints {
				req.Header = headers("Authorization", c.authorization)
				r := e.Do(t, req)
				p := r.WantProblem(t, http.StatusUnauthorized, domain.CodeUnauthorized)
				if wa := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(wa, "Bearer") {
					t.Errorf("%s %s: WWW-Authenticate = %q, want a Bearer challenge", req.Method, req.Path, wa)
				}
				if p.Detail == "" {
					t.Errorf("%s %s: no detail", req.Method, req.Path)
				}
			}
		})
	}
	e.WantUnchanged(t, before)
}

// TestAuthorization is the 403 matrix: customers act only for themselves and
// only through customer commands; the admin may do everything.
func TestAuthorization(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	alice := apitest.CustomerToken(t, "alice")
	bob := apitest.CustomerToken(t, "bob")
	e.Stocked(t, 50, "authz-1")
	bobPlaced := e.PlaceOrder(t, bob, apitest.NewOrder("bob", item("authz-1", 1))).OrderID
	bobPaid := e.PlaceOrder(t, bob, apitest.NewOrder("bob", item("authz-1", 1))).OrderID
	e.Transition(t, bob, bobPaid, "pay")
	alicePaid := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("authz-1", 1))).OrderID
	e.Transition(t, alice, alicePaid, "pay")
	aliceShipped := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("authz-1", 1))).OrderID
	e.Transition(t, alice, aliceShipped, "pay")
	e.Transition(t, admin, aliceShipped, "ship")

	forbidden := []struct {
		name string
		req  apitest.Request
	}{
		{"alice places an order for bob", post(ordersPath, alice, apitest.NewOrder("bob", item("authz-1", 1)))},
		{"alice places an order for Alice", post(ordersPath, alice, apitest.NewOrder("Alice", item("authz-1", 1)))},
		{"alice pays bob's order", post(orderPath(bobPlaced, "pay"), alice, nil)},
		{"alice cancels bob's placed order", post(orderPath(bobPlaced, "cancel"), alice, nil)},
		{"alice cancels bob's paid order", post(orderPath(bobPaid, "cancel"), alice, map[string]string{"reason": "mine now"})},
		{"alice ships bob's order", post(orderPath(bobPaid, "ship"), alice, nil)},
		{"alice ships her own order", post(orderPath(alicePaid, "ship"), alice, nil)},
		{"alice delivers her own order", post(orderPath(aliceShipped, "deliver"), alice, nil)},
		{"alice delivers bob's order", post(orderPath(bobPaid, "deliver"), alice, nil)},
		{"alice creates a product", post(productsPath, alice, apitest.NewProduct("authz-2", "c", 1))},
		{"alice updates a product", patch(productPath("authz-1"), alice, map[string]any{"price_cents": 1})},
		{"alice adjusts inventory", post(adjustPath("authz-1"), alice, map[string]any{"delta": 100, "reason": "x"})},
		{"alice counts out inventory", post(adjustPath("authz-1"), alice, map[string]any{"delta": -1, "reason": "x"})},
	}
	for _, tc := range forbidden {
		t.Run("403/"+tc.name, func(t *testing.T) {
			before := e.Snapshot(t)
			r := e.Do(t, tc.req)
			r.WantProblem(t, http.StatusForbidden, domain.CodeForbidden)
			if wa := r.Header.Get("WWW-Authenticate"); wa != "" {
				t.Errorf("403 with WWW-Authenticate %q", wa)
			}
			e.WantUnchanged(t, before)
		})
	}

	t.Run("customers act for themselves", func(t *testing.T) {
		id := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("authz-1", 1))).OrderID
		e.Transition(t, alice, id, "pay")
		e.Transition(t, alice, id, "cancel")
	})

	t.Run("admin may do everything", func(t *testing.T) {
		e.CreateProduct(t, apitest.NewProduct("authz-3", "c", 1))
		wantSuccess(t, e.Do(t, patch(productPath("authz-3"), admin, map[string]any{"price_cents": 2})), http.StatusOK, "product", "authz-3", 2)
		e.Restock(t, "authz-3", 5)
		e.Restock(t, "authz-3", -1)
		forBob := e.PlaceOrder(t, admin, apitest.NewOrder("bob", item("authz-3", 2))).OrderID
		e.Transition(t, admin, forBob, "pay")
		e.Transition(t, admin, forBob, "ship")
		e.Transition(t, admin, forBob, "deliver")
		e.Transition(t, admin, bobPlaced, "pay")
		e.Transition(t, admin, bobPaid, "cancel")
		e.Transition(t, admin, alicePaid, "ship")
		e.Transition(t, admin, aliceShipped, "deliver")
	})
}

// TestSubjectWithControlCharacters: a correctly signed token whose sub holds
// a NUL is still input; it must not turn every command into a 500 (the NUL
// cannot be stored in the idempotency scope nor in the outbox headers). The
// natural answer is 401: no user id contains control characters.
func TestSubjectWithControlCharacters(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	e.Stocked(t, 10, "nul-1")
	tok := signHS(t, jwt.SigningMethodHS256, []byte(apitest.Secret),
		jwt.MapClaims{"sub": "adm\x00in", "role": "admin", "exp": time.Now().Add(time.Hour).Unix()})
	for _, req := range []apitest.Request{
		post(adjustPath("nul-1"), tok, map[string]any{"delta": 1, "reason": "x"}),
		post(adjustPath("nul-1"), tok, map[string]any{"delta": 1, "reason": "x"}, "Idempotency-Key", "k"),
		post(productsPath, tok, apitest.NewProduct("nul-2", "c", 1)),
	} {
		before := e.Snapshot(t)
		r := e.Do(t, req)
		if r.Status >= 500 {
			t.Errorf("%s %s (key %q) with sub \"adm\\x00in\": status %d %s; want 401 invalid token",
				req.Method, req.Path, req.Header.Get("Idempotency-Key"), r.Status, bytes.TrimSpace(r.Body))
			e.WantUnchanged(t, before)
		}
	}
}
