package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/postgres"
	"github.com/jetcqrs/jetcqrs/relay"
)

type doomedKey struct{}

var errDoomed = errors.New("doomed by the test")

// TestCDCCommitOrder runs the write store's commands from many goroutines,
// rolling some back after their outbox rows are written, and checks that
// the stream holds exactly the committed events in WAL commit order. A
// test_decoding slot created before the first write is the oracle for that
// order.
func TestCDCCommitOrder(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	reg := prometheus.NewRegistry()
	cfg := e.config()
	cfg.Registerer = reg
	r := e.startRelay(cfg)

	oracle := e.slot + "_oracle"
	if _, err := e.pool.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'test_decoding')`, oracle); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := relay.DropSlot(context.Background(), e.dbURL, oracle); err != nil {
			t.Errorf("drop oracle slot: %v", err)
		}
	})

	var mu sync.Mutex
	var rolledBack []string
	store := postgres.NewStore(e.pool, postgres.WithHooks(postgres.Hooks{
		AfterWrite: func(ctx context.Context, tx postgres.Querier, _ string) error {
			if ctx.Value(doomedKey{}) == nil {
				return nil
			}
			rows, err := tx.Query(ctx, `SELECT id::text FROM outbox_events WHERE txid = pg_current_xact_id()`)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			mu.Lock()
			rolledBack = append(rolledBack, ids...)
			mu.Unlock()
			return errDoomed
		},
	}))
	const traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	admin := domain.CommandMeta{Actor: domain.Actor{Subject: "admin-1", Role: domain.RoleAdmin}, TraceParent: traceParent}
	const skus = 12
	for i := range skus {
		sku := fmt.Sprintf("SKU-%02d", i)
		_, err := store.CreateProduct(ctx, admin, domain.CreateProduct{SKU: sku, Name: "Product " + sku,
			Description: "A product", Category: "cat-" + strconv.Itoa(i%3), PriceCents: int64(100 + i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.AdjustInventory(ctx, admin, sku, 1_000_000, "initial stock"); err != nil {
			t.Fatal(err)
		}
	}

	const goroutines, commands = 8, 160
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			user := fmt.Sprintf("user-%d", g)
			customer := domain.CommandMeta{Actor: domain.Actor{Subject: user, Role: domain.RoleCustomer}}
			for i := range commands {
				cctx := ctx
				if rng.IntN(8) == 0 {
					cctx = context.WithValue(ctx, doomedKey{}, true)
				}
				var err error
				if i%3 == 0 {
					_, err = store.AdjustInventory(cctx, admin, fmt.Sprintf("SKU-%02d", rng.IntN(skus)), int64(1+rng.IntN(5)), "restock")
				} else {
					var items []domain.OrderLineRequest
					for _, k := range rng.Perm(skus)[:1+rng.IntN(3)] {
						items = append(items, domain.OrderLineRequest{SKU: fmt.Sprintf("SKU-%02d", k), Quantity: int64(1 + rng.IntN(3))})
					}
					_, err = store.PlaceOrder(cctx, customer, domain.PlaceOrder{UserID: user, Items: items,
						PaymentMethod: "card", PaymentToken: "tok"})
				}
				if err != nil && !errors.Is(err, errDoomed) {
					t.Errorf("command: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// The expected stream: each committed transaction's rows (in seq order,
	// which is their WAL order) in the order the oracle saw the commits.
	rows, err := e.pool.Query(ctx, `SELECT seq, id::text, (txid::text::bigint % 4294967296)::text FROM outbox_events ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	byXid := map[string][]string{}
	firstSeq, lastSeq := map[string]int64{}, map[string]int64{}
	total := 0
	for rows.Next() {
		var seq int64
		var id, xid string
		if err := rows.Scan(&seq, &id, &xid); err != nil {
			t.Fatal(err)
		}
		if len(byXid[xid]) == 0 {
			firstSeq[xid] = seq
		}
		lastSeq[xid] = seq
		byXid[xid] = append(byXid[xid], id)
		total++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows, err = e.pool.Query(ctx, `SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL, 'include-xids', '1', 'skip-empty-xacts', '1')
		WHERE data LIKE 'COMMIT %'`, oracle)
	if err != nil {
		t.Fatal(err)
	}
	commits, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	// outOfSeq counts transactions that committed after one that inserted
	// later: the interleavings a seq-ordered reader would get wrong.
	outOfSeq, maxSeq := 0, int64(0)
	for _, c := range commits {
		xid := strings.TrimPrefix(c, "COMMIT ")
		ids := byXid[xid]
		if len(ids) == 0 {
			continue
		}
		if firstSeq[xid] < maxSeq {
			outOfSeq++
		}
		maxSeq = max(maxSeq, lastSeq[xid])
		want = append(want, ids...)
	}
	if len(want) != total {
		t.Fatalf("oracle lists commits of %d events, the table holds %d", len(want), total)
	}
	t.Logf("%d events committed in %d transactions (%d committed out of insertion order), %d rolled back",
		total, len(byXid), outOfSeq, len(rolledBack))
	if outOfSeq == 0 || len(rolledBack) == 0 {
		t.Errorf("the writers produced %d out-of-order commits and %d rolled-back events; the test needs both", outOfSeq, len(rolledBack))
	}

	e.waitCount(uint64(total), 90*time.Second)
	got := e.streamEvents()
	if ids := streamIDs(got); !slices.Equal(ids, want) {
		first := 0
		for first < min(len(ids), len(want)) && ids[first] == want[first] {
			first++
		}
		t.Fatalf("stream differs from WAL commit order at position %d of %d (stream %d events)", first, len(want), len(ids))
	}
	checkExactlyOnce(t, got, want)
	checkAggregateOrder(t, got)
	for _, id := range rolledBack {
		if slices.Contains(want, id) {
			t.Fatalf("rolled-back event %s is in the table", id)
		}
	}

	// The envelope carries the row as the write store wrote it.
	var payload string
	var version int64
	if err := e.pool.QueryRow(ctx, `SELECT payload::text, aggregate_version FROM outbox_events WHERE id = $1`, got[len(got)/2].ID).
		Scan(&payload, &version); err != nil {
		t.Fatal(err)
	}
	if mid := got[len(got)/2]; string(mid.Payload) != payload || mid.AggregateVersion != version {
		t.Errorf("event %s: payload %s v%d, table has %s v%d", mid.ID, mid.Payload, mid.AggregateVersion, payload, version)
	}
	for _, ev := range got {
		if ev.AggregateType == domain.AggregateInventory && ev.EventType == domain.EventInventoryAdjusted && ev.TraceParent != traceParent {
			t.Fatalf("event %s: traceparent %q, want %q", ev.ID, ev.TraceParent, traceParent)
		}
	}

	st := r.Status()
	if st.Published < uint64(total) || !st.Leader || st.Mode != relay.ModeCDC || st.Slot != e.slot || st.LastPublishAt.IsZero() {
		t.Errorf("Status %+v", st)
	}
	metrics := gather(t, reg)
	if metrics["jetcqrs_relay_events_published_total"] < float64(total) || metrics["jetcqrs_relay_commit_to_ack_seconds_count"] < float64(total) ||
		metrics["jetcqrs_relay_leader"] != 1 {
		t.Errorf("metrics %v", metrics)
	}
	if _, ok := metrics["jetcqrs_relay_slot_lag_bytes"]; !ok {
		t.Error("jetcqrs_relay_slot_lag_bytes is not exposed")
	}
	// The slot is confirmed up to the last commit once its acks are in.
	var current string
	if err := e.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&current); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "slot confirmed past the last commit", func() bool {
		var behind bool
		err := e.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn < $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
			e.slot, current).Scan(&behind)
		return err == nil && !behind
	})
}

// TestCDCLargeTransactions checks transactions the server streams before
// they commit (logical_decoding_work_mem exceeded): a committed one arrives
// whole, in order, and only after its commit; an aborted one never
// arrives; a rolled-back savepoint inside one drops exactly its rows.
func TestCDCLargeTransactions(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	cfg := e.config()
	// The walsender uses its own session's setting: 64kB makes the server
	// stream any transaction past a few hundred rows.
	cfg.DatabaseURL += "&logical_decoding_work_mem=64kB"
	e.startRelay(cfg)

	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	// insert writes n rows of one aggregate in the open transaction.
	insert := func(tx pgx.Tx, agg string, from, n int) []string {
		t.Helper()
		rows, err := tx.Query(ctx, insertOutbox, agg, from, n)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	exec := func(tx pgx.Tx, sql string) {
		t.Helper()
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// streamed waits until the relay's walsender has decoded the WAL
	// written so far by tx and has streamed more transaction chunks than
	// before: the open transaction is being streamed.
	streamCount := func() int64 {
		t.Helper()
		var n int64
		if err := e.pool.QueryRow(ctx, `SELECT coalesce((SELECT stream_count FROM pg_stat_replication_slots WHERE slot_name = $1), 0)`,
			e.slot).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	streamed := func(tx pgx.Tx, before int64) int64 {
		t.Helper()
		var lsn string
		if err := tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Minute, "walsender past "+lsn, func() bool {
			var done bool
			err := e.pool.QueryRow(ctx, `SELECT coalesce(bool_or(sent_lsn >= $2::pg_lsn), false) FROM pg_stat_replication r
				JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1`, e.slot, lsn).Scan(&done)
			return err == nil && done
		})
		var n int64
		eventually(t, 10*time.Second, "the open transaction streamed", func() bool {
			n = streamCount()
			return n > before
		})
		return n - before
	}
	fence := func() string {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		id := insert(tx, "fence-"+randomHex(), 1, 1)[0]
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		return id
	}

	var committed []string
	t.Run("committed 100k", func(t *testing.T) {
		const n = 100_000
		before := e.streamCount()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		chunks := streamCount()
		ids := insert(tx, "big", 1, n)
		chunks = streamed(tx, chunks)
		time.Sleep(500 * time.Millisecond) // anything the relay would publish early has had time to show
		if got := e.streamCount(); got != before {
			t.Fatalf("stream grew from %d to %d before the commit", before, got)
		}
		start := time.Now()
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		e.waitCount(before+n, 2*time.Minute)
		t.Logf("%d events (the server streamed the transaction in %d chunks) published %s after the commit",
			n, chunks, time.Since(start).Round(time.Millisecond))
		got := e.streamEventsAfter(before)
		if !slices.Equal(streamIDs(got), ids) {
			t.Fatal("the stream does not hold the transaction's events in insertion order")
		}
		committed = append(committed, ids...)
	})

	t.Run("aborted", func(t *testing.T) {
		before := e.streamCount()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		chunks := streamCount()
		insert(tx, "aborted", 1, 5000)
		streamed(tx, chunks)
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		id := fence()
		e.waitCount(before+1, time.Minute)
		got := e.streamEventsAfter(before)
		if len(got) != 1 || got[0].ID != id {
			t.Fatalf("after an aborted transaction and a fence, the stream gained %d events, want just the fence", len(got))
		}
		committed = append(committed, id)
	})

	t.Run("savepoints", func(t *testing.T) {
		before := e.streamCount()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		chunks := streamCount()
		want = append(want, insert(tx, "sp", 1, 2000)...)
		exec(tx, "SAVEPOINT a")
		insert(tx, "sp", 2001, 2000)
		exec(tx, "SAVEPOINT b")
		insert(tx, "sp", 4001, 1000)
		exec(tx, "RELEASE SAVEPOINT b")
		chunks = streamed(tx, chunks) // the subtransactions' rows have been streamed
		exec(tx, "ROLLBACK TO SAVEPOINT a")
		want = append(want, insert(tx, "sp", 2001, 1000)...)
		exec(tx, "SAVEPOINT c")
		insert(tx, "sp", 3001, 1000)
		exec(tx, "ROLLBACK TO SAVEPOINT c")
		exec(tx, "SAVEPOINT d")
		want = append(want, insert(tx, "sp", 3001, 1000)...)
		exec(tx, "RELEASE SAVEPOINT d")
		streamed(tx, chunks)
		if got := e.streamCount(); got != before {
			t.Fatalf("stream grew from %d to %d before the commit", before, got)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		e.waitCount(before+uint64(len(want)), time.Minute)
		id := fence()
		e.waitCount(before+uint64(len(want))+1, time.Minute)
		got := e.streamEventsAfter(before)
		if !slices.Equal(streamIDs(got), append(want, id)) {
			t.Fatalf("stream gained %d events, want the %d that survived the rollbacks and the fence", len(got), len(want))
		}
		committed = append(committed, append(want, id)...)
	})

	var streamTxns int64
	if err := e.pool.QueryRow(ctx, `SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = $1`, e.slot).Scan(&streamTxns); err != nil {
		t.Fatal(err)
	}
	if streamTxns < 3 {
		t.Errorf("pg_stat_replication_slots.stream_txns = %d, want >= 3: the large transactions were not streamed", streamTxns)
	}
	if n := e.streamCount(); n != uint64(len(committed)) {
		t.Errorf("stream holds %d events, %d committed", n, len(committed))
	}
}

// gather reads the registry into name → value (histograms: name_count).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[f.GetName()] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[f.GetName()] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[f.GetName()+"_count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestHeartbeatAdvancesIdleSlot writes WAL the publication filters out (no
// outbox rows): the relay's heartbeats must still carry the slot's confirmed
// position past it, so the slot does not pin WAL.
func TestHeartbeatAdvancesIdleSlot(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	r := e.startRelay(e.config())
	for _, sql := range []string{
		`CREATE TABLE noise (id int, filler text)`,
		`INSERT INTO noise SELECT i, repeat('x', 200) FROM generate_series(1, 20000) AS i`,
	} {
		if _, err := e.pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	var after string
	if err := e.pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "slot confirmed past "+after, func() bool {
		var past bool
		err := e.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1`,
			e.slot, after).Scan(&past)
		return err == nil && past
	})
	eventually(t, 5*time.Second, "Status shows the slot caught up", func() bool {
		st := r.Status()
		return st.ConfirmedLSN != "" && st.SlotLagBytes < 1<<20
	})
	if st := r.Status(); st.Published != 0 {
		t.Errorf("published %d events, want none", st.Published)
	}
}

// TestRejectedEventStopsTheRelay writes an event the stream's envelope
// refuses (a '.' in the aggregate type would split its subject): the relay
// must stop with ErrEventRejected rather than skip it, after publishing and
// confirming everything before it.
func TestRejectedEventStopsTheRelay(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	cfg := e.config()
	e.install(cfg)
	pub, err := newNATSPublisher(e.connect("relay"), e.logger)
	if err != nil {
		t.Fatal(err)
	}
	r, err := relay.New(cfg, pub)
	if err != nil {
		t.Fatal(err)
	}
	// The good transaction's commit ends in (before, after]: other tests
	// write WAL to the same cluster, so no single position read here is
	// its commit's end.
	insertLSN := func() string {
		var lsn string
		if err := e.pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	before := insertLSN()
	if _, err := e.pool.Exec(ctx, insertOutbox, "good", 1, 3); err != nil {
		t.Fatal(err)
	}
	after := insertLSN()
	if _, err := e.pool.Exec(ctx, `INSERT INTO outbox_events
		(id, aggregate_type, aggregate_id, aggregate_version, event_type, schema_version, payload, occurred_at)
		VALUES (gen_random_uuid(), 'bad.type', 'x', 1, 'OrderPlaced', 1, '{}', now())`); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = r.Run(runCtx)
	if !errors.Is(err, relay.ErrEventRejected) || runCtx.Err() != nil {
		t.Fatalf("Run: %v, want ErrEventRejected", err)
	}
	if !strings.Contains(err.Error(), "bad.type") {
		t.Errorf("error does not name the event: %v", err)
	}
	if n := e.streamCount(); n != 3 {
		t.Errorf("stream holds %d events, want the 3 before the rejected one", n)
	}
	// Confirmed past the good commit (the server applies the final status
	// update as the session closes), and not past the rejected one.
	var confirmed string
	var beyond bool
	eventually(t, 5*time.Second, "slot confirmed past the published events", func() bool {
		var past bool
		err := e.pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, confirmed_flush_lsn > $2::pg_lsn, confirmed_flush_lsn > $3::pg_lsn
			FROM pg_replication_slots WHERE slot_name = $1`, e.slot, before, after).Scan(&confirmed, &past, &beyond)
		return err == nil && past
	})
	if beyond {
		t.Errorf("slot confirmed to %s, past %s: beyond the good transaction's commit", confirmed, after)
	}
}
