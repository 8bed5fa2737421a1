// Package apitest runs the command HTTP API for tests the way cmd/jetcqrs
// runs it: a freshly migrated PostgreSQL database of its own, the write store
// over it, and the same chi router, middleware and command routes behind an
// httptest.Server. It mints bearer tokens, sends requests, seeds data through
// the API and reads the write store's tables back, so that end-to-end tests
// read as the HTTP contract (shared/API.md) reads.
//
// A test reads:
//
//	e := apitest.New(t)
//	e.Stocked(t, 10, "tea-1")
//	o := e.PlaceOrder(t, apitest.CustomerToken(t, "alice"), apitest.NewOrder("alice", apitest.Item{SKU: "tea-1", Quantity: 2}))
//	e.Do(t, apitest.Request{Method: "POST", Path: "/v1/orders/" + o.OrderID + "/pay", Token: apitest.AdminToken(t)}).
//		WantStatus(t, http.StatusOK)
//
// Everything New creates is released by t.Cleanup: the server is closed, the
// pool closed and the database dropped. NewRouter alone wires the same router
// over any commandapi.Commands, for tests of the HTTP layer without a
// database.
package apitest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetcqrs/jetcqrs/auth"
	"github.com/jetcqrs/jetcqrs/commandapi"
	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/internal/testlog"
	"github.com/jetcqrs/jetcqrs/postgres"
)

// Secret is the HS256 secret every server of this package verifies tokens
// with; Token signs with it.
const Secret = "apitest-hs256-secret-0123456789abcdef"

// tokenTTL outlives any test.
const tokenTTL = time.Hour

// Env is one command API over its own database.
type Env struct {
	// URL is the server's base URL, such as http://127.0.0.1:41235.
	URL string
	// Handler is the router the server serves, for in-process requests.
	Handler http.Handler
	// Pool is the store's connection pool; tests read the tables through it.
	Pool *pgxpool.Pool
	// Store is the write store behind the API.
	Store *postgres.Store
	// Client sends requests to URL; it keeps enough idle connections for
	// bursts of concurrent requests.
	Client *http.Client
}

type config struct {
	storeOpts      []postgres.Option
	commandTimeout time.Duration
	maxConns       int32
	logger         *slog.Logger
}

// Option configures New.
type Option func(*config)

// WithStoreOptions passes options, such as postgres.WithHooks, to the store.
func WithStoreOptions(opts ...postgres.Option) Option {
	return func(c *config) { c.storeOpts = append(c.storeOpts, opts...) }
}

// WithCommandTimeout sets the API's command timeout (default 10 s, as in
// cmd/jetcqrs).
func WithCommandTimeout(d time.Duration) Option {
	return func(c *config) { c.commandTimeout = d }
}

// WithMaxConns sets the pool size (default 10). The database server is shared
// by every test process, so keep it small.
func WithMaxConns(n int32) Option { return func(c *config) { c.maxConns = n } }

// WithLogger sets the logger of the API and the migrations (default: warnings
// and errors go to t.Log).
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// New creates a database (testenv.PostgresURL), migrates it with
// postgres.Migrate, and serves the command API over it on an httptest.Server.
// A missing PostgreSQL fails the test with the command that starts it.
func New(t testing.TB, opts ...Option) *Env {
	t.Helper()
	cfg := config{commandTimeout: 10 * time.Second, maxConns: 10}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = TestLogger(t)
	}
	pool := MigratedPool(t, cfg.maxConns, cfg.logger)
	store := postgres.NewStore(pool, cfg.storeOpts...)
	handler := NewRouter(t, Deps{
		Commands: store,
		Ping:     store.Ping,
		Logger:   cfg.logger,
		Config:   commandapi.Config{CommandTimeout: cfg.commandTimeout},
	})

	srv := httptest.NewUnstartedServer(handler)
	// The limits cmd/jetcqrs gives its http.Server.
	srv.Config.ReadHeaderTimeout = 5 * time.Second
	srv.Config.ReadTimeout = 30 * time.Second
	srv.Config.WriteTimeout = cfg.commandTimeout + 10*time.Second
	srv.Config.IdleTimeout = 2 * time.Minute
	srv.Config.MaxHeaderBytes = 64 << 10
	srv.Config.ErrorLog = slog.NewLogLogger(cfg.logger.Handler(), slog.LevelWarn)
	srv.Start()
	t.Cleanup(srv.Close)

	client := srv.Client()
	if tr, ok := client.Transport.(*http.Transport); ok {
		tr.MaxIdleConnsPerHost = 64
	}
	return &Env{URL: srv.URL, Handler: handler, Pool: pool, Store: store, Client: client}
}

// MigratedPool creates a database (testenv.PostgresURL), migrates it with
// postgres.Migrate and returns a pool of at most maxConns connections on it,
// closed when the test ends (before the database is dropped).
func MigratedPool(t testing.TB, maxConns int32, logger *slog.Logger) *pgxpool.Pool {
	t.Helper()
	url := testenv.PostgresURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := postgres.Migrate(ctx, url, logger); err != nil {
		t.Fatalf("apitest: migrate %s: %v", url, err)
	}
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	pcfg.MaxConns = maxConns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatalf("apitest: connect to %s: %v", url, err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Deps are what NewRouter wires. Commands is required; the rest default to
// what cmd/jetcqrs uses (tokens signed with Secret, an always-ready health
// check, an SDK tracer that samples everything, the default command timeout).
type Deps struct {
	Commands commandapi.Commands
	Verifier httpx.Verifier
	Ping     func(context.Context) error
	Tracer   trace.Tracer
	Logger   *slog.Logger
	Config   commandapi.Config
}

// NewRouter returns the router cmd/jetcqrs builds when it runs the command
// API (the relay's admin route aside): panic recovery and metrics middleware,
// problem responses for unknown routes and methods, the command routes,
// /healthz, /readyz with the postgres check, and /metrics. Deps may
// be a fake commandapi.Commands (a fake of the domain's port, not of the
// database) for tests of the HTTP layer alone.
func NewRouter(t testing.TB, d Deps) http.Handler {
	t.Helper()
	if d.Verifier == nil {
		tokens, err := auth.New([]byte(Secret))
		if err != nil {
			t.Fatalf("apitest: %v", err)
		}
		d.Verifier = tokens
	}
	if d.Ping == nil {
		d.Ping = func(context.Context) error { return nil }
	}
	if d.Logger == nil {
		d.Logger = TestLogger(t)
	}
	if d.Tracer == nil {
		tp := sdktrace.NewTracerProvider()
		t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		d.Tracer = tp.Tracer("jetcqrs/commandapi")
	}
	registry := prometheus.NewRegistry()
	metrics, err := httpx.NewMetrics(registry, "http")
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	r := chi.NewRouter()
	r.Use(httpx.Recover(d.Logger), metrics.Middleware)
	r.NotFound(httpx.NotFound)
	r.MethodNotAllowed(httpx.MethodNotAllowed)
	commandapi.New(d.Commands, d.Verifier, d.Tracer, d.Logger, d.Config).Mount(r)
	httpx.Health(r, map[string]func(context.Context) error{"postgres": d.Ping}, d.Logger)
	r.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	return r
}

// TestLogger returns a logger that sends warnings and errors to the test's
// output, so a 500's logged cause shows next to the failure it explains.
func TestLogger(t testing.TB) *slog.Logger { return testlog.New(t, slog.LevelWarn) }

// Token returns a bearer token for sub and role, signed with Secret, valid
// for an hour.
func Token(t testing.TB, sub string, role domain.Role) string {
	t.Helper()
	tokens, err := auth.New([]byte(Secret))
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	tok, err := tokens.Issue(sub, role, tokenTTL)
	if err != nil {
		t.Fatalf("apitest: token for %q (%s): %v", sub, role, err)
	}
	return tok
}

// AdminToken returns a token of the admin "admin".
func AdminToken(t testing.TB) string { return Token(t, "admin", domain.RoleAdmin) }

// CustomerToken returns a token of the customer userID.
func CustomerToken(t testing.TB, userID string) string {
	return Token(t, userID, domain.RoleCustomer)
}

// Request is one HTTP request to the API.
type Request struct {
	Method string
	Path   string
	// Token is sent as "Authorization: Bearer <Token>"; empty sends none.
	Token string
	// Body is sent as is when it is a []byte or a string and JSON-encoded
	// otherwise; nil sends no body.
	Body any
	// Header is added to the request. A request with a body gets
	// Content-Type: application/json unless Header sets one; set it to ""
	// to send none.
	Header http.Header
}

// Response is the API's answer, read completely.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends req to the server and fails the test on a transport error.
func (e *Env) Do(t testing.TB, req Request) *Response {
	t.Helper()
	resp, err := e.Client.Do(e.NewRequest(t, req))
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read response: %v", req.Method, req.Path, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// DoInProcess serves req with Handler directly, without a connection; use it
// where the network would get in the way (bodies the server stops reading).
func (e *Env) DoInProcess(t testing.TB, req Request) *Response {
	t.Helper()
	return Serve(t, e.Handler, e.NewRequest(t, req))
}

// Serve runs r through h in process and returns the recorded response.
func Serve(t testing.TB, h http.Handler, r *http.Request) *Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	res := rec.Result()
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read recorded response: %v", err)
	}
	return &Response{Status: res.StatusCode, Header: res.Header, Body: body}
}

// NewRequest builds the *http.Request of req against the server.
func (e *Env) NewRequest(t testing.TB, req Request) *http.Request {
	t.Helper()
	var body io.Reader = http.NoBody
	hasBody := true
	switch b := req.Body.(type) {
	case nil:
		hasBody = false
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode request body: %v", err)
		}
		body = bytes.NewReader(enc)
	}
	r, err := http.NewRequest(req.Method, e.URL+req.Path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.Path, err)
	}
	if hasBody {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range req.Header {
		r.Header.Del(k)
		for _, v := range vs {
			if v != "" {
				r.Header.Add(k, v)
			}
		}
	}
	if req.Token != "" {
		r.Header.Set("Authorization", "Bearer "+req.Token)
	}
	return r
}

// JSON decodes the response body into v, failing the test unless the
// response is application/json and decodes.
func (r *Response) JSON(t testing.TB, v any) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type = %q, want application/json; status %d, body %s", ct, r.Status, r.Body)
	}
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Problem decodes the response as an RFC 9457 problem, failing the test
// unless it is application/problem+json whose status member equals the HTTP
// status and whose type, title, detail and code are all present.
func (r *Response) Problem(t testing.TB) httpx.Problem {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json; status %d, body %s", ct, r.Status, r.Body)
	}
	var p httpx.Problem
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("decode problem %s: %v", r.Body, err)
	}
	if p.Status != r.Status || p.Type == "" || p.Title == "" || p.Detail == "" || p.Code == "" {
		t.Fatalf("incomplete problem for status %d: %s", r.Status, r.Body)
	}
	return p
}

// WantProblem fails the test unless the response is a problem with status
// and code, and returns it.
func (r *Response) WantProblem(t testing.TB, status int, code domain.Code) httpx.Problem {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d (%s); body %s", r.Status, status, code, r.Body)
	}
	p := r.Problem(t)
	if p.Code != code {
		t.Fatalf("code = %q, want %q; body %s", p.Code, code, r.Body)
	}
	return p
}

// WantStatus fails the test unless the response has status.
func (r *Response) WantStatus(t testing.TB, status int) *Response {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body %s", r.Status, status, r.Body)
	}
	return r
}
