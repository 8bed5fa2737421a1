package commandapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/jetcqrs/jetcqrs/internal/apitest"
)

const (
	productsPath = "/v1/products"
	ordersPath   = "/v1/orders"
)

func productPath(sku string) string { return "/v1/products/" + sku }

func adjustPath(sku string) string { return "/v1/inventory/" + sku + "/adjustments" }

func orderPath(id, action string) string { return "/v1/orders/" + id + "/" + action }

// post builds a POST request; header holds name, value pairs.
func post(path, token string, body any, header ...string) apitest.Request {
	return apitest.Request{Method: http.MethodPost, Path: path, Token: token, Body: body, Header: headers(header...)}
}

// patch builds a PATCH request; header holds name, value pairs.
func patch(path, token string, body any, header ...string) apitest.Request {
	return apitest.Request{Method: http.MethodPatch, Path: path, Token: token, Body: body, Header: headers(header...)}
}

func headers(pairs ...string) http.Header {
	if len(pairs)%2 != 0 {
		panic("headers: odd number of arguments")
	}
	h := http.Header{}
	for i := 0; i < len(pairs); i += 2 {
		h.Set(pairs[i], pairs[i+1])
	}
	return h
}

// wantSuccess checks the status and the headers every successful command
// answer carries: JSON, a consistency token type:id:version and the version
// as ETag.
func wantSuccess(t testing.TB, r *apitest.Response, status int, aggType, id string, version int64) {
	t.Helper()
	r.WantStatus(t, status)
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if got, want := r.Header.Get("X-Consistency-Token"), fmt.Sprintf("%s:%s:%d", aggType, id, version); got != want {
		t.Errorf("X-Consistency-Token = %q, want %q", got, want)
	}
	if got, want := r.Header.Get("ETag"), fmt.Sprintf(`"%d"`, version); got != want {
		t.Errorf("ETag = %q, want %q", got, want)
	}
}

// wantLocation checks the Location header of a 201 (and its absence
// otherwise).
func wantLocation(t testing.TB, r *apitest.Response, want string) {
	t.Helper()
	if got := r.Header.Get("Location"); got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
}

// wantDetailMentions checks that the problem's detail names what is wrong.
func wantDetailMentions(t testing.TB, detail string, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(detail, w) {
			t.Errorf("detail %q does not mention %q", detail, w)
		}
	}
}

func newUUID() string { return uuid.NewString() }

func item(sku string, qty int64) apitest.Item { return apitest.Item{SKU: sku, Quantity: qty} }
