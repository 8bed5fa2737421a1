package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
	redisstore "github.com/jetcqrs/jetcqrs/projections/redis"
)

// transientReplies are error replies of a Redis that is not fit to write for
// now, each as the server words it: not one of them may dead-letter an event.
var transientReplies = []string{
	"MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk. Commands that may modify the data set are disabled, because this instance is configured to report errors during writes if RDB snapshotting fails (stop-writes-on-bgsave-error option). Please check the Redis logs for details about the RDB error.",
	"ERR max number of clients reached",
	"NOAUTH Authentication required.",
	"NOPERM User jetcqrs has no permissions to run the 'evalsha' command",
	"LOADING Redis is loading the dataset in memory",
	"READONLY You can't write against a read only replica.",
	"OOM command not allowed when used memory > 'maxmemory'.",
	"BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
	"MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
	"NOREPLICAS Not enough good replicas to write.",
	"CLUSTERDOWN The cluster is down",
	"TRYAGAIN Multiple keys request during rehashing of slot",
}

// TestTransientRepliesDeadLetterNothing runs the order and stock models
// through a Redis stand-in that answers each transient error reply in turn
// while events arrive: nothing is dead-lettered, the outage shows in the
// runtime's readiness check and in its store-error metric under the reply's
// code, and the models catch up once Redis answers normally. A real
// WRONGTYPE (a key of another type) still dead-letters its event, and only
// that one.
func TestTransientRepliesDeadLetterNothing(t *testing.T) {
	js := testenv.NATS(t, 2)
	direct, prefix := newClient(t)
	proxy := testenv.StartRESPProxy(t, direct.Options().Addr)
	client := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: direct.Options().DB, MaxRetries: -1})
	t.Cleanup(func() { _ = client.Close() })
	orders := redisstore.NewOrderStore(client, prefix+"g1:")
	stock := redisstore.NewInventoryStore(client, prefix+"g1:")
	reg := prometheus.NewRegistry()
	rt, err := projections.NewRuntime(js.JS, projections.Config{Partitions: 2, MaxDeliver: 2,
		RetryBackoff: 20 * time.Millisecond, Registry: reg, Logger: slog.New(slog.DiscardHandler)},
		[]projections.Projection{
			{Name: "orders", AggregateTypes: []string{domain.AggregateOrder}, Store: orders},
			{Name: "inventory", AggregateTypes: []string{domain.AggregateInventory}, Store: stock},
		})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	pub := newEventLog(t, js)
	readOrders := redisstore.NewOrderStore(direct, prefix+"g1:")
	readStock := redisstore.NewInventoryStore(direct, prefix+"g1:")

	for i, reply := range transientReplies {
		code := strings.Fields(reply)[0]
		if code == "ERR" {
			code = "ERR_max"
		}
		before := storeErrors(t, reg, code)
		proxy.Refuse(reply)
		id := fmt.Sprintf("order-%02d", i)
		pub.order(id, domain.StatusPlaced)
		pub.order(id, domain.StatusPaid)
		pub.stock("SKU-1", int64(i+1))
		waitUntil(t, "the runtime to meet "+code, func() bool {
			return storeErrors(t, reg, "orders", code)[0] > before[0] && storeErrors(t, reg, "inventory", code)[0] > before[1]
		})
		if err := rt.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), code) {
			t.Errorf("%s: Ready = %v, want the outage with the store's reply", code, err)
		}
		proxy.Refuse("")
		waitUntil(t, "the models to catch up after "+code, func() bool {
			o, err := readOrders.Order(t.Context(), id)
			s, err2 := readStock.Inventory(t.Context(), "SKU-1")
			return err == nil && o.Version == 2 && o.Status == string(domain.StatusPaid) && err2 == nil && s.Version == int64(i+1)
		})
		waitUntil(t, "the outage to end after "+code, func() bool { return rt.Ready(t.Context()) == nil })
	}
	if dls := deadLetterSeqs(t, js); len(dls) != 0 {
		t.Fatalf("dead letters after transient replies: %v", dls)
	}

	// A real refusal: the key of one order holds a string.
	if err := direct.Set(t.Context(), prefix+"g1:order:order-bad", "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pub.order("order-a", domain.StatusPlaced)
	bad := pub.order("order-bad", domain.StatusPlaced)
	pub.order("order-b", domain.StatusPlaced)
	pub.order("order-a", domain.StatusPaid)
	waitUntil(t, "the orders next to the refused one", func() bool {
		a, errA := readOrders.Order(t.Context(), "order-a")
		_, errB := readOrders.Order(t.Context(), "order-b")
		return errA == nil && a.Version == 2 && errB == nil
	})
	var dls []string
	waitUntil(t, "one dead letter", func() bool { dls = deadLetterSeqs(t, js); return len(dls) == 1 })
	if want := strconv.FormatUint(bad, 10) + ": rejected by the store"; !strings.HasPrefix(dls[0], want) || !strings.Contains(dls[0], "WRONGTYPE") {
		t.Fatalf("dead letter %q, want %q… WRONGTYPE", dls[0], want)
	}
}

// eventLog publishes order and stock events as the write side would, each
// aggregate's versions counting up.
type eventLog struct {
	t        *testing.T
	js       *testenv.JetStream
	pub      *jnats.Publisher
	versions map[string]int64
	at       time.Time
}

func newEventLog(t *testing.T, js *testenv.JetStream) *eventLog {
	pub, err := jnats.NewPublisher(js.JS, jnats.PublisherConfig{Partitions: js.Stream.Partitions}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return &eventLog{t: t, js: js, pub: pub, versions: map[string]int64{}, at: testT0}
}

// order publishes the next version of order id in status and returns its
// stream sequence.
func (l *eventLog) order(id string, status domain.OrderStatus) uint64 {
	l.versions[id]++
	v := l.versions[id]
	typ := map[domain.OrderStatus]string{domain.StatusPlaced: domain.EventOrderPlaced, domain.StatusPaid: domain.EventOrderPaid}[status]
	return l.publish(domain.AggregateOrder, id, v, typ, next(snapshot(id, "user-1", domain.StatusPlaced, 1, l.at), status, v))
}

func (l *eventLog) stock(sku string, onHand int64) uint64 {
	l.versions[sku]++
	v := l.versions[sku]
	return l.publish(domain.AggregateInventory, sku, v, domain.EventInventoryAdjusted, domain.InventoryAdjusted{
		InventoryLevels: domain.InventoryLevels{SKU: sku, OnHand: onHand, Available: onHand, Version: v}, Delta: 1})
}

func (l *eventLog) publish(aggType, id string, version int64, typ string, payload any) uint64 {
	l.t.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		l.t.Fatal(err)
	}
	ev := jnats.Event{ID: uuid.NewString(), AggregateType: aggType, AggregateID: id, AggregateVersion: version,
		EventType: typ, SchemaVersion: domain.CurrentSchemaVersion, OccurredAt: l.at, Payload: raw}
	after, _, err := l.pub.Last(l.t.Context())
	if err != nil {
		l.t.Fatal(err)
	}
	if n, err := l.pub.PublishBatch(l.t.Context(), after, []jnats.Event{ev}); err != nil || n != 1 {
		l.t.Fatalf("publish %s %s v%d: %v", typ, id, version, err)
	}
	stream, err := l.js.JS.Stream(l.t.Context(), jnats.DefaultStreamName)
	if err != nil {
		l.t.Fatal(err)
	}
	info, err := stream.Info(l.t.Context())
	if err != nil {
		l.t.Fatal(err)
	}
	return info.State.LastSeq
}

// storeErrors reads jetcqrs_projection_store_errors_total for projection
// and reply; with the reply alone, it returns the orders and inventory
// values.
func storeErrors(t *testing.T, reg *prometheus.Registry, labels ...string) []float64 {
	t.Helper()
	if len(labels) == 1 {
		return []float64{storeErrors(t, reg, "orders", labels[0])[0], storeErrors(t, reg, "inventory", labels[0])[0]}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "jetcqrs_projection_store_errors_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if got["projection"] == labels[0] && got["reply"] == labels[1] {
				return []float64{m.GetCounter().GetValue()}
			}
		}
	}
	return []float64{0}
}

func deadLetterSeqs(t *testing.T, js *testenv.JetStream) []string {
	t.Helper()
	dlq, err := js.JS.Stream(t.Context(), jnats.DefaultDeadLetterStreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlq.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := dlq.GetMsg(t.Context(), seq)
		if errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
		if err == nil {
			out = append(out, m.Header.Get(projections.HeaderDLQStreamSeq)+": "+m.Header.Get(projections.HeaderDLQReason))
		}
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
