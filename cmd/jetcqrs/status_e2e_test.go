package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/opsstatus"
)

// TestStatusAndRebuildAgainstARunningSystem runs `jetcqrs status` and
// `jetcqrs rebuild` against a running deployment: the screen shows the
// relay, the streams, every read model and no alert, exit status 0; --json
// parses; `rebuild orders` follows the rebuild to its new generation, which
// status then shows; a dead letter and a stopped projector each make status
// name their alert and exit 1.
func TestStatusAndRebuildAgainstARunningSystem(t *testing.T) {
	s := startSystem(t, testConfig(t), All)
	admin := s.token("ops", domain.RoleAdmin)
	alice := s.token("alice", domain.RoleCustomer)
	s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": "S-1", "name": "Status mug",
		"category": "kitchen", "price_cents": 500}, nil, nil)
	s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/S-1/adjustments", admin, map[string]any{"delta": 50, "reason": "count"}, nil, nil)
	placeOrder := func() {
		s.expect(http.StatusCreated, http.MethodPost, "/v1/orders", alice, map[string]any{"user_id": "alice",
			"items": []map[string]any{{"sku": "S-1", "quantity": 1}}, "payment": map[string]string{"method": "card", "token": "t"}}, nil, nil)
	}
	for range 5 {
		placeOrder()
	}
	s.awaitCaughtUp(s, 20*time.Second)
	args := func(cmd ...string) []string { return append(cmd, "--server", s.base, "--data-dir", s.cfg.DataDir) }

	out, err := run(t, nil, args("status")...)
	if err != nil {
		t.Fatalf("status on a healthy system: %v\n%s", err, out)
	}
	for _, want := range []string{"RELAY", "cdc", "yes", s.cfg.SlotName, "STREAM", "EVENTS", "READ MODEL", "orders", "inventory",
		"catalog", "sales", "ALERTS  none"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	t.Logf("jetcqrs status:\n%s", out)

	out, err = run(t, nil, args("status", "--json")...)
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	var r opsstatus.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status --json does not parse: %v\n%s", err, out)
	}
	if len(r.Models) != 4 || len(r.Relays) != 1 || r.Relays[0].Status == nil || !r.Relays[0].Status.Leader ||
		len(r.Streams) == 0 || r.Streams[0].Name != "EVENTS" || r.Streams[0].Messages < 7 || len(r.Alerts) != 0 {
		t.Fatalf("status --json = %+v, want 4 models, the leading relay, EVENTS with the 7 events, no alert", r)
	}

	out, err = run(t, nil, args("rebuild", "orders")...)
	if err != nil {
		t.Fatalf("rebuild orders: %v\n%s", err, out)
	}
	if !strings.Contains(out, "rebuilding orders into g2") || !strings.Contains(out, "live") {
		t.Fatalf("rebuild orders printed:\n%s", out)
	}
	t.Logf("jetcqrs rebuild orders:\n%s", out)
	out, err = run(t, nil, args("status", "--json")...)
	if err != nil {
		t.Fatalf("status after the rebuild: %v\n%s", err, out)
	}
	r = opsstatus.Report{}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	for _, m := range r.Models {
		if m.Name == "orders" && m.Generation != "g2" {
			t.Fatalf("orders after the rebuild: generation %s, want g2", m.Generation)
		}
	}

	// A stopped projector: its oldest event waits past the 500 ms bound.
	s.pauseProjection("sales", time.Now().Add(time.Hour))
	placeOrder()
	time.Sleep(time.Second)
	out, err = run(t, nil, args("status")...)
	if !errors.Is(err, errAlerts) || !strings.Contains(out, "JetcqrsProjectionLagging: read model sales") {
		t.Fatalf("status with sales stopped: err %v, want exit 1 with the lag alert:\n%s", err, out)
	}
	s.pauseProjection("sales", time.Time{})
	deadline := time.Now().Add(20 * time.Second)
	for out, err = run(t, nil, args("status")...); err != nil; out, err = run(t, nil, args("status")...) {
		if time.Now().After(deadline) {
			t.Fatalf("status after sales resumed: %v\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A dead letter: the inventory key of a SKU holds a string.
	opts, err := redis.ParseURL(s.cfg.RedisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.Set(context.Background(), s.cfg.RedisPrefix+"g1:inventory:S-BAD", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.expect(http.StatusCreated, http.MethodPost, "/v1/products", admin, map[string]any{"sku": "S-BAD", "name": "Refused",
		"category": "kitchen", "price_cents": 500}, nil, nil)
	s.expect(http.StatusOK, http.MethodPost, "/v1/inventory/S-BAD/adjustments", admin, map[string]any{"delta": 1, "reason": "count"}, nil, nil)
	deadline = time.Now().Add(20 * time.Second)
	for {
		out, err = run(t, nil, args("status")...)
		if errors.Is(err, errAlerts) && strings.Contains(out, "JetcqrsDeadLetters: read model inventory") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status after a dead letter: err %v, want exit 1 with the dead-letter alert:\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("jetcqrs status with a dead letter:\n%s", out)
}
