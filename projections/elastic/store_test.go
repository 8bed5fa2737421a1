package elasticstore

// These tests run the store against an httptest server standing in for
// Elasticsearch: they pin the exact requests the store sends and check that it
// reads responses shaped like Elasticsearch 8's. They do not show that
// Elasticsearch accepts the requests or answers that way; the contract suite
// in contract_test.go does, against a real cluster.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/elastic/go-elasticsearch/v8"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// request is one request the fake received.
type request struct {
	Method, Path string
	Query        url.Values
	Header       http.Header
	Body         []byte
}

// reply answers a request with a status and a JSON body.
type reply func(r request) (int, string)

func fixed(status int, body string) reply {
	return func(request) (int, string) { return status, body }
}

// fakeES answers the requests it has a route for ("METHOD /path") and fails
// the test on any other.
type fakeES struct {
	t      *testing.T
	routes map[string]reply

	mu   sync.Mutex
	reqs []request
}

func newFake(t *testing.T, routes map[string]reply) (*fakeES, *elasticsearch.Client) {
	t.Helper()
	f := &fakeES{t: t, routes: routes}
	srv := httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(srv.Close)
	client, err := elasticsearch.NewClient(elasticsearch.Config{
		Addresses:    []string{srv.URL},
		DisableRetry: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f, client
}

func (f *fakeES) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := request{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()

	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	w.Header().Set("Content-Type", "application/json")
	route, ok := f.routes[r.Method+" "+r.URL.Path]
	if !ok {
		f.t.Errorf("unexpected request %s %s?%s", r.Method, r.URL.Path, r.URL.RawQuery)
		w.WriteHeader(http.StatusNotImplemented)
		return
	}
	status, out := route(req)
	w.WriteHeader(status)
	_, _ = io.WriteString(w, out)
}

func (f *fakeES) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

// routesOf lists the requests as "METHOD /path".
func (f *fakeES) routesOf() []string {
	var out []string
	for _, r := range f.requests() {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

func newTestStore(t *testing.T, client *elasticsearch.Client, mutate func(*Config)) *CatalogStore {
	t.Helper()
	cfg := DefaultConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// wantJSON fails unless got and want hold the same JSON value.
func wantJSON(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", what, err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("%s: bad expectation: %v", what, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("%s\n got %s\nwant %s", what, got, compact(t, want))
	}
}

func compact(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func wantRoutes(t *testing.T, f *fakeES, want ...string) {
	t.Helper()
	if got := f.routesOf(); !reflect.DeepEqual(got, want) && (len(got) != 0 || len(want) != 0) {
		t.Errorf("requests = %q; want %q", got, want)
	}
}

var at = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func productEnvelope(t *testing.T, seq uint64, p domain.ProductSnapshot) projections.Envelope {
	t.Helper()
	payload, err := json.Marshal(domain.ProductUpdated{ProductSnapshot: p, Changed: []string{"name"}})
	if err != nil {
		t.Fatal(err)
	}
	return projections.Envelope{
		Seq: seq, AggregateType: domain.AggregateProduct, AggregateID: p.SKU, AggregateVersion: p.Version,
		EventType: domain.EventProductUpdated, SchemaVersion: 1, OccurredAt: at, Payload: payload,
	}
}

func stockEnvelope(t *testing.T, seq uint64, sku string, available, version int64) projections.Envelope {
	t.Helper()
	payload, err := json.Marshal(domain.InventoryAdjusted{
		InventoryLevels: domain.InventoryLevels{SKU: sku, OnHand: available, Available: available, Version: version},
		Delta:           available, Reason: "count",
	})
	if err != nil {
		t.Fatal(err)
	}
	return projections.Envelope{
		Seq: seq, AggregateType: domain.AggregateInventory, AggregateID: sku, AggregateVersion: version,
		EventType: domain.EventInventoryAdjusted, SchemaVersion: 1, OccurredAt: at, Payload: payload,
	}
}

func lantern(version int64) domain.ProductSnapshot {
	return domain.ProductSnapshot{
		SKU: "A-100", Name: "Trail Lantern", Description: "Rechargeable camping light", Category: "outdoor",
		PriceCents: 2500, Attributes: map[string]string{"color": "green"}, Version: version, CreatedAt: at, UpdatedAt: at,
	}
}

// storedLantern is A-100 as stored after product seq 1 (version 1).
const storedLantern = `{"sku":"A-100","has_product":true,"name":"Lantern","description":"Rechargeable camping light",` +
	`"category":"outdoor","price_cents":2000,"version":1,"in_stock":false,"inventory_version":0,"product_seq":1,"inventory_seq":0}`

// mgetReply answers an _mget with the stored documents it is given (by id)
// and found:false for the others, as Elasticsearch does.
func mgetReply(t *testing.T, index string, stored map[string]string) reply {
	return func(r request) (int, string) {
		var body struct{ IDs []string }
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Errorf("mget body: %v", err)
		}
		var docs []string
		for _, id := range body.IDs {
			if src, ok := stored[id]; ok {
				docs = append(docs, `{"_index":"`+index+`","_id":"`+id+`","_version":7,"_seq_no":4,"_primary_term":1,"found":true,"_source":`+src+`}`)
			} else {
				docs = append(docs, `{"_index":"`+index+`","_id":"`+id+`","found":false}`)
			}
		}
		return 200, `{"docs":[` + strings.Join(docs, ",") + `]}`
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		field  string
	}{
		{"defaults", func(*Config) {}, ""},
		{"wait_for", func(c *Config) { c.Refresh = "wait_for" }, ""},
		{"no replicas", func(c *Config) { c.Replicas = 0 }, ""},
		{"upper-case alias", func(c *Config) { c.Alias = "Catalog" }, "Alias"},
		{"empty alias", func(c *Config) { c.Alias = "" }, "Alias"},
		{"alias with a wildcard", func(c *Config) { c.Alias = "catalog*" }, "Alias"},
		{"alias starting with _", func(c *Config) { c.Alias = "_catalog" }, "Alias"},
		{"generation 0", func(c *Config) { c.Generation = 0 }, "Generation"},
		{"no shards", func(c *Config) { c.Shards = 0 }, "Shards"},
		{"negative replicas", func(c *Config) { c.Replicas = -1 }, "Replicas"},
		{"bad refresh", func(c *Config) { c.Refresh = "always" }, "Refresh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			tc.mutate(&cfg)
			err := cfg.Validate()
			switch {
			case tc.field == "" && err != nil:
				t.Errorf("Validate() = %v; want nil", err)
			case tc.field != "" && (err == nil || !strings.Contains(err.Error(), tc.field)):
				t.Errorf("Validate() = %v; want an error naming %s", err, tc.field)
			}
		})
	}
}

func TestEnsureIndexCreatesIndexWithExplicitMapping(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"PUT /jetcqrs-catalog-g3": fixed(200, `{"acknowledged":true,"shards_acknowledged":true,"index":"jetcqrs-catalog-g3"}`),
	})
	s := newTestStore(t, client, func(c *Config) { c.Generation, c.Shards, c.Replicas = 3, 2, 1 })
	if err := s.EnsureIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, f, "PUT /jetcqrs-catalog-g3")
	wantJSON(t, "create index body", f.requests()[0].Body, `{
		"settings": {"number_of_shards": 2, "number_of_replicas": 1},
		"mappings": {
			"dynamic": "strict",
			"_meta": {"jetcqrs_catalog_schema": "2"},
			"properties": {
				"sku":               {"type": "keyword"},
				"has_product":       {"type": "boolean"},
				"name":              {"type": "text", "analyzer": "english"},
				"description":       {"type": "text", "analyzer": "english"},
				"category":          {"type": "keyword"},
				"price_cents":       {"type": "long"},
				"in_stock":          {"type": "boolean"},
				"attributes":        {"type": "object", "enabled": false},
				"version":           {"type": "long", "index": false},
				"inventory_version": {"type": "long", "index": false},
				"product_seq":       {"type": "long", "index": false},
				"inventory_seq":     {"type": "long", "index": false}
			}
		}
	}`)
}

const alreadyExists = `{"error":{"root_cause":[{"type":"resource_already_exists_exception",` +
	`"reason":"index [jetcqrs-catalog-g1/Yj6rYq5lQ4CKmXJ0m9LZ1w] already exists","index_uuid":"Yj6rYq5lQ4CKmXJ0m9LZ1w","index":"jetcqrs-catalog-g1"}],` +
	`"type":"resource_already_exists_exception","reason":"index [jetcqrs-catalog-g1/Yj6rYq5lQ4CKmXJ0m9LZ1w] already exists",` +
	`"index_uuid":"Yj6rYq5lQ4CKmXJ0m9LZ1w","index":"jetcqrs-catalog-g1"},"status":400}`

func TestEnsureIndexAcceptsExistingIndexOfSameSchema(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, meta string
		wantErr    error
	}{
		{"same schema", `{"jetcqrs_catalog_schema":"2"}`, nil},
		{"other schema", `{"jetcqrs_catalog_schema":"1"}`, ErrSchemaMismatch},
		{"no schema", `{}`, ErrSchemaMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, client := newFake(t, map[string]reply{
				"PUT /jetcqrs-catalog-g1": fixed(400, alreadyExists),
				"GET /jetcqrs-catalog-g1/_mapping": fixed(200, `{"jetcqrs-catalog-g1":{"mappings":{"dynamic":"strict","_meta":`+tc.meta+
					`,"properties":{"sku":{"type":"keyword"}}}}}`),
			})
			err := newTestStore(t, client, nil).EnsureIndex(t.Context())
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Errorf("EnsureIndex = %v; want %v", err, tc.wantErr)
			}
			wantRoutes(t, f, "PUT /jetcqrs-catalog-g1", "GET /jetcqrs-catalog-g1/_mapping")
		})
	}
}

func TestEnsureIndexReportsOtherErrors(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"PUT /jetcqrs-catalog-g1": fixed(403, `{"error":{"root_cause":[{"type":"security_exception","reason":"action [indices:admin/create] is unauthorized"}],`+
			`"type":"security_exception","reason":"action [indices:admin/create] is unauthorized"},"status":403}`),
	})
	err := newTestStore(t, client, nil).EnsureIndex(t.Context())
	var esErr *Error
	if !errors.As(err, &esErr) || esErr.Status != 403 || esErr.Type != "security_exception" {
		t.Errorf("EnsureIndex = %v; want the security_exception", err)
	}
	wantRoutes(t, f, "PUT /jetcqrs-catalog-g1")
}

func TestSwapAlias(t *testing.T) {
	t.Parallel()
	const missing = `{"error":"alias [jetcqrs-catalog] missing","status":404}`
	for _, tc := range []struct {
		name       string
		current    reply
		wantBody   string // "" when no _aliases request is expected
		aliasReply reply
		wantErr    bool
	}{
		{
			name:     "from generation 1",
			current:  fixed(200, `{"jetcqrs-catalog-g1":{"aliases":{"jetcqrs-catalog":{}}}}`),
			wantBody: `{"actions":[{"remove":{"index":"jetcqrs-catalog-g1","alias":"jetcqrs-catalog","must_exist":true}},{"add":{"index":"jetcqrs-catalog-g2","alias":"jetcqrs-catalog"}}]}`,
		},
		{
			name:     "first time",
			current:  fixed(404, missing),
			wantBody: `{"actions":[{"add":{"index":"jetcqrs-catalog-g2","alias":"jetcqrs-catalog"}}]}`,
		},
		{
			name: "from two generations, one of them the target",
			current: fixed(200, `{"jetcqrs-catalog-g2":{"aliases":{"jetcqrs-catalog":{}}},`+
				`"jetcqrs-catalog-g1":{"aliases":{"jetcqrs-catalog":{}}}}`),
			wantBody: `{"actions":[{"remove":{"index":"jetcqrs-catalog-g1","alias":"jetcqrs-catalog","must_exist":true}},{"add":{"index":"jetcqrs-catalog-g2","alias":"jetcqrs-catalog"}}]}`,
		},
		{
			name:    "already there",
			current: fixed(200, `{"jetcqrs-catalog-g2":{"aliases":{"jetcqrs-catalog":{}}}}`),
		},
		{
			name:     "target index missing",
			current:  fixed(200, `{"jetcqrs-catalog-g1":{"aliases":{"jetcqrs-catalog":{}}}}`),
			wantBody: `{"actions":[{"remove":{"index":"jetcqrs-catalog-g1","alias":"jetcqrs-catalog","must_exist":true}},{"add":{"index":"jetcqrs-catalog-g2","alias":"jetcqrs-catalog"}}]}`,
			aliasReply: fixed(404, `{"error":{"root_cause":[{"type":"index_not_found_exception","reason":"no such index [jetcqrs-catalog-g2]"}],`+
				`"type":"index_not_found_exception","reason":"no such index [jetcqrs-catalog-g2]","index":"jetcqrs-catalog-g2"},"status":404}`),
			wantErr: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			aliasReply := tc.aliasReply
			if aliasReply == nil {
				aliasReply = fixed(200, `{"acknowledged":true,"errors":false}`)
			}
			f, client := newFake(t, map[string]reply{
				"GET /_alias/jetcqrs-catalog": tc.current,
				"POST /_aliases":              aliasReply,
			})
			err := newTestStore(t, client, nil).SwapAlias(t.Context(), 2)
			if (err != nil) != tc.wantErr {
				t.Fatalf("SwapAlias(2) = %v; want error: %t", err, tc.wantErr)
			}
			if tc.wantBody == "" {
				wantRoutes(t, f, "GET /_alias/jetcqrs-catalog")
				return
			}
			wantRoutes(t, f, "GET /_alias/jetcqrs-catalog", "POST /_aliases")
			wantJSON(t, "_aliases body", f.requests()[1].Body, tc.wantBody)
		})
	}
}

func TestDropGeneration(t *testing.T) {
	t.Parallel()
	current := fixed(200, `{"jetcqrs-catalog-g2":{"aliases":{"jetcqrs-catalog":{}}}}`)
	notFound := `{"error":{"root_cause":[{"type":"index_not_found_exception","reason":"no such index [jetcqrs-catalog-g1]"}],` +
		`"type":"index_not_found_exception","reason":"no such index [jetcqrs-catalog-g1]","index":"jetcqrs-catalog-g1"},"status":404}`

	t.Run("refuses the generation readers use", func(t *testing.T) {
		t.Parallel()
		f, client := newFake(t, map[string]reply{"GET /_alias/jetcqrs-catalog": current})
		if err := newTestStore(t, client, nil).DropGeneration(t.Context(), 2); err == nil {
			t.Error("DropGeneration(2) of the aliased generation succeeded")
		}
		wantRoutes(t, f, "GET /_alias/jetcqrs-catalog")
	})
	for name, del := range map[string]reply{
		"deletes an old generation": fixed(200, `{"acknowledged":true}`),
		"an absent one is gone":     fixed(404, notFound),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f, client := newFake(t, map[string]reply{"GET /_alias/jetcqrs-catalog": current, "DELETE /jetcqrs-catalog-g1": del})
			if err := newTestStore(t, client, nil).DropGeneration(t.Context(), 1); err != nil {
				t.Errorf("DropGeneration(1) = %v", err)
			}
			wantRoutes(t, f, "GET /_alias/jetcqrs-catalog", "DELETE /jetcqrs-catalog-g1")
		})
	}
}

// TestApplyRequests pins the two requests of an Apply: the _mget of the
// batch's documents and the _bulk of the changed ones, each written on the
// condition that it is still the document read (created if none was).
func TestApplyRequests(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", map[string]string{"A-100": storedLantern}),
		"POST /jetcqrs-catalog-g1/_bulk": fixed(200, `{"errors":false,"items":[{"index":{"_id":"A-100","status":200}},{"create":{"_id":"B-100","status":201}}]}`),
	})
	s := newTestStore(t, client, func(c *Config) { c.Refresh = "wait_for" })
	order := projections.Envelope{
		Seq: 11, AggregateType: domain.AggregateOrder, AggregateID: "5f0c6f8e-8a43-4a5e-9d7c-0d7b1d1d1b11",
		EventType: domain.EventOrderPlaced, SchemaVersion: 1, Payload: json.RawMessage(`{}`),
	}
	err := s.Apply(t.Context(), []projections.Envelope{
		productEnvelope(t, 9, lantern(2)),
		stockEnvelope(t, 10, "B-100", 7, 2), // inventory before any product event: stored, hidden
		order,                               // not the catalog's
		productEnvelope(t, 5, lantern(1)),   // stale: version 2 is applied
		stockEnvelope(t, 12, "A-100", 4, 3),
	})
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, f, "POST /jetcqrs-catalog-g1/_mget", "POST /jetcqrs-catalog-g1/_bulk")
	reqs := f.requests()
	wantJSON(t, "mget body", reqs[0].Body, `{"ids":["A-100","B-100"]}`)
	if got := reqs[0].Query.Encode(); got != "" {
		t.Errorf("mget query = %q; want none (realtime, whole source)", got)
	}

	bulk := reqs[1]
	if got, want := bulk.Query.Get("refresh"), "wait_for"; got != want {
		t.Errorf("bulk refresh = %q; want %q", got, want)
	}
	if got, want := bulk.Query.Get("filter_path"), "errors,items.*._id,items.*.status,items.*.error"; got != want {
		t.Errorf("bulk filter_path = %q; want %q", got, want)
	}
	if got := bulk.Header.Get("Content-Type"); got != "application/x-ndjson" {
		t.Errorf("bulk Content-Type = %q; want application/x-ndjson", got)
	}
	wantBody := `{"index":{"_id":"A-100","if_seq_no":4,"if_primary_term":1}}
{"sku":"A-100","has_product":true,"name":"Trail Lantern","description":"Rechargeable camping light","category":"outdoor","price_cents":2500,"attributes":{"color":"green"},"version":2,"in_stock":true,"inventory_version":3,"product_seq":9,"inventory_seq":12}
{"create":{"_id":"B-100"}}
{"sku":"B-100","has_product":false,"name":"","description":"","category":"","price_cents":0,"version":0,"in_stock":true,"inventory_version":2,"product_seq":0,"inventory_seq":10}
`
	if string(bulk.Body) != wantBody {
		t.Errorf("bulk body\n got %s\nwant %s", bulk.Body, wantBody)
	}
}

func TestApplyWithoutRefreshSendsNone(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", nil),
		"POST /jetcqrs-catalog-g1/_bulk": fixed(200, `{"errors":false,"items":[{"index":{"_id":"A-100","status":201}}]}`),
	})
	if err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{productEnvelope(t, 1, lantern(1))}); err != nil {
		t.Fatal(err)
	}
	if q := f.requests()[1].Query; q.Has("refresh") {
		t.Errorf("bulk query %v has refresh; want none by default", q)
	}
}

// A document written by someone else between the _mget and the _bulk is a
// version conflict: its events are applied again to the document as it now
// is, and written on the condition of that read.
func TestApplyRetriesAVersionConflict(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	mgets := 0
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": func(r request) (int, string) {
			mu.Lock()
			mgets++
			n := mgets
			mu.Unlock()
			if n == 1 {
				return mgetReply(t, "jetcqrs-catalog-g1", nil)(r)
			}
			return mgetReply(t, "jetcqrs-catalog-g1", map[string]string{"A-100": storedLantern})(r)
		},
		"POST /jetcqrs-catalog-g1/_bulk": func(r request) (int, string) {
			if strings.Contains(string(r.Body), `"create":{"_id":"A-100"}`) {
				return 200, `{"errors":true,"items":[` +
					`{"create":{"_id":"A-100","status":409,"error":{"type":"version_conflict_engine_exception",` +
					`"reason":"[A-100]: version conflict, document already exists (current version [1])"}}},` +
					`{"create":{"_id":"B-100","status":201}}]}`
			}
			return 200, `{"errors":false,"items":[{"index":{"_id":"A-100","status":200}}]}`
		},
	})
	err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{
		productEnvelope(t, 9, lantern(2)), stockEnvelope(t, 10, "B-100", 7, 2),
	})
	if err != nil {
		t.Fatalf("Apply with a 409 item = %v; want nil once written again", err)
	}
	wantRoutes(t, f, "POST /jetcqrs-catalog-g1/_mget", "POST /jetcqrs-catalog-g1/_bulk",
		"POST /jetcqrs-catalog-g1/_mget", "POST /jetcqrs-catalog-g1/_bulk")
	reqs := f.requests()
	wantJSON(t, "second mget body", reqs[2].Body, `{"ids":["A-100"]}`)
	if !strings.HasPrefix(string(reqs[3].Body), `{"index":{"_id":"A-100","if_seq_no":4,"if_primary_term":1}}`) ||
		strings.Contains(string(reqs[3].Body), "B-100") {
		t.Errorf("second bulk body = %s; want A-100 alone, on the condition of the second read", reqs[3].Body)
	}
}

// A document that keeps changing under the write fails the batch, which the
// runtime retries as an outage, not a rejection.
func TestApplyGivesUpOnEndlessConflicts(t *testing.T) {
	t.Parallel()
	_, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", nil),
		"POST /jetcqrs-catalog-g1/_bulk": fixed(200, `{"errors":true,"items":[`+
			`{"create":{"_id":"A-100","status":409,"error":{"type":"version_conflict_engine_exception","reason":"document already exists"}}}]}`),
	})
	err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{productEnvelope(t, 9, lantern(2))})
	if err == nil || errors.Is(err, projections.ErrRejected) || !strings.Contains(err.Error(), "A-100") {
		t.Fatalf("Apply = %v; want an error naming A-100 that is not a rejection", err)
	}
}

// A cluster that refuses writes for a while (a read-only block after the
// disk watermark, a closed index) is an outage, whatever its 4xx status:
// only a document the mapping refuses is rejected.
func TestApplyClusterBlocksAreNotRejections(t *testing.T) {
	t.Parallel()
	_, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", nil),
		"POST /jetcqrs-catalog-g1/_bulk": fixed(200, `{"errors":true,"items":[`+
			`{"create":{"_id":"A-100","status":403,"error":{"type":"cluster_block_exception","reason":"index [jetcqrs-catalog-g1] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];"}}}]}`),
	})
	err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{productEnvelope(t, 9, lantern(2))})
	if err == nil || errors.Is(err, projections.ErrRejected) {
		t.Fatalf("Apply under a cluster block = %v; want an error that is not a rejection", err)
	}
	if got := projections.StoreReply(err); got != "cluster_block_exception" {
		t.Errorf("StoreReply = %q; want cluster_block_exception", got)
	}
}

func TestApplyBulkItemErrorsFail(t *testing.T) {
	t.Parallel()
	_, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", nil),
		"POST /jetcqrs-catalog-g1/_bulk": fixed(200, `{"errors":true,"items":[`+
			`{"index":{"_id":"A-100","status":409,"error":{"type":"version_conflict_engine_exception","reason":"[A-100]: version conflict, current version [14] is higher or equal to the one provided [9]"}}},`+
			`{"index":{"_id":"B-100","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of primary operation [coordinating_and_primary_bytes=0, replica_bytes=0, all_bytes=0, primary_operation_bytes=412, max_coordinating_and_primary_bytes=107374182]"}}},`+
			`{"index":{"_id":"C-100","status":400,"error":{"type":"document_parsing_exception","reason":"[1:232] mapping set to strict, dynamic introduction of [colour] within [_doc] is not allowed"}}}]}`),
	})
	err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{
		productEnvelope(t, 9, lantern(2)), stockEnvelope(t, 10, "B-100", 7, 2), stockEnvelope(t, 11, "C-100", 1, 1),
	})
	if err == nil {
		t.Fatal("Apply with failed bulk items = nil")
	}
	var esErr *Error
	if !errors.As(err, &esErr) || esErr.Op != "index B-100" || esErr.Status != 429 || esErr.Type != "es_rejected_execution_exception" {
		t.Errorf("Apply = %v; want the B-100 rejection first", err)
	}
	for _, want := range []string{"2 of 3", "C-100", "document_parsing_exception"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Apply error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "A-100") {
		t.Errorf("Apply error %q reports the 409 of A-100, which is not a failure", err)
	}
	if !errors.Is(err, projections.ErrRejected) {
		t.Errorf("Apply error %q: the 400 of C-100 makes the batch one the store rejects", err)
	}
}

// Back-pressure (429) alone is a passing state: the batch is retried whole.
func TestApplyBulkBackPressureIsNotARejection(t *testing.T) {
	t.Parallel()
	_, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", nil),
		"POST /jetcqrs-catalog-g1/_bulk": fixed(200, `{"errors":true,"items":[`+
			`{"index":{"_id":"B-100","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution"}}}]}`),
	})
	err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{stockEnvelope(t, 10, "B-100", 7, 2)})
	if err == nil || errors.Is(err, projections.ErrRejected) {
		t.Fatalf("Apply under back-pressure = %v, want an error that is not a rejection", err)
	}
}

func TestApplyBulkRequestFails(t *testing.T) {
	t.Parallel()
	for name, bulk := range map[string]reply{
		"HTTP error":                  fixed(413, `{"error":{"root_cause":[{"type":"illegal_argument_exception","reason":"request body too large"}],"type":"illegal_argument_exception","reason":"request body too large"},"status":413}`),
		"fewer items than operations": fixed(200, `{"errors":false,"items":[]}`),
		"not JSON":                    fixed(200, `<html>proxy error</html>`),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, client := newFake(t, map[string]reply{
				"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", nil),
				"POST /jetcqrs-catalog-g1/_bulk": bulk,
			})
			if err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{productEnvelope(t, 1, lantern(1))}); err == nil {
				t.Error("Apply = nil")
			}
		})
	}
}

func TestApplyWritesNothingWhenEverythingIsApplied(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", map[string]string{
			"A-100": strings.Replace(storedLantern, `"inventory_version":0`, `"inventory_version":1`, 1),
		}),
	})
	err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{
		productEnvelope(t, 1, lantern(1)), stockEnvelope(t, 4, "A-100", 3, 1), stockEnvelope(t, 2, "A-100", 1, 1),
	})
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, f, "POST /jetcqrs-catalog-g1/_mget")
}

// TestApplyWritesNoStockChangeThatFlipsNothing: newer stock events that
// leave a SKU in stock (or out of it) send no write; the catalog keeps only
// the flag.
func TestApplyWritesNoStockChangeThatFlipsNothing(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", map[string]string{
			"A-100": strings.Replace(storedLantern, `"in_stock":false,"inventory_version":0`, `"in_stock":true,"inventory_version":1`, 1),
		}),
	})
	err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{
		stockEnvelope(t, 4, "A-100", 3, 2), stockEnvelope(t, 5, "A-100", 9, 3), stockEnvelope(t, 6, "B-100", 0, 1),
	})
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, f, "POST /jetcqrs-catalog-g1/_mget")
}

func TestApplyPoisonSendsNothing(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, nil)
	bad := productEnvelope(t, 2, lantern(2))
	bad.Payload = json.RawMessage(`{"sku":`)
	err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{productEnvelope(t, 1, lantern(1)), bad})
	var pe *projections.PoisonError
	if !errors.As(err, &pe) || pe.Seq != 2 {
		t.Errorf("Apply = %v; want a *PoisonError for seq 2", err)
	}
	wantRoutes(t, f)
}

// Each part of a document has its own version: an inventory event applies
// when its inventory version is new, however far the product's sequence is
// ahead of its own.
func TestApplyGuardsEachPartByItsOwnVersion(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog-g1/_mget": mgetReply(t, "jetcqrs-catalog-g1", map[string]string{
			"A-100": strings.Replace(storedLantern, `"product_seq":1`, `"product_seq":12`, 1),
		}),
		"POST /jetcqrs-catalog-g1/_bulk": fixed(200, `{"errors":false,"items":[{"index":{"_id":"A-100","status":200}}]}`),
	})
	err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{
		stockEnvelope(t, 8, "A-100", 3, 1),
		productEnvelope(t, 13, lantern(1)), // the product's version 1, re-published: nothing
	})
	if err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, f, "POST /jetcqrs-catalog-g1/_mget", "POST /jetcqrs-catalog-g1/_bulk")
	want := `{"index":{"_id":"A-100","if_seq_no":4,"if_primary_term":1}}
{"sku":"A-100","has_product":true,"name":"Lantern","description":"Rechargeable camping light","category":"outdoor","price_cents":2000,"version":1,"in_stock":true,"inventory_version":1,"product_seq":12,"inventory_seq":8}
`
	if got := string(f.requests()[1].Body); got != want {
		t.Errorf("bulk body\n got %s\nwant %s", got, want)
	}
}

func TestApplyMgetFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		mget     reply
		wantType string
	}{
		{"index missing", fixed(404, `{"error":{"root_cause":[{"type":"index_not_found_exception","reason":"no such index [jetcqrs-catalog-g1]",`+
			`"resource.type":"index_or_alias","resource.id":"jetcqrs-catalog-g1","index_uuid":"_na_","index":"jetcqrs-catalog-g1"}],`+
			`"type":"index_not_found_exception","reason":"no such index [jetcqrs-catalog-g1]","resource.type":"index_or_alias",`+
			`"resource.id":"jetcqrs-catalog-g1","index_uuid":"_na_","index":"jetcqrs-catalog-g1"},"status":404}`), "index_not_found_exception"},
		{"a document fails", fixed(200, `{"docs":[{"_index":"jetcqrs-catalog-g1","_id":"A-100","error":{"root_cause":[{"type":"no_shard_available_action_exception","reason":"No shard available"}],`+
			`"type":"no_shard_available_action_exception","reason":"No shard available"}}]}`), "no_shard_available_action_exception"},
		{"cluster unavailable", fixed(503, `{"error":{"root_cause":[{"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];"}],`+
			`"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];"},"status":503}`), "cluster_block_exception"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, client := newFake(t, map[string]reply{"POST /jetcqrs-catalog-g1/_mget": tc.mget})
			err := newTestStore(t, client, nil).Apply(t.Context(), []projections.Envelope{productEnvelope(t, 1, lantern(1))})
			var esErr *Error
			if !errors.As(err, &esErr) || esErr.Type != tc.wantType {
				t.Errorf("Apply = %v; want an *Error of type %s", err, tc.wantType)
			}
			wantRoutes(t, f, "POST /jetcqrs-catalog-g1/_mget")
		})
	}
}

func TestProductReadsTheAlias(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog/_mget": mgetReply(t, "jetcqrs-catalog-g2", map[string]string{
			"A-100": storedLantern,
			"B-100": `{"sku":"B-100","has_product":false,"name":"","description":"","category":"","price_cents":0,"version":0,` +
				`"in_stock":true,"inventory_version":2,"product_seq":0,"inventory_seq":10}`,
		}),
	})
	s := newTestStore(t, client, func(c *Config) { c.Generation = 3 }) // writes g3; reads whatever the alias shows
	got, err := s.Product(t.Context(), "A-100")
	want := projections.ProductView{SKU: "A-100", Name: "Lantern", Description: "Rechargeable camping light", Category: "outdoor", PriceCents: 2000, Version: 1}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Product(A-100) = %+v, %v; want %+v", got, err, want)
	}
	for _, sku := range []string{"B-100", "C-100"} {
		if _, err := s.Product(t.Context(), sku); !errors.Is(err, projections.ErrNotFound) {
			t.Errorf("Product(%s) err = %v; want ErrNotFound", sku, err)
		}
	}
	wantJSON(t, "mget body", f.requests()[0].Body, `{"ids":["A-100"]}`)
}

func TestAppliedVersion(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog/_mget": mgetReply(t, "jetcqrs-catalog-g1", map[string]string{
			"A-100": `{"has_product":true,"version":4,"inventory_version":9}`,
			"B-100": `{"has_product":false,"version":0,"inventory_version":2}`,
		}),
	})
	s := newTestStore(t, client, nil)
	for _, tc := range []struct {
		typ, id string
		want    int64
	}{
		{domain.AggregateProduct, "A-100", 4},
		{domain.AggregateInventory, "A-100", 9},
		{domain.AggregateProduct, "B-100", 0},
		{domain.AggregateInventory, "B-100", 2},
		{domain.AggregateProduct, "C-100", 0},
	} {
		if got, err := s.AppliedVersion(t.Context(), tc.typ, tc.id); err != nil || got != tc.want {
			t.Errorf("AppliedVersion(%s, %s) = %d, %v; want %d", tc.typ, tc.id, got, err, tc.want)
		}
	}
	if got := f.requests()[0].Query.Get("_source_includes"); got != "has_product,version,inventory_version" {
		t.Errorf("_source_includes = %q", got)
	}
	n := len(f.requests())
	if _, err := s.AppliedVersion(t.Context(), domain.AggregateOrder, "5f0c6f8e-8a43-4a5e-9d7c-0d7b1d1d1b11"); err == nil {
		t.Error("AppliedVersion(order, …) = nil error")
	}
	if len(f.requests()) != n {
		t.Error("AppliedVersion(order, …) sent a request")
	}
}

// TestInStockReadsTheFlag: the flag comes from a realtime read of the alias
// that fetches only in_stock; a SKU without a document is not in stock.
func TestInStockReadsTheFlag(t *testing.T) {
	t.Parallel()
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog/_mget": mgetReply(t, "jetcqrs-catalog-g1", map[string]string{
			"A-100": `{"in_stock":true}`,
			"B-100": `{"in_stock":false}`,
		}),
	})
	s := newTestStore(t, client, nil)
	for sku, want := range map[string]bool{"A-100": true, "B-100": false, "C-100": false} {
		if got, err := s.InStock(t.Context(), sku); err != nil || got != want {
			t.Errorf("InStock(%s) = %t, %v; want %t", sku, got, err, want)
		}
	}
	for _, r := range f.requests() {
		if got := r.Query.Get("_source_includes"); got != "in_stock" {
			t.Errorf("_source_includes = %q; want in_stock", got)
		}
		if got := r.Query.Get("realtime"); got == "false" {
			t.Errorf("realtime = %q; want a realtime read", got)
		}
	}
}

func TestSearchRequestBody(t *testing.T) {
	t.Parallel()
	cents := func(v int64) *int64 { return &v }
	aggs := `"aggs": {
		"category": {"terms": {"field": "category", "size": 10000, "order": [{"_count": "desc"}, {"_key": "asc"}]}},
		"price": {"range": {"field": "price_cents", "ranges": [
			{"key": "0-999", "from": 0, "to": 1000},
			{"key": "1000-4999", "from": 1000, "to": 5000},
			{"key": "5000-9999", "from": 5000, "to": 10000},
			{"key": "10000-49999", "from": 10000, "to": 50000},
			{"key": "50000+", "from": 50000}
		]}}
	}`
	for _, tc := range []struct {
		name string
		q    projections.SearchQuery
		want string
	}{
		{
			name: "text and every filter",
			q:    projections.SearchQuery{Q: "camping light", Category: "outdoor", MinPrice: cents(1000), MaxPrice: cents(4999), InStock: true, Limit: 5, Offset: 10},
			want: `{
				"query": {"bool": {
					"must": [{"multi_match": {"query": "camping light", "fields": ["name", "description"], "type": "cross_fields", "operator": "and"}}],
					"filter": [
						{"term": {"has_product": true}},
						{"term": {"category": "outdoor"}},
						{"range": {"price_cents": {"gte": 1000, "lte": 4999}}},
						{"term": {"in_stock": true}}
					]
				}},
				"from": 10, "size": 5,
				"sort": [{"_score": "desc"}, {"sku": "asc"}],
				"track_total_hits": true,
				` + aggs + `
			}`,
		},
		{
			name: "everything, default page",
			q:    projections.SearchQuery{Q: "  ", Offset: -4},
			want: `{
				"query": {"bool": {"filter": [{"term": {"has_product": true}}]}},
				"from": 0, "size": 20,
				"sort": [{"sku": "asc"}],
				"track_total_hits": true,
				` + aggs + `
			}`,
		},
		{
			name: "max price only",
			q:    projections.SearchQuery{MaxPrice: cents(0), Limit: 1},
			want: `{
				"query": {"bool": {"filter": [{"term": {"has_product": true}}, {"range": {"price_cents": {"lte": 0}}}]}},
				"from": 0, "size": 1,
				"sort": [{"sku": "asc"}],
				"track_total_hits": true,
				` + aggs + `
			}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, client := newFake(t, map[string]reply{"POST /jetcqrs-catalog/_search": fixed(200, emptySearch)})
			if _, err := newTestStore(t, client, nil).Search(t.Context(), tc.q); err != nil {
				t.Fatal(err)
			}
			wantRoutes(t, f, "POST /jetcqrs-catalog/_search")
			wantJSON(t, "search body", f.requests()[0].Body, tc.want)
		})
	}
}

const emptySearch = `{"took":1,"timed_out":false,"_shards":{"total":1,"successful":1,"skipped":0,"failed":0},` +
	`"hits":{"total":{"value":0,"relation":"eq"},"max_score":null,"hits":[]},` +
	`"aggregations":{"price":{"buckets":[{"key":"0-999","from":0.0,"to":1000.0,"doc_count":0},` +
	`{"key":"1000-4999","from":1000.0,"to":5000.0,"doc_count":0},{"key":"5000-9999","from":5000.0,"to":10000.0,"doc_count":0},` +
	`{"key":"10000-49999","from":10000.0,"to":50000.0,"doc_count":0},{"key":"50000+","from":50000.0,"doc_count":0}]},` +
	`"category":{"doc_count_error_upper_bound":0,"sum_other_doc_count":0,"buckets":[]}}}`

func TestSearchParsesResponse(t *testing.T) {
	t.Parallel()
	_, client := newFake(t, map[string]reply{"POST /jetcqrs-catalog/_search": fixed(200, `{
		"took": 4, "timed_out": false,
		"_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
		"hits": {
			"total": {"value": 3, "relation": "eq"},
			"max_score": null,
			"hits": [
				{"_index": "jetcqrs-catalog-g1", "_id": "A-100", "_score": 1.89,
				 "_source": {"sku":"A-100","has_product":true,"name":"Trail Lantern","description":"Rechargeable camping light","category":"outdoor",
				             "price_cents":2500,"attributes":{"color":"green"},"version":2,"in_stock":true,"inventory_version":3,"product_seq":9,"inventory_seq":12},
				 "sort": [1.89, "A-100"]},
				{"_index": "jetcqrs-catalog-g1", "_id": "B-200", "_score": 0.74,
				 "_source": {"sku":"B-200","has_product":true,"name":"Cookbook","description":"Recipes for camping","category":"books",
				             "price_cents":1000,"version":1,"in_stock":false,"inventory_version":0,"product_seq":4,"inventory_seq":0},
				 "sort": [0.74, "B-200"]}
			]
		},
		"aggregations": {
			"price": {"buckets": [
				{"key": "0-999", "from": 0.0, "to": 1000.0, "doc_count": 0},
				{"key": "1000-4999", "from": 1000.0, "to": 5000.0, "doc_count": 2},
				{"key": "5000-9999", "from": 5000.0, "to": 10000.0, "doc_count": 1},
				{"key": "10000-49999", "from": 10000.0, "to": 50000.0, "doc_count": 0},
				{"key": "50000+", "from": 50000.0, "doc_count": 0}
			]},
			"category": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": [
				{"key": "outdoor", "doc_count": 2}, {"key": "books", "doc_count": 1}
			]}
		}
	}`)})
	got, err := newTestStore(t, client, nil).Search(t.Context(), projections.SearchQuery{Q: "camping", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := projections.SearchResult{
		Total: 3,
		Hits: []projections.ProductView{
			{SKU: "A-100", Name: "Trail Lantern", Description: "Rechargeable camping light", Category: "outdoor", PriceCents: 2500,
				Attributes: map[string]string{"color": "green"}, InStock: true, Version: 2},
			{SKU: "B-200", Name: "Cookbook", Description: "Recipes for camping", Category: "books", PriceCents: 1000, Version: 1},
		},
		Facets: projections.Facets{
			Category: []projections.FacetCount{{Value: "outdoor", Count: 2}, {Value: "books", Count: 1}},
			Price: []projections.FacetCount{
				{Range: "0-999"}, {Range: "1000-4999", Count: 2}, {Range: "5000-9999", Count: 1}, {Range: "10000-49999"}, {Range: "50000+"},
			},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Search\n got %+v\nwant %+v", got, want)
	}

	_, client = newFake(t, map[string]reply{"POST /jetcqrs-catalog/_search": fixed(200, emptySearch)})
	got, err = newTestStore(t, client, nil).Search(t.Context(), projections.SearchQuery{Q: "nothing"})
	if err != nil || got.Hits == nil || got.Facets.Category == nil || len(got.Facets.Price) != len(projections.PriceRanges) {
		t.Errorf("Search with no match = %+v, %v; want empty, non-nil lists and every price range", got, err)
	}
}

func TestSearchRejectsPartialAnswers(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]string{
		"timed out":       strings.Replace(emptySearch, `"timed_out":false`, `"timed_out":true`, 1),
		"failed shard":    strings.Replace(emptySearch, `"successful":1,"skipped":0,"failed":0`, `"successful":0,"skipped":0,"failed":1`, 1),
		"total not exact": strings.Replace(emptySearch, `"relation":"eq"`, `"relation":"gte"`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, client := newFake(t, map[string]reply{"POST /jetcqrs-catalog/_search": fixed(200, body)})
			if _, err := newTestStore(t, client, nil).Search(t.Context(), projections.SearchQuery{}); err == nil {
				t.Error("Search = nil error")
			}
		})
	}
}

func TestSearchError(t *testing.T) {
	t.Parallel()
	_, client := newFake(t, map[string]reply{"POST /jetcqrs-catalog/_search": fixed(400, `{"error":{"root_cause":[{"type":"query_shard_exception",`+
		`"reason":"failed to create query"}],`+
		`"type":"search_phase_execution_exception","reason":"all shards failed","phase":"query","grouped":true},"status":400}`)})
	_, err := newTestStore(t, client, nil).Search(t.Context(), projections.SearchQuery{Q: "lamp"})
	var esErr *Error
	if !errors.As(err, &esErr) || esErr.Status != 400 || esErr.Type != "search_phase_execution_exception" {
		t.Errorf("Search = %v; want the search_phase_execution_exception", err)
	}
}

// TestSearchWindow pins the page the store asks for at the edge of
// projections.MaxSearchWindow, and that a query past it sends nothing: it is
// the caller's error, never an Elasticsearch 400 "Result window is too
// large" surfacing as a failure of the store.
func TestSearchWindow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name         string
		q            projections.SearchQuery
		from, size   int
		beyondWindow bool
	}{
		{name: "last page of the window", q: projections.SearchQuery{Offset: 9990, Limit: 10}, from: 9990, size: 10},
		{name: "default limit at the edge", q: projections.SearchQuery{Offset: 9980}, from: 9980, size: 20},
		{name: "one past the window", q: projections.SearchQuery{Offset: 9991, Limit: 10}, beyondWindow: true},
		{name: "default limit past the window", q: projections.SearchQuery{Offset: 9981}, beyondWindow: true},
		{name: "offset alone at the window", q: projections.SearchQuery{Offset: 10000, Limit: 1}, beyondWindow: true},
		{name: "fresh and past the window", q: projections.SearchQuery{Offset: 10000, Limit: 100, Fresh: true}, beyondWindow: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			routes := map[string]reply{}
			if !tc.beyondWindow {
				routes["POST /jetcqrs-catalog/_search"] = fixed(200, emptySearch)
			}
			f, client := newFake(t, routes)
			_, err := newTestStore(t, client, nil).Search(t.Context(), tc.q)
			if tc.beyondWindow {
				if !errors.Is(err, projections.ErrBeyondSearchWindow) {
					t.Errorf("Search(offset %d, limit %d) = %v; want ErrBeyondSearchWindow", tc.q.Offset, tc.q.Limit, err)
				}
				wantRoutes(t, f)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantRoutes(t, f, "POST /jetcqrs-catalog/_search")
			var body struct {
				From int `json:"from"`
				Size int `json:"size"`
			}
			if err := json.Unmarshal(f.requests()[0].Body, &body); err != nil || body.From != tc.from || body.Size != tc.size {
				t.Errorf("search body from %d, size %d (%v); want from %d, size %d", body.From, body.Size, err, tc.from, tc.size)
			}
		})
	}
}

// TestFreshSearchRefreshesFirst checks that a search after a read-your-writes
// wait refreshes the alias before it searches, so that the write the wait
// saw through a real-time get is searchable; and that a failed or partial
// refresh fails the search instead of answering from before the write.
func TestFreshSearchRefreshesFirst(t *testing.T) {
	t.Parallel()
	const refreshed = `{"_shards":{"total":2,"successful":1,"failed":0}}`
	f, client := newFake(t, map[string]reply{
		"POST /jetcqrs-catalog/_refresh": fixed(200, refreshed),
		"POST /jetcqrs-catalog/_search":  fixed(200, emptySearch),
	})
	s := newTestStore(t, client, nil)
	if _, err := s.Search(t.Context(), projections.SearchQuery{Q: "lamp", Fresh: true}); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, f, "POST /jetcqrs-catalog/_refresh", "POST /jetcqrs-catalog/_search")
	if body := f.requests()[0].Body; len(body) != 0 {
		t.Errorf("refresh sent a body: %s", body)
	}
	if _, err := s.Search(t.Context(), projections.SearchQuery{Q: "lamp"}); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, f, "POST /jetcqrs-catalog/_refresh", "POST /jetcqrs-catalog/_search", "POST /jetcqrs-catalog/_search")

	for name, refresh := range map[string]reply{
		"refresh fails":            fixed(503, `{"error":{"type":"cluster_block_exception","reason":"blocked"},"status":503}`),
		"a shard fails to refresh": fixed(200, `{"_shards":{"total":2,"successful":0,"failed":1}}`),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f, client := newFake(t, map[string]reply{"POST /jetcqrs-catalog/_refresh": refresh})
			if _, err := newTestStore(t, client, nil).Search(t.Context(), projections.SearchQuery{Fresh: true}); err == nil {
				t.Error("Search = nil error after a failed refresh")
			}
			wantRoutes(t, f, "POST /jetcqrs-catalog/_refresh")
		})
	}
}
