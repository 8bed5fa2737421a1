package readnode

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

// stream starts an embedded NATS server with the EVENTS stream.
func stream(t *testing.T) jetstream.JetStream {
	t.Helper()
	js, _ := streamAt(t)
	return js
}

// streamAt is stream that also returns the server's client URL.
func streamAt(t *testing.T) (jetstream.JetStream, string) {
	t.Helper()
	srv, err := jnats.StartEmbedded(jnats.ServerConfig{Port: -1, StoreDir: t.TempDir()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := jnats.Connect(t.Context(), srv.ClientURL(), "readnode-test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jnats.EnsureStream(t.Context(), js, jnats.StreamConfig{Partitions: 4}); err != nil {
		t.Fatal(err)
	}
	return js, srv.ClientURL()
}

func publishProduct(t *testing.T, js jetstream.JetStream, sku string, version int64, payload []byte) {
	t.Helper()
	if err := tryPublishProduct(t.Context(), js, sku, version, payload); err != nil {
		t.Fatal(err)
	}
}

// tryPublishProduct publishes a ProductCreated of sku (payload nil: a valid
// one); safe in any goroutine.
func tryPublishProduct(ctx context.Context, js jetstream.JetStream, sku string, version int64, payload []byte) error {
	if payload == nil {
		var err error
		at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
		payload, err = json.Marshal(domain.ProductCreated{ProductSnapshot: domain.ProductSnapshot{SKU: sku, Name: "Item " + sku,
			Description: "a thing", Category: "kitchen", PriceCents: 1000, Version: version, CreatedAt: at, UpdatedAt: at}})
		if err != nil {
			return err
		}
	}
	msg, err := jnats.Event{ID: uuid.NewString(), AggregateType: domain.AggregateProduct, AggregateID: sku, AggregateVersion: version,
		EventType: domain.EventProductCreated, SchemaVersion: domain.CurrentSchemaVersion, OccurredAt: time.Now(), Payload: payload}.Msg(4)
	if err != nil {
		return err
	}
	_, err = js.PublishMsg(ctx, msg)
	return err
}

// TestNodeIsReadyOnceCaughtUpAndSkipsPoison: before it has applied the
// stream's last sequence as read at open, the node is not ready and its
// gate answers 503 with Retry-After; then it serves what the stream holds,
// past an event no store can apply, and wakes token waits; reopened on its
// directory it resumes from its checkpoint.
func TestNodeIsReadyOnceCaughtUpAndSkipsPoison(t *testing.T) {
	js := stream(t)
	for i := range 50 {
		publishProduct(t, js, fmt.Sprintf("SKU-%02d", i), 1, nil)
	}
	publishProduct(t, js, "SKU-BAD", 1, []byte(`{"sku": 42}`)) // poison: the catalog cannot decode it
	publishProduct(t, js, "SKU-LAST", 1, nil)

	dir := filepath.Join(t.TempDir(), "node")
	hub := queryapi.NewHub()
	n, err := Open(t.Context(), Config{Dir: dir, JS: js, Models: []string{Catalog, Orders, Inventory, Sales}, Hub: hub})
	if err != nil {
		t.Fatal(err)
	}
	if n.Ready(t.Context()) == nil {
		t.Fatal("ready before applying anything")
	}
	gate := n.Gate(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	rec := httptest.NewRecorder()
	gate.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/products/SKU-01", nil))
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("gate before catching up: %d Retry-After %q, want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	rec = httptest.NewRecorder()
	gate.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/admin/projections", nil))
	if rec.Code != http.StatusNoContent {
		t.Fatalf("gate before catching up, admin status: %d, want it through", rec.Code)
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for n.Ready(t.Context()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 30s: %v", n.Ready(t.Context()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	rec = httptest.NewRecorder()
	gate.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/products/SKU-01", nil))
	if rec.Code != http.StatusNoContent {
		t.Fatalf("gate once ready: %d", rec.Code)
	}
	cat := n.Readers().Catalog
	for _, sku := range []string{"SKU-00", "SKU-49", "SKU-LAST"} {
		if p, err := cat.Product(t.Context(), sku); err != nil || p.SKU != sku {
			t.Fatalf("product %s once ready: %+v %v", sku, p, err)
		}
	}
	if _, err := n.Readers().Inventory.Inventory(t.Context(), "SKU-LAST"); err != nil {
		t.Fatalf("stock entry of SKU-LAST: %v", err)
	}

	// A token wait on the node's own model is woken by its apply.
	waited := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		waited <- hub.WaitFor(wctx, domain.AggregateProduct, "SKU-NEW", func(ctx context.Context) (bool, error) {
			v, err := cat.AppliedVersion(ctx, domain.AggregateProduct, "SKU-NEW")
			return v >= 1, err
		})
	}()
	time.Sleep(50 * time.Millisecond)
	publishProduct(t, js, "SKU-NEW", 1, nil)
	if err := <-waited; err != nil {
		t.Fatalf("token wait: %v", err)
	}
	st, _ := n.Status(t.Context())
	t.Logf("status: %+v", st)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	n.Close()

	// Reopened: it starts after its checkpoint and is ready at once.
	publishProduct(t, js, "SKU-AFTER", 1, nil)
	n, err = Open(t.Context(), Config{Dir: dir, JS: js, Models: []string{Catalog, Orders, Inventory, Sales}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	go func() { done <- n.Run(ctx) }()
	for deadline = time.Now().Add(30 * time.Second); n.Ready(t.Context()) != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("reopened node not ready after 30s")
		}
	}
	if p, err := n.Readers().Catalog.Product(t.Context(), "SKU-AFTER"); err != nil || p.SKU != "SKU-AFTER" {
		t.Fatalf("product published while the node was down: %+v %v", p, err)
	}
	cancel()
	<-done
}
