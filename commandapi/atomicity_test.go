package commandapi_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/internal/apitest"
	"github.com/jetcqrs/jetcqrs/internal/httpx"
	"github.com/jetcqrs/jetcqrs/postgres"
)

// faults is an AfterWrite hook that fails the one command it is armed for,
// after recording how many outbox rows that command's transaction sees.
type faults struct {
	mu        sync.Mutex
	armed     string
	calls     int
	outboxSaw int64
}

var errInjected = errors.New("injected failure after the write")

func (f *faults) arm(command string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed, f.calls, f.outboxSaw = command, 0, 0
}

// disarm stops failing and returns how often the armed command failed and
// the outbox rows its last attempt saw.
func (f *faults) disarm() (calls int, outboxSaw int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = ""
	return f.calls, f.outboxSaw
}

func (f *faults) afterWrite(ctx context.Context, tx postgres.Querier, command string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if command != f.armed {
		return nil
	}
	f.calls++
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM outbox_events`).Scan(&f.outboxSaw); err != nil {
		return err
	}
	return errInjected
}

// TestFailureAfterWriteLeavesNothing fails every command type after its
// state and outbox rows are written: the transaction must roll back all of
// it, the idempotency key included, and the client gets a 5xx problem.
func TestFailureAfterWriteLeavesNothing(t *testing.T) {
	t.Parallel()
	f := &faults{}
	e := apitest.New(t, apitest.WithStoreOptions(postgres.WithHooks(postgres.Hooks{AfterWrite: f.afterWrite})))
	admin := apitest.AdminToken(t)
	alice := apitest.CustomerToken(t, "alice")
	e.Stocked(t, 10, "atom-1", "atom-2")
	placed := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("atom-1", 1), item("atom-2", 2))).OrderID
	paid := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("atom-1", 1))).OrderID
	e.Transition(t, alice, paid, "pay")
	shipped := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("atom-2", 1))).OrderID
	e.Transition(t, alice, shipped, "pay")
	e.Transition(t, admin, shipped, "ship")

	for _, tc := range []struct {
		command string
		req     apitest.Request
		status  int
	}{
		{"create product", post(productsPath, admin, apitest.NewProduct("atom-3", "c", 1)), http.StatusCreated},
		{"update product", patch(productPath("atom-1"), admin, map[string]any{"name": "renamed"}), http.StatusOK},
		{"adjust inventory", post(adjustPath("atom-1"), admin, map[string]any{"delta": 3, "reason": "x"}), http.StatusOK},
		{"place order", post(ordersPath, alice, apitest.NewOrder("alice", item("atom-1", 2), item("atom-2", 1))), http.StatusCreated},
		{"pay order", post(orderPath(placed, "pay"), alice, nil), http.StatusOK},
		{"ship order", post(orderPath(paid, "ship"), admin, nil), http.StatusOK},
		{"deliver order", post(orderPath(shipped, "deliver"), admin, nil), http.StatusOK},
		{"cancel order", post(orderPath(placed, "cancel"), alice, map[string]string{"reason": "x"}), http.StatusOK},
	} {
		t.Run(tc.command, func(t *testing.T) {
			tc.req.Header = headers("Idempotency-Key", "atomic-"+strings.ReplaceAll(tc.command, " ", "-"))
			before := e.Snapshot(t)
			f.arm(tc.command)
			r := e.Do(t, tc.req)
			calls, outboxSaw := f.disarm()
			if r.Status < 500 {
				t.Fatalf("status %d, want a 5xx for an infrastructure failure; body %s", r.Status, r.Body)
			}
			p := r.Problem(t)
			if p.Code != httpx.CodeInternal {
				t.Errorf("code = %q, want %q", p.Code, httpx.CodeInternal)
			}
			if calls != 1 {
				t.Fatalf("the hook failed %d attempts of %q, want 1", calls, tc.command)
			}
			if outboxSaw <= before["outbox_events"].Rows {
				t.Errorf("inside the transaction the hook saw %d outbox rows, want more than the %d before: it did not run after the write",
					outboxSaw, before["outbox_events"].Rows)
			}
			e.WantUnchanged(t, before)

			// Nothing of the failed attempt remains, not even its key.
			r = e.Do(t, tc.req)
			r.WantStatus(t, tc.status)
			if r.Header.Get("Idempotent-Replayed") != "" {
				t.Error("the retry after the failure was answered as a replay")
			}
		})
	}
}

// TestCommandTimeout: a command that outlives the command timeout, whether
// waiting for a lock or slow after its writes, is a 503 with Retry-After and
// leaves nothing behind; the same request succeeds once the way is clear.
func TestCommandTimeout(t *testing.T) {
	t.Parallel()
	var slow atomic.Bool
	hook := func(ctx context.Context, _ postgres.Querier, _ string) error {
		if slow.Load() {
			<-ctx.Done()
		}
		return nil // commit with the expired context
	}
	e := apitest.New(t, apitest.WithCommandTimeout(time.Second),
		apitest.WithStoreOptions(postgres.WithHooks(postgres.Hooks{AfterWrite: hook})))
	alice := apitest.CustomerToken(t, "alice")
	e.Stocked(t, 10, "slow-1")
	req := post(ordersPath, alice, apitest.NewOrder("alice", item("slow-1", 1)), "Idempotency-Key", "slow")

	wantUnavailable := func(t *testing.T) {
		t.Helper()
		before := e.Snapshot(t)
		r := e.Do(t, req)
		r.WantProblem(t, http.StatusServiceUnavailable, httpx.CodeUnavailable)
		if r.Header.Get("Retry-After") == "" {
			t.Error("503 without Retry-After")
		}
		e.WantUnchanged(t, before)
	}

	t.Run("waiting for a lock", func(t *testing.T) {
		tx, err := e.Pool.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background())
		if _, err := tx.Exec(t.Context(), `SELECT 1 FROM inventory WHERE sku = 'slow-1' FOR UPDATE`); err != nil {
			t.Fatal(err)
		}
		wantUnavailable(t)
	})

	t.Run("slow after the write", func(t *testing.T) {
		slow.Store(true)
		defer slow.Store(false)
		wantUnavailable(t)
	})

	e.Do(t, req).WantStatus(t, http.StatusCreated)
}
