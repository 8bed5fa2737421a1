package apitest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/apitest"
)

func TestEnv(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)

	t.Run("wired like cmd/jetcqrs", func(t *testing.T) {
		for _, tc := range []struct {
			method, path string
			status       int
			code         domain.Code
		}{
			{http.MethodGet, "/healthz", http.StatusOK, ""},
			{http.MethodGet, "/readyz", http.StatusOK, ""},
			{http.MethodGet, "/metrics", http.StatusOK, ""},
			{http.MethodGet, "/v1/nowhere", http.StatusNotFound, domain.CodeNotFound},
			{http.MethodGet, "/v1/orders", http.StatusMethodNotAllowed, "method_not_allowed"},
			{http.MethodDelete, "/v1/products/x", http.StatusMethodNotAllowed, "method_not_allowed"},
			{http.MethodPost, "/v1/products", http.StatusUnauthorized, domain.CodeUnauthorized},
		} {
			r := e.Do(t, apitest.Request{Method: tc.method, Path: tc.path})
			if tc.code != "" {
				r.WantProblem(t, tc.status, tc.code)
			} else {
				r.WantStatus(t, tc.status)
			}
		}
		var metrics strings.Builder
		metrics.Write(e.Do(t, apitest.Request{Method: http.MethodGet, Path: "/metrics"}).Body)
		if !strings.Contains(metrics.String(), `jetcqrs_http_request_duration_seconds_count{api="http"`) {
			t.Error("/metrics lacks the request metrics")
		}
	})

	t.Run("tokens", func(t *testing.T) {
		tokens, err := auth.New([]byte(apitest.Secret))
		if err != nil {
			t.Fatal(err)
		}
		for tok, want := range map[string]domain.Actor{
			apitest.AdminToken(t):           {Subject: "admin", Role: domain.RoleAdmin},
			apitest.CustomerToken(t, "u-7"): {Subject: "u-7", Role: domain.RoleCustomer},
		} {
			if got, err := tokens.Verify(tok); err != nil || got != want {
				t.Errorf("Verify = %+v, %v; want %+v", got, err, want)
			}
		}
	})

	t.Run("seeding and inspection", func(t *testing.T) {
		before := e.Snapshot(t)
		e.Stocked(t, 4, "seed-1")
		after := e.Snapshot(t)
		for table, rows := range map[string]int64{"products": 1, "inventory": 1, "outbox_events": 2} {
			if after[table].Rows-before[table].Rows != rows {
				t.Errorf("%s grew by %d rows, want %d", table, after[table].Rows-before[table].Rows, rows)
			}
		}
		if got := e.Stock(t, "seed-1"); got != (apitest.Stock{OnHand: 4, Version: 1}) {
			t.Errorf("Stock = %+v", got)
		}
		o := e.PlaceOrder(t, apitest.CustomerToken(t, "u1"), apitest.NewOrder("u1", apitest.Item{SKU: "seed-1", Quantity: 1}))
		if o.Status != "placed" || o.TotalCents != 100 || o.Version != 1 {
			t.Errorf("PlaceOrder = %+v", o)
		}
		// An UPDATE changes the digest even though no row count changes.
		before = e.Snapshot(t)
		e.Transition(t, apitest.AdminToken(t), o.OrderID, "pay")
		after = e.Snapshot(t)
		if before["orders"].Rows != after["orders"].Rows || before["orders"].Digest == after["orders"].Digest {
			t.Errorf("orders snapshot %+v → %+v, want the same count and another digest", before["orders"], after["orders"])
		}
		events := e.Outbox(t)
		if last := events[len(events)-1]; last.EventType != domain.EventOrderPaid || last.AggregateID != o.OrderID || last.AggregateVersion != 2 {
			t.Errorf("last outbox event = %+v", last)
		}
	})

	t.Run("in process", func(t *testing.T) {
		req := apitest.Request{Method: http.MethodPost, Path: "/v1/products", Token: apitest.AdminToken(t), Body: "{"}
		over, in := e.Do(t, req), e.DoInProcess(t, req)
		if over.Status != in.Status || string(over.Body) != string(in.Body) {
			t.Errorf("over the network %d %s, in process %d %s", over.Status, over.Body, in.Status, in.Body)
		}
	})

	t.Run("request defaults", func(t *testing.T) {
		r := e.NewRequest(t, apitest.Request{Method: http.MethodPost, Path: "/x", Body: map[string]int{"a": 1}})
		if r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Authorization") != "" {
			t.Errorf("headers = %v", r.Header)
		}
		r = e.NewRequest(t, apitest.Request{Method: http.MethodPost, Path: "/x", Body: "{}", Token: "tok",
			Header: http.Header{"Content-Type": {""}, "If-Match": {`"1"`}}})
		if _, set := r.Header["Content-Type"]; set || r.Header.Get("If-Match") != `"1"` || r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("headers = %v", r.Header)
		}
	})
}
