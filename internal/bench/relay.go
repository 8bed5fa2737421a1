package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/jetcqrs/jetcqrs/internal/relaypub"
	"github.com/jetcqrs/jetcqrs/internal/telemetry"
	jnats "github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/postgres"
	"github.com/jetcqrs/jetcqrs/relay"
)

// RelayDrainConfig configures the relay-drain benchmark.
type RelayDrainConfig struct {
	// ServerURL is a PostgreSQL URL (wal_level=logical) whose server gets a
	// scratch database.
	ServerURL string
	// Events is the backlog drained in each transaction shape.
	Events int
	Log    io.Writer
}

// RelayDrain measures how fast the CDC relay drains a backlog of outbox
// events into JetStream, in 1-event and in 100-event transactions, against
// two raw baselines run on the same backlog in the same run: a bare
// pglogrepl loop on its own slot that only decodes the pgoutput inserts, and
// bare asynchronous JetStream publishing of the same messages. The relay does
// both, so its rate is compared with the slower of the two. It returns the
// markdown section.
func RelayDrain(ctx context.Context, cfg RelayDrainConfig) (string, error) {
	cfg.Events = max(100, cfg.Events/100*100) // whole 100-event transactions
	const name = "jetcqrs_bench_relay_drain"
	dbURL, drop, err := scratchReplicationDatabase(ctx, cfg.ServerURL, name)
	if err != nil {
		return "", err
	}
	defer drop()
	if err := postgres.Migrate(ctx, dbURL, discardLogger()); err != nil {
		return "", err
	}
	b, err := startBroker(ctx)
	if err != nil {
		return "", err
	}
	defer b.close()

	var out strings.Builder
	fmt.Fprintf(&out, "## Relay drain: CDC relay vs bare decoding and bare publishing\n\n")
	fmt.Fprintf(&out, "`jetcqrs-bench relay-drain` on %s. A backlog of %d OrderPlaced outbox events (about 470-byte\n", Machine(), cfg.Events)
	out.WriteString("payloads, traceparent in the headers) is committed while the slots exist and nothing reads them, in\n")
	out.WriteString("transactions of 1 and of 100 events. Then, one after the other on the same WAL:\n\n")
	out.WriteString("- **decode-only**: a bare pglogrepl loop on its own slot that parses every pgoutput message of the backlog\n")
	out.WriteString("  (`pglogrepl.ParseV2`, inserts decoded into their text columns) and nothing else;\n")
	out.WriteString("- **publish-only**: the backlog's messages (same subjects, headers and payloads, built before the clock\n")
	out.WriteString("  starts) published with `PublishMsgAsync` on one connection, 4096 in flight, into a fresh stream;\n")
	out.WriteString("- **relay**: the CDC relay (`relay.New` + `Run`, default settings) from start until the stream has\n")
	out.WriteString("  acknowledged every event, into a fresh stream.\n\n")
	out.WriteString("Rates are events/s from the start of each run (connections included) to the last event; the ack\n")
	out.WriteString("latencies are per event, from `PublishMsgAsync` to its ack (the relay's from its publisher's `OnAck`).\n")
	out.WriteString("The target is relay / min(decode-only, publish-only) ≥ 0.7.\n\n")
	out.WriteString("| events/tx | decode-only ev/s | publish-only ev/s | publish-only ack p50 / p99 ms | relay ev/s | relay ack p50 / p99 ms | relay / min(baselines) |\n")
	out.WriteString("|---:|---:|---:|---:|---:|---:|---:|\n")
	var missed []string
	for _, perTx := range []int{1, 100} {
		r, err := drainShape(ctx, cfg, dbURL, name, b, perTx)
		if err != nil {
			return "", fmt.Errorf("%d events per transaction: %w", perTx, err)
		}
		floor := min(r.decode, r.publish.Throughput())
		fmt.Fprintf(&out, "| %d | %.0f | %.0f | %s / %s | %.0f | %s / %s | %.2f |\n", perTx,
			r.decode, r.publish.Throughput(), ms(r.publish.P50), ms(r.publish.P99),
			r.relay.Throughput(), ms(r.relay.P50), ms(r.relay.P99), r.relay.Throughput()/floor)
		if ratio := r.relay.Throughput() / floor; ratio < 0.7 {
			missed = append(missed, fmt.Sprintf("%.2f at %d events/tx", ratio, perTx))
		}
	}
	fmt.Fprintf(&out, "\nTarget (relay ≥ 0.7 × min(baselines)): %s.\n", verdict(missed))
	return out.String(), nil
}

type drainResult struct {
	decode         float64
	publish, relay Result
}

func drainShape(ctx context.Context, cfg RelayDrainConfig, dbURL, name string, b *broker, perTx int) (drainResult, error) {
	var res drainResult
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `TRUNCATE outbox_events`); err != nil {
		return res, err
	}
	relaySlot, rawSlot := name+"_relay", name+"_raw"
	if err := createPublication(ctx, pool, name); err != nil {
		return res, err
	}
	defer func() { _ = relay.DropPublication(context.WithoutCancel(ctx), dbURL, name) }()
	if err := prepareRelayRun(ctx, pool, relay.Config{DatabaseURL: dbURL, SlotName: relaySlot, PublicationName: name}); err != nil {
		return res, err
	}
	if err := createSlot(ctx, pool, rawSlot); err != nil {
		return res, err
	}
	for _, slot := range []string{relaySlot, rawSlot} {
		defer func() { _ = relay.DropSlot(context.WithoutCancel(ctx), dbURL, slot) }()
	}

	fmt.Fprintf(cfg.Log, "  writing a backlog of %d events in transactions of %d\n", cfg.Events, perTx)
	if err := writeBacklog(ctx, pool, cfg.Events, perTx); err != nil {
		return res, err
	}

	// decode-only
	var decoded atomic.Int64
	stop := Progress(cfg.Log, fmt.Sprintf("decode-only, %d/tx", perTx), 5*time.Second, decoded.Load)
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	start := time.Now()
	err = streamBare(dctx, dbURL, rawSlot, name, bareHandlers{
		insert: func(*pglogrepl.RelationMessageV2, *pglogrepl.TupleData) error {
			if decoded.Add(1) == int64(cfg.Events) {
				return errStopStreaming
			}
			return nil
		},
	})
	elapsed := time.Since(start)
	stop()
	if err == nil && decoded.Load() < int64(cfg.Events) {
		err = fmt.Errorf("decoded %d of %d events in 5 minutes", decoded.Load(), cfg.Events)
	}
	if err != nil {
		return res, fmt.Errorf("decode-only: %w", err)
	}
	res.decode = float64(cfg.Events) / elapsed.Seconds()
	fmt.Fprintf(cfg.Log, "decode-only, %d/tx: %d events in %s, %.0f events/s\n", perTx, cfg.Events, elapsed.Round(time.Millisecond), res.decode)
	_ = relay.DropSlot(ctx, dbURL, rawSlot)

	// publish-only
	msgs, err := backlogMessages(ctx, pool)
	if err != nil {
		return res, err
	}
	if err := b.freshStream(ctx); err != nil {
		return res, err
	}
	if res.publish, err = barePublish(ctx, b.nc, msgs, fmt.Sprintf("publish-only, %d/tx", perTx), cfg.Log); err != nil {
		return res, fmt.Errorf("publish-only: %w", err)
	}
	msgs = nil // garbage before the relay runs

	// relay
	if err := b.freshStream(ctx); err != nil {
		return res, err
	}
	if res.relay, err = runRelayDrain(ctx, cfg, dbURL, relaySlot, name, b, perTx); err != nil {
		return res, fmt.Errorf("relay: %w", err)
	}
	return res, nil
}

func runRelayDrain(ctx context.Context, cfg RelayDrainConfig, dbURL, slot, publication string, b *broker, perTx int) (Result, error) {
	rec := NewRecorder()
	pub, err := jnats.NewPublisher(b.js, jnats.PublisherConfig{
		OnAck: func(a jnats.AckInfo) { rec.Observe(a.AckedAt.Sub(a.SentAt)) },
	}, discardLogger())
	if err != nil {
		return Result{}, err
	}
	var acked atomic.Int64
	done := make(chan time.Time, 1)
	r, err := relay.New(relay.Config{DatabaseURL: dbURL, SlotName: slot, PublicationName: publication, Logger: discardLogger()},
		observedPublisher{next: relaypub.New(pub), acked: func(n int) {
			if acked.Add(int64(n)) == int64(cfg.Events) {
				done <- time.Now()
			}
		}})
	if err != nil {
		return Result{}, err
	}
	label := fmt.Sprintf("relay, %d/tx", perTx)
	stop := Progress(cfg.Log, label, 5*time.Second, acked.Load)
	defer stop()
	runCtx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	start := time.Now()
	go func() { runErr <- r.Run(runCtx) }()
	var end time.Time
	select {
	case end = <-done:
	case err := <-runErr:
		cancel()
		return Result{}, fmt.Errorf("relay stopped after %d of %d events: %v", acked.Load(), cfg.Events, err)
	case <-time.After(5 * time.Minute):
		cancel()
		<-runErr
		return Result{}, fmt.Errorf("relay published %d of %d events in 5 minutes", acked.Load(), cfg.Events)
	case <-ctx.Done():
		cancel()
		<-runErr
		return Result{}, ctx.Err()
	}
	cancel()
	if err := <-runErr; err != nil {
		return Result{}, err
	}
	res := rec.Result(label, end.Sub(start))
	res.Ops = int64(cfg.Events)
	fmt.Fprintf(cfg.Log, "%s: %d events in %s, %.0f events/s, ack p50 %s ms, p99 %s ms\n", label, cfg.Events,
		res.Elapsed.Round(time.Millisecond), res.Throughput(), ms(res.P50), ms(res.P99))
	return res, nil
}

// writeBacklog commits n OrderPlaced outbox rows in transactions of perTx
// rows (perTx divides n) from one session: a DO block that COMMITs after
// each, with synchronous_commit off so that the backlog is written fast.
func writeBacklog(ctx context.Context, pool *pgxpool.Pool, n, perTx int) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for _, sql := range []string{
		`SET synchronous_commit = off`,
		fmt.Sprintf(`DO $$
		BEGIN
			FOR t IN 1..%d LOOP
				INSERT INTO outbox_events
					(id, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version, payload, headers, occurred_at)
				SELECT e.id, 'order', e.id::text, 1, 'OrderPlaced', 1, %s, %s, now()
				FROM (SELECT gen_random_uuid() AS id, g FROM generate_series(1, %d) AS g) AS e;
				COMMIT;
			END LOOP;
		END $$`, n/perTx, orderPayloadSQL, headersSQL, perTx),
		`RESET synchronous_commit`,
		// A synchronous commit flushes the WAL before it: the walsenders
		// send only flushed WAL, and the runs must not wait for the WAL writer.
		`SELECT pg_current_xact_id()`,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("write backlog: %w", err)
		}
	}
	return nil
}

// orderPayloadSQL builds an OrderPlaced payload as the store writes it, for
// the order e.id, in writeBacklog's query.
const orderPayloadSQL = `jsonb_build_object('order_id', e.id, 'user_id', 'user-' || (e.g % 997), 'status', 'placed',
	'items', jsonb_build_array(
		jsonb_build_object('sku', 'SKU-' || lpad((e.g % 1000)::text, 5, '0'), 'name', 'Product ' || (e.g % 1000),
			'category', 'cat-' || (e.g % 10), 'quantity', 1, 'price_cents', 1999),
		jsonb_build_object('sku', 'SKU-' || lpad(((e.g + 7) % 1000)::text, 5, '0'), 'name', 'Product ' || ((e.g + 7) % 1000),
			'category', 'cat-' || ((e.g + 7) % 10), 'quantity', 2, 'price_cents', 2599)),
	'total_cents', 7197, 'payment_method', 'card', 'version', 1, 'placed_at', now(), 'updated_at', now())`

// headersSQL is the headers column the store writes for a traced command.
const headersSQL = `jsonb_build_object('traceparent', '00-' || md5(e.id::text) || '-' || substr(md5(e.g::text), 1, 16) || '-01',
	'actor', 'bench-admin', 'role', 'admin')`

// backlogMessages reads the outbox back as the JetStream messages the relay
// publishes for it, in commit order.
func backlogMessages(ctx context.Context, pool *pgxpool.Pool) ([]*natsgo.Msg, error) {
	rows, err := pool.Query(ctx, `SELECT id::text, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version,
			payload::text, coalesce(headers ->> 'traceparent', ''), occurred_at
		FROM outbox_events ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	var msgs []*natsgo.Msg
	var e jnats.Event
	var payload string
	_, err = pgx.ForEachRow(rows, []any{&e.ID, &e.AggregateType, &e.AggregateID, &e.AggregateVersion, &e.EventType,
		&e.SchemaVersion, &payload, &e.TraceParent, &e.OccurredAt}, func() error {
		e.Payload = []byte(payload)
		m, err := e.Msg(jnats.DefaultPartitions)
		if err != nil {
			return err
		}
		msgs = append(msgs, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read backlog: %w", err)
	}
	return msgs, nil
}

// barePublish publishes msgs with PublishMsgAsync on nc, the relay's window
// in flight, and returns the rate and the publish-to-ack latencies.
func barePublish(ctx context.Context, nc *natsgo.Conn, msgs []*natsgo.Msg, label string, log io.Writer) (Result, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(jnats.DefaultMaxInFlight),
		jetstream.WithPublishAsyncTimeout(jnats.DefaultAckTimeout))
	if err != nil {
		return Result{}, err
	}
	type pending struct {
		fut jetstream.PubAckFuture
		at  time.Time
	}
	rec := NewRecorder()
	var acked atomic.Int64
	queue := make(chan pending, jnats.DefaultMaxInFlight*2)
	ackErr := make(chan error, 1)
	go func() {
		var first error
		for p := range queue {
			select {
			case <-p.fut.Ok():
				rec.Observe(time.Since(p.at))
				acked.Add(1)
			case err := <-p.fut.Err():
				if first == nil {
					first = err
				}
			}
		}
		ackErr <- first
	}()
	stop := Progress(log, label, 5*time.Second, acked.Load)
	start := time.Now()
	var pubErr error
	for _, m := range msgs {
		if pubErr = ctx.Err(); pubErr != nil {
			break
		}
		at := time.Now()
		fut, err := js.PublishMsgAsync(m, jetstream.WithStallWait(jnats.DefaultAckTimeout), jetstream.WithRetryAttempts(0))
		if err != nil {
			pubErr = err
			break
		}
		queue <- pending{fut, at}
	}
	close(queue)
	err = <-ackErr
	elapsed := time.Since(start)
	stop()
	if err = errors.Join(pubErr, err); err != nil {
		return Result{}, err
	}
	res := rec.Result(label, elapsed)
	fmt.Fprintf(log, "%s: %d events in %s, %.0f events/s, ack p50 %s ms, p99 %s ms\n", label, res.Ops,
		elapsed.Round(time.Millisecond), res.Throughput(), ms(res.P50), ms(res.P99))
	return res, nil
}

// observedPublisher lets a benchmark watch what the relay publishes: sent
// sees each batch before it is published, acked counts what was acknowledged.
type observedPublisher struct {
	next  relay.Publisher
	sent  func([]relay.Event)
	acked func(int)
}

func (p observedPublisher) Last(ctx context.Context) (uint64, string, error) {
	return p.next.Last(ctx)
}

func (p observedPublisher) LastPosition(ctx context.Context, after uint64) (uint64, string, error) {
	return p.next.LastPosition(ctx, after)
}

func (p observedPublisher) EventIDs(ctx context.Context, after, through uint64, fn func(uint64, string) error) error {
	return p.next.EventIDs(ctx, after, through, fn)
}

func (p observedPublisher) PublishBatch(ctx context.Context, after uint64, events []relay.Event) (int, error) {
	if p.sent != nil {
		p.sent(events)
	}
	n, err := p.next.PublishBatch(ctx, after, events)
	if p.acked != nil && n > 0 {
		p.acked(n)
	}
	return n, err
}

func (p observedPublisher) PublishStream(ctx context.Context, after uint64, batches <-chan []relay.Event, acked func()) (int, error) {
	in := batches
	if p.sent != nil {
		seen := make(chan []relay.Event)
		done := make(chan struct{})
		defer close(done)
		go func() {
			defer close(seen)
			for b := range batches {
				p.sent(b)
				select {
				case seen <- b:
				case <-done:
					return
				}
			}
		}()
		in = seen
	}
	onAck := acked
	if p.acked != nil {
		onAck = func() {
			if acked != nil {
				acked()
			}
			p.acked(1)
		}
	}
	return p.next.PublishStream(ctx, after, in, onAck)
}

// broker is an embedded nats-server in a temporary directory with the
// EVENTS stream.
type broker struct {
	srv *jnats.Server
	nc  *natsgo.Conn
	js  jetstream.JetStream
	dir string
}

func startBroker(ctx context.Context) (*broker, error) {
	dir, err := os.MkdirTemp("", "jetcqrs-bench-nats-*")
	if err != nil {
		return nil, err
	}
	b := &broker{dir: dir}
	if b.srv, err = jnats.StartEmbedded(jnats.ServerConfig{Port: jnats.RandomPort, StoreDir: dir}, discardLogger()); err != nil {
		b.close()
		return nil, err
	}
	if b.nc, err = b.connect(ctx, "bench"); err != nil {
		b.close()
		return nil, err
	}
	if b.js, err = jetstream.New(b.nc); err != nil {
		b.close()
		return nil, err
	}
	if _, err := jnats.EnsureStream(ctx, b.js, jnats.StreamConfig{}); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *broker) connect(ctx context.Context, name string) (*natsgo.Conn, error) {
	return jnats.Connect(ctx, b.srv.ClientURL(), name, discardLogger())
}

// freshStream deletes the EVENTS stream and creates it empty.
func (b *broker) freshStream(ctx context.Context) error {
	if err := b.js.DeleteStream(ctx, jnats.DefaultStreamName); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	// The server removes a deleted stream's files asynchronously; creating
	// it again at once can fail with "error creating store for stream".
	var err error
	for attempt := 0; attempt < 50; attempt++ {
		if _, err = jnats.EnsureStream(ctx, b.js, jnats.StreamConfig{}); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

func (b *broker) close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
	}
	_ = os.RemoveAll(b.dir)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// scratchReplicationDatabase is ScratchDatabase for a database that gets
// replication slots: slots left on it by an interrupted run are dropped
// first (a logical slot keeps its database from being dropped and pins WAL),
// and again before the database is dropped.
func scratchReplicationDatabase(ctx context.Context, serverURL, name string) (string, func(), error) {
	if err := dropSlotsOn(ctx, serverURL, name); err != nil {
		return "", nil, err
	}
	dbURL, drop, err := ScratchDatabase(ctx, serverURL, name)
	if err != nil {
		return "", nil, err
	}
	return dbURL, func() {
		_ = dropSlotsOn(context.Background(), serverURL, name)
		drop()
	}, nil
}

// dropSlotsOn drops every replication slot on database db, ending the
// walsenders that still hold one.
func dropSlotsOn(ctx context.Context, serverURL, db string) error {
	conn, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL (run `bash scripts/services.sh`): %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for attempt := 0; ; attempt++ {
		_, err := conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE database = $1 AND active_pid IS NOT NULL`, db)
		if err == nil {
			_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE database = $1 AND NOT active`, db)
		}
		var left int
		if err == nil {
			err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1`, db).Scan(&left)
		}
		if err == nil && left == 0 {
			return nil
		}
		if attempt == 50 {
			return fmt.Errorf("drop replication slots on %s: %d left: %v", db, left, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createPublication creates the relay's publication: outbox_events, inserts only.
func createPublication(ctx context.Context, pool *pgxpool.Pool, name string) error {
	_, err := pool.Exec(ctx, `CREATE PUBLICATION `+pgx.Identifier{name}.Sanitize()+
		` FOR TABLE outbox_events WITH (publish = 'insert')`)
	if err != nil {
		return fmt.Errorf("create publication %s: %w", name, err)
	}
	return nil
}

// prepareRelayRun readies a scratch database for a relay run into a fresh
// stream: the rows of earlier runs are not this run's to publish (they are
// recorded as published), the relay's ledger starts over with the stream, and
// for CDC the relay's slot is created as the relay creates it, with its
// snapshot, so that it streams what commits from now on.
func prepareRelayRun(ctx context.Context, pool *pgxpool.Pool, cfg relay.Config) error {
	for _, sql := range []string{
		`UPDATE outbox_events SET published_at = coalesce(published_at, now()), stream_seq = 0 WHERE stream_seq IS NULL`,
		`DELETE FROM relay_stream_mark`,
		`DELETE FROM relay_slots`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			return fmt.Errorf("prepare relay run: %w", err)
		}
	}
	if cfg.Mode == relay.ModePoll {
		return nil
	}
	return relay.Install(ctx, cfg)
}

// createSlot creates a pgoutput slot; it sees what commits from now on.
func createSlot(ctx context.Context, pool *pgxpool.Pool, slot string) error {
	if _, err := pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, slot); err != nil {
		return fmt.Errorf("create replication slot %s: %w", slot, err)
	}
	return nil
}

// errStopStreaming ends streamBare without an error.
var errStopStreaming = errors.New("stop streaming")

// bareHandlers receive what streamBare decodes; a handler returning
// errStopStreaming ends the stream.
type bareHandlers struct {
	insert func(rel *pglogrepl.RelationMessageV2, tuple *pglogrepl.TupleData) error
	commit func(m *pglogrepl.CommitMessage) error
}

// streamBare is the raw baseline of the relay's reading side: pglogrepl on
// its own, streaming slot through publication with pgoutput protocol 2 and
// parsing every message, reporting its position every second, until ctx
// ends or a handler stops it. Tuples alias the receive buffer: copy what
// must outlive the handler.
func streamBare(ctx context.Context, dbURL, slot, publication string, h bareHandlers) error {
	cfg, err := pgconn.ParseConfig(dbURL)
	if err != nil {
		return err
	}
	cfg.RuntimeParams["replication"] = "database"
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("replication connection: %w", err)
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '2'", "publication_names '" + publication + "'"},
	})
	if err != nil {
		return fmt.Errorf("start replication: %w", err)
	}
	// A socket deadline instead of a context per receive, as the relay does.
	netConn := conn.Conn()
	stopWaiting := context.AfterFunc(ctx, func() { _ = netConn.SetReadDeadline(time.Now()) })
	defer stopWaiting()
	relations := map[uint32]*pglogrepl.RelationMessageV2{}
	var pos pglogrepl.LSN
	nextStatus := time.Now().Add(time.Second)
	for {
		if ctx.Err() != nil {
			return nil
		}
		if !time.Now().Before(nextStatus) {
			err := pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos})
			if err != nil {
				return err
			}
			nextStatus = time.Now().Add(time.Second)
		}
		_ = netConn.SetReadDeadline(nextStatus)
		if ctx.Err() != nil {
			return nil
		}
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if pgconn.Timeout(err) {
				continue
			}
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if len(m.Data) == 0 {
				continue
			}
			switch m.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(m.Data[1:])
				if err != nil {
					return err
				}
				if ka.ReplyRequested {
					nextStatus = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(m.Data[1:])
				if err != nil {
					return err
				}
				pos = xld.WALStart + pglogrepl.LSN(len(xld.WALData))
				lm, err := pglogrepl.ParseV2(xld.WALData, false)
				if err != nil {
					return err
				}
				switch v := lm.(type) {
				case *pglogrepl.RelationMessageV2:
					relations[v.RelationID] = v
				case *pglogrepl.InsertMessageV2:
					if h.insert != nil {
						err = h.insert(relations[v.RelationID], v.Tuple)
					}
				case *pglogrepl.CommitMessage:
					if h.commit != nil {
						err = h.commit(v)
					}
				}
				if errors.Is(err, errStopStreaming) {
					return nil
				}
				if err != nil {
					return err
				}
			}
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		case *pgproto3.CopyDone:
			return errors.New("the server ended the replication stream")
		}
	}
}

// bareRelay is the raw baseline of the whole relay: streamBare, each
// committed insert turned into a message (subject from its aggregate, the
// envelope headers copied from its columns, the payload as is) and
// published with PublishMsgAsync, without confirming anything to the slot.
type bareRelay struct {
	js      jetstream.JetStream
	pending []*natsgo.Msg // the open transaction's messages
	// committed, if set, sees each committed event id with its commit time.
	committed func(id string, at time.Time)
	failed    atomic.Int64
}

func newBareRelay(nc *natsgo.Conn) (*bareRelay, error) {
	br := &bareRelay{}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(jnats.DefaultMaxInFlight),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *natsgo.Msg, error) { br.failed.Add(1) }))
	br.js = js
	return br, err
}

func (br *bareRelay) run(ctx context.Context, dbURL, slot, publication string) error {
	return streamBare(ctx, dbURL, slot, publication, bareHandlers{insert: br.insert, commit: br.commit})
}

func (br *bareRelay) insert(rel *pglogrepl.RelationMessageV2, tuple *pglogrepl.TupleData) error {
	if rel == nil {
		return errors.New("insert before its relation")
	}
	var aggType, aggID, evType string
	h := natsgo.Header{}
	var data []byte
	for i, c := range tuple.Columns {
		v := string(c.Data) // copies: the tuple aliases the receive buffer
		switch rel.Columns[i].Name {
		case "id":
			h[jnats.HeaderMsgID] = []string{v}
		case "aggregate_type":
			aggType = v
			h[jnats.HeaderAggregateType] = []string{v}
		case "aggregate_id":
			aggID = v
			h[jnats.HeaderAggregateID] = []string{v}
		case "aggregate_version":
			h[jnats.HeaderAggregateVersion] = []string{v}
		case "event_type":
			evType = v
			h[jnats.HeaderEventType] = []string{v}
		case "schema_version":
			h[jnats.HeaderSchemaVersion] = []string{v}
		case "occurred_at":
			h[jnats.HeaderOccurredAt] = []string{v}
		case "payload":
			data = []byte(v)
		}
	}
	br.pending = append(br.pending, &natsgo.Msg{
		Subject: jnats.Subject(aggType, jnats.Partition(aggID, jnats.DefaultPartitions), evType),
		Header:  h, Data: data,
	})
	return nil
}

func (br *bareRelay) commit(m *pglogrepl.CommitMessage) error {
	for _, msg := range br.pending {
		if br.committed != nil {
			br.committed(msg.Header.Get(jnats.HeaderMsgID), m.CommitTime)
		}
		if _, err := br.js.PublishMsgAsync(msg, jetstream.WithStallWait(jnats.DefaultAckTimeout)); err != nil {
			return err
		}
	}
	clear(br.pending)
	br.pending = br.pending[:0]
	return nil
}

// RelayLatencyConfig configures the relay-latency benchmark.
type RelayLatencyConfig struct {
	// ServerURL is a PostgreSQL URL (wal_level=logical) whose server gets
	// scratch databases.
	ServerURL string
	// Rates are the offered loads in events (1-event transactions) per second.
	Rates []int
	// Duration is the length of each run: one per pipeline and rate.
	Duration time.Duration
	// Writers is how many connections commit events (default 16).
	Writers int
	// Tracing, when set, traces the relays' publishing as the binary does
	// with an exporter configured; nil leaves tracing off (the default).
	Tracing *telemetry.Tracing
	Log     io.Writer
}

// latencyPipeline moves committed outbox events to the EVENTS stream.
type latencyPipeline struct {
	name  string
	dbURL string
	// start runs the pipeline until ctx ends; stop waits for it and removes
	// what start created.
	start func(ctx context.Context, tr *latencyTracker) (stop func() error, err error)
}

// RelayLatency measures commit → stream latency at fixed offered loads for
// the CDC relay, the polling relay and a bare CDC pipeline (pglogrepl and
// PublishMsgAsync, nothing else) as the raw baseline, one after the other in
// the same run. It returns the markdown section.
func RelayLatency(ctx context.Context, cfg RelayLatencyConfig) (string, error) {
	if cfg.Writers == 0 {
		cfg.Writers = 16
	}
	const cdcName, pollName = "jetcqrs_bench_relay_latency", "jetcqrs_bench_relay_latency_poll"
	cdcURL, dropCDC, err := scratchReplicationDatabase(ctx, cfg.ServerURL, cdcName)
	if err != nil {
		return "", err
	}
	defer dropCDC()
	pollURL, dropPoll, err := scratchReplicationDatabase(ctx, cfg.ServerURL, pollName)
	if err != nil {
		return "", err
	}
	defer dropPoll()
	for _, u := range []string{cdcURL, pollURL} {
		if err := postgres.Migrate(ctx, u, discardLogger()); err != nil {
			return "", err
		}
	}
	if err := withPool(ctx, cdcURL, func(pool *pgxpool.Pool) error { return createPublication(ctx, pool, cdcName) }); err != nil {
		return "", err
	}
	b, err := startBroker(ctx)
	if err != nil {
		return "", err
	}
	defer b.close()
	obsConn, err := b.connect(ctx, "observer")
	if err != nil {
		return "", err
	}
	defer obsConn.Close()
	obs, err := jetstream.New(obsConn)
	if err != nil {
		return "", err
	}

	startRelay := func(dbURL string, rc relay.Config) func(context.Context, *latencyTracker) (func() error, error) {
		return func(ctx context.Context, tr *latencyTracker) (func() error, error) {
			cdc := rc.Mode != relay.ModePoll
			rc.DatabaseURL = dbURL
			if err := withPool(ctx, dbURL, func(pool *pgxpool.Pool) error { return prepareRelayRun(ctx, pool, rc) }); err != nil {
				return nil, err
			}
			pub, err := jnats.NewPublisher(b.js, jnats.PublisherConfig{}, discardLogger())
			if err != nil {
				return nil, err
			}
			rc.DatabaseURL, rc.Logger = dbURL, discardLogger()
			tracing := cfg.Tracing
			if tracing == nil {
				tracing = telemetry.Off()
			}
			r, err := relay.New(rc, observedPublisher{next: tracing.Publisher(relaypub.New(pub)), sent: func(events []relay.Event) {
				for _, e := range events {
					if e.CommitLSN != 0 { // CDC: the commit record's timestamp
						tr.walCommitted(e.ID, e.CommitTime)
					}
				}
			}})
			if err != nil {
				return nil, err
			}
			return runUntilStopped(ctx, r.Run, func() error {
				if !cdc {
					return nil
				}
				return relay.DropSlot(context.WithoutCancel(ctx), dbURL, rc.SlotName)
			}), nil
		}
	}
	pipelines := []latencyPipeline{
		{name: "bare CDC", dbURL: cdcURL, start: func(ctx context.Context, tr *latencyTracker) (func() error, error) {
			slot := cdcName + "_bare"
			if err := withPool(ctx, cdcURL, func(pool *pgxpool.Pool) error { return createSlot(ctx, pool, slot) }); err != nil {
				return nil, err
			}
			br, err := newBareRelay(b.nc)
			if err != nil {
				return nil, err
			}
			br.committed = tr.walCommitted
			return runUntilStopped(ctx, func(ctx context.Context) error { return br.run(ctx, cdcURL, slot, cdcName) }, func() error {
				return relay.DropSlot(context.WithoutCancel(ctx), cdcURL, slot)
			}), nil
		}},
		{name: "relay, CDC", dbURL: cdcURL, start: startRelay(cdcURL, relay.Config{SlotName: cdcName + "_relay", PublicationName: cdcName})},
		{name: "relay, polling", dbURL: pollURL, start: startRelay(pollURL, relay.Config{Mode: relay.ModePoll, SlotName: pollName})},
	}

	var out strings.Builder
	fmt.Fprintf(&out, "## Relay latency: commit → JetStream, CDC vs polling vs a bare CDC loop\n\n")
	if cfg.Tracing != nil && cfg.Tracing.Enabled() {
		out.WriteString("Tracing on: the relays' publish spans exported over OTLP/gRPC to a receiver in the same process.\n\n")
	}
	fmt.Fprintf(&out, "`jetcqrs-bench relay-latency` on %s. A paced, open-loop writer commits 1-event\n", Machine())
	fmt.Fprintf(&out, "transactions (an OrderPlaced outbox row, autocommit INSERT, `synchronous_commit` on) from %d connections\n", cfg.Writers)
	fmt.Fprintf(&out, "at each offered load for %s (the first %s not measured), into each pipeline in turn:\n\n", cfg.Duration, latencyWarmUp(cfg.Duration))
	out.WriteString("- **bare CDC**, the raw baseline: a pglogrepl loop on its own slot that turns each committed insert into a\n")
	out.WriteString("  message (headers copied from the columns) and publishes it with `PublishMsgAsync`, confirming nothing;\n")
	out.WriteString("- **relay, CDC**: the relay in its default mode (logical replication slot, pgoutput);\n")
	out.WriteString("- **relay, polling**: the relay with `Mode: relay.ModePoll` (LISTEN/NOTIFY wake-ups, snapshot horizon,\n")
	out.WriteString("  `published_at` marks), on a database of its own.\n\n")
	out.WriteString("Latency is measured by an observer that does not trust the relay: an ordered JetStream consumer on its own\n")
	out.WriteString("connection receives each event once the stream has stored it (a consumer is only given stored messages) and\n")
	out.WriteString("matches it by `Nats-Msg-Id` to the time the writer's INSERT returned from its commit. So each figure is\n")
	out.WriteString("commit acknowledged to the client → stored in the stream and delivered, slightly above commit → publish ack.\n")
	out.WriteString("For the CDC pipelines the last column measures from the commit record's own timestamp instead (pgoutput's\n")
	out.WriteString("Commit message, the relay's `Event.CommitTime`; it is taken before the WAL flush, so it adds the flush).\n")
	out.WriteString("Polling has no commit timestamp. Target: relay (CDC) p99 < 10 ms at 1,000 events/s.\n\n")
	out.WriteString("| offered ev/s | pipeline | committed ev/s | events measured | p50 ms | p99 ms | max ms | p99 / bare p99 | from WAL commit p50 / p99 ms |\n")
	out.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---|\n")
	var summary []string
	for _, rate := range cfg.Rates {
		var bare time.Duration
		for _, p := range pipelines {
			r, err := latencyRun(ctx, cfg, b, obs, p, rate)
			if err != nil {
				return "", fmt.Errorf("%s at %d events/s: %w", p.name, rate, err)
			}
			if p.name == "bare CDC" {
				bare = r.fromCommit.P99
			}
			wal := "—"
			if r.fromWAL.Ops > 0 {
				wal = ms(r.fromWAL.P50) + " / " + ms(r.fromWAL.P99)
			}
			fmt.Fprintf(&out, "| %d | %s | %.0f | %d | %s | %s | %s | %.2f | %s |\n", rate, p.name, r.achieved, r.fromCommit.Ops,
				ms(r.fromCommit.P50), ms(r.fromCommit.P99), ms(r.fromCommit.Max), float64(r.fromCommit.P99)/float64(max(bare, time.Microsecond)), wal)
			if p.name == "relay, CDC" && rate == 1000 {
				summary = append(summary, fmt.Sprintf("CDC relay p99 at 1,000 events/s: %s ms (target < 10 ms).", ms(r.fromCommit.P99)))
			}
		}
	}
	if len(summary) > 0 {
		out.WriteString("\n" + strings.Join(summary, " ") + "\n")
	}
	return out.String(), nil
}

func latencyWarmUp(d time.Duration) time.Duration { return min(d/5, time.Second) }

type latencyResult struct {
	achieved            float64
	fromCommit, fromWAL Result
}

func latencyRun(ctx context.Context, cfg RelayLatencyConfig, b *broker, obs jetstream.JetStream, p latencyPipeline, rate int) (latencyResult, error) {
	label := fmt.Sprintf("%s, %d events/s", p.name, rate)
	if err := b.freshStream(ctx); err != nil {
		return latencyResult{}, err
	}
	pcfg, err := pgxpool.ParseConfig(p.dbURL)
	if err != nil {
		return latencyResult{}, err
	}
	pcfg.MaxConns = int32(cfg.Writers)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return latencyResult{}, err
	}
	defer pool.Close()

	tr := newLatencyTracker()
	cons, err := obs.OrderedConsumer(ctx, jnats.DefaultStreamName, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return latencyResult{}, err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { tr.seen(m.Headers().Get(jnats.HeaderMsgID), time.Now()) })
	if err != nil {
		return latencyResult{}, err
	}
	defer cc.Stop()

	stop, err := p.start(ctx, tr)
	if err != nil {
		return latencyResult{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = stop()
		}
	}()
	if err := probe(ctx, pool, tr); err != nil {
		var held uint64
		if s, serr := b.js.Stream(ctx, jnats.DefaultStreamName); serr == nil {
			held = s.CachedInfo().State.Msgs
		}
		return latencyResult{}, fmt.Errorf("%s: %w (the stream holds %d messages)", label, err, held)
	}

	warmUntil := time.Now().Add(latencyWarmUp(cfg.Duration))
	pr := paced(ctx, label, rate, cfg.Duration, cfg.Writers, func(ctx context.Context, _ int64) error {
		id := uuid.NewString()
		track := time.Now().After(warmUntil)
		if track {
			tr.expect(id)
		}
		if err := insertEvent(ctx, pool, id); err != nil {
			tr.forget(id)
			return err
		}
		if track {
			tr.committed(id, time.Now())
		}
		return nil
	}, cfg.Log)
	if pr.failed*100 > pr.done+1 {
		return latencyResult{}, fmt.Errorf("%s: %d of %d commits failed, first: %v", label, pr.failed, pr.done+pr.failed, pr.firstErr)
	}
	lost := tr.wait(ctx, 15*time.Second)
	stopped = true
	if err := stop(); err != nil {
		return latencyResult{}, fmt.Errorf("%s: %w", label, err)
	}
	if lost > 0 {
		return latencyResult{}, fmt.Errorf("%s: %d committed events did not reach the stream within 15s", label, lost)
	}
	res := latencyResult{achieved: float64(pr.done) / pr.elapsed.Seconds(),
		fromCommit: tr.fromCommit.Result(label, pr.elapsed), fromWAL: tr.fromWAL.Result(label, pr.elapsed)}
	fmt.Fprintf(cfg.Log, "%s: %.0f committed/s, %d measured, p50 %s ms, p99 %s ms, max %s ms\n", label, res.achieved,
		res.fromCommit.Ops, ms(res.fromCommit.P50), ms(res.fromCommit.P99), ms(res.fromCommit.Max))
	return res, nil
}

// insertEventSQL commits one OrderPlaced outbox row with the store's headers.
const insertEventSQL = `INSERT INTO outbox_events
	(id, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version, payload, headers, occurred_at)
	SELECT e.id, 'order', e.id::text, 1, 'OrderPlaced', 1, ` + orderPayloadSQL + `, ` + headersSQL + `, now()
	FROM (SELECT $1::uuid AS id, $2::int AS g) AS e`

func insertEvent(ctx context.Context, pool *pgxpool.Pool, id string) error {
	_, err := pool.Exec(ctx, insertEventSQL, id, int(id[0])+int(id[1])*16)
	return err
}

// probe commits an event and waits until the observer sees it: the
// pipeline is streaming.
func probe(ctx context.Context, pool *pgxpool.Pool, tr *latencyTracker) error {
	id := uuid.NewString()

	seen := tr.probe(id)
	if err := insertEvent(ctx, pool, id); err != nil {
		return fmt.Errorf("probe: %w", err)
	}

	select {
	case <-seen:
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("probe event not in the stream after 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runUntilStopped runs run in a goroutine; the returned stop cancels it,
// waits for it and then runs cleanup.
func runUntilStopped(ctx context.Context, run func(context.Context) error, cleanup func() error) func() error {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	return func() error {
		cancel()
		err := <-done
		return errors.Join(err, cleanup())
	}
}

func withPool(ctx context.Context, dbURL string, fn func(*pgxpool.Pool) error) error {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	return fn(pool)
}

// latencyTracker matches what a writer committed with what an observer saw,
// by event id. Only expected ids are measured.
type latencyTracker struct {
	mu      sync.Mutex
	pending map[string]*trackedEvent
	probes  map[string]chan struct{}
	// fromCommit measures from the client's commit return, fromWAL from
	// the commit record's timestamp where the pipeline knows it.
	fromCommit, fromWAL *Recorder
}

type trackedEvent struct{ committed, wal, seen time.Time }

func newLatencyTracker() *latencyTracker {
	return &latencyTracker{pending: map[string]*trackedEvent{}, probes: map[string]chan struct{}{},
		fromCommit: NewRecorder(), fromWAL: NewRecorder()}
}

func (t *latencyTracker) expect(id string) {
	t.mu.Lock()
	t.pending[id] = &trackedEvent{}
	t.mu.Unlock()
}

func (t *latencyTracker) forget(id string) {
	t.mu.Lock()
	delete(t.pending, id)
	t.mu.Unlock()
}

func (t *latencyTracker) probe(id string) <-chan struct{} {
	ch := make(chan struct{})
	t.mu.Lock()
	t.probes[id] = ch
	t.mu.Unlock()
	return ch
}

func (t *latencyTracker) committed(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.pending[id]; e != nil {
		e.committed = at
		t.settle(id, e)
	}
}

func (t *latencyTracker) walCommitted(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.pending[id]; e != nil && e.wal.IsZero() {
		e.wal = at
	}
}

func (t *latencyTracker) seen(id string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ch := t.probes[id]; ch != nil {
		close(ch)
		delete(t.probes, id)
	}
	if e := t.pending[id]; e != nil && e.seen.IsZero() {
		e.seen = at
		t.settle(id, e)
	}
}

// settle records a complete event. An observer can see an event before its
// writer has taken the time of its commit's return: that counts as zero.
func (t *latencyTracker) settle(id string, e *trackedEvent) {
	if e.committed.IsZero() || e.seen.IsZero() {
		return
	}
	t.fromCommit.Observe(e.seen.Sub(e.committed))
	if !e.wal.IsZero() {
		t.fromWAL.Observe(e.seen.Sub(e.wal))
	}
	delete(t.pending, id)
}

// wait waits up to timeout for every expected event and returns how many
// are still missing.
func (t *latencyTracker) wait(ctx context.Context, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		t.mu.Lock()
		n := len(t.pending)
		t.mu.Unlock()
		if n == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type pacedResult struct {
	done, failed int64
	firstErr     error
	elapsed      time.Duration
}

// paced runs op at rate operations per second for d, open loop: operation i
// is due at start + i/rate whatever the latency of earlier ones, and the
// first idle one of workers goroutines runs it (if all are busy it runs as
// soon as one frees up, unless d has passed). elapsed runs until the last
// operation returned.
func paced(ctx context.Context, label string, rate int, d time.Duration, workers int, op func(ctx context.Context, i int64) error, log io.Writer) pacedResult {
	var res pacedResult
	var done, failed atomic.Int64
	var errOnce sync.Once
	tickets := make(chan int64, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range tickets {
				if err := op(ctx, i); err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						errOnce.Do(func() { res.firstErr = err })
					}
					continue
				}
				done.Add(1)
			}
		})
	}
	stop := Progress(log, label, 5*time.Second, done.Load)
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := int64(0); ; i++ {
		// Operations not started within d are not offered: a system that
		// falls behind shows as fewer operations done, not a longer run.
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= d || time.Since(start) >= d || ctx.Err() != nil {
			break
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		tickets <- i
	}
	close(tickets)
	wg.Wait()
	res.elapsed = time.Since(start)
	stop()
	res.done, res.failed = done.Load(), failed.Load()
	return res
}
