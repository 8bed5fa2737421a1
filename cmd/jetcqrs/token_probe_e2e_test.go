package main

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// probeAnswer is what a probing GET answered and how long it took.
type probeAnswer struct {
	status  int
	body    string
	elapsed time.Duration
}

// probeAll sends one GET of path per consistency token, concurrently (each
// may wait out the bound), and returns the answers in order; "" sends none.
func (s *system) probeAll(path, bearer string, tokens ...string) []probeAnswer {
	s.t.Helper()
	out := make([]probeAnswer, len(tokens))
	errs := make([]error, len(tokens))
	var wg sync.WaitGroup
	for i, tok := range tokens {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var header map[string]string
			if tok != "" {
				header = map[string]string{"X-Consistency-Token": tok}
			}
			start := time.Now()
			resp, raw, err := s.send(http.MethodGet, path, bearer, nil, header, nil)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = probeAnswer{status: resp.StatusCode, body: strings.TrimSpace(string(raw)), elapsed: time.Since(start)}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			s.t.Fatal(err)
		}
	}
	return out
}

// TestConsistencyTokensRevealNothingAboutAnothersOrder runs the whole system:
// alice places and pays an order (version 2) and reads her writes back with
// the tokens the commands returned; bob then probes her order with tokens of
// versions that exist (1, 2) and that do not (3, 50). On the order's URL
// every probe gets, at once, the 403 a read without a token gets; on bob's
// own list every probe waits out the bound and gets the same 503; on alice's
// list, the 403 at once. A token of another kind is 400.
func TestConsistencyTokensRevealNothingAboutAnothersOrder(t *testing.T) {
	const wait = 800 * time.Millisecond
	cfg := testConfig(t)
	cfg.ConsistencyWait = wait
	s := startSystem(t, cfg, All)
	admin := s.token("ops", domain.RoleAdmin)
	alice := s.token("alice", domain.RoleCustomer)
	bob := s.token("bob", domain.RoleCustomer)
	product := s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": "PROBE-1", "name": "Probe",
		"description": "d", "category": "c", "price_cents": 300}, nil, nil)
	s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/PROBE-1/adjustments", admin,
		map[string]any{"delta": 10, "reason": "count"}, nil, nil)
	s.awaitLive(admin, 30*time.Second)

	// Alice reads her writes, straight after each command.
	placed := s.expect(http.StatusCreated, http.MethodPost, "/v1/orders", alice, map[string]any{"user_id": "alice",
		"items": []map[string]any{{"sku": "PROBE-1", "quantity": 1}}, "payment": map[string]string{"method": "card", "token": "t"}}, nil, nil)
	orderPath := placed.Header.Get("Location")
	orderID := strings.TrimPrefix(orderPath, "/v1/orders/")
	var o projections.OrderView
	s.expect(http.StatusOK, http.MethodGet, orderPath, alice, nil, consistency(placed), &o)
	if o.OrderID != orderID || o.Version != 1 || o.Status != "placed" {
		t.Errorf("alice GET %s with %s = %+v; want her order at version 1", orderPath, placed.Header.Get("X-Consistency-Token"), o)
	}
	paid := s.expect(http.StatusOK, http.MethodPost, orderPath+"/pay", alice, nil, nil, nil)
	var list struct {
		Orders []projections.OrderListEntry `json:"orders"`
	}
	s.expect(http.StatusOK, http.MethodGet, "/v1/users/alice/orders", alice, nil, consistency(paid), &list)
	if len(list.Orders) != 1 || list.Orders[0].OrderID != orderID || list.Orders[0].Status != "paid" {
		t.Errorf("alice GET her orders with %s = %+v; want her paid order", paid.Header.Get("X-Consistency-Token"), list.Orders)
	}

	probes := []string{"order:" + orderID + ":1", "order:" + orderID + ":2", "order:" + orderID + ":3", "order:" + orderID + ":50"}
	atOnce := func(what string, a probeAnswer) {
		t.Helper()
		if a.elapsed >= wait/2 {
			t.Errorf("%s answered after %s; want an answer at once, not after waiting on the token", what, a.elapsed)
		}
	}

	answers := s.probeAll(orderPath, bob, append([]string{""}, probes...)...)
	if answers[0].status != http.StatusForbidden {
		t.Fatalf("bob GET %s = %d %s; want 403", orderPath, answers[0].status, answers[0].body)
	}
	for i, a := range answers[1:] {
		what := "bob GET " + orderPath + " with " + probes[i]
		if a.status != answers[0].status || a.body != answers[0].body {
			t.Errorf("%s = %d %s; want what a read without a token gets, %d %s", what, a.status, a.body, answers[0].status, answers[0].body)
		}
		atOnce(what, a)
	}

	answers = s.probeAll("/v1/users/bob/orders", bob, probes...)
	for i, a := range answers {
		what := "bob GET his orders with " + probes[i]
		if a.status != http.StatusServiceUnavailable || a.body != answers[len(answers)-1].body {
			t.Errorf("%s = %d %s; want the 503 of a version that never arrives, %s", what, a.status, a.body, answers[len(answers)-1].body)
		}
		if a.elapsed < wait || a.elapsed > wait+time.Second {
			t.Errorf("%s answered after %s; want the whole bound, %s", what, a.elapsed, wait)
		}
	}

	answers = s.probeAll("/v1/users/alice/orders", bob, append([]string{""}, probes...)...)
	for i, a := range answers {
		if a.status != http.StatusForbidden || a.body != answers[0].body {
			t.Errorf("bob GET alice's orders with probe #%d = %d %s; want %d %s", i, a.status, a.body, answers[0].status, answers[0].body)
		}
		atOnce("bob GET alice's orders", a)
	}

	for _, c := range []struct{ path, bearer, tok string }{
		{orderPath, alice, product.Header.Get("X-Consistency-Token")},
		{orderPath, bob, product.Header.Get("X-Consistency-Token")},
		{"/v1/users/alice/orders", alice, product.Header.Get("X-Consistency-Token")},
		{"/v1/products/PROBE-1", "", placed.Header.Get("X-Consistency-Token")},
		{"/v1/reports/sales", admin, placed.Header.Get("X-Consistency-Token")},
	} {
		_, p := s.expectProblem(http.StatusBadRequest, "invalid_request", http.MethodGet, c.path, c.bearer, nil,
			map[string]string{"X-Consistency-Token": c.tok})
		if p.Detail == "" {
			t.Errorf("GET %s with %s: 400 without detail", c.path, c.tok)
		}
	}
}
