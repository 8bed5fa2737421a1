package live_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/live"
	"github.com/jetcqrs/jetcqrs/queryapi"
)

// store is one generation's store of every model: it answers with its name,
// so a test sees which generation a read reached.
type store struct{ gen string }

func (s store) Apply(context.Context, []projections.Envelope) error { return nil }
func (s store) Order(_ context.Context, id string) (projections.OrderView, error) {
	return projections.OrderView{OrderID: id, UserID: s.gen}, nil
}
func (s store) OrderJSON(context.Context, string) (string, []byte, error) {
	return s.gen, []byte(`{}`), nil
}
func (s store) UserOrders(context.Context, string, int, string) ([]projections.OrderListEntry, string, error) {
	return nil, s.gen, nil
}
func (s store) Inventory(_ context.Context, sku string) (projections.InventoryView, error) {
	return projections.InventoryView{SKU: s.gen + "/" + sku}, nil
}
func (s store) Product(_ context.Context, sku string) (projections.ProductView, error) {
	return projections.ProductView{SKU: s.gen + "/" + sku}, nil
}
func (s store) Search(context.Context, projections.SearchQuery) (projections.SearchResult, error) {
	return projections.SearchResult{}, nil
}
func (s store) Sales(context.Context, projections.SalesQuery) ([]projections.SalesRow, error) {
	return []projections.SalesRow{{Key: s.gen}}, nil
}
func (s store) AppliedVersion(context.Context, string, string) (int64, error) {
	return int64(len(s.gen)), nil
}

// model is a lifecycle.Model around a store.
type model struct{ s projections.Applier }

func (m model) Store() projections.Applier { return m.s }
func (m model) Drop(context.Context) error { return nil }
func (m model) Close()                     {}

func TestReadsFollowTheSwitchedGeneration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := live.New()
	orders := l.Orders() // a handle taken before any switch follows every later one
	if _, err := orders.Order(ctx, "o-1"); !errors.Is(err, live.ErrNoLiveGeneration) {
		t.Fatalf("before any switch: err = %v, want ErrNoLiveGeneration", err)
	}
	if _, ok := l.Generation("orders"); ok {
		t.Fatal("a generation before any switch")
	}

	for _, name := range []string{"orders", "inventory", "catalog", "sales"} {
		l.Switch(name, 1, model{store{"g1"}})
	}
	if v, _ := orders.Order(ctx, "o-1"); v.UserID != "g1" {
		t.Fatalf("order read from %q, want g1", v.UserID)
	}
	l.Switch("orders", 2, model{store{"g2"}})
	if v, _ := orders.Order(ctx, "o-1"); v.UserID != "g2" {
		t.Fatalf("after the switch the order was read from %q, want g2", v.UserID)
	}
	if u, _, _ := orders.OrderJSON(ctx, "o-1"); u != "g2" {
		t.Fatalf("OrderJSON from %q", u)
	}
	if _, next, _ := orders.UserOrders(ctx, "alice", 10, ""); next != "g2" {
		t.Fatalf("UserOrders from %q", next)
	}
	if gen, ok := l.Generation("orders"); !ok || gen != 2 {
		t.Fatalf("Generation(orders) = %d, %v; want 2", gen, ok)
	}
	if gen, _ := l.Generation("inventory"); gen != 1 {
		t.Fatalf("the other models moved too: inventory at %d", gen)
	}
	if v, _ := l.Inventory().Inventory(ctx, "P-1"); v.SKU != "g1/P-1" {
		t.Fatalf("inventory read %q", v.SKU)
	}
	if v, _ := l.Catalog().Product(ctx, "P-1"); v.SKU != "g1/P-1" {
		t.Fatalf("catalog read %q", v.SKU)
	}
	if rows, _ := l.Sales().Sales(ctx, projections.SalesQuery{}); len(rows) != 1 || rows[0].Key != "g1" {
		t.Fatalf("sales read %v", rows)
	}
	// A model the query API does not read is recorded only.
	l.Switch("audit", 7, model{store{"g7"}})
	if gen, _ := l.Generation("audit"); gen != 7 {
		t.Fatalf("Generation(audit) = %d", gen)
	}
}

// TestReadersWaitOnTheModelThatAnswers: each endpoint's read-your-writes
// wait reads the versions of the model that answers it, and the sales
// report accepts no token at all.
func TestReadersWaitOnTheModelThatAnswers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := live.New()
	l.Switch("orders", 1, model{store{"orders-g1"}})
	l.Switch("inventory", 1, model{store{"inv"}})
	l.Switch("catalog", 1, model{store{"c"}})
	r := l.Readers()
	for _, c := range []struct {
		model, aggregate string
		want             int64
	}{
		{queryapi.ModelOrders, domain.AggregateOrder, int64(len("orders-g1"))},
		{queryapi.ModelInventory, domain.AggregateInventory, int64(len("inv"))},
		{queryapi.ModelCatalog, domain.AggregateProduct, int64(len("c"))},
		{queryapi.ModelCatalog, domain.AggregateInventory, int64(len("c"))},
	} {
		vr, ok := r.Versions[c.model][c.aggregate]
		if !ok {
			t.Fatalf("%s cannot wait for %s", c.model, c.aggregate)
		}
		if v, err := vr.AppliedVersion(ctx, c.aggregate, "x"); err != nil || v != c.want {
			t.Fatalf("%s/%s: version %d, %v; want %d from its own store", c.model, c.aggregate, v, err, c.want)
		}
	}
	if n := len(r.Versions[queryapi.ModelOrders]); n != 1 {
		t.Fatalf("orders waits for %d aggregate types, want only orders", n)
	}
	if vs, ok := r.Versions[queryapi.ModelSales]; !ok || len(vs) != 0 {
		t.Fatalf("sales versions = %v, %v; want present and empty (every token refused)", vs, ok)
	}
}

// TestSwitchRefusesAStoreThatCannotServeItsModel: wiring a store of the
// wrong kind fails at the switch, not at a later read.
func TestSwitchRefusesAStoreThatCannotServeItsModel(t *testing.T) {
	t.Parallel()
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "orders") {
			t.Fatalf("recovered %v, want a panic naming the model", r)
		}
	}()
	live.New().Switch("orders", 1, model{applyOnly{}})
}

type applyOnly struct{}

func (applyOnly) Apply(context.Context, []projections.Envelope) error { return nil }

// TestSwitchWhileReading: switches race reads (run with -race); every read
// reaches one whole generation.
func TestSwitchWhileReading(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := live.New()
	l.Switch("orders", 1, model{store{"g1"}})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				if v, err := l.Orders().Order(ctx, "o"); err != nil || (v.UserID != "g1" && v.UserID != "g2" && v.UserID != "g3") {
					t.Errorf("read %q, %v", v.UserID, err)
					return
				}
			}
		})
	}
	for i := range 1000 {
		l.Switch("orders", 1+i%3, model{store{[]string{"g1", "g2", "g3"}[i%3]}})
		l.Generation("orders")
	}
	wg.Wait()
}
