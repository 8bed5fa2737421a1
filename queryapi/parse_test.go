package queryapi_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

func TestParseToken(t *testing.T) {
	t.Parallel()
	cases := []struct {
		tok      string
		typ, id  string
		version  int64
		wantFail bool
	}{
		{tok: "order:0193e5c2-7a1b-7c3d-9e4f-0a1b2c3d4e5f:3", typ: "order", id: "0193e5c2-7a1b-7c3d-9e4f-0a1b2c3d4e5f", version: 3},
		{tok: "inventory:MUG-1:12", typ: "inventory", id: "MUG-1", version: 12},
		{tok: "product:a:b:1", typ: "product", id: "a:b", version: 1},
		{tok: "order:x:0", wantFail: true},
		{tok: "order:x:-1", wantFail: true},
		{tok: "order::1", wantFail: true},
		{tok: ":x:1", wantFail: true},
		{tok: "order:x", wantFail: true},
		{tok: "order:x:1.5", wantFail: true},
		{tok: "order:x:99999999999999999999", wantFail: true},
		{tok: "order:\xff:1", wantFail: true},
	}
	for _, c := range cases {
		typ, id, v, err := queryapi.ParseToken(c.tok)
		if c.wantFail {
			if domain.ErrorCode(err) != domain.CodeInvalidRequest {
				t.Errorf("ParseToken(%q) = %q %q %d %v, want invalid_request", c.tok, typ, id, v, err)
			}
			continue
		}
		if err != nil || typ != c.typ || id != c.id || v != c.version {
			t.Errorf("ParseToken(%q) = %q %q %d %v", c.tok, typ, id, v, err)
		}
	}
}

func TestParseSearch(t *testing.T) {
	t.Parallel()
	for _, query := range []string{"", "q=blue+mug&category=kitchen&min_price=0&max_price=1000&in_stock=true&limit=100&offset=9900",
		"min_price=500&max_price=500", "offset=9980", "limit=1&offset=9999"} {
		r := httptest.NewRequest("GET", "/v1/products?"+query, nil)
		q, err := queryapi.ParseSearch(r, 100)
		if err != nil {
			t.Errorf("%q: %v", query, err)
		}
		if query == "" && (q.Limit != 20 || q.Offset != 0 || q.InStock || q.MinPrice != nil) {
			t.Errorf("defaults = %+v", q)
		}
	}
	bad := map[string]string{
		"limit=0": "limit", "limit=101": "limit", "limit=x": "limit", "offset=-1": "offset", "offset=10001": "offset",
		// offset + limit past the search window, the default limit being 20
		"offset=10000": "offset", "offset=9981": "offset", "limit=100&offset=9901": "offset", "limit=1&offset=10000": "offset",
		"min_price=-1": "min_price", "max_price=1e3": "max_price", "min_price=100000000001": "min_price",
		"min_price=10&max_price=9": "min_price", "in_stock=yes": "in_stock", "q=%ff": "q",
	}
	for query, field := range bad {
		r := httptest.NewRequest("GET", "/v1/products?"+query, nil)
		_, err := queryapi.ParseSearch(r, 100)
		var de *domain.Error
		if !errors.As(err, &de) || de.Code != domain.CodeInvalidRequest || de.Field != field {
			t.Errorf("%q: err = %v, want invalid_request on %s", query, err, field)
		}
	}
}

func TestParseSales(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	r := httptest.NewRequest("GET", "/v1/reports/sales", nil)
	q, err := queryapi.ParseSales(r, now)
	if err != nil || q.GroupBy != "day" || !q.To.Equal(now) || !q.From.Equal(now.AddDate(0, 0, -30)) {
		t.Fatalf("defaults = %+v, %v", q, err)
	}
	r = httptest.NewRequest("GET", "/v1/reports/sales?from=2026-01-01&to=2026-02-01T10:00:00%2B02:00&group_by=category", nil)
	q, err = queryapi.ParseSales(r, now)
	if err != nil || q.GroupBy != "category" || !q.From.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) ||
		!q.To.Equal(time.Date(2026, 2, 1, 8, 0, 0, 0, time.UTC)) {
		t.Fatalf("parsed = %+v, %v", q, err)
	}
	for query, field := range map[string]string{
		"group_by=week": "group_by", "from=yesterday": "from", "to=2026-13-01": "to",
		"from=2026-02-01&to=2026-01-01": "from", "from=2026-01-01&to=2026-01-01": "from",
	} {
		_, err := queryapi.ParseSales(httptest.NewRequest("GET", "/v1/reports/sales?"+query, nil), now)
		var de *domain.Error
		if !errors.As(err, &de) || de.Field != field {
			t.Errorf("%q: err = %v, want invalid_request on %s", query, err, field)
		}
	}
}

// TestHubWakesWaiterWithoutPolling: the readiness check runs once at the
// start and once per notification, never on a timer.
func TestHubWakesWaiterWithoutPolling(t *testing.T) {
	t.Parallel()
	hub := queryapi.NewHub()
	var version, checks atomic.Int64
	ready := func(context.Context) (bool, error) {
		checks.Add(1)
		return version.Load() >= 3, nil
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- hub.WaitFor(ctx, "order", "o1", ready)
	}()
	time.Sleep(50 * time.Millisecond)
	hub.Notify("order", "other") // another aggregate: no wake-up
	version.Store(2)
	hub.Notify("order", "o1")
	time.Sleep(50 * time.Millisecond)
	version.Store(3)
	hub.Notify("order", "o1")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := checks.Load(); n != 3 {
		t.Fatalf("ready was checked %d times, want 3 (start + two notifications)", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := hub.WaitFor(ctx, "order", "never", func(context.Context) (bool, error) { return false, nil })
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 90*time.Millisecond {
		t.Fatalf("WaitFor without progress = %v after %s, want the deadline", err, time.Since(start))
	}
}
