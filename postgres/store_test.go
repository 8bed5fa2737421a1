package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/apitest"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/postgres"
)

var (
	admin = domain.Actor{Subject: "admin", Role: domain.RoleAdmin}
	alice = domain.Actor{Subject: "alice", Role: domain.RoleCustomer}
	bob   = domain.Actor{Subject: "bob", Role: domain.RoleCustomer}
)

// fixture is a store over its own migrated database.
type fixture struct {
	store *postgres.Store
	pool  *pgxpool.Pool
}

func newFixture(t *testing.T, opts ...postgres.Option) *fixture {
	t.Helper()
	pool := apitest.MigratedPool(t, 10, apitest.TestLogger(t))
	return &fixture{store: postgres.NewStore(pool, opts...), pool: pool}
}

func as(actor domain.Actor) domain.CommandMeta { return domain.CommandMeta{Actor: actor} }

func keyed(actor domain.Actor, key, request string) domain.CommandMeta {
	return domain.CommandMeta{Actor: actor, IdempotencyKey: key, RequestHash: []byte(request)}
}

func expecting(actor domain.Actor, version int64) domain.CommandMeta {
	return domain.CommandMeta{Actor: actor, ExpectedVersion: &version}
}

func product(sku string, price int64) domain.CreateProduct {
	return domain.CreateProduct{SKU: sku, Name: "Product " + sku, Category: "general", PriceCents: price}
}

func order(user string, lines ...domain.OrderLineRequest) domain.PlaceOrder {
	return domain.PlaceOrder{UserID: user, Items: lines, PaymentMethod: "card", PaymentToken: "tok"}
}

func line(sku string, qty int64) domain.OrderLineRequest {
	return domain.OrderLineRequest{SKU: sku, Quantity: qty}
}

// stocked creates each SKU at 100 cents with onHand units.
func (f *fixture) stocked(t *testing.T, onHand int64, skus ...string) {
	t.Helper()
	for _, sku := range skus {
		if _, err := f.store.CreateProduct(t.Context(), as(admin), product(sku, 100)); err != nil {
			t.Fatal(err)
		}
		if onHand > 0 {
			if _, err := f.store.AdjustInventory(t.Context(), as(admin), sku, onHand, "initial"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (f *fixture) place(t *testing.T, actor domain.Actor, cmd domain.PlaceOrder) string {
	t.Helper()
	res, err := f.store.PlaceOrder(t.Context(), as(actor), cmd)
	if err != nil {
		t.Fatal(err)
	}
	return res.AggregateID
}

func (f *fixture) transition(t *testing.T, actor domain.Actor, id string, tr domain.OrderTransition) domain.CommandResult {
	t.Helper()
	res, err := f.store.TransitionOrder(t.Context(), as(actor), id, tr, "")
	if err != nil {
		t.Fatalf("%s %s: %v", tr, id, err)
	}
	return res
}

func (f *fixture) snapshot(t *testing.T) map[string]apitest.TableState {
	t.Helper()
	return apitest.Snapshot(t, f.pool)
}

func (f *fixture) wantUnchanged(t *testing.T, before map[string]apitest.TableState) {
	t.Helper()
	after := apitest.Snapshot(t, f.pool)
	for _, table := range apitest.Tables {
		if before[table] != after[table] {
			t.Errorf("table %s changed: %d rows before, %d after", table, before[table].Rows, after[table].Rows)
		}
	}
}

func (f *fixture) count(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	return apitest.Int(t, f.pool, sql, args...)
}

func wantCode(t *testing.T, err error, code domain.Code) *domain.Error {
	t.Helper()
	var de *domain.Error
	if !errors.As(err, &de) || de.Code != code {
		t.Fatalf("error = %v, want a domain error %q", err, code)
	}
	return de
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	logger := slog.New(slog.DiscardHandler)

	t.Run("twice", func(t *testing.T) {
		t.Parallel()
		url := testenv.PostgresURL(t)
		for range 2 {
			if err := postgres.Migrate(t.Context(), url, logger); err != nil {
				t.Fatal(err)
			}
		}
		status, err := postgres.MigrationStatus(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		if len(status) == 0 {
			t.Fatal("no migrations known")
		}
		for _, s := range status {
			if s.State != "applied" {
				t.Errorf("migration %d is %s", s.Source.Version, s.State)
			}
		}
	})

	t.Run("concurrently", func(t *testing.T) {
		t.Parallel()
		url := testenv.PostgresURL(t)
		errs := make(chan error, 3)
		for range 3 {
			go func() { errs <- postgres.Migrate(t.Context(), url, logger) }()
		}
		for range 3 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		conn, err := pgx.Connect(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var tables int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY($1)`,
			apitest.Tables).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != len(apitest.Tables) {
			t.Errorf("%d of the %d write store tables exist", tables, len(apitest.Tables))
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := postgres.Migrate(ctx, "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2", logger); err == nil {
			t.Fatal("migrating an unreachable database succeeded")
		}
	})
}

// TestStoreLifeCycle drives every command through the store and checks the
// results it returns.
func TestStoreLifeCycle(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := t.Context()

	res, err := f.store.CreateProduct(ctx, as(admin), domain.CreateProduct{SKU: "lc-1", Name: "Kettle", Category: "kitchen",
		PriceCents: 2999, Attributes: map[string]string{"volume": "1.7l"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.AggregateType != domain.AggregateProduct || res.AggregateID != "lc-1" || res.Version != 1 || res.Product == nil ||
		res.Product.Attributes["volume"] != "1.7l" || res.Replayed {
		t.Errorf("CreateProduct = %+v", res)
	}
	price := int64(3499)
	res, err = f.store.UpdateProduct(ctx, expecting(admin, 1), "lc-1", domain.UpdateProduct{PriceCents: &price})
	if err != nil {
		t.Fatal(err)
	}
	if res.Version != 2 || res.Product.PriceCents != 3499 || res.Product.Name != "Kettle" {
		t.Errorf("UpdateProduct = %+v", res.Product)
	}
	res, err = f.store.AdjustInventory(ctx, expecting(admin, 0), "lc-1", 5, "delivery")
	if err != nil {
		t.Fatal(err)
	}
	if *res.Inventory != (domain.InventoryLevels{SKU: "lc-1", OnHand: 5, Available: 5, Version: 1}) || res.AggregateType != domain.AggregateInventory {
		t.Errorf("AdjustInventory = %+v", res)
	}

	res, err = f.store.PlaceOrder(ctx, as(alice), order("alice", line("lc-1", 2)))
	if err != nil {
		t.Fatal(err)
	}
	id := res.AggregateID
	if _, err := uuid.Parse(id); err != nil || res.AggregateType != domain.AggregateOrder || res.Order.OrderID != id {
		t.Fatalf("PlaceOrder = %+v", res)
	}
	if o := res.Order; o.Status != domain.StatusPlaced || o.TotalCents != 6998 || o.UserID != "alice" || o.Version != 1 ||
		len(o.Items) != 1 || o.Items[0] != (domain.OrderLine{SKU: "lc-1", Name: "Kettle", Category: "kitchen", Quantity: 2, PriceCents: 3499}) {
		t.Errorf("placed order = %+v", o)
	}
	for _, step := range []struct {
		actor  domain.Actor
		tr     domain.OrderTransition
		status domain.OrderStatus
	}{
		{alice, domain.TransitionPay, domain.StatusPaid},
		{admin, domain.TransitionShip, domain.StatusShipped},
		{admin, domain.TransitionDeliver, domain.StatusDelivered},
	} {
		res := f.transition(t, step.actor, id, step.tr)
		if res.Order.Status != step.status || res.Version != res.Order.Version || res.AggregateID != id {
			t.Errorf("%s = %+v", step.tr, res)
		}
	}
	if got := apitest.StockOf(t, f.pool, "lc-1"); got != (apitest.Stock{OnHand: 3, Reserved: 0, Version: 3}) {
		t.Errorf("stock after delivery = %+v", got)
	}
}

// TestStoreOrderPricesFromCatalog: an order keeps the prices of its
// placement; later orders see the new price.
func TestStoreOrderPricesFromCatalog(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.stocked(t, 10, "price-1")
	first := f.place(t, alice, order("alice", line("price-1", 2)))
	price, name := int64(250), "Renamed"
	if _, err := f.store.UpdateProduct(t.Context(), as(admin), "price-1", domain.UpdateProduct{PriceCents: &price, Name: &name}); err != nil {
		t.Fatal(err)
	}
	second := f.place(t, alice, order("alice", line("price-1", 2)))
	for id, want := range map[string]int64{first: 200, second: 500} {
		if n := f.count(t, `SELECT total_cents FROM orders WHERE id = $1`, id); n != want {
			t.Errorf("order %s total %d, want %d", id, n, want)
		}
	}
	res := f.transition(t, alice, first, domain.TransitionCancel)
	if res.Order.TotalCents != 200 || res.Order.Items[0].PriceCents != 100 || res.Order.Items[0].Name != "Product price-1" {
		t.Errorf("the cancelled order lost its placement prices: %+v", res.Order)
	}
}

// TestStoreErrors: every refusal is a domain error with its code, and writes
// nothing.
func TestStoreErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.stocked(t, 5, "err-1", "err-2")
	f.stocked(t, 0, "err-empty")
	placed := f.place(t, alice, order("alice", line("err-1", 2)))
	ctx := t.Context()
	name := "x"

	for _, tc := range []struct {
		name string
		run  func() error
		code domain.Code
		sku  string
	}{
		{"create: invalid", func() error { _, err := f.store.CreateProduct(ctx, as(admin), product("bad sku", 1)); return err }, domain.CodeInvalidRequest, ""},
		{"create: exists", func() error { _, err := f.store.CreateProduct(ctx, as(admin), product("err-1", 1)); return err }, domain.CodeAlreadyExists, "err-1"},
		{"create: customer", func() error { _, err := f.store.CreateProduct(ctx, as(alice), product("err-3", 1)); return err }, domain.CodeForbidden, ""},
		{"create: If-Match", func() error {
			_, err := f.store.CreateProduct(ctx, expecting(admin, 1), product("err-3", 1))
			return err
		}, domain.CodeVersionMismatch, ""},
		{"update: unknown", func() error {
			_, err := f.store.UpdateProduct(ctx, as(admin), "nope", domain.UpdateProduct{Name: &name})
			return err
		}, domain.CodeNotFound, ""},
		{"update: empty", func() error {
			_, err := f.store.UpdateProduct(ctx, as(admin), "err-1", domain.UpdateProduct{})
			return err
		}, domain.CodeInvalidRequest, ""},
		{"update: customer", func() error {
			_, err := f.store.UpdateProduct(ctx, as(alice), "err-1", domain.UpdateProduct{Name: &name})
			return err
		}, domain.CodeForbidden, ""},
		{"update: If-Match", func() error {
			_, err := f.store.UpdateProduct(ctx, expecting(admin, 7), "err-1", domain.UpdateProduct{Name: &name})
			return err
		}, domain.CodeVersionMismatch, ""},
		{"adjust: unknown", func() error { _, err := f.store.AdjustInventory(ctx, as(admin), "nope", 1, "x"); return err }, domain.CodeNotFound, ""},
		{"adjust: below reserved", func() error { _, err := f.store.AdjustInventory(ctx, as(admin), "err-1", -4, "x"); return err }, domain.CodeInsufficientStock, "err-1"},
		{"adjust: zero", func() error { _, err := f.store.AdjustInventory(ctx, as(admin), "err-1", 0, "x"); return err }, domain.CodeInvalidRequest, ""},
		{"adjust: customer", func() error { _, err := f.store.AdjustInventory(ctx, as(alice), "err-1", 1, "x"); return err }, domain.CodeForbidden, ""},
		{"adjust: If-Match", func() error { _, err := f.store.AdjustInventory(ctx, expecting(admin, 1), "err-1", 1, "x"); return err }, domain.CodeVersionMismatch, ""},
		{"place: unknown sku", func() error {
			_, err := f.store.PlaceOrder(ctx, as(alice), order("alice", line("err-1", 1), line("ghost", 1)))
			return err
		}, domain.CodeUnknownSKU, "ghost"},
		{"place: insufficient", func() error {
			_, err := f.store.PlaceOrder(ctx, as(alice), order("alice", line("err-2", 1), line("err-empty", 1)))
			return err
		}, domain.CodeInsufficientStock, "err-empty"},
		{"place: reserved stock is not available", func() error {
			_, err := f.store.PlaceOrder(ctx, as(alice), order("alice", line("err-1", 4)))
			return err
		}, domain.CodeInsufficientStock, "err-1"},
		{"place: for another user", func() error { _, err := f.store.PlaceOrder(ctx, as(alice), order("bob", line("err-1", 1))); return err }, domain.CodeForbidden, ""},
		{"place: invalid", func() error { _, err := f.store.PlaceOrder(ctx, as(alice), order("alice")); return err }, domain.CodeInvalidRequest, ""},
		{"place: If-Match", func() error {
			_, err := f.store.PlaceOrder(ctx, expecting(alice, 3), order("alice", line("err-1", 1)))
			return err
		}, domain.CodeVersionMismatch, ""},
		{"transition: malformed id", func() error {
			_, err := f.store.TransitionOrder(ctx, as(admin), "x'; DROP TABLE orders; --", domain.TransitionPay, "")
			return err
		}, domain.CodeNotFound, ""},
		{"transition: unknown id", func() error {
			_, err := f.store.TransitionOrder(ctx, as(admin), uuid.NewString(), domain.TransitionCancel, "")
			return err
		}, domain.CodeNotFound, ""},
		{"transition: ship placed", func() error {
			_, err := f.store.TransitionOrder(ctx, as(admin), placed, domain.TransitionShip, "")
			return err
		}, domain.CodeInvalidTransition, ""},
		{"transition: deliver placed", func() error {
			_, err := f.store.TransitionOrder(ctx, as(admin), placed, domain.TransitionDeliver, "")
			return err
		}, domain.CodeInvalidTransition, ""},
		{"transition: other user's", func() error {
			_, err := f.store.TransitionOrder(ctx, as(bob), placed, domain.TransitionCancel, "")
			return err
		}, domain.CodeForbidden, ""},
		{"transition: customer ships", func() error {
			_, err := f.store.TransitionOrder(ctx, as(alice), placed, domain.TransitionShip, "")
			return err
		}, domain.CodeForbidden, ""},
		{"transition: customer delivers", func() error {
			_, err := f.store.TransitionOrder(ctx, as(alice), placed, domain.TransitionDeliver, "")
			return err
		}, domain.CodeForbidden, ""},
		{"transition: If-Match", func() error {
			_, err := f.store.TransitionOrder(ctx, expecting(alice, 2), placed, domain.TransitionPay, "")
			return err
		}, domain.CodeVersionMismatch, ""},
		{"transition: cancel reason", func() error {
			_, err := f.store.TransitionOrder(ctx, as(alice), placed, domain.TransitionCancel, strings.Repeat("r", 501))
			return err
		}, domain.CodeInvalidRequest, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := f.snapshot(t)
			de := wantCode(t, tc.run(), tc.code)
			if de.SKU != tc.sku {
				t.Errorf("sku = %q, want %q", de.SKU, tc.sku)
			}
			f.wantUnchanged(t, before)
		})
	}
}

// failingHook returns an AfterWrite hook that fails the named command with
// err (nil: every command) and counts its attempts.
type failingHook struct {
	mu       sync.Mutex
	command  string
	err      error
	failures int // how many attempts to fail; < 0: all
	attempts int
}

func (h *failingHook) set(command string, err error, failures int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.command, h.err, h.failures, h.attempts = command, err, failures, 0
}

func (h *failingHook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.attempts
}

func (h *failingHook) afterWrite(_ context.Context, _ postgres.Querier, command string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil || command != h.command {
		return nil
	}
	h.attempts++
	if h.failures >= 0 && h.attempts > h.failures {
		return nil
	}
	return h.err
}

// TestStoreAtomicity makes every command fail after its writes and checks
// that nothing of it remains; transient conflicts are retried.
func TestStoreAtomicity(t *testing.T) {
	t.Parallel()
	hook := &failingHook{}
	f := newFixture(t, postgres.WithHooks(postgres.Hooks{AfterWrite: hook.afterWrite}))
	f.stocked(t, 20, "at-1", "at-2")
	placed := f.place(t, alice, order("alice", line("at-1", 1), line("at-2", 1)))
	paid := f.place(t, alice, order("alice", line("at-1", 1)))
	f.transition(t, alice, paid, domain.TransitionPay)
	shipped := f.place(t, alice, order("alice", line("at-2", 1)))
	f.transition(t, alice, shipped, domain.TransitionPay)
	f.transition(t, admin, shipped, domain.TransitionShip)
	ctx := t.Context()
	name := "renamed"

	commands := []struct {
		name string
		run  func(meta domain.CommandMeta) error
	}{
		{"create product", func(m domain.CommandMeta) error {
			_, err := f.store.CreateProduct(ctx, m, product("at-3", 1))
			return err
		}},
		{"update product", func(m domain.CommandMeta) error {
			_, err := f.store.UpdateProduct(ctx, m, "at-1", domain.UpdateProduct{Name: &name})
			return err
		}},
		{"adjust inventory", func(m domain.CommandMeta) error {
			_, err := f.store.AdjustInventory(ctx, m, "at-1", 2, "x")
			return err
		}},
		{"place order", func(m domain.CommandMeta) error {
			_, err := f.store.PlaceOrder(ctx, m, order("admin", line("at-1", 1), line("at-2", 3)))
			return err
		}},
		{"pay order", func(m domain.CommandMeta) error {
			_, err := f.store.TransitionOrder(ctx, m, placed, domain.TransitionPay, "")
			return err
		}},
		{"ship order", func(m domain.CommandMeta) error {
			_, err := f.store.TransitionOrder(ctx, m, paid, domain.TransitionShip, "")
			return err
		}},
		{"deliver order", func(m domain.CommandMeta) error {
			_, err := f.store.TransitionOrder(ctx, m, shipped, domain.TransitionDeliver, "")
			return err
		}},
		{"cancel order", func(m domain.CommandMeta) error {
			_, err := f.store.TransitionOrder(ctx, m, placed, domain.TransitionCancel, "r")
			return err
		}},
	}
	injected := errors.New("disk full")
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			meta := keyed(admin, "atom-"+strings.ReplaceAll(c.name, " ", "-"), c.name)

			before := f.snapshot(t)
			hook.set(c.name, injected, -1)
			err := c.run(meta)
			if !errors.Is(err, injected) || domain.ErrorCode(err) != "" {
				t.Fatalf("error = %v, want the hook's error and no domain code", err)
			}
			if n := hook.count(); n != 1 {
				t.Errorf("%d attempts, want 1: a plain error is not retried", n)
			}
			f.wantUnchanged(t, before)

			hook.set(c.name, &pgconn.PgError{Code: "40001", Message: "could not serialize access"}, -1)
			err = c.run(meta)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "40001" {
				t.Fatalf("error = %v, want the serialization failure", err)
			}
			if n := hook.count(); n != 3 {
				t.Errorf("%d attempts, want 3 (two retries)", n)
			}
			f.wantUnchanged(t, before)

			hook.set(c.name, &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}, 2)
			if err := c.run(meta); err != nil {
				t.Fatalf("the third attempt after two deadlocks failed: %v", err)
			}
			hook.set("", nil, 0)
			if n := f.count(t, `SELECT count(*) FROM idempotency_keys`) - before["idempotency_keys"].Rows; n != 1 {
				t.Errorf("%d new idempotency rows, want 1", n)
			}
			if n := f.count(t, `SELECT count(*) FROM outbox_events`) - before["outbox_events"].Rows; n < 1 || n > 3 {
				t.Errorf("%d new outbox rows; the retried attempts left theirs behind?", n)
			}
		})
	}
}

// TestStoreIdempotency covers the key protocol at the store: replay, reuse
// with another request, scoping per subject, concurrency and failure.
func TestStoreIdempotency(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.stocked(t, 50, "id-1")
	ctx := t.Context()
	encode := func(res domain.CommandResult) string {
		b, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	t.Run("replay", func(t *testing.T) {
		meta := keyed(alice, "k1", "order 1")
		first, err := f.store.PlaceOrder(ctx, meta, order("alice", line("id-1", 1)))
		if err != nil {
			t.Fatal(err)
		}
		before := f.snapshot(t)
		again, err := f.store.PlaceOrder(ctx, meta, order("alice", line("id-1", 1)))
		if err != nil {
			t.Fatal(err)
		}
		if first.Replayed || !again.Replayed || encode(first) != encode(again) {
			t.Errorf("replay = %s (replayed %v), want %s", encode(again), again.Replayed, encode(first))
		}
		f.wantUnchanged(t, before)
	})

	t.Run("reused", func(t *testing.T) {
		before := f.snapshot(t)
		_, err := f.store.PlaceOrder(ctx, keyed(alice, "k1", "order 2"), order("alice", line("id-1", 2)))
		wantCode(t, err, domain.CodeIdempotencyKeyReused)
		_, err = f.store.AdjustInventory(ctx, keyed(alice, "k1", "order 2"), "id-1", 1, "x")
		wantCode(t, err, domain.CodeForbidden)
		f.wantUnchanged(t, before)
	})

	t.Run("per subject", func(t *testing.T) {
		res, err := f.store.PlaceOrder(ctx, keyed(bob, "k1", "order 1"), order("bob", line("id-1", 1)))
		if err != nil || res.Replayed || res.Order.UserID != "bob" {
			t.Fatalf("bob's use of alice's key = %+v, %v", res, err)
		}
	})

	t.Run("failure keeps the key free", func(t *testing.T) {
		meta := keyed(alice, "k2", "big order")
		_, err := f.store.PlaceOrder(ctx, meta, order("alice", line("id-1", 100)))
		wantCode(t, err, domain.CodeInsufficientStock)
		if n := f.count(t, `SELECT count(*) FROM idempotency_keys WHERE key = 'k2'`); n != 0 {
			t.Fatalf("the failed command stored its key")
		}
		if _, err := f.store.AdjustInventory(ctx, as(admin), "id-1", 100, "restock"); err != nil {
			t.Fatal(err)
		}
		if res, err := f.store.PlaceOrder(ctx, meta, order("alice", line("id-1", 100))); err != nil || res.Replayed {
			t.Fatalf("retry = %+v, %v", res, err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		const n = 8
		results := make([]domain.CommandResult, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				results[i], errs[i] = f.store.PlaceOrder(ctx, keyed(alice, "k3", "concurrent"), order("alice", line("id-1", 1)))
			})
		}
		close(start)
		wg.Wait()
		fresh := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("attempt %d: %v", i, errs[i])
			}
			if !results[i].Replayed {
				fresh++
			}
			if results[i].AggregateID != results[0].AggregateID {
				t.Errorf("attempt %d got order %s, attempt 0 %s", i, results[i].AggregateID, results[0].AggregateID)
			}
		}
		if fresh != 1 {
			t.Errorf("%d attempts ran the command, want 1", fresh)
		}
	})
}

func TestPruneIdempotencyKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.stocked(t, 10, "pr-1")
	ctx := t.Context()
	for i := range 4 {
		if _, err := f.store.AdjustInventory(ctx, keyed(admin, fmt.Sprint("key-", i), "x"), "pr-1", 1, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key IN ('key-0', 'key-1')`); err != nil {
		t.Fatal(err)
	}
	n, err := f.store.PruneIdempotencyKeys(ctx, 24*time.Hour)
	if err != nil || n != 2 {
		t.Fatalf("PruneIdempotencyKeys(24h) = %d, %v; want 2", n, err)
	}
	if left := f.count(t, `SELECT count(*) FROM idempotency_keys`); left != 2 {
		t.Errorf("%d keys left, want 2", left)
	}
	// A pruned key is free again, even for another request.
	if res, err := f.store.AdjustInventory(ctx, keyed(admin, "key-0", "other"), "pr-1", 2, "x"); err != nil || res.Replayed {
		t.Errorf("reusing a pruned key = %+v, %v", res, err)
	}

	for _, maxAge := range []time.Duration{90 * time.Minute, 1500 * time.Millisecond, 36*time.Hour + 1, 0, 999 * time.Microsecond, 1} {
		t.Run(maxAge.String(), func(t *testing.T) {
			if _, err := f.store.PruneIdempotencyKeys(ctx, maxAge); err != nil {
				t.Errorf("PruneIdempotencyKeys(%s): %v", maxAge, err)
			}
		})
	}
}

// TestPruneIdempotencyKeysEvery: the pruning loop deletes keys as they age
// past maxAge, keeps the young ones, and returns nil when its context ends.
func TestPruneIdempotencyKeysEvery(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.stocked(t, 10, "pe-1")
	ctx := t.Context()
	for i := range 3 {
		if _, err := f.store.AdjustInventory(ctx, keyed(admin, fmt.Sprint("every-", i), "x"), "pe-1", 1, "x"); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- f.store.PruneIdempotencyKeysEvery(runCtx, 20*time.Millisecond, time.Hour, slog.New(slog.DiscardHandler))
	}()
	// Keys age while the loop runs: it prunes them at its next tick.
	if _, err := f.pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '2 hours' WHERE key IN ('every-0', 'every-2')`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.count(t, `SELECT count(*) FROM idempotency_keys`) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d keys left after 10 s, want 1", f.count(t, `SELECT count(*) FROM idempotency_keys`))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := f.count(t, `SELECT count(*) FROM idempotency_keys WHERE key = 'every-1'`); n != 1 {
		t.Fatal("the young key was pruned")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("PruneIdempotencyKeysEvery = %v after its context ended, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("PruneIdempotencyKeysEvery did not return after its context ended")
	}
}

// TestStoreConcurrentConflicts races commands that only one may win.
func TestStoreConcurrentConflicts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.stocked(t, 100, "cc-1")
	ctx := t.Context()
	race := func(n int, run func(i int) error) (wins int, codes map[domain.Code]int) {
		codes = map[domain.Code]int{}
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				errs[i] = run(i)
			})
		}
		close(start)
		wg.Wait()
		for _, err := range errs {
			if err == nil {
				wins++
			} else if code := domain.ErrorCode(err); code != "" {
				codes[code]++
			} else {
				t.Errorf("infrastructure error from a conflict: %v", err)
			}
		}
		return wins, codes
	}

	t.Run("create the same sku", func(t *testing.T) {
		wins, codes := race(8, func(int) error { _, err := f.store.CreateProduct(ctx, as(admin), product("cc-same", 1)); return err })
		if wins != 1 || codes[domain.CodeAlreadyExists] != 7 {
			t.Errorf("%d created, codes %v; want 1 and 7 already_exists", wins, codes)
		}
	})

	t.Run("update at the same version", func(t *testing.T) {
		wins, codes := race(8, func(i int) error {
			name := fmt.Sprint("name ", i)
			_, err := f.store.UpdateProduct(ctx, expecting(admin, 1), "cc-1", domain.UpdateProduct{Name: &name})
			return err
		})
		if wins != 1 || codes[domain.CodeVersionMismatch] != 7 {
			t.Errorf("%d updated, codes %v; want 1 and 7 version_mismatch", wins, codes)
		}
	})

	t.Run("pay twice", func(t *testing.T) {
		id := f.place(t, alice, order("alice", line("cc-1", 1)))
		wins, codes := race(8, func(int) error {
			_, err := f.store.TransitionOrder(ctx, as(alice), id, domain.TransitionPay, "")
			return err
		})
		if wins != 1 || codes[domain.CodeInvalidTransition] != 7 {
			t.Errorf("%d paid, codes %v; want 1 and 7 invalid_transition", wins, codes)
		}
	})

	t.Run("ship or cancel", func(t *testing.T) {
		before := apitest.StockOf(t, f.pool, "cc-1")
		id := f.place(t, alice, order("alice", line("cc-1", 4)))
		f.transition(t, alice, id, domain.TransitionPay)
		wins, codes := race(2, func(i int) error {
			tr := []domain.OrderTransition{domain.TransitionShip, domain.TransitionCancel}[i]
			_, err := f.store.TransitionOrder(ctx, as(admin), id, tr, "")
			return err
		})
		if wins != 1 || codes[domain.CodeInvalidTransition] != 1 {
			t.Fatalf("%d won, codes %v; want exactly one of ship and cancel", wins, codes)
		}
		after := apitest.StockOf(t, f.pool, "cc-1")
		if after.Reserved != before.Reserved || (after.OnHand != before.OnHand && after.OnHand != before.OnHand-4) {
			t.Errorf("stock %+v after ship-or-cancel from %+v", after, before)
		}
	})
}

// TestRefusedTransitionLocksNoStock: a transition the domain refuses before
// touching stock (wrong status, wrong actor) does not wait for the stock rows
// of the order, while one that moves stock does.
func TestRefusedTransitionLocksNoStock(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.stocked(t, 10, "lk-1")
	placed := f.place(t, alice, order("alice", line("lk-1", 1)))

	holder, err := f.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Rollback(context.Background()) })
	if _, err := holder.Exec(t.Context(), `SELECT 1 FROM inventory WHERE sku = 'lk-1' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name  string
		actor domain.Actor
		tr    domain.OrderTransition
		code  domain.Code
	}{
		{"ship a placed order", admin, domain.TransitionShip, domain.CodeInvalidTransition},
		{"cancel another user's order", bob, domain.TransitionCancel, domain.CodeForbidden},
		{"customer ships", alice, domain.TransitionShip, domain.CodeForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			_, err := f.store.TransitionOrder(ctx, as(tc.actor), placed, tc.tr, "")
			wantCode(t, err, tc.code)
		})
	}

	t.Run("cancel waits for the stock rows", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		_, err := f.store.TransitionOrder(ctx, as(alice), placed, domain.TransitionCancel, "")
		if err == nil || domain.ErrorCode(err) != "" {
			t.Fatalf("cancel with its stock rows held = %v, want it to wait until its deadline", err)
		}
	})
}
