package commandapi_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/apitest"
	"github.com/jetcqrs/jetcqrs/postgres"
)

// wantSameAnswer fails unless replay repeats first: status, body byte for
// byte and the headers a client acts on, marked as a replay.
func wantSameAnswer(t *testing.T, first, replay *apitest.Response) {
	t.Helper()
	if replay.Status != first.Status || !bytes.Equal(replay.Body, first.Body) {
		t.Errorf("replay = %d %s, want %d %s", replay.Status, replay.Body, first.Status, first.Body)
	}
	for _, h := range []string{"Content-Type", "X-Consistency-Token", "ETag", "Location"} {
		if replay.Header.Get(h) != first.Header.Get(h) {
			t.Errorf("replay %s = %q, want %q", h, replay.Header.Get(h), first.Header.Get(h))
		}
	}
	if got := replay.Header.Get("Idempotent-Replayed"); got != "true" {
		t.Errorf("replay Idempotent-Replayed = %q, want true", got)
	}
	if got := first.Header.Get("Idempotent-Replayed"); got != "" {
		t.Errorf("first answer Idempotent-Replayed = %q, want none", got)
	}
}

// TestIdempotentReplay repeats every command with its Idempotency-Key: the
// stored answer comes back and nothing is written a second time.
func TestIdempotentReplay(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	alice := apitest.CustomerToken(t, "alice")
	e.Stocked(t, 20, "idem-1")
	toShip := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("idem-1", 1))).OrderID
	toCancel := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("idem-1", 1))).OrderID

	steps := []struct {
		name string
		req  apitest.Request
	}{
		{"create product", post(productsPath, admin, apitest.NewProduct("idem-2", "c", 300), "Idempotency-Key", "k-create")},
		{"update product", patch(productPath("idem-2"), admin, map[string]any{"price_cents": 350}, "Idempotency-Key", "k-update")},
		{"adjust inventory", post(adjustPath("idem-2"), admin, map[string]any{"delta": 5, "reason": "count"}, "Idempotency-Key", "k-adjust")},
		{"place order", post(ordersPath, alice, apitest.NewOrder("alice", item("idem-2", 2)), "Idempotency-Key", "k-place")},
		{"pay order", post(orderPath(toShip, "pay"), alice, nil, "Idempotency-Key", "k-pay")},
		{"ship order", post(orderPath(toShip, "ship"), admin, map[string]any{}, "Idempotency-Key", "k-ship")},
		{"deliver order", post(orderPath(toShip, "deliver"), admin, nil, "Idempotency-Key", "k-deliver")},
		{"cancel order", post(orderPath(toCancel, "cancel"), alice, map[string]string{"reason": "late"}, "Idempotency-Key", "k-cancel")},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			first := e.Do(t, s.req)
			if first.Status != http.StatusOK && first.Status != http.StatusCreated {
				t.Fatalf("first answer %d %s", first.Status, first.Body)
			}
			before := e.Snapshot(t)
			for range 2 {
				wantSameAnswer(t, first, e.Do(t, s.req))
			}
			e.WantUnchanged(t, before)
		})
	}
	if n := e.Int(t, `SELECT count(*) FROM idempotency_keys`); n != int64(len(steps)) {
		t.Errorf("%d idempotency rows, want %d", n, len(steps))
	}
}

// TestIdempotencyKeyReused sends a stored key with another request.
func TestIdempotencyKeyReused(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	admin := apitest.AdminToken(t)
	alice := apitest.CustomerToken(t, "alice")
	e.Stocked(t, 20, "reuse-1", "reuse-2")
	a := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("reuse-1", 1))).OrderID
	b := e.PlaceOrder(t, alice, apitest.NewOrder("alice", item("reuse-1", 1))).OrderID

	first := e.Do(t, post(ordersPath, alice, apitest.NewOrder("alice", item("reuse-1", 1)), "Idempotency-Key", "k1"))
	first.WantStatus(t, http.StatusCreated)
	e.Do(t, post(orderPath(a, "pay"), alice, nil, "Idempotency-Key", "k2")).WantStatus(t, http.StatusOK)
	e.Do(t, post(adjustPath("reuse-1"), admin, map[string]any{"delta": 1, "reason": "x"}, "Idempotency-Key", "k3")).WantStatus(t, http.StatusOK)

	for _, tc := range []struct {
		name string
		req  apitest.Request
	}{
		{"other quantity", post(ordersPath, alice, apitest.NewOrder("alice", item("reuse-1", 2)), "Idempotency-Key", "k1")},
		{"other sku", post(ordersPath, alice, apitest.NewOrder("alice", item("reuse-2", 1)), "Idempotency-Key", "k1")},
		{"other command", post(orderPath(a, "cancel"), alice, nil, "Idempotency-Key", "k2")},
		{"same command on another order", post(orderPath(b, "pay"), alice, nil, "Idempotency-Key", "k2")},
		{"a body where there was none", post(orderPath(a, "pay"), alice, map[string]any{}, "Idempotency-Key", "k2")},
		{"other sku in the path", post(adjustPath("reuse-2"), admin, map[string]any{"delta": 1, "reason": "x"}, "Idempotency-Key", "k3")},
		{"other delta", post(adjustPath("reuse-1"), admin, map[string]any{"delta": 2, "reason": "x"}, "Idempotency-Key", "k3")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.Snapshot(t)
			p := e.Do(t, tc.req).WantProblem(t, http.StatusUnprocessableEntity, domain.CodeIdempotencyKeyReused)
			wantDetailMentions(t, p.Detail, "Idempotency-Key")
			e.WantUnchanged(t, before)
		})
	}

	t.Run("the original still replays", func(t *testing.T) {
		wantSameAnswer(t, first, e.Do(t, post(ordersPath, alice, apitest.NewOrder("alice", item("reuse-1", 1)), "Idempotency-Key", "k1")))
	})
}

// TestIdempotencyKeyPerUser: a key belongs to the user who sent it.
func TestIdempotencyKeyPerUser(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	e.Stocked(t, 20, "scope-1")
	var ids []string
	for _, user := range []string{"alice", "bob"} {
		var o apitest.OrderResult
		r := e.Do(t, post(ordersPath, apitest.CustomerToken(t, user), apitest.NewOrder(user, item("scope-1", 1)), "Idempotency-Key", "shared-key"))
		r.WantStatus(t, http.StatusCreated).JSON(t, &o)
		if r.Header.Get("Idempotent-Replayed") != "" {
			t.Errorf("%s's first use of the key was answered as a replay", user)
		}
		ids = append(ids, o.OrderID)
	}
	if ids[0] == ids[1] {
		t.Fatalf("alice and bob got the same order %s", ids[0])
	}
	if n := e.Int(t, `SELECT count(DISTINCT user_id) FROM orders`); n != 2 {
		t.Errorf("orders of %d users, want 2", n)
	}
	// The same key and body from another user (the admin) is that user's
	// own request, not a reuse of alice's.
	e.Do(t, post(ordersPath, apitest.AdminToken(t), apitest.NewOrder("alice", item("scope-1", 1)), "Idempotency-Key", "shared-key")).
		WantStatus(t, http.StatusCreated)
}

// TestIdempotencyConcurrentSameKey: a retry that arrives while the first
// attempt is still running waits for it and answers with its result.
func TestIdempotencyConcurrentSameKey(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	hook := func(ctx context.Context, _ postgres.Querier, command string) error {
		if command != "place order" {
			return nil
		}
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	e := apitest.New(t, apitest.WithStoreOptions(postgres.WithHooks(postgres.Hooks{AfterWrite: hook})))
	e.Stocked(t, 100, "race-1")
	alice := apitest.CustomerToken(t, "alice")

	t.Run("retry during the first attempt", func(t *testing.T) {
		req := post(ordersPath, alice, apitest.NewOrder("alice", item("race-1", 1)), "Idempotency-Key", "slow")
		answers := make(chan *apitest.Response, 2)
		send := func() {
			resp, err := e.Client.Do(e.NewRequest(t, req))
			if err != nil {
				t.Error(err)
				answers <- nil
				return
			}
			defer resp.Body.Close()
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			answers <- &apitest.Response{Status: resp.StatusCode, Header: resp.Header, Body: buf.Bytes()}
		}
		go send()
		<-entered
		go send()
		waitForLockWait(t, e)
		close(release)
		a, b := <-answers, <-answers
		if a == nil || b == nil {
			t.FailNow()
		}
		if a.Header.Get("Idempotent-Replayed") != "" {
			a, b = b, a
		}
		a.WantStatus(t, http.StatusCreated)
		wantSameAnswer(t, a, b)
		if n := e.Int(t, `SELECT count(*) FROM orders`); n != 1 {
			t.Errorf("%d orders, want 1", n)
		}
	})

	t.Run("burst", func(t *testing.T) {
		reqs := make([]apitest.Request, 12)
		for i := range reqs {
			reqs[i] = post(ordersPath, alice, apitest.NewOrder("alice", item("race-1", 3)), "Idempotency-Key", "burst")
		}
		answers := concurrently(t, e, reqs)
		var original *apitest.Response
		for _, r := range answers {
			if r.Header.Get("Idempotent-Replayed") == "" {
				if original != nil {
					t.Fatalf("two answers were not replays:\n%s\n%s", original.Body, r.Body)
				}
				original = r
			}
		}
		if original == nil {
			t.Fatal("every answer is a replay")
		}
		original.WantStatus(t, http.StatusCreated)
		for _, r := range answers {
			if r != original {
				wantSameAnswer(t, original, r)
			}
		}
		if n := e.Int(t, `SELECT count(*) FROM orders o JOIN order_items i ON i.order_id = o.id WHERE i.quantity = 3`); n != 1 {
			t.Errorf("%d orders from the burst, want 1", n)
		}
		if n := e.Int(t, `SELECT count(*) FROM outbox_events WHERE event_type = 'OrderPlaced'`); n != 2 {
			t.Errorf("%d OrderPlaced events in all, want 2", n)
		}
	})
}

// waitForLockWait returns once a server process of the env's database waits
// for a lock: the retry blocked behind the first attempt's key.
func waitForLockWait(t *testing.T, e *apitest.Env) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.Int(t, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the second request never waited for the first one's lock")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFailedCommandKeepsKeyFree: a command that fails stores no key, so the
// client can fix the cause and retry with the same key.
func TestFailedCommandKeepsKeyFree(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	alice := apitest.CustomerToken(t, "alice")
	e.Stocked(t, 0, "later-1")
	order := apitest.NewOrder("alice", item("later-1", 5))
	req := post(ordersPath, alice, order, "Idempotency-Key", "retry-me")

	before := e.Snapshot(t)
	e.Do(t, req).WantProblem(t, http.StatusConflict, domain.CodeInsufficientStock)
	e.Do(t, req).WantProblem(t, http.StatusConflict, domain.CodeInsufficientStock)
	e.WantUnchanged(t, before)

	e.Restock(t, "later-1", 5)
	first := e.Do(t, req)
	first.WantStatus(t, http.StatusCreated)
	if first.Header.Get("Idempotent-Replayed") != "" {
		t.Error("the first successful attempt was answered as a replay")
	}
	wantSameAnswer(t, first, e.Do(t, req))
	if n := e.Int(t, `SELECT count(*) FROM idempotency_keys WHERE key = 'retry-me'`); n != 1 {
		t.Errorf("%d rows for the key, want 1", n)
	}

	t.Run("after a 400", func(t *testing.T) {
		bad := apitest.NewOrder("alice", item("later-1", 0))
		e.Do(t, post(ordersPath, alice, bad, "Idempotency-Key", "fix-me")).WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
		e.Restock(t, "later-1", 1)
		e.Do(t, post(ordersPath, alice, apitest.NewOrder("alice", item("later-1", 1)), "Idempotency-Key", "fix-me")).
			WantStatus(t, http.StatusCreated)
	})
}

// TestIdempotencyKeyHeader checks the key's accepted shape.
func TestIdempotencyKeyHeader(t *testing.T) {
	t.Parallel()
	e := apitest.New(t)
	e.Stocked(t, 10, "hdr-1")
	admin := apitest.AdminToken(t)
	longest := strings.Repeat("k", 255)
	e.Do(t, post(adjustPath("hdr-1"), admin, map[string]any{"delta": 1, "reason": "x"}, "Idempotency-Key", longest)).
		WantStatus(t, http.StatusOK)
	for i, key := range []string{strings.Repeat("k", 256), "has space", "ключ", "tab\there"} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			before := e.Snapshot(t)
			p := e.Do(t, post(adjustPath("hdr-1"), admin, map[string]any{"delta": 1, "reason": "x"}, "Idempotency-Key", key)).
				WantProblem(t, http.StatusBadRequest, domain.CodeInvalidRequest)
			if p.Field != "Idempotency-Key" {
				t.Errorf("field = %q", p.Field)
			}
			e.WantUnchanged(t, before)
		})
	}
}
