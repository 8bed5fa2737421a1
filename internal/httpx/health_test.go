package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
)

// TestReadyzNamesChecksNotErrors: /readyz tells which check fails and
// nothing more; the error, with the addresses and replies it may hold, goes
// to the log only.
func TestReadyzNamesChecksNotErrors(t *testing.T) {
	t.Parallel()
	const secretish = "dial tcp 10.1.2.3:5432: password authentication failed for user \"app\""
	var logs bytes.Buffer
	r := chi.NewRouter()
	Health(r, map[string]func(context.Context) error{
		"postgres": func(context.Context) error { return errors.New(secretish) },
		"nats":     func(context.Context) error { return nil },
	}, slog.New(slog.NewTextHandler(&logs, nil)), nil)

	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d, want 503", rec.Code)
	}
	var body struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("/readyz body %q: %v", rec.Body, err)
	}
	if body.Ready || body.Checks["postgres"] != CheckFailing || body.Checks["nats"] != CheckOK || len(body.Checks) != 2 {
		t.Errorf("/readyz = %+v, want not ready, postgres %q, nats %q", body, CheckFailing, CheckOK)
	}
	if strings.Contains(rec.Body.String(), "10.1.2.3") || strings.Contains(rec.Body.String(), "password") {
		t.Errorf("/readyz serves the check's error: %s", rec.Body)
	}
	if !strings.Contains(logs.String(), "check=postgres") || !strings.Contains(logs.String(), "10.1.2.3:5432") {
		t.Errorf("the failing check's error is not logged with its name; log:\n%s", logs.String())
	}

	ok := chi.NewRouter()
	Health(ok, map[string]func(context.Context) error{"postgres": func(context.Context) error { return nil }}, slog.Default(),
		map[string]func(context.Context) any{"edge": func(context.Context) any { return map[string]int{"stale_seconds": 7} }})
	rec = httptest.NewRecorder()
	ok.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"ready":true`) ||
		!strings.Contains(rec.Body.String(), `"detail":{"edge":{"stale_seconds":7}}`) {
		t.Errorf("/readyz with every check passing = %d %s, want 200 ready with the edge's detail", rec.Code, rec.Body)
	}
}
