package relay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/internal/relaypub"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/internal/testlog"
	"github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/postgres"
	"github.com/jetcqrs/jetcqrs/relay"
)

// Child-process mode: the crash and failover tests run relays as separate
// processes (this test binary re-executed) so that they can be SIGKILLed.
const (
	childEnv     = "RELAY_TEST_CHILD"
	childDBEnv   = "RELAY_TEST_DATABASE_URL"
	childNATSEnv = "RELAY_TEST_NATS_URL"
	childSlotEnv = "RELAY_TEST_SLOT"
	// childStatusEnv, if set, is the child's StatusInterval.
	childStatusEnv = "RELAY_TEST_STATUS_INTERVAL"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// runChild runs one relay until SIGTERM, as cmd/ will: its own NATS
// connection and publisher, and the relay's defaults except for short test
// intervals.
func runChild() int {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(ctx, os.Getenv(childNATSEnv), os.Getenv(childEnv), logger)
	if err != nil {
		logger.Error("child: nats", "err", err)
		return 2
	}
	defer nc.Close()
	pub, err := newNATSPublisher(nc, logger)
	if err != nil {
		logger.Error("child: publisher", "err", err)
		return 2
	}
	cfg := testConfig(os.Getenv(childDBEnv), os.Getenv(childSlotEnv), logger)
	if d, err := time.ParseDuration(os.Getenv(childStatusEnv)); err == nil {
		// A slow status interval keeps acknowledged events unconfirmed.
		cfg.StatusInterval, cfg.DeadPeerTimeout = d, 3*d
	}
	r, err := relay.New(cfg, pub)
	if err != nil {
		logger.Error("child: relay", "err", err)
		return 2
	}
	if err := r.Run(ctx); err != nil {
		logger.Error("child: relay stopped", "err", err)
		return 1
	}
	return 0
}

// newNATSPublisher is the relay's publisher as cmd/ builds it.
func newNATSPublisher(nc *natsgo.Conn, logger *slog.Logger) (relaypub.Publisher, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return relaypub.Publisher{}, err
	}
	p, err := nats.NewPublisher(js, nats.PublisherConfig{}, logger)
	if err != nil {
		return relaypub.Publisher{}, err
	}
	return relaypub.New(p), nil
}

func testConfig(dbURL, slot string, logger *slog.Logger) relay.Config {
	return relay.Config{
		DatabaseURL:        dbURL,
		SlotName:           slot,
		PublicationName:    slot,
		StatusInterval:     200 * time.Millisecond,
		HeartbeatInterval:  time.Second,
		LeaderPollInterval: 200 * time.Millisecond,
		PollInterval:       200 * time.Millisecond,
		DrainTimeout:       10 * time.Second,
		LedgerInterval:     500 * time.Millisecond,
		Logger:             logger,
	}
}

// env is one test's world: a fresh migrated database, an embedded
// nats-server with the EVENTS stream, and a unique slot name.
type env struct {
	t      testing.TB
	dbURL  string
	slot   string
	logger *slog.Logger
	pool   *pgxpool.Pool

	mu        sync.Mutex
	srv       *nats.Server
	natsPort  int
	natsStore string
	js        jetstream.JetStream
	// clusterURL, when set, is the NATS cluster the test uses instead of
	// the embedded single server.
	clusterURL string
}

// newDatabaseEnv is env without NATS.
func newDatabaseEnv(t testing.TB) *env {
	t.Helper()
	testenv.RequireLogicalWAL(t)
	e := &env{t: t, dbURL: testenv.PostgresURL(t), slot: "jetcqrs_t_" + randomHex(), logger: testLogger(t)}
	ctx := t.Context()
	if err := postgres.Migrate(ctx, e.dbURL, e.logger); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	// Runs after every relay of the test has stopped (cleanups run last in,
	// first out) and before testenv drops the database.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := relay.DropSlot(ctx, e.dbURL, e.slot); err != nil {
			t.Errorf("drop slot: %v", err)
		}
		if err := relay.DropPublication(ctx, e.dbURL, e.slot); err != nil {
			t.Errorf("drop publication: %v", err)
		}
		if err := relay.DropPollTrigger(ctx, e.dbURL); err != nil {
			t.Errorf("drop polling trigger: %v", err)
		}
	})
	pool, err := pgxpool.New(ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	e.pool = pool
	return e
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := newDatabaseEnv(t)
	ctx := t.Context()
	e.natsStore = t.TempDir()
	e.startNATS(nats.RandomPort)
	t.Cleanup(e.stopNATS)
	u, err := url.Parse(e.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	e.natsPort, _ = strconv.Atoi(u.Port())
	js, err := jetstream.New(e.connect("test-reader"))
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	if _, err := nats.EnsureStream(ctx, js, nats.StreamConfig{}); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	return e
}

func (e *env) startNATS(port int) {
	e.t.Helper()
	srv, err := nats.StartEmbedded(nats.ServerConfig{Port: port, StoreDir: e.natsStore}, e.logger)
	if err != nil {
		e.t.Fatalf("StartEmbedded: %v", err)
	}
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
}

func (e *env) stopNATS() {
	e.mu.Lock()
	srv := e.srv
	e.srv = nil
	e.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
	}
}

func (e *env) natsURL() string {
	if e.clusterURL != "" {
		return e.clusterURL
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", e.natsPort)
}

func (e *env) connect(name string) *natsgo.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 10*time.Second)
	defer cancel()
	nc, err := nats.Connect(ctx, e.natsURL(), name, e.logger)
	if err != nil {
		e.t.Fatalf("nats.Connect: %v", err)
	}
	e.t.Cleanup(nc.Close)
	return nc
}

func (e *env) config() relay.Config { return testConfig(e.dbURL, e.slot, e.logger) }

// startRelay runs a relay in this process until the test ends; Run must
// then return nil.
func (e *env) startRelay(cfg relay.Config) *relay.Relay {
	e.t.Helper()
	r, stop := e.runRelay(cfg)
	e.t.Cleanup(func() {
		if err := stop(); err != nil {
			e.t.Errorf("relay Run: %v", err)
		}
	})
	return r
}

// runRelay starts a relay with its own NATS connection; stop cancels Run
// and returns its error.
func (e *env) runRelay(cfg relay.Config) (*relay.Relay, func() error) {
	e.t.Helper()
	pub, err := newNATSPublisher(e.connect("relay"), e.logger)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err := relay.New(cfg, pub)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := r.Install(e.t.Context()); err != nil {
		e.t.Fatalf("Install: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var runErr error
	return r, func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("Run did not return within 30s of cancel")
			}
		})
		return runErr
	}
}

// streamCount is how many messages the EVENTS stream holds. It waits out a
// reconnect of the test's own connection.
func (e *env) streamCount() uint64 {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(e.t.Context(), 5*time.Second)
		s, err := e.js.Stream(ctx, nats.DefaultStreamName)
		cancel()
		if err == nil {
			return s.CachedInfo().State.Msgs
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("stream info: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitCount waits until the stream holds at least n messages.
func (e *env) waitCount(n uint64, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := e.streamCount()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("stream holds %d events after %s, want %d", got, timeout, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamEvents reads the whole stream in order.
func (e *env) streamEvents() []nats.Event { return e.streamEventsAfter(0) }

// streamEventsAfter reads the stream in order, skipping its first skip
// messages (the tests never delete any, so position n has sequence n).
func (e *env) streamEventsAfter(skip uint64) []nats.Event {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 2*time.Minute)
	defer cancel()
	total := e.streamCount()
	if total <= skip {
		return nil
	}
	cons, err := e.js.OrderedConsumer(ctx, nats.DefaultStreamName, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   skip + 1,
	})
	if err != nil {
		e.t.Fatalf("ordered consumer: %v", err)
	}
	want := total - skip
	out := make([]nats.Event, 0, want)
	for uint64(len(out)) < want {
		batch, err := cons.Fetch(int(min(want-uint64(len(out)), 5000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			e.t.Fatalf("fetch: %v", err)
		}
		n := 0
		for msg := range batch.Messages() {
			ev, err := nats.DecodeMsg(msg.Subject(), msg.Headers(), msg.Data())
			if err != nil {
				e.t.Fatalf("decode stream message: %v", err)
			}
			out = append(out, ev)
			n++
		}
		if err := batch.Error(); err != nil && n == 0 {
			e.t.Fatalf("fetch: %v", err)
		}
	}
	return out
}

func streamIDs(events []nats.Event) []string {
	ids := make([]string, len(events))
	for i, ev := range events {
		ids[i] = ev.ID
	}
	return ids
}

// checkExactlyOnce checks that the stream holds each committed id once and
// nothing else.
func checkExactlyOnce(t *testing.T, got []nats.Event, committed []string) {
	t.Helper()
	want := make(map[string]bool, len(committed))
	for _, id := range committed {
		want[id] = true
	}
	seen := make(map[string]int, len(got))
	var extra, dup []string
	for _, ev := range got {
		seen[ev.ID]++
		switch {
		case !want[ev.ID]:
			extra = append(extra, ev.ID)
		case seen[ev.ID] == 2:
			dup = append(dup, ev.ID)
		}
	}
	var missing []string
	for _, id := range committed {
		if seen[id] == 0 {
			missing = append(missing, id)
		}
	}
	if len(got) != len(committed) || len(extra)+len(dup)+len(missing) > 0 {
		t.Errorf("stream holds %d events, %d committed: %d missing %.3q, %d duplicated %.3q, %d never committed %.3q",
			len(got), len(committed), len(missing), missing, len(dup), dup, len(extra), extra)
	}
}

// checkAggregateOrder checks that each aggregate's versions appear in the
// stream in increasing order.
func checkAggregateOrder(t *testing.T, got []nats.Event) {
	t.Helper()
	last := map[string]int64{}
	bad := 0
	for _, ev := range got {
		k := ev.AggregateType + "/" + ev.AggregateID
		if ev.AggregateVersion <= last[k] {
			if bad++; bad <= 5 {
				t.Errorf("%s: version %d after %d", k, ev.AggregateVersion, last[k])
			}
		}
		last[k] = ev.AggregateVersion
	}
}

// writer commits transactions of outbox rows from several goroutines until
// stopped, rolling some back, and records what committed. Goroutines share
// aggregates: like the write store, a transaction takes the aggregate's row
// lock (test_aggregates) before it writes the aggregate's next versions, so
// an aggregate's transactions are serialized while others interleave.
type writer struct {
	t    *testing.T
	pool *pgxpool.Pool
	opts writerOptions

	mu        sync.Mutex
	committed []string
	rolled    []string
	stop      context.CancelFunc
	wg        sync.WaitGroup
}

type writerOptions struct {
	goroutines int
	aggregates int
	// pause is the time between a goroutine's transactions; hold is the
	// most a transaction waits, at random, between its writes and its
	// commit, to shuffle the commit order.
	pause, hold time.Duration
}

const createTestAggregates = `CREATE TABLE IF NOT EXISTS test_aggregates (id text PRIMARY KEY, version bigint NOT NULL)`

// nextVersions locks the aggregate and reserves its next n versions,
// returning the first.
const nextVersions = `INSERT INTO test_aggregates (id, version) VALUES ($1, $2)
	ON CONFLICT (id) DO UPDATE SET version = test_aggregates.version + $2
	RETURNING version - $2 + 1`

// insertOutbox inserts n events of one aggregate with versions from..from+n-1.
const insertOutbox = `INSERT INTO outbox_events
	(id, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version, payload, headers, occurred_at)
	SELECT gen_random_uuid(), 'order', $1, v, 'OrderPlaced', 1, jsonb_build_object('v', v, 'pad', repeat('x', 64)),
		'{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}', now()
	FROM generate_series($2::bigint, $2::bigint + $3 - 1) AS v
	ORDER BY v
	RETURNING id::text`

func startWriter(t *testing.T, pool *pgxpool.Pool, opts writerOptions) *writer {
	t.Helper()
	if _, err := pool.Exec(t.Context(), createTestAggregates); err != nil {
		t.Fatal(err)
	}
	opts.goroutines = max(opts.goroutines, 1)
	opts.aggregates = max(opts.aggregates, 1)
	ctx, cancel := context.WithCancel(context.Background())
	w := &writer{t: t, pool: pool, opts: opts, stop: cancel}
	for g := range opts.goroutines {
		w.wg.Go(func() { w.run(ctx, g) })
	}
	t.Cleanup(w.finish)
	return w
}

func (w *writer) run(ctx context.Context, g int) {
	rng := mrand.New(mrand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
	for i := 0; ctx.Err() == nil; i++ {
		agg := fmt.Sprintf("agg-%d", rng.IntN(w.opts.aggregates))
		n := 1 + rng.IntN(5)
		rollback := rng.IntN(10) == 0
		var hold time.Duration
		if w.opts.hold > 0 {
			hold = time.Duration(rng.Int64N(int64(w.opts.hold)))
		}
		ids, err := w.tx(ctx, agg, n, hold, rollback)
		if err != nil {
			if ctx.Err() == nil {
				w.t.Errorf("writer %d: %v", g, err)
			}
			return
		}
		w.mu.Lock()
		if rollback {
			w.rolled = append(w.rolled, ids...)
		} else {
			w.committed = append(w.committed, ids...)
		}
		w.mu.Unlock()
		if w.opts.pause > 0 {
			time.Sleep(w.opts.pause)
		}
	}
}

// tx writes n events in one transaction. The commit uses a context that is
// never cancelled, so a stopped writer knows whether it committed.
func (w *writer) tx(ctx context.Context, agg string, n int, hold time.Duration, rollback bool) ([]string, error) {
	tx, err := w.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = tx.Rollback(context.Background()) }() // no-op after commit
	var from int64
	if err := tx.QueryRow(ctx, nextVersions, agg, n).Scan(&from); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, insertOutbox, agg, from, n)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	time.Sleep(hold)
	if rollback {
		return ids, tx.Rollback(context.Background())
	}
	return ids, tx.Commit(context.Background())
}

// finish stops the writers and waits for them.
func (w *writer) finish() {
	w.stop()
	w.wg.Wait()
}

func (w *writer) committedIDs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.committed...)
}

// waitCommitted waits until the writers have committed at least n events.
func (w *writer) waitCommitted(n int, timeout time.Duration) {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for len(w.committedIDs()) < n {
		if time.Now().After(deadline) {
			w.t.Fatalf("writers committed %d events in %s, want %d", len(w.committedIDs()), timeout, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// child is a relay running in another process.
type child struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

func (e *env) startChild(name string, env ...string) *child {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	dbURL, err := url.Parse(e.dbURL)
	if err != nil {
		e.t.Fatal(err)
	}
	q := dbURL.Query()
	q.Set("application_name", name)
	dbURL.RawQuery = q.Encode()
	cmd.Env = append(os.Environ(),
		childEnv+"="+name,
		childDBEnv+"="+dbURL.String(),
		childNATSEnv+"="+e.natsURL(),
		childSlotEnv+"="+e.slot,
	)
	cmd.Env = append(cmd.Env, env...)
	c := &child{name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start child relay: %v", err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	e.t.Cleanup(func() {
		c.kill()
		if e.t.Failed() {
			e.t.Logf("output of child relay %s:\n%s", name, c.out.String())
		}
	})
	return c
}

func (c *child) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// terminate stops the child gracefully and returns how it exited.
func (c *child) terminate(timeout time.Duration) error {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.err
	case <-time.After(timeout):
		c.kill()
		return fmt.Errorf("child %s did not exit within %s of SIGTERM", c.name, timeout)
	}
}

// streamingApp returns the application_name of the session streaming the
// slot, or "".
func (e *env) streamingApp() string {
	e.t.Helper()
	var app *string
	err := e.pool.QueryRow(e.t.Context(), `SELECT a.application_name FROM pg_replication_slots s
		JOIN pg_stat_activity a ON a.pid = s.active_pid WHERE s.slot_name = $1`, e.slot).Scan(&app)
	if errors.Is(err, pgx.ErrNoRows) || app == nil {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return *app
}

func (e *env) waitStreaming(app string, timeout time.Duration) time.Duration {
	e.t.Helper()
	start := time.Now()
	for {
		if got := e.streamingApp(); got == app {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			e.t.Fatalf("slot %s not streamed by %q within %s (by %q)", e.slot, app, timeout, e.streamingApp())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger logs to the test's output until the test ends (nats.go logs
// from its own goroutines, possibly later).
func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("RELAY_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return testlog.New(t, level)
}

func randomHex() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// install creates what cfg's mode needs before the first write: a slot only
// sees transactions that commit after it exists.
func (e *env) install(cfg relay.Config) {
	e.t.Helper()
	if err := relay.Install(e.t.Context(), cfg); err != nil {
		e.t.Fatalf("Install: %v", err)
	}
}
