package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	natsgo "github.com/nats-io/nats.go"

	"github.com/jetcqrs/jetcqrs/adminapi"
	"github.com/jetcqrs/jetcqrs/domain"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
)

// TestDeadLettersListAndReplay: a hand-published malformed event is dead-
// lettered by every projection that reads its subject while later events of
// the partition still apply; `dlq list` shows it with its reason, and `dlq
// replay` refuses it (it still cannot apply) but applies and removes a dead
// letter whose event is sound.
func TestDeadLettersListAndReplay(t *testing.T) {
	cfg := testConfig(t)
	cfg.Partitions = 1
	s := startSystem(t, cfg, All)
	ctx := context.Background()
	admin := s.token("ops", domain.RoleAdmin)
	alice := s.token("alice", domain.RoleCustomer)

	// A poison event on the order partition: a valid envelope, a payload
	// that is not an order.
	bad := jnats.Event{ID: uuid.NewString(), AggregateType: "order", AggregateID: uuid.NewString(), AggregateVersion: 1,
		EventType: domain.EventOrderPlaced, SchemaVersion: 1, OccurredAt: time.Now().UTC(), Payload: []byte(`{"order_id": 42}`)}
	msg, err := bad.Msg(cfg.Partitions)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.main.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	// Later events of the same partition still apply.
	s.do(http.MethodPost, "/v1/products", admin, map[string]any{"sku": "P-1", "name": "Pen", "category": "office", "price_cents": 150}, nil, nil)
	resp, raw := s.do(http.MethodPost, "/v1/inventory/P-1/adjustments", admin, map[string]any{"delta": 10, "reason": "count"}, nil, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("adjust: %d %s", resp.StatusCode, raw)
	}
	var placed struct {
		OrderID string `json:"order_id"`
	}
	resp, raw = s.do(http.MethodPost, "/v1/orders", alice, map[string]any{"user_id": "alice",
		"items": []map[string]any{{"sku": "P-1", "quantity": 1}}, "payment": map[string]string{"method": "card", "token": "t"}}, nil, &placed)
	if resp.StatusCode != 201 {
		t.Fatalf("place: %d %s", resp.StatusCode, raw)
	}
	tok := resp.Header.Get("X-Consistency-Token")
	if resp, raw = s.do(http.MethodGet, "/v1/orders/"+placed.OrderID, alice, nil, map[string]string{"X-Consistency-Token": tok}, nil); resp.StatusCode != 200 {
		t.Fatalf("the order after the poison event did not apply: %d %s", resp.StatusCode, raw)
	}

	c := &adminapi.Client{Base: s.base, Token: admin}
	var dls []projections.DeadLetter
	deadline := time.Now().Add(15 * time.Second)
	for len(dls) < 2 && time.Now().Before(deadline) {
		if dls, err = c.DeadLetters(ctx, "", 100); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := map[string]projections.DeadLetter{}
	for _, d := range dls {
		got[d.Projection] = d
	}
	for _, p := range []string{"orders", "sales"} {
		d, ok := got[p]
		if !ok || d.EventID != bad.ID || d.StreamSeq != 1 || d.Reason == "" {
			t.Fatalf("dead letters = %+v, want the poison event (stream seq 1) for %s with a reason", dls, p)
		}
	}
	if err := c.Replay(ctx, got["orders"].DLQSeq); err == nil || !strings.Contains(err.Error(), "still does not apply") {
		t.Fatalf("replaying the poison event: %v, want it refused", err)
	}

	// A sound event that was dead-lettered (as after too many deliveries)
	// replays: it applies with its own stream sequence and leaves the DLQ.
	id := uuid.NewString()
	snap := domain.OrderSnapshot{OrderID: id, UserID: "alice", Status: domain.StatusPlaced, TotalCents: 150, Version: 1,
		Items:    []domain.OrderLine{{SKU: "P-1", Name: "Pen", Category: "office", Quantity: 1, PriceCents: 150}},
		PlacedAt: time.Now().UTC().Truncate(time.Microsecond), UpdatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	payload, _ := json.Marshal(domain.OrderPlaced{OrderSnapshot: snap})
	good := jnats.Event{ID: uuid.NewString(), AggregateType: "order", AggregateID: id, AggregateVersion: 1,
		EventType: domain.EventOrderPlaced, SchemaVersion: 1, OccurredAt: time.Now().UTC(), Payload: payload}
	gm, err := good.Msg(cfg.Partitions)
	if err != nil {
		t.Fatal(err)
	}
	dm := natsgo.NewMsg("dlq.orders.0")
	dm.Header = gm.Header
	dm.Header.Set(projections.HeaderDLQProjection, "orders")
	dm.Header.Set(projections.HeaderDLQReason, "delivered 6 times without being applied")
	dm.Header.Set(projections.HeaderDLQStreamSeq, "1000000")
	dm.Header.Set(projections.HeaderDLQEventID, good.ID)
	dm.Header.Set(jnats.HeaderMsgID, "orders-g1-1000000")
	dm.Header.Set(projections.HeaderDLQSubject, gm.Subject)
	dm.Data = gm.Data
	ack, err := s.main.js.PublishMsg(ctx, dm)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := dlqCmd(s.cfg)
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"replay", "--server", s.base, strconv.FormatUint(ack.Sequence, 10)})
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("dlq replay: %v", err)
	}
	if !strings.Contains(out.String(), "replayed") {
		t.Fatalf("dlq replay printed %q", out.String())
	}
	var view struct {
		OrderID string `json:"order_id"`
		Status  string `json:"status"`
	}
	if resp, raw = s.do(http.MethodGet, "/v1/orders/"+id, alice, nil, nil, &view); resp.StatusCode != 200 || view.Status != "placed" {
		t.Fatalf("replayed order: %d %s", resp.StatusCode, raw)
	}
	if err := c.Replay(ctx, ack.Sequence); err == nil || !strings.Contains(err.Error(), "no such dead letter") {
		t.Fatalf("a replayed dead letter is still there: %v", err)
	}
}
