package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/projections"
	"github.com/jetcqrs/jetcqrs/projections/contract"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
)

// keysPerCall runs a contract with a batch's hashes in one script call (the
// default), in one call per key (as on Redis Cluster) and in calls of 3 keys
// (a batch split over several calls).
var keysPerCall = []int{0, 1, 3}

func TestOrderStoreContract(t *testing.T) {
	for _, n := range keysPerCall {
		t.Run(fmt.Sprintf("keys_per_call=%d", n), func(t *testing.T) {
			contract.Orders(t, func(t *testing.T) contract.OrdersUnderTest {
				client, prefix := newClient(t)
				s := redisstore.NewOrderStore(client, prefix+"g1:")
				if n > 0 {
					s.WithKeysPerCall(n)
				}
				return s
			})
		})
	}
}

func TestInventoryStoreContract(t *testing.T) {
	for _, n := range keysPerCall {
		t.Run(fmt.Sprintf("keys_per_call=%d", n), func(t *testing.T) {
			contract.Inventory(t, func(t *testing.T) contract.InventoryUnderTest {
				client, prefix := newClient(t)
				s := redisstore.NewInventoryStore(client, prefix+"g1:")
				if n > 0 {
					s.WithKeysPerCall(n)
				}
				return s
			})
		})
	}
}

// The script cache is empty after a Redis restart; SCRIPT FLUSH empties it
// the same way. It runs on a private server: on the shared one, another
// test's Apply may load the script between the flush and this Apply.
func TestApplySurvivesScriptCacheLoss(t *testing.T) {
	url, _ := testenv.PrivateRedis(t)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	prefix := "t:"
	orders := redisstore.NewOrderStore(client, prefix+"g1:")
	stock := redisstore.NewInventoryStore(client, prefix+"g1:")
	h := history(t)
	half := len(h) / 2

	for _, part := range [][]projections.Envelope{h[:half], h[half:]} {
		if err := client.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		hook := recordCommands(client)
		if err := orders.Apply(t.Context(), part); err != nil {
			t.Fatalf("orders: Apply after SCRIPT FLUSH: %v", err)
		}
		if got := hook.names(); !slices.Contains(got, "script load") {
			t.Errorf("commands after SCRIPT FLUSH = %v, want the script loaded again", got)
		}
		if err := client.ScriptFlush(t.Context()).Err(); err != nil {
			t.Fatalf("SCRIPT FLUSH: %v", err)
		}
		if err := stock.Apply(t.Context(), part); err != nil {
			t.Fatalf("inventory: Apply after SCRIPT FLUSH: %v", err)
		}
	}

	got, err := orders.Order(t.Context(), "order-1")
	if err != nil || got.Status != "shipped" || got.Version != 3 {
		t.Errorf("Order(order-1) = %+v, %v; want shipped at version 3", got, err)
	}
	inv, err := stock.Inventory(t.Context(), "SKU-1")
	if want := (projections.InventoryView{SKU: "SKU-1", OnHand: 9, Reserved: 1, Available: 8, Version: 4}); err != nil || inv != want {
		t.Errorf("Inventory(SKU-1) = %+v, %v; want %+v", inv, err, want)
	}
}

func TestApplyIsOneRoundTrip(t *testing.T) {
	client, prefix := newClient(t)
	orders := redisstore.NewOrderStore(client, prefix+"g1:")
	stock := redisstore.NewInventoryStore(client, prefix+"g1:")
	// Load the script first, so the batch below needs no reload.
	warmUp := history(t)[:1]
	if err := orders.Apply(t.Context(), warmUp); err != nil {
		t.Fatal(err)
	}

	var batch []projections.Envelope
	for i := range 50 {
		at := testT0.Add(time.Duration(i) * time.Minute)
		batch = append(batch,
			orderEvent(t, uint64(100+2*i), domain.EventOrderPlaced,
				snapshot(fmt.Sprintf("order-%d", 100+i), "user-2", domain.StatusPlaced, 1, at)),
			envelope(t, uint64(101+2*i), domain.AggregateInventory, domain.EventInventoryAdjusted, domain.InventoryAdjusted{
				InventoryLevels: domain.InventoryLevels{SKU: fmt.Sprintf("SKU-%d", i), OnHand: 1, Available: 1, Version: 1}, Delta: 1}))
	}
	for name, s := range map[string]projections.Applier{"orders": orders, "inventory": stock} {
		hook := recordCommands(client)
		if err := s.Apply(t.Context(), batch); err != nil {
			t.Fatalf("%s: Apply: %v", name, err)
		}
		pipelines, singles := hook.counts()
		// Another test process may flush the script cache meanwhile; then
		// the script is loaded and the pipeline sent once more.
		reloaded := slices.Contains(hook.names(), "script load")
		if !(pipelines == 1 && singles == 0) && !(reloaded && pipelines == 2 && singles == 1) {
			t.Errorf("%s: Apply of %d events took %d pipelines and %d single commands, want 1 pipeline: %v",
				name, len(batch), pipelines, singles, hook.names())
		}
	}
}

// Replaying the whole stream into an existing model rewrites nothing: every
// key dumps to the same bytes.
func TestReplayLeavesKeysByteIdentical(t *testing.T) {
	client, prefix := newClient(t)
	gen := prefix + "g1:"
	orders := redisstore.NewOrderStore(client, gen)
	stock := redisstore.NewInventoryStore(client, gen)
	h := history(t)
	for _, s := range []projections.Applier{orders, stock} {
		for _, e := range h {
			if err := s.Apply(t.Context(), []projections.Envelope{e}); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := dumpKeys(t, client, gen)
	if len(before) != 4 {
		t.Fatalf("keys after the history: %v, want order:order-1, order:order-2, user:user-1:orders, inventory:SKU-1", slices.Sorted(maps.Keys(before)))
	}
	for _, s := range []projections.Applier{orders, stock} {
		if err := s.Apply(t.Context(), h); err != nil {
			t.Fatal(err)
		}
	}
	after := dumpKeys(t, client, gen)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("key %s changed on replay", k)
		}
	}
	if len(after) != len(before) {
		t.Errorf("keys after replay: %v, before: %v", slices.Sorted(maps.Keys(after)), slices.Sorted(maps.Keys(before)))
	}
}

func TestKeyLayoutAndGenerations(t *testing.T) {
	client, prefix := newClient(t)
	ordersG1 := redisstore.NewOrderStore(client, prefix+"g1:")
	stockG1 := redisstore.NewInventoryStore(client, prefix+"g1:")
	ordersG2 := redisstore.NewOrderStore(client, prefix+"g2:")
	stockG2 := redisstore.NewInventoryStore(client, prefix+"g2:")
	h := history(t)
	for _, s := range []projections.Applier{ordersG1, stockG1, ordersG2, stockG2} {
		if err := s.Apply(t.Context(), h); err != nil {
			t.Fatal(err)
		}
	}

	ctx := t.Context()
	order, err := client.HGetAll(ctx, prefix+"g1:order:order-1").Result()
	if err != nil || order["seq"] != "5" || order["version"] != "3" || order["user"] != "user-1" ||
		!json.Valid([]byte(order["view"])) || len(order) != 4 {
		t.Errorf("order:order-1 = %v, %v; want seq 5, version 3, user user-1, view", order, err)
	}
	list, err := client.ZRange(ctx, prefix+"g1:user:user-1:orders", 0, -1).Result()
	if err != nil || len(list) != 2 || !strings.HasSuffix(list[0], "|order-2") || !strings.HasSuffix(list[1], "|order-1") {
		t.Errorf("user:user-1:orders = %v, %v; want order-2 (older) then order-1", list, err)
	}
	stock, err := client.HGetAll(ctx, prefix+"g1:inventory:SKU-1").Result()
	want := map[string]string{"seq": "7", "on_hand": "9", "reserved": "1", "available": "8", "version": "4"}
	if err != nil || fmt.Sprint(stock) != fmt.Sprint(want) {
		t.Errorf("inventory:SKU-1 = %v, %v; want %v", stock, err, want)
	}

	if err := ordersG1.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := stockG1.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if keys := dumpKeys(t, client, prefix+"g1:"); len(keys) != 0 {
		t.Errorf("keys of the dropped generation: %v", slices.Sorted(maps.Keys(keys)))
	}
	if _, err := ordersG1.Order(ctx, "order-1"); !errors.Is(err, projections.ErrNotFound) {
		t.Errorf("Order in the dropped generation: %v, want ErrNotFound", err)
	}
	if keys := dumpKeys(t, client, prefix+"g2:"); len(keys) != 4 {
		t.Errorf("keys of the live generation after dropping the other: %v", slices.Sorted(maps.Keys(keys)))
	}
	if v, err := stockG2.Inventory(ctx, "SKU-1"); err != nil || v.OnHand != 9 {
		t.Errorf("Inventory in the live generation: %+v, %v", v, err)
	}
}

// TestOrderJSONReadsViewsWithoutUserField reads an order written before the
// hash had a user field: the user comes from the view.
func TestOrderJSONReadsViewsWithoutUserField(t *testing.T) {
	client, prefix := newClient(t)
	view := `{"order_id":"o-1","user_id":"u-7","status":"placed","items":[],"total_cents":0,"version":1}`
	if err := client.HSet(t.Context(), prefix+"order:o-1", "seq", "1", "version", "1", "view", view).Err(); err != nil {
		t.Fatal(err)
	}
	user, raw, err := redisstore.NewOrderStore(client, prefix).OrderJSON(t.Context(), "o-1")
	if err != nil || user != "u-7" || string(raw) != view {
		t.Errorf("OrderJSON = %q, %s, %v; want u-7 and the stored view", user, raw, err)
	}
}

func TestReadArgumentErrors(t *testing.T) {
	client, prefix := newClient(t)
	orders := redisstore.NewOrderStore(client, prefix+"g1:")
	stock := redisstore.NewInventoryStore(client, prefix+"g1:")
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

func newClient(t *testing.T) (*redis.Client, string) {
	t.Helper()
	url, prefix := testenv.RedisURL(t)
	opts, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opts)
	t.Cleanup(func() { _ = client.Close() })
	return client, prefix
}

var testT0 = time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)

// history is a short stream touching every key kind: two orders of one user
// and one SKU's stock.
func history(t *testing.T) []projections.Envelope {
	t.Helper()
	o1 := snapshot("order-1", "user-1", domain.StatusPlaced, 1, testT0)
	o2 := snapshot("order-2", "user-1", domain.StatusPlaced, 1, testT0.Add(-time.Hour))
	levels := func(onHand, reserved, version int64) domain.InventoryLevels {
		return domain.InventoryLevels{SKU: "SKU-1", OnHand: onHand, Reserved: reserved, Available: onHand - reserved, Version: version}
	}
	return []projections.Envelope{
		envelope(t, 1, domain.AggregateProduct, domain.EventProductCreated, domain.ProductCreated{ProductSnapshot: domain.ProductSnapshot{SKU: "SKU-1", Name: "One"}}),
		envelope(t, 2, domain.AggregateInventory, domain.EventInventoryAdjusted, domain.InventoryAdjusted{InventoryLevels: levels(10, 0, 1), Delta: 10}),
		orderEvent(t, 3, domain.EventOrderPlaced, o1),
		orderEvent(t, 4, domain.EventOrderPaid, next(o1, domain.StatusPaid, 2)),
		orderEvent(t, 5, domain.EventOrderShipped, next(o1, domain.StatusShipped, 3)),
		envelope(t, 6, domain.AggregateInventory, domain.EventInventoryReserved, domain.InventoryReserved{InventoryLevels: levels(10, 2, 2), Quantity: 2}),
		envelope(t, 7, domain.AggregateInventory, domain.EventInventoryShipped, domain.InventoryShipped{InventoryLevels: levels(9, 1, 4), Quantity: 1}),
		orderEvent(t, 8, domain.EventOrderPlaced, o2),
	}
}

func snapshot(id, userID string, status domain.OrderStatus, version int64, at time.Time) domain.OrderSnapshot {
	return domain.OrderSnapshot{
		OrderID: id, UserID: userID, Status: status, Version: version, PlacedAt: at, UpdatedAt: at,
		Items:      []domain.OrderLine{{SKU: "SKU-1", Name: "One", Category: "misc", Quantity: 1, PriceCents: 500}},
		TotalCents: 500, PaymentMethod: "card",
	}
}

func next(s domain.OrderSnapshot, status domain.OrderStatus, version int64) domain.OrderSnapshot {
	s.Status, s.Version = status, version
	s.UpdatedAt = s.UpdatedAt.Add(time.Duration(version) * time.Hour)
	return s
}

func orderEvent(t *testing.T, seq uint64, typ string, s domain.OrderSnapshot) projections.Envelope {
	t.Helper()
	return envelope(t, seq, domain.AggregateOrder, typ, s)
}

func envelope(t *testing.T, seq uint64, aggType, typ string, payload any) projections.Envelope {
	t.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return projections.Envelope{Seq: seq, ID: fmt.Sprintf("event-%d", seq), AggregateType: aggType,
		EventType: typ, SchemaVersion: domain.CurrentSchemaVersion, Payload: raw}
}

// dumpKeys returns DUMP of every key under prefix.
func dumpKeys(t *testing.T, client *redis.Client, prefix string) map[string]string {
	t.Helper()
	ctx := t.Context()
	dumps := map[string]string{}
	iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		d, err := client.Dump(ctx, iter.Val()).Result()
		if err != nil {
			t.Fatalf("DUMP %s: %v", iter.Val(), err)
		}
		dumps[strings.TrimPrefix(iter.Val(), prefix)] = d
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return dumps
}

// commandRecorder is a go-redis hook that records what a client sends.
type commandRecorder struct {
	mu        sync.Mutex
	cmds      []string
	pipelines int
	singles   int
}

// recordCommands records the commands client sends from now on, until the
// test ends. go-redis has no way to remove a hook, so each recorder stays
// installed and only the newest one is read.
func recordCommands(client *redis.Client) *commandRecorder {
	r := &commandRecorder{}
	client.AddHook(r)
	return r
}

func (r *commandRecorder) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *commandRecorder) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !connectionSetup[cmd.Name()] {
			r.mu.Lock()
			r.singles++
			r.cmds = append(r.cmds, commandName(cmd))
			r.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}

func (r *commandRecorder) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !connectionSetup[cmds[0].Name()] {
			r.mu.Lock()
			r.pipelines++
			for _, c := range cmds {
				r.cmds = append(r.cmds, commandName(c))
			}
			r.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

// connectionSetup are the commands go-redis sends on a new connection, which
// a recorder leaves out.
var connectionSetup = map[string]bool{"hello": true, "client": true, "auth": true, "select": true}

// commandName is the command's name with its subcommand, as "script load".
func commandName(cmd redis.Cmder) string {
	if args := cmd.Args(); cmd.Name() == "script" && len(args) > 1 {
		return "script " + strings.ToLower(fmt.Sprint(args[1]))
	}
	return cmd.Name()
}

func (r *commandRecorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.cmds)
}

func (r *commandRecorder) counts() (pipelines, singles int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pipelines, r.singles
}

// A key that holds another type (written by hand, or by something else
// sharing the database) makes the server refuse the write for what it is:
// Apply reports that as projections.ErrRejected, so the runtime isolates and
// dead-letters the event instead of retrying it forever. A network error is
// not a rejection: the runtime outwaits it.
func TestApplyReportsRefusedWritesAsRejected(t *testing.T) {
	client, prefix := newClient(t)
	stock := redisstore.NewInventoryStore(client, prefix+"g1:")
	if err := client.Set(t.Context(), prefix+"g1:inventory:SKU-9", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	levels := func(seq uint64, sku string) projections.Envelope {
		return envelope(t, seq, domain.AggregateInventory, domain.EventInventoryAdjusted, domain.InventoryAdjusted{
			InventoryLevels: domain.InventoryLevels{SKU: sku, OnHand: 1, Available: 1, Version: 1}, Delta: 1})
	}
	err := stock.Apply(t.Context(), []projections.Envelope{levels(1, "SKU-1"), levels(2, "SKU-9")})
	if !errors.Is(err, projections.ErrRejected) || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Apply onto a string key: %v, want ErrRejected with the server's WRONGTYPE", err)
	}
	if err := stock.Apply(t.Context(), []projections.Envelope{levels(1, "SKU-1")}); err != nil {
		t.Fatalf("the same store, another key: %v", err)
	}

	opts, err := redis.ParseURL("redis://127.0.0.1:1/0") // nothing listens on port 1
	if err != nil {
		t.Fatal(err)
	}
	opts.MaxRetries = -1
	down := redis.NewClient(opts)
	t.Cleanup(func() { _ = down.Close() })
	err = redisstore.NewInventoryStore(down, prefix+"g1:").Apply(t.Context(), []projections.Envelope{levels(3, "SKU-1")})
	if err == nil || errors.Is(err, projections.ErrRejected) {
		t.Fatalf("Apply with Redis unreachable: %v, want an error that is not a rejection", err)
	}
}

// The marker tells a generation that lost its keys from one never written:
// it is there once marked, through any Apply, and goes with Drop or with
// everything else when Redis loses its data.
func TestMarkerRecordsThatAGenerationExists(t *testing.T) {
	client, prefix := newClient(t)
	orders := redisstore.NewOrderStore(client, prefix+"g1:")
	stock := redisstore.NewInventoryStore(client, prefix+"g1:")
	type markable interface {
		projections.Applier
		Mark(context.Context) error
		Marked(context.Context) (bool, error)
		Drop(context.Context) error
	}
	for name, s := range map[string]markable{"orders": orders, "inventory": stock} {
		if ok, err := s.Marked(t.Context()); err != nil || ok {
			t.Fatalf("%s: Marked before Mark = %v, %v", name, ok, err)
		}
		if err := s.Mark(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := s.Apply(t.Context(), history(t)); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Marked(t.Context()); err != nil || !ok {
			t.Fatalf("%s: Marked after Mark and Apply = %v, %v", name, ok, err)
		}
		if err := s.Drop(t.Context()); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Marked(t.Context()); err != nil || ok {
			t.Fatalf("%s: Marked after Drop = %v, %v", name, ok, err)
		}
	}
	if keys := dumpKeys(t, client, prefix+"g1:"); len(keys) != 0 {
		t.Errorf("keys after Drop: %v", slices.Sorted(maps.Keys(keys)))
	}
}
