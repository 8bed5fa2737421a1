package boltstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	boltstore "github.com/jetcqrs/jetcqrs/projections/bbolt"
	"github.com/jetcqrs/jetcqrs/projections/contract"
)

func TestOrderStoreContract(t *testing.T) {
	contract.Orders(t, func(t *testing.T) contract.OrdersUnderTest { return openOrders(t, tempPath(t)) })
}

func TestInventoryStoreContract(t *testing.T) {
	contract.Inventory(t, func(t *testing.T) contract.InventoryUnderTest { return openInventory(t, tempPath(t)) })
}

func TestSalesStoreContract(t *testing.T) {
	contract.Sales(t, func(t *testing.T) contract.SalesUnderTest { return openSales(t, tempPath(t)) })
}

// Replaying the whole stream into an existing model, in one batch and event
// by event, rewrites nothing: every key and value stays byte for byte.
func TestReplayLeavesDataByteIdentical(t *testing.T) {
	events := shopStream(t, 60)
	for name, s := range openAll(t, t.TempDir()) {
		t.Run(name, func(t *testing.T) {
			for _, b := range batches(events, 7) {
				applyOK(t, s, b)
			}
			before := dump(t, s)
			applyOK(t, s, events)
			for _, e := range events {
				applyOK(t, s, []projections.Envelope{e})
			}
			if after := dump(t, s); after != before {
				t.Errorf("replay changed the data\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// The checkpoint is the sequence of the last event a partition's batch
// applied: it never moves back, it stops before a poison event (whose
// predecessors are committed with it), Advance settles an event without
// applying it, and Apply without a partition records nothing.
func TestCheckpointFollowsAppliedBatches(t *testing.T) {
	s := openOrders(t, tempPath(t))
	ctx := t.Context()
	check := func(partition int, want uint64) {
		t.Helper()
		if got, err := s.Checkpoint(ctx, partition); err != nil || got != want {
			t.Errorf("Checkpoint(%d) = %d, %v; want %d", partition, got, err, want)
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	placed := func(seq uint64, id string) projections.Envelope {
		return orderEvent(t, seq, domain.EventOrderPlaced, orderSnap(id, "u1", domain.StatusPlaced, 1, at))
	}
	check(0, 0)
	if err := s.ApplyPartition(ctx, 0, []projections.Envelope{placed(3, "o-3"), placed(5, "o-5")}); err != nil {
		t.Fatal(err)
	}
	// Events the model ignores move the checkpoint too: they were read.
	skipped := envelope(t, 9, domain.AggregateProduct, domain.EventProductUpdated, map[string]any{"sku": "S"})
	if err := s.ApplyPartition(ctx, 1, []projections.Envelope{placed(4, "o-4"), skipped}); err != nil {
		t.Fatal(err)
	}
	check(0, 5)
	check(1, 9)
	if err := s.ApplyPartition(ctx, 0, []projections.Envelope{placed(3, "o-3")}); err != nil {
		t.Fatal(err)
	}
	check(0, 5)

	bad := projections.Envelope{Seq: 12, AggregateType: domain.AggregateOrder, AggregateID: "o-12", AggregateVersion: 1,
		EventType: domain.EventOrderPlaced, SchemaVersion: domain.CurrentSchemaVersion, Payload: json.RawMessage(`{`)}
	err := s.ApplyPartition(ctx, 0, []projections.Envelope{placed(10, "o-10"), bad, placed(14, "o-14")})
	var poison *projections.PoisonError
	if !errors.As(err, &poison) || poison.Seq != 12 {
		t.Fatalf("ApplyPartition with a poison event: %v, want a PoisonError of seq 12", err)
	}
	check(0, 10)
	if _, err := s.Order(ctx, "o-10"); err != nil {
		t.Errorf("Order(o-10), before the poison event: %v", err)
	}
	if _, err := s.Order(ctx, "o-14"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Order(o-14), after the poison event: %v, want ErrNotFound", err)
	}
	if err := s.Advance(ctx, 0, 12); err != nil {
		t.Fatal(err)
	}
	check(0, 12)
	if err := s.Advance(ctx, 0, 11); err != nil {
		t.Fatal(err)
	}
	check(0, 12)

	if err := s.Apply(ctx, []projections.Envelope{placed(20, "o-20")}); err != nil {
		t.Fatal(err)
	}
	check(0, 12)
	check(1, 9)
}

// Mark, Marked and Drop: a dropped model is empty, has no checkpoints and no
// marker, and takes writes again; the data, checkpoints and marker survive
// closing and reopening the file; a file is opened for its own model only.
func TestMarkDropAndReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory", "g1.db") // the directory is created too
	ctx := t.Context()
	s, err := boltstore.OpenInventory(path)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Marked(ctx); err != nil || ok {
		t.Fatalf("Marked before Mark = %v, %v; want false", ok, err)
	}
	if err := s.Mark(ctx); err != nil {
		t.Fatal(err)
	}
	levels := domain.InventoryLevels{SKU: "SKU-1", OnHand: 4, Reserved: 1, Available: 3, Version: 2}
	adjusted := envelope(t, 7, domain.AggregateInventory, domain.EventInventoryAdjusted, domain.InventoryAdjusted{InventoryLevels: levels, Delta: 4})
	if err := s.ApplyPartition(ctx, 3, []projections.Envelope{adjusted}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := boltstore.OpenOrders(path); err == nil || !strings.Contains(err.Error(), "inventory") {
		t.Errorf("OpenOrders of an inventory file: %v, want a refusal naming the inventory model", err)
	}
	s = openInventory(t, path)
	want := projections.InventoryView{SKU: "SKU-1", OnHand: 4, Reserved: 1, Available: 3, Version: 2}
	if v, err := s.Inventory(ctx, "SKU-1"); err != nil || v != want {
		t.Errorf("Inventory after reopening = %+v, %v; want %+v", v, err, want)
	}
	if seq, err := s.Checkpoint(ctx, 3); err != nil || seq != 7 {
		t.Errorf("Checkpoint(3) after reopening = %d, %v; want 7", seq, err)
	}
	if ok, err := s.Marked(ctx); err != nil || !ok {
		t.Errorf("Marked after reopening = %v, %v; want true", ok, err)
	}

	if err := s.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Inventory(ctx, "SKU-1"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Inventory after Drop: %v, want ErrNotFound", err)
	}
	if seq, err := s.Checkpoint(ctx, 3); err != nil || seq != 0 {
		t.Errorf("Checkpoint(3) after Drop = %d, %v; want 0", seq, err)
	}
	if ok, err := s.Marked(ctx); err != nil || ok {
		t.Errorf("Marked after Drop = %v, %v; want false", ok, err)
	}
	if err := s.Apply(ctx, []projections.Envelope{adjusted}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Inventory(ctx, "SKU-1"); err != nil || v != want {
		t.Errorf("Inventory after Drop and Apply = %+v, %v; want %+v", v, err, want)
	}
}

// A key bbolt cannot hold is a rejection: applying the event again cannot
// succeed, and nothing of the batch is applied.
func TestApplyReportsOversizedKeysAsRejected(t *testing.T) {
	s := openInventory(t, tempPath(t))
	ok := envelope(t, 1, domain.AggregateInventory, domain.EventInventoryAdjusted,
		domain.InventoryAdjusted{InventoryLevels: domain.InventoryLevels{SKU: "SKU-1", OnHand: 1, Available: 1, Version: 1}, Delta: 1})
	huge := envelope(t, 2, domain.AggregateInventory, domain.EventInventoryAdjusted,
		domain.InventoryAdjusted{InventoryLevels: domain.InventoryLevels{SKU: strings.Repeat("x", 40000), OnHand: 1, Available: 1, Version: 1}, Delta: 1})
	err := s.ApplyPartition(t.Context(), 0, []projections.Envelope{ok, huge})
	if !errors.Is(err, projections.ErrRejected) {
		t.Fatalf("Apply of a 40,000-byte SKU: %v, want ErrRejected", err)
	}
	if _, err := s.Inventory(t.Context(), "SKU-1"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Inventory(SKU-1) after the rejected batch: %v, want ErrNotFound", err)
	}
	if seq, err := s.Checkpoint(t.Context(), 0); err != nil || seq != 0 {
		t.Errorf("Checkpoint after the rejected batch = %d, %v; want 0", seq, err)
	}
}

func TestReadArgumentErrors(t *testing.T) {
	dir := t.TempDir()
	orders := openOrders(t, filepath.Join(dir, "orders.db"))
	stock := openInventory(t, filepath.Join(dir, "inventory.db"))
	if _, _, err := orders.UserOrders(t.Context(), "user-1", 0, ""); err == nil {
		t.Error("UserOrders with limit 0: no error")
	}
	if _, err := orders.AppliedVersion(t.Context(), domain.AggregateInventory, "SKU-1"); err == nil {
		t.Error("OrderStore.AppliedVersion(inventory): no error")
	}
	if _, err := stock.AppliedVersion(t.Context(), domain.AggregateOrder, "order-1"); err == nil {
		t.Error("InventoryStore.AppliedVersion(order): no error")
	}
}

// A second process cannot open a file the first holds: bbolt's file lock
// keeps one writer per file.
func TestFileIsOpenedByOneProcessAtATime(t *testing.T) {
	path := tempPath(t)
	openSales(t, path)
	out, err := childCommand(t, "open", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "timeout") {
		t.Errorf("a second process opening the file: %v, %s; want it refused after the lock timeout", err, out)
	}
}

// model is the surface the tests share across the three stores.
type model interface {
	projections.Applier
	ApplyPartition(ctx context.Context, partition int, events []projections.Envelope) error
	Checkpoint(ctx context.Context, partition int) (uint64, error)
	Dump() (string, error)
	Close() error
}

func tempPath(t *testing.T) string { return filepath.Join(t.TempDir(), "model.db") }

func openOrders(t *testing.T, path string) *boltstore.OrderStore {
	t.Helper()
	s, err := boltstore.OpenOrders(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openInventory(t *testing.T, path string) *boltstore.InventoryStore {
	t.Helper()
	s, err := boltstore.OpenInventory(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openSales(t *testing.T, path string) *boltstore.SalesStore {
	t.Helper()
	s, err := boltstore.OpenSales(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openAll opens the three models in dir.
func openAll(t *testing.T, dir string) map[string]model {
	return map[string]model{
		"orders":    openOrders(t, filepath.Join(dir, "orders.db")),
		"inventory": openInventory(t, filepath.Join(dir, "inventory.db")),
		"sales":     openSales(t, filepath.Join(dir, "sales.db")),
	}
}

func dump(t *testing.T, s model) string {
	t.Helper()
	d, err := s.Dump()
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return d
}

func applyOK(t *testing.T, s projections.Applier, events []projections.Envelope) {
	t.Helper()
	if err := s.Apply(t.Context(), events); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func batches(events []projections.Envelope, n int) [][]projections.Envelope {
	var out [][]projections.Envelope
	for len(events) > 0 {
		k := min(n, len(events))
		out = append(out, events[:k])
		events = events[k:]
	}
	return out
}

func orderSnap(id, userID string, status domain.OrderStatus, version int64, at time.Time, lines ...domain.OrderLine) domain.OrderSnapshot {
	s := domain.OrderSnapshot{OrderID: id, UserID: userID, Status: status, Items: lines, PaymentMethod: "card",
		Version: version, PlacedAt: at, UpdatedAt: at.Add(time.Duration(version) * time.Minute)}
	for _, l := range lines {
		s.TotalCents += l.Quantity * l.PriceCents
	}
	return s
}

func orderEvent(t *testing.T, seq uint64, typ string, s domain.OrderSnapshot) projections.Envelope {
	t.Helper()
	e := envelope(t, seq, domain.AggregateOrder, typ, s)
	e.AggregateID, e.AggregateVersion = s.OrderID, s.Version
	return e
}

func envelope(t *testing.T, seq uint64, aggType, typ string, payload any) projections.Envelope {
	t.Helper()
	body, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return projections.Envelope{Seq: seq, ID: fmt.Sprintf("evt-%d", seq), AggregateType: aggType, EventType: typ,
		SchemaVersion: domain.CurrentSchemaVersion, OccurredAt: time.Unix(int64(seq), 0).UTC(), Payload: body}
}
