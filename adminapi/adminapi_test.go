package adminapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/adminapi"
	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/lifecycle"
)

// fakeProjections is the lifecycle as the admin API sees it: it records the
// calls and answers with the errors the real manager returns.
type fakeProjections struct {
	mu        sync.Mutex
	calls     []string
	dls       []projections.DeadLetter
	listErr   error
	replayErr map[uint64]error
	rebuild   map[string]error
}

func (f *fakeProjections) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeProjections) DeadLetters(_ context.Context, projection string, limit int) ([]projections.DeadLetter, error) {
	f.record(fmt.Sprintf("list %q %d", projection, limit))
	return f.dls, f.listErr
}

func (f *fakeProjections) Replay(_ context.Context, seq uint64) error {
	f.record(fmt.Sprintf("replay %d", seq))
	if err, ok := f.replayErr[seq]; ok {
		return err
	}
	return fmt.Errorf("dead letter %d: %w", seq, projections.ErrNoSuchDeadLetter)
}

func (f *fakeProjections) Rebuild(_ context.Context, name string) (int, error) {
	f.record("rebuild " + name)
	switch err, ok := f.rebuild[name]; {
	case ok && err == nil:
		return 3, nil
	case ok:
		return 0, err
	}
	return 0, fmt.Errorf("%w: %q", lifecycle.ErrNoSuchModel, name)
}

func (f *fakeProjections) last() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return ""
	}
	return f.calls[len(f.calls)-1]
}

type server struct {
	url          string
	admin, staff string
	fake         *fakeProjections
}

func start(t *testing.T, fake *fakeProjections, relay adminapi.Status) server {
	t.Helper()
	tokens, err := auth.New([]byte(strings.Repeat("s", auth.MinSecretLen)))
	if err != nil {
		t.Fatal(err)
	}
	issue := func(role domain.Role) string {
		tok, err := tokens.Issue("someone", role, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	logger := slog.New(slog.DiscardHandler)
	var p adminapi.Projections
	if fake != nil {
		p = fake
	}
	r, err := httpx.NewRouter(httpx.RouterConfig{Logger: logger}, adminapi.New(p, relay, tokens, logger).Mount)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return server{url: srv.URL, admin: issue(domain.RoleAdmin), staff: issue(domain.RoleCustomer), fake: fake}
}

// call returns the status, and the problem when the answer is one (checked
// to be problem+json with its status and a type naming its code).
func (s server) call(t *testing.T, method, path, token string) (int, []byte, *httpx.Problem) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode < 300 {
		return resp.StatusCode, body, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("%s %s: %d with Content-Type %q, want application/problem+json: %s", method, path, resp.StatusCode, ct, body)
	}
	var p httpx.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("%s %s: problem %s: %v", method, path, body, err)
	}
	if p.Status != resp.StatusCode || p.Type != "urn:jetcqrs:problem:"+string(p.Code) {
		t.Fatalf("%s %s: problem %+v does not match its status %d", method, path, p, resp.StatusCode)
	}
	return resp.StatusCode, body, &p
}

func TestAdminRoutesAreForAdmins(t *testing.T) {
	t.Parallel()
	s := start(t, &fakeProjections{}, func(context.Context) (any, error) { return map[string]int{"lag": 0}, nil })
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/admin/dlq"},
		{http.MethodPost, "/v1/admin/dlq/1/replay"},
		{http.MethodPost, "/v1/admin/projections/orders/rebuild"},
		{http.MethodGet, "/v1/admin/relay"},
	} {
		if st, _, p := s.call(t, c.method, c.path, ""); st != http.StatusUnauthorized || p.Code != domain.CodeUnauthorized {
			t.Errorf("%s %s without a token: %d %+v", c.method, c.path, st, p)
		}
		if st, _, p := s.call(t, c.method, c.path, s.staff); st != http.StatusForbidden || p.Code != domain.CodeForbidden {
			t.Errorf("%s %s as a customer: %d %+v", c.method, c.path, st, p)
		}
	}
	if calls := s.fake.last(); calls != "" {
		t.Fatalf("the lifecycle was called for a refused request: %s", calls)
	}
}

func TestListDeadLetters(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fake := &fakeProjections{dls: []projections.DeadLetter{{DLQSeq: 7, Projection: "orders", StreamSeq: 42,
		Subject: "events.order.OrderPlaced.3", Reason: "bad payload", At: at}}}
	s := start(t, fake, nil)

	st, body, _ := s.call(t, http.MethodGet, "/v1/admin/dlq", s.admin)
	if st != http.StatusOK || fake.last() != `list "" 100` {
		t.Fatalf("default list: %d %s, lifecycle saw %s", st, body, fake.last())
	}
	var out struct {
		DeadLetters []projections.DeadLetter `json:"dead_letters"`
	}
	if err := json.Unmarshal(body, &out); err != nil || len(out.DeadLetters) != 1 || out.DeadLetters[0].DLQSeq != 7 ||
		!out.DeadLetters[0].At.Equal(at) {
		t.Fatalf("body %s: %+v %v", body, out, err)
	}
	if st, _, _ := s.call(t, http.MethodGet, "/v1/admin/dlq?projection=sales&limit=10000", s.admin); st != http.StatusOK ||
		fake.last() != `list "sales" 10000` {
		t.Fatalf("filtered list: %d, lifecycle saw %s", st, fake.last())
	}

	fake.dls = nil
	if _, body, _ := s.call(t, http.MethodGet, "/v1/admin/dlq", s.admin); !strings.Contains(string(body), `"dead_letters":[]`) {
		t.Fatalf("an empty queue answers %s, want an empty list", body)
	}
}

func TestListDeadLettersRefusesBadParameters(t *testing.T) {
	t.Parallel()
	s := start(t, &fakeProjections{}, nil)
	for _, c := range []struct{ query, field string }{
		{"limit=0", "limit"},
		{"limit=10001", "limit"},
		{"limit=-3", "limit"},
		{"limit=ten", "limit"},
		{"projection=orders.x", "projection"},
		{"projection=%3E", "projection"},
		{"projection=*", "projection"},
		{"projection=" + strings.Repeat("p", 65), "projection"},
	} {
		st, body, p := s.call(t, http.MethodGet, "/v1/admin/dlq?"+c.query, s.admin)
		if st != http.StatusBadRequest || p.Code != domain.CodeInvalidRequest || p.Field != c.field {
			t.Errorf("?%s: %d %s, want 400 invalid_request on %s", c.query, st, body, c.field)
		}
	}
	if calls := s.fake.last(); calls != "" {
		t.Fatalf("the lifecycle was called for bad input: %s", calls)
	}
}

func TestReplay(t *testing.T) {
	t.Parallel()
	fake := &fakeProjections{replayErr: map[uint64]error{
		5: nil,
		6: errors.New("poison event: still does not apply: order_id is not a string"),
		8: fmt.Errorf("dead letters: %w", lifecycle.ErrNotRunning),
	}}
	s := start(t, fake, nil)
	if st, body, _ := s.call(t, http.MethodPost, "/v1/admin/dlq/5/replay", s.admin); st != http.StatusOK ||
		string(body) != "{\"replayed\":5}\n" {
		t.Fatalf("replay 5: %d %s", st, body)
	}
	for _, c := range []struct {
		seq    string
		status int
		code   domain.Code
		detail string
	}{
		{"6", http.StatusConflict, domain.CodeConflict, "still does not apply"},
		{"7", http.StatusNotFound, domain.CodeNotFound, "no such dead letter"},
		{"8", http.StatusServiceUnavailable, httpx.CodeUnavailable, "not running"},
		{"0", http.StatusNotFound, domain.CodeNotFound, "no such dead letter"},
		{"x", http.StatusNotFound, domain.CodeNotFound, "no such dead letter"},
		{"99999999999999999999999", http.StatusNotFound, domain.CodeNotFound, "no such dead letter"},
	} {
		st, body, p := s.call(t, http.MethodPost, "/v1/admin/dlq/"+c.seq+"/replay", s.admin)
		if st != c.status || p.Code != c.code || !strings.Contains(p.Detail, c.detail) {
			t.Errorf("replay %s: %d %s, want %d %s", c.seq, st, body, c.status, c.code)
		}
	}
	if st, _, p := s.call(t, http.MethodGet, "/v1/admin/dlq/5/replay", s.admin); st != http.StatusMethodNotAllowed ||
		p.Code != httpx.CodeMethodNotAllowed {
		t.Fatalf("GET replay: %d %+v", st, p)
	}
}

func TestRebuild(t *testing.T) {
	t.Parallel()
	fake := &fakeProjections{rebuild: map[string]error{
		"orders":    nil,
		"inventory": lifecycle.ErrRebuildUnderWay,
		"sales":     lifecycle.ErrNotRunning,
		"catalog":   errors.New("kv: connection closed"),
	}}
	s := start(t, fake, nil)
	st, body, _ := s.call(t, http.MethodPost, "/v1/admin/projections/orders/rebuild", s.admin)
	if st != http.StatusAccepted || string(body) != "{\"generation\":\"g3\",\"name\":\"orders\"}\n" {
		t.Fatalf("rebuild orders: %d %s", st, body)
	}
	for _, c := range []struct {
		name   string
		status int
		code   domain.Code
	}{
		{"inventory", http.StatusConflict, domain.CodeConflict},
		{"nope", http.StatusNotFound, domain.CodeNotFound},
		{"sales", http.StatusServiceUnavailable, httpx.CodeUnavailable},
		{"catalog", http.StatusInternalServerError, httpx.CodeInternal},
	} {
		st, body, p := s.call(t, http.MethodPost, "/v1/admin/projections/"+c.name+"/rebuild", s.admin)
		if st != c.status || p.Code != c.code {
			t.Errorf("rebuild %s: %d %s, want %d %s", c.name, st, body, c.status, c.code)
		}
		if c.status == http.StatusInternalServerError && strings.Contains(string(body), "connection closed") {
			t.Errorf("an internal error leaks its detail: %s", body)
		}
	}
}

// TestPartsMountOnlyWhatTheProcessRuns: a relay-only process serves the
// relay's status and no dead-letter routes; a projector without a relay
// serves no relay status (the query API does, where it runs).
func TestPartsMountOnlyWhatTheProcessRuns(t *testing.T) {
	t.Parallel()
	relayOnly := start(t, nil, func(context.Context) (any, error) { return map[string]string{"mode": "cdc"}, nil })
	if st, body, _ := relayOnly.call(t, http.MethodGet, "/v1/admin/relay", relayOnly.admin); st != http.StatusOK ||
		string(body) != "{\"mode\":\"cdc\"}\n" {
		t.Fatalf("relay status: %d %s", st, body)
	}
	if st, _, p := relayOnly.call(t, http.MethodGet, "/v1/admin/dlq", relayOnly.admin); st != http.StatusNotFound || p.Code != domain.CodeNotFound {
		t.Fatalf("dead letters on a relay-only process: %d %+v", st, p)
	}
	projector := start(t, &fakeProjections{}, nil)
	if st, _, p := projector.call(t, http.MethodGet, "/v1/admin/relay", projector.admin); st != http.StatusNotFound || p.Code != domain.CodeNotFound {
		t.Fatalf("relay status on a projector: %d %+v", st, p)
	}
	failing := start(t, nil, func(context.Context) (any, error) { return nil, lifecycle.ErrNotRunning })
	if st, _, p := failing.call(t, http.MethodGet, "/v1/admin/relay", failing.admin); st != http.StatusServiceUnavailable ||
		p.Code != httpx.CodeUnavailable {
		t.Fatalf("failing status: %d %+v", st, p)
	}
}

// TestClient: the `jetcqrs dlq` command's client lists and replays through
// the routes and hands back a refusal as a ProblemError with its code.
func TestClient(t *testing.T) {
	t.Parallel()
	fake := &fakeProjections{
		dls:       []projections.DeadLetter{{DLQSeq: 3, Projection: "sales"}},
		replayErr: map[uint64]error{3: nil, 4: errors.New("still does not apply")},
	}
	s := start(t, fake, nil)
	c := &adminapi.Client{Base: s.url, Token: s.admin}
	ctx := context.Background()
	dls, err := c.DeadLetters(ctx, "sales", 5)
	if err != nil || len(dls) != 1 || dls[0].DLQSeq != 3 || fake.last() != `list "sales" 5` {
		t.Fatalf("DeadLetters: %+v %v (lifecycle saw %s)", dls, err, fake.last())
	}
	if err := c.Replay(ctx, 3); err != nil {
		t.Fatalf("Replay(3): %v", err)
	}
	var pe *adminapi.ProblemError
	if err := c.Replay(ctx, 4); !errors.As(err, &pe) || pe.Status != http.StatusConflict || pe.Code != domain.CodeConflict ||
		!strings.Contains(err.Error(), "still does not apply") {
		t.Fatalf("Replay(4): %v", err)
	}
	bad := &adminapi.Client{Base: s.url, Token: s.staff}
	if _, err := bad.DeadLetters(ctx, "", 1); !errors.As(err, &pe) || pe.Code != domain.CodeForbidden {
		t.Fatalf("as a customer: %v", err)
	}
}
