package projections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/internal/testenv"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/projections"
)

// recorder is an in-memory Applier that records what it applied, per key, and
// can be told to fail or to call an event poison.
type recorder struct {
	mu      sync.Mutex
	applied map[string][]uint64 // aggregate id → seqs in apply order
	byProc  map[string]string   // aggregate id → which runtime applied it
	name    string
	failN   int
	poison  map[uint64]bool
	reject  map[uint64]bool // a batch holding one of these is rejected whole
	total   int
}

func newRecorder(name string) *recorder {
	return &recorder{applied: map[string][]uint64{}, byProc: map[string]string{}, name: name, poison: map[uint64]bool{},
		reject: map[uint64]bool{}}
}

func (r *recorder) Apply(_ context.Context, events []projections.Envelope) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failN > 0 {
		r.failN--
		return fmt.Errorf("store unavailable")
	}
	for _, e := range events {
		if r.poison[e.Seq] {
			return &projections.PoisonError{Seq: e.Seq, Reason: "cannot decode payload"}
		}
		if r.reject[e.Seq] {
			return fmt.Errorf("apply: %w: WRONGTYPE Operation against a key holding the wrong kind of value", projections.ErrRejected)
		}
	}
	for _, e := range events {
		r.applied[e.AggregateID] = append(r.applied[e.AggregateID], e.Seq)
		r.byProc[e.AggregateID] = r.name
		r.total++
	}
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

func publish(t *testing.T, js *testenv.JetStream, n, aggregates int) {
	t.Helper()
	publishTyped(t, js, n, aggregates, "OrderPaid")
}

// publishTyped publishes n order events of eventType over aggregates orders.
func publishTyped(t *testing.T, js *testenv.JetStream, n, aggregates int, eventType string) {
	t.Helper()
	pub, err := jnats.NewPublisher(js.JS, jnats.PublisherConfig{Partitions: js.Stream.Partitions}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	events := make([]jnats.Event, n)
	versions := map[string]int64{}
	for i := range events {
		agg := fmt.Sprintf("order-%03d", i%aggregates)
		versions[agg]++
		events[i] = jnats.Event{ID: uuid.NewString(), AggregateType: "order", AggregateID: agg,
			AggregateVersion: versions[agg], EventType: eventType, SchemaVersion: 1,
			OccurredAt: time.Now().UTC(), Payload: json.RawMessage(`{"n":` + fmt.Sprint(i) + `}`)}
	}
	after, _, err := pub.Last(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if acked, err := pub.PublishBatch(context.Background(), after, events); err != nil || acked != n {
		t.Fatalf("publish: acked %d of %d: %v", acked, n, err)
	}
}

func startRuntime(t *testing.T, js jetstream.JetStream, cfg projections.Config, store projections.Applier) context.CancelFunc {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	rt, err := projections.NewRuntime(js, cfg, []projections.Projection{{Name: "orders", AggregateTypes: []string{"order"}, Store: store}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("runtime: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("runtime did not stop")
		}
	})
	return cancel
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func assertInOrder(t *testing.T, r *recorder) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for agg, seqs := range r.applied {
		if !slices.IsSorted(seqs) {
			t.Fatalf("%s applied out of order: %v", agg, seqs)
		}
	}
}

func TestRuntimeAppliesEveryEventInOrderPerAggregate(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 4)
	rec := newRecorder("a")
	rec.failN = 3 // the store fails a few times first: the batch is retried, not skipped
	startRuntime(t, js.JS, projections.Config{Partitions: 4, RetryBackoff: 50 * time.Millisecond}, rec)
	publish(t, js, 2000, 50)
	waitFor(t, "2000 events applied", 30*time.Second, func() bool { return rec.count() >= 2000 })
	time.Sleep(200 * time.Millisecond)
	if got := rec.count(); got != 2000 {
		t.Fatalf("applied %d events, want exactly 2000", got)
	}
	assertInOrder(t, rec)
}

func TestRuntimeDeadLettersPoisonAndMovesOn(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	rec := newRecorder("a")
	publish(t, js, 10, 2)
	rec.poison[4] = true
	// A hand-published malformed event: no envelope headers at all.
	if _, err := js.JS.Publish(context.Background(), "events.order.0.OrderPaid", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	publish(t, js, 5, 2)
	startRuntime(t, js.JS, projections.Config{Partitions: 1}, rec)
	waitFor(t, "the good events applied", 20*time.Second, func() bool { return rec.count() >= 14 })
	dlq, err := js.JS.Stream(context.Background(), jnats.DefaultDeadLetterStreamName)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two dead letters", 10*time.Second, func() bool {
		info, err := dlq.Info(context.Background())
		return err == nil && info.State.Msgs == 2
	})
	reasons := map[string]string{}
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := dlq.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		reasons[m.Header.Get(projections.HeaderDLQStreamSeq)] = m.Header.Get(projections.HeaderDLQReason)
		if m.Subject != "dlq.orders.0" || m.Header.Get(projections.HeaderDLQProjection) != "orders" {
			t.Fatalf("dead letter %d: subject %q headers %v", seq, m.Subject, m.Header)
		}
	}
	if reasons["4"] != "cannot decode payload" || reasons["11"] == "" {
		t.Fatalf("dead-letter reasons = %v, want seq 4 (store poison) and seq 11 (malformed envelope)", reasons)
	}
	if got := rec.count(); got != 14 {
		t.Fatalf("applied %d, want 14 (16 published, 2 dead-lettered)", got)
	}
	assertInOrder(t, rec)
}

// TestRuntimeOneActiveWorkerPerPartition runs two runtimes (as two projector
// processes would) on the same consumers: each partition is applied by one of
// them at a time, and when that one stops the other takes over with nothing
// lost.
func TestRuntimeOneActiveWorkerPerPartition(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 2)
	a, b := newRecorder("a"), newRecorder("b")
	cfg := projections.Config{Partitions: 2, PinnedTTL: time.Second}
	stopA := startRuntime(t, js.JS, cfg, a)
	time.Sleep(300 * time.Millisecond) // let a pin the partitions first
	startRuntime(t, js.JS, cfg, b)
	publish(t, js, 400, 20)
	waitFor(t, "400 applied", 20*time.Second, func() bool { return a.count()+b.count() >= 400 })
	if a.count()+b.count() != 400 {
		t.Fatalf("applied %d+%d, want 400 exactly once", a.count(), b.count())
	}
	for agg := range a.applied {
		if _, both := b.applied[agg]; both {
			t.Fatalf("aggregate %s applied by both processes", agg)
		}
	}
	stopA()
	publish(t, js, 200, 20)
	waitFor(t, "takeover", 20*time.Second, func() bool { return a.count()+b.count() >= 600 })
	if a.count()+b.count() != 600 {
		t.Fatalf("applied %d+%d after takeover, want 600", a.count(), b.count())
	}
	assertInOrder(t, a)
	assertInOrder(t, b)
}

// gatedStore holds its first Apply until released, so a test can change the
// consumer while the worker is between pull requests.
type gatedStore struct {
	*recorder
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gatedStore) Apply(ctx context.Context, events []projections.Envelope) error {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.recorder.Apply(ctx, events)
}

// TestRuntimeRecreatesAConsumerDeletedBetweenPulls deletes the consumer while
// its worker is applying a batch, so that the next pull goes to a consumer
// that no longer exists (the server answers "no responders", not "consumer
// deleted"): the worker must re-create it and redeliver the whole stream.
func TestRuntimeRecreatesAConsumerDeletedBetweenPulls(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	store := &gatedStore{recorder: newRecorder("a"), entered: make(chan struct{}), release: make(chan struct{})}
	publish(t, js, 20, 4)
	cfg := projections.Config{Partitions: 1, RetryBackoff: 50 * time.Millisecond}
	rt, err := projections.NewRuntime(js.JS, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	startRuntime(t, js.JS, cfg, store)
	select {
	case <-store.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker never applied a batch")
	}
	if err := js.JS.DeleteConsumer(context.Background(), jnats.DefaultStreamName, rt.ConsumerName("orders", 0)); err != nil {
		t.Fatal(err)
	}
	close(store.release)
	// The first batch (whatever it held) is applied; the re-created consumer
	// then delivers all 20 events again, and the 5 published later.
	first := 0
	waitFor(t, "the first batch", 5*time.Second, func() bool { first = store.count(); return first > 0 })
	publish(t, js, 5, 4)
	waitFor(t, "the stream redelivered to a re-created consumer", 20*time.Second, func() bool {
		return store.count() >= first+25
	})
}

// TestStatusReportsTheAgeOfTheOldestUnappliedEvent checks the admin view of
// a projection that has fallen behind: what is pending, and for how long
// the oldest of it has waited.
func TestStatusReportsTheAgeOfTheOldestUnappliedEvent(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 2)
	rt, err := projections.NewRuntime(js.JS, projections.Config{Partitions: 2},
		[]projections.Projection{{Name: "orders", AggregateTypes: []string{"order"}, Store: newRecorder("a")}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.EnsureConsumers(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, err := rt.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 1 || st[0].State != "live" || st[0].Pending != 0 || st[0].LagMS != 0 {
		t.Fatalf("before any event: %+v", st)
	}
	publish(t, js, 30, 6)
	const waited = 300 * time.Millisecond
	time.Sleep(waited)
	st, err = rt.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st[0].State != "catching_up" || st[0].Pending != 30 || st[0].LagMS < waited.Milliseconds() || st[0].LagMS > 10_000 {
		t.Fatalf("with 30 events unapplied for %s: %+v", waited, st[0])
	}
}

// TestRuntimeDeadLettersWhatTheStoreRejects: a store that refuses a batch for
// one of its events (not for an outage) gets the batch again one event at a
// time; the event it still refuses goes to the dead-letter stream and the
// others are applied, in order.
func TestRuntimeDeadLettersWhatTheStoreRejects(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	rec := newRecorder("a")
	rec.reject[7] = true
	publish(t, js, 12, 3)
	startRuntime(t, js.JS, projections.Config{Partitions: 1}, rec)
	waitFor(t, "11 events applied", 20*time.Second, func() bool { return rec.count() >= 11 })
	dlq, err := js.JS.Stream(context.Background(), jnats.DefaultDeadLetterStreamName)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one dead letter", 10*time.Second, func() bool {
		info, err := dlq.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	})
	m, err := dlq.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if seq := m.Header.Get(projections.HeaderDLQStreamSeq); seq != "7" {
		t.Fatalf("dead-lettered seq %s, want 7", seq)
	}
	if reason := m.Header.Get(projections.HeaderDLQReason); !strings.Contains(reason, "rejected by the store") || !strings.Contains(reason, "WRONGTYPE") {
		t.Fatalf("reason %q", reason)
	}
	if m.Header.Get(jnats.HeaderAggregateID) == "" {
		t.Fatalf("the dead letter lost the event's headers: %v", m.Header)
	}
	time.Sleep(100 * time.Millisecond)
	if got := rec.count(); got != 11 {
		t.Fatalf("applied %d, want 11", got)
	}
	assertInOrder(t, rec)
}

// TestRetiredGenerationStopsInsteadOfRecreating: once a newer generation of
// the read model is live, a worker whose consumer was deleted stops rather
// than re-creating it, and the runtime returns.
func TestRetiredGenerationStopsInsteadOfRecreating(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	var retired sync.Map
	cfg := projections.Config{Partitions: 1, Logger: slog.New(slog.DiscardHandler),
		Retired: func(context.Context) bool { _, ok := retired.Load("orders"); return ok }}
	rec := newRecorder("a")
	rt, err := projections.NewRuntime(js.JS, cfg, []projections.Projection{{Name: "orders", AggregateTypes: []string{"order"}, Store: rec}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rt.Run(t.Context()) }()
	publish(t, js, 5, 1)
	waitFor(t, "5 applied", 10*time.Second, func() bool { return rec.count() == 5 })
	retired.Store("orders", true)
	name := rt.ConsumerName("orders", 0)
	if err := js.JS.DeleteConsumer(t.Context(), jnats.DefaultStreamName, name); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the retired runtime did not stop")
	}
	if _, err := js.JS.Consumer(t.Context(), jnats.DefaultStreamName, name); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer after retirement: %v, want not found", err)
	}
}

// TestEventTypesNarrowWhatTheServerDelivers: a projection that reads only
// some event types gets only those, and one naming an event type of another
// aggregate is refused.
func TestEventTypesNarrowWhatTheServerDelivers(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 2)
	if _, err := projections.NewRuntime(js.JS, projections.Config{Partitions: 2}, []projections.Projection{{Name: "sales",
		AggregateTypes: []string{"order"}, EventTypes: []string{"InventoryReserved"}, Store: newRecorder("a")}}); err == nil {
		t.Fatal("NewRuntime accepted an inventory event type for an order projection")
	}
	rec := newRecorder("a")
	cfg := projections.Config{Partitions: 2, Logger: slog.New(slog.DiscardHandler)}
	// Consumers made by an earlier build, with a filter per aggregate type,
	// are narrowed in place.
	broad, err := projections.NewRuntime(js.JS, cfg, []projections.Projection{{Name: "sales", AggregateTypes: []string{"order"}, Store: rec}})
	if err != nil {
		t.Fatal(err)
	}
	if err := broad.EnsureConsumers(t.Context()); err != nil {
		t.Fatal(err)
	}
	rt, err := projections.NewRuntime(js.JS, cfg, []projections.Projection{{Name: "sales", AggregateTypes: []string{"order"},
		EventTypes: []string{"OrderPlaced", "OrderCancelled"}, Store: rec}})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = rt.Run(t.Context()) }()
	publishTyped(t, js, 20, 5, "OrderPaid")
	publishTyped(t, js, 7, 5, "OrderPlaced")
	publishTyped(t, js, 3, 5, "OrderCancelled")
	waitFor(t, "10 events applied", 10*time.Second, func() bool { return rec.count() >= 10 })
	time.Sleep(200 * time.Millisecond)
	if got := rec.count(); got != 10 {
		t.Fatalf("applied %d events, want the 10 placed and cancelled ones", got)
	}
	c, err := js.JS.Consumer(t.Context(), jnats.DefaultStreamName, rt.ConsumerName("sales", 1))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CachedInfo().Config.FilterSubjects; !slices.Equal(got, []string{"events.order.1.OrderPlaced", "events.order.1.OrderCancelled"}) {
		t.Fatalf("filters of partition 1: %v", got)
	}
}

// crashingStore fails every batch that holds seq (0: every batch while
// down), as a store would that is down, or down for that event's key; and
// panics on every batch that holds panicSeq.
type crashingStore struct {
	*recorder
	seq      atomic.Uint64
	panicSeq uint64
	down     atomic.Bool
	failures atomic.Int64
}

func (c *crashingStore) Apply(ctx context.Context, events []projections.Envelope) error {
	if c.down.Load() {
		c.failures.Add(1)
		return fmt.Errorf("connection refused")
	}
	for _, e := range events {
		if e.Seq == c.seq.Load() {
			c.failures.Add(1)
			return fmt.Errorf("connection reset by peer")
		}
		if e.Seq == c.panicSeq {
			c.failures.Add(1)
			var m map[string]int
			m["boom"]++ // panics: assignment to entry in nil map
		}
	}
	return c.recorder.Apply(ctx, events)
}

// restartWhileFailing starts and stops a runtime rounds times, each time
// once the store has failed a batch: every event in hand is delivered again.
func restartWhileFailing(t *testing.T, js *testenv.JetStream, cfg projections.Config, store *crashingStore, rounds int) {
	t.Helper()
	for round := 1; round <= rounds; round++ {
		rt, err := projections.NewRuntime(js.JS, cfg, []projections.Projection{{Name: "orders", AggregateTypes: []string{"order"}, Store: store}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- rt.Run(ctx) }()
		before := store.failures.Load()
		waitFor(t, "a failed batch", 30*time.Second, func() bool { return store.failures.Load() > before })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("round %d: Run = %v", round, err)
		}
	}
}

func deadLetters(t *testing.T, js *testenv.JetStream) []string {
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
		if m, err := dlq.GetMsg(t.Context(), seq); err == nil {
			out = append(out, m.Header.Get(projections.HeaderDLQStreamSeq)+": "+m.Header.Get(projections.HeaderDLQReason))
		}
	}
	return out
}

// TestRuntimeOutwaitsAnOutageAcrossRestarts: projectors restarted eleven
// times while their store is down deliver the same events again and again,
// far past MaxDeliver and twice MaxDeliver; that alone dead-letters nothing,
// and everything is applied once the store is back. The outage shows in the
// runtime's readiness check meanwhile, and is gone once the store applies.
func TestRuntimeOutwaitsAnOutageAcrossRestarts(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	store := &crashingStore{recorder: newRecorder("a")}
	store.down.Store(true)
	publish(t, js, 3, 3)
	cfg := projections.Config{Partitions: 1, MaxDeliver: 2, RetryBackoff: 20 * time.Millisecond, PinnedTTL: time.Second,
		Logger: slog.New(slog.DiscardHandler)}
	restartWhileFailing(t, js, cfg, store, 11)
	rt, err := projections.NewRuntime(js.JS, cfg, []projections.Projection{{Name: "orders", AggregateTypes: []string{"order"}, Store: store}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	before := store.failures.Load()
	waitFor(t, "the events to fail again while the store is down", 10*time.Second, func() bool { return store.failures.Load() > before+3 })
	if err := rt.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Ready during the outage = %v, want the store's error", err)
	}
	if o := rt.Outages(); len(o) != 1 || o[0].Projection != "orders" || o[0].Failures < 3 {
		t.Errorf("Outages = %+v", o)
	}
	store.down.Store(false)
	waitFor(t, "all 3 applied", 10*time.Second, func() bool { return store.count() == 3 })
	if dls := deadLetters(t, js); len(dls) != 0 {
		t.Fatalf("dead letters after an outage across 11 restarts: %q", dls)
	}
	if err := rt.Ready(t.Context()); err != nil {
		t.Errorf("Ready once the store applies = %v", err)
	}
}

// TestRuntimeNeverDeadLettersAStoreFailure: an event whose every batch fails
// with a store error (its key's shard is down, say), delivered again by each
// projector that takes the partition after the previous one stopped holding
// it, waits: the events before it are applied, it and those behind it are
// applied once the store takes it, and nothing is dead-lettered.
func TestRuntimeNeverDeadLettersAStoreFailure(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	store := &crashingStore{recorder: newRecorder("a")}
	store.seq.Store(3)
	publish(t, js, 6, 2)
	cfg := projections.Config{Partitions: 1, MaxDeliver: 2, RetryBackoff: 20 * time.Millisecond, PinnedTTL: time.Second,
		Logger: slog.New(slog.DiscardHandler)}
	restartWhileFailing(t, js, cfg, store, 6)
	startRuntime(t, js.JS, cfg, store)
	before := store.failures.Load()
	waitFor(t, "seq 3 to fail on its own a few times", 10*time.Second, func() bool { return store.failures.Load() > before+5 })
	store.mu.Lock()
	applied := fmt.Sprint(store.applied)
	store.mu.Unlock()
	// The stream's seqs 1 and 2, before it, and nothing after it.
	if want := "map[order-000:[1] order-001:[2]]"; applied != want {
		t.Fatalf("applied %s with seq 3 failing, want %s", applied, want)
	}
	store.seq.Store(0)
	waitFor(t, "all 6 applied", 10*time.Second, func() bool { return store.count() == 6 })
	if dls := deadLetters(t, js); len(dls) != 0 {
		t.Fatalf("dead letters for a store failure: %q", dls)
	}
}

// TestRuntimeDeadLettersAnEventWhoseApplyPanics: a store whose code panics on
// one event costs that event, not the projector: it is tried on its own,
// dead-lettered once it panicked MaxDeliver times, and the partition moves on.
func TestRuntimeDeadLettersAnEventWhoseApplyPanics(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	store := &crashingStore{recorder: newRecorder("a"), panicSeq: 3}
	publish(t, js, 6, 2)
	cfg := projections.Config{Partitions: 1, MaxDeliver: 2, RetryBackoff: 20 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	startRuntime(t, js.JS, cfg, store)
	waitFor(t, "the other 5 applied", 10*time.Second, func() bool { return store.count() == 5 })
	var dls []string
	waitFor(t, "one dead letter", 10*time.Second, func() bool { dls = deadLetters(t, js); return len(dls) == 1 })
	if !strings.HasPrefix(dls[0], "3: applying it panicked 2 times") || !strings.Contains(dls[0], "nil map") {
		t.Fatalf("dead letter = %q", dls[0])
	}
	assertInOrder(t, store.recorder)
}

// TestRuntimeStartsBeforeItsConsumersCanBeCreated: a runtime whose
// consumers cannot be created when it starts (here the stream is not there
// yet; on a cluster, a leader election or a server too busy to answer in
// time) keeps running, and its workers create them once they can and apply
// everything.
func TestRuntimeStartsBeforeItsConsumersCanBeCreated(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 2)
	if err := js.JS.DeleteStream(t.Context(), jnats.DefaultStreamName); err != nil {
		t.Fatal(err)
	}
	store := newRecorder("a")
	rt, err := projections.NewRuntime(js.JS, projections.Config{Partitions: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	startRuntime(t, js.JS, projections.Config{Partitions: 2, RetryBackoff: 50 * time.Millisecond}, store)
	waitFor(t, "the workers to have tried", 5*time.Second, func() bool {
		_, err := js.JS.Consumer(t.Context(), jnats.DefaultStreamName, rt.ConsumerName("orders", 0))
		return errors.Is(err, jetstream.ErrStreamNotFound)
	})
	time.Sleep(200 * time.Millisecond) // a few of the workers' retries
	if _, err := jnats.EnsureStream(t.Context(), js.JS, js.Stream); err != nil {
		t.Fatal(err)
	}
	publish(t, js, 20, 4)
	waitFor(t, "every event applied", 20*time.Second, func() bool { return store.count() >= 20 })
	assertInOrder(t, store)
}

// sequenceStore records the stream sequences it applies, in order, across
// every aggregate of the partition.
type sequenceStore struct {
	mu   sync.Mutex
	seqs []uint64
}

func (s *sequenceStore) Apply(_ context.Context, events []projections.Envelope) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range events {
		s.seqs = append(s.seqs, e.Seq)
	}
	return nil
}

func (s *sequenceStore) applied() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seqs)
}

// TestRuntimeNeverAppliesPastAnEventHeldElsewhere: the server redelivers an
// event only once its own ack wait or nak delay is over, so a partition's
// events come back in any order when a projector stopped or died holding
// several of them. Here one took the partition's first three events,
// applied the first, vanished with the second (it comes back only after
// AckWait) and gave the third back at once: the runtime that takes over gets
// the third first, and must leave it until the second is applied.
func TestRuntimeNeverAppliesPastAnEventHeldElsewhere(t *testing.T) {
	t.Parallel()
	js := testenv.NATS(t, 1)
	publish(t, js, 3, 2)
	cfg := projections.Config{Partitions: 1, AckWait: 2 * time.Second, PinnedTTL: time.Second,
		RetryBackoff: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	store := &sequenceStore{}
	rt, err := projections.NewRuntime(js.JS, cfg, []projections.Projection{{Name: "orders", AggregateTypes: []string{"order"}, Store: store}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.EnsureConsumers(t.Context()); err != nil {
		t.Fatal(err)
	}
	consumer, err := js.JS.Consumer(t.Context(), jnats.DefaultStreamName, rt.ConsumerName("orders", 0))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := consumer.Fetch(3, jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup("jetcqrs"))
	if err != nil {
		t.Fatal(err)
	}
	var held []jetstream.Msg
	for m := range batch.Messages() {
		held = append(held, m)
	}
	if len(held) != 3 {
		t.Fatalf("fetched %d events, want 3 (%v)", len(held), batch.Error())
	}
	seqs := make([]uint64, 3)
	for i, m := range held {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		seqs[i] = md.Sequence.Stream
	}
	if err := held[0].DoubleAck(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := held[2].Nak(); err != nil { // held[1] is left to its ack wait
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	waitFor(t, "both events applied", 15*time.Second, func() bool { return len(store.applied()) >= 2 })
	time.Sleep(200 * time.Millisecond) // nothing else is due
	if got, want := store.applied(), seqs[1:]; !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v: the partition's stream order", got, want)
	}
}
