package blevestore

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/contract"
)

func openTestStore(t *testing.T, dir string) *CatalogStore {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestCatalogContract(t *testing.T) {
	t.Parallel()
	contract.Catalog(t, func(t *testing.T) contract.CatalogUnderTest {
		return openTestStore(t, filepath.Join(t.TempDir(), "catalog-g1"))
	})
}

func productEvent(t *testing.T, seq uint64, sku, name string, price, version int64) projections.Envelope {
	t.Helper()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	payload, err := json.Marshal(domain.ProductCreated{ProductSnapshot: domain.ProductSnapshot{
		SKU: sku, Name: name, Description: "Stainless steel", Category: "kitchen", PriceCents: price,
		Version: version, CreatedAt: at, UpdatedAt: at,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return projections.Envelope{
		Seq: seq, AggregateType: domain.AggregateProduct, AggregateID: sku, AggregateVersion: version,
		EventType: domain.EventProductCreated, SchemaVersion: domain.CurrentSchemaVersion, OccurredAt: at, Payload: payload,
	}
}

func TestReopenKeepsAppliedState(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "catalog-g1")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, 7, "SKU-1", "Kettle", 3000, 1)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestStore(t, dir)
	got, err := s.Product(t.Context(), "SKU-1")
	if err != nil || got.Name != "Kettle" || got.Version != 1 {
		t.Fatalf("Product after reopen = %+v, %v", got, err)
	}
	// The sequence guard survived the restart: a redelivered older event is ignored.
	if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, 6, "SKU-1", "Old kettle", 1, 1)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Product(t.Context(), "SKU-1"); got.Name != "Kettle" {
		t.Errorf("stale event applied after reopen: %+v", got)
	}
}

func TestOpenCreatesInEmptyDirectory(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, t.TempDir())
	if err := s.Apply(t.Context(), []projections.Envelope{productEvent(t, 1, "SKU-1", "Kettle", 3000, 1)}); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesOtherSchema(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "catalog-g1")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.idx.SetInternal([]byte(schemaKey), []byte("0")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir); !errors.Is(err, ErrSchemaMismatch) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open of an index with another schema: err = %v; want ErrSchemaMismatch", err)
	}
}

func TestOpenRefusesNonIndexDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not an index"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir); err == nil {
		s.Close()
		t.Fatal("Open of a non-empty directory without an index succeeded")
	}
}

func TestOpenFailsWhileAnotherStoreHoldsTheDirectory(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "catalog-g1")
	openTestStore(t, dir)
	start := time.Now()
	s, err := Open(dir, WithLockTimeout(200*time.Millisecond))
	if err == nil {
		s.Close()
		t.Fatal("second Open of a directory in use succeeded")
	}
	if !strings.Contains(err.Error(), "another store has it open") {
		t.Errorf("second Open: %v; want it to say the directory is in use", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("second Open took %s; want it bounded by the lock timeout", waited)
	}
}

// TestConcurrentApplyLosesNothing applies the product and the inventory events
// of the same SKUs from two goroutines: each read-modify-write must see the
// other's writes.
func TestConcurrentApplyLosesNothing(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, filepath.Join(t.TempDir(), "catalog-g1"))
	const n = 20
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	wg.Go(func() {
		for i := range n {
			errs <- s.Apply(t.Context(), []projections.Envelope{productEvent(t, uint64(1+i), "SKU-1", "Kettle", int64(100+i), int64(1+i))})
		}
	})
	wg.Go(func() {
		for i := range n {
			payload, _ := json.Marshal(domain.InventoryAdjusted{InventoryLevels: domain.InventoryLevels{
				SKU: "SKU-1", OnHand: int64(1 + i), Available: int64(1 + i), Version: int64(1 + i),
			}})
			errs <- s.Apply(t.Context(), []projections.Envelope{{
				Seq: uint64(1000 + i), AggregateType: domain.AggregateInventory, AggregateID: "SKU-1",
				EventType: domain.EventInventoryAdjusted, SchemaVersion: domain.CurrentSchemaVersion, OccurredAt: at, Payload: payload,
			}})
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Product(t.Context(), "SKU-1")
	if err != nil || got.PriceCents != 100+n-1 || got.Version != n || got.Available != n {
		t.Errorf("Product = %+v, %v; want the last product event (price %d, version %d) and the last stock (%d)", got, err, 100+n-1, n, n)
	}
}

func TestAppliedVersionRejectsOtherAggregates(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, filepath.Join(t.TempDir(), "catalog-g1"))
	if _, err := s.AppliedVersion(t.Context(), domain.AggregateOrder, "5f0c6f8e-8a43-4a5e-9d7c-0d7b1d1d1b11"); err == nil {
		t.Error("AppliedVersion(order, …) succeeded on the catalog")
	}
}

func TestSearchDefaultsAndNegativeOffset(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, filepath.Join(t.TempDir(), "catalog-g1"))
	var events []projections.Envelope
	for i := range 25 {
		events = append(events, productEvent(t, uint64(1+i), "SKU-"+string(rune('A'+i)), "Kettle", 1000, 1))
	}
	if err := s.Apply(t.Context(), events); err != nil {
		t.Fatal(err)
	}
	res, err := s.Search(t.Context(), projections.SearchQuery{Offset: -3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Total != 25 || len(res.Hits) != projections.DefaultSearchLimit || res.Hits[0].SKU != "SKU-A" {
		t.Errorf("Search(limit 0, offset -3) = total %d, %d hits from %s; want total 25, %d hits from SKU-A",
			res.Total, len(res.Hits), res.Hits[0].SKU, projections.DefaultSearchLimit)
	}
}

// TestApplyThroughKeepsTheCheckpointWithTheData: the checkpoint is written
// in the documents' batch, also by a batch that changes no document, never
// goes down, and survives a reopen.
func TestApplyThroughKeepsTheCheckpointWithTheData(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "catalog-g1")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cp, err := s.Checkpoint(t.Context()); err != nil || cp != 0 {
		t.Fatalf("new index: checkpoint %d, %v", cp, err)
	}
	if err := s.ApplyThrough(t.Context(), []projections.Envelope{productEvent(t, 5, "SKU-1", "Kettle", 3000, 1)}, 5); err != nil {
		t.Fatal(err)
	}
	// Nothing to change (the same version again), the checkpoint still moves.
	if err := s.ApplyThrough(t.Context(), []projections.Envelope{productEvent(t, 9, "SKU-1", "Kettle", 3000, 1)}, 9); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyThrough(t.Context(), nil, 3); err != nil {
		t.Fatal(err)
	}
	if cp, err := s.Checkpoint(t.Context()); err != nil || cp != 9 {
		t.Fatalf("checkpoint %d, %v, want 9", cp, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir)
	if cp, err := s.Checkpoint(t.Context()); err != nil || cp != 9 {
		t.Fatalf("reopened: checkpoint %d, %v, want 9", cp, err)
	}
	if got, err := s.Product(t.Context(), "SKU-1"); err != nil || got.Name != "Kettle" {
		t.Fatalf("reopened: %+v, %v", got, err)
	}
}
