package relay_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/nats"
	"github.com/jetcqrs/jetcqrs/relay"
)

// commitTransactions commits n transactions of 1-5 events over aggregates
// aggregates from 4 goroutines, with no relay and no slot, as the command
// API alone does, and returns the committed event ids.
func commitTransactions(t *testing.T, e *env, n, aggregates int) []string {
	t.Helper()
	if _, err := e.pool.Exec(t.Context(), createTestAggregates); err != nil {
		t.Fatal(err)
	}
	w := &writer{t: t, pool: e.pool}
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range n / 4 {
				got, err := w.tx(t.Context(), fmt.Sprintf("agg-%d", rng.IntN(aggregates)), 1+rng.IntN(5), 0, false)
				if err != nil {
					t.Errorf("commit: %v", err)
					return
				}
				mu.Lock()
				ids = append(ids, got...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ids
}

// TestBacklogCommittedBeforeAnySlot commits 1,000 transactions while no
// relay ran and no slot existed, then starts the relay with writers still
// committing: the relay backfills the backlog, then streams, and the stream
// ends up with every event once, each aggregate's in version order.
func TestBacklogCommittedBeforeAnySlot(t *testing.T) {
	e := newEnv(t)
	backlog := commitTransactions(t, e, 1000, 50)
	if e.streamCount() != 0 {
		t.Fatal("the stream holds events before any relay ran")
	}

	reg := prometheus.NewRegistry()
	cfg := e.config()
	cfg.Registerer = reg
	r := e.startRelay(cfg)
	w := startWriter(t, e.pool, writerOptions{goroutines: 2, aggregates: 50, pause: 2 * time.Millisecond})
	w.waitCommitted(500, 30*time.Second)
	w.finish()
	committed := append(backlog, w.committedIDs()...)
	e.waitCount(uint64(len(committed)), 2*time.Minute)
	time.Sleep(500 * time.Millisecond) // a late duplicate would show now
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
	// The CDC relay marks what it appended in the background.
	eventually(t, 10*time.Second, "every outbox row marked", func() bool { return e.unpublished() == 0 })
	if got := gather(t, reg)["jetcqrs_relay_events_backfilled_total"]; got != float64(len(backlog)) {
		t.Errorf("jetcqrs_relay_events_backfilled_total = %v, want %d", got, len(backlog))
	}
	// Slot health, as /metrics and GET /v1/admin/relay show it.
	eventually(t, 5*time.Second, "slot health sampled", func() bool { return r.Status().WALStatus != "" })
	if st := r.Status(); st.WALStatus != "reserved" || st.SafeWALSizeBytes != nil {
		t.Errorf("Status() wal_status %q safe_wal_size %v; want reserved and none (max_slot_wal_keep_size unlimited)",
			st.WALStatus, st.SafeWALSizeBytes)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	statuses := map[string]float64{}
	for _, f := range families {
		if f.GetName() == "jetcqrs_relay_slot_wal_status" {
			for _, m := range f.GetMetric() {
				statuses[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	if statuses["reserved"] != 1 || statuses["lost"] != 0 || statuses["unreserved"] != 0 {
		t.Errorf("jetcqrs_relay_slot_wal_status = %v, want reserved 1 and the others 0", statuses)
	}
	if got := gather(t, reg)["jetcqrs_relay_slot_safe_wal_size_bytes"]; got != -1 {
		t.Errorf("jetcqrs_relay_slot_safe_wal_size_bytes = %v, want -1 (unlimited)", got)
	}
	t.Logf("%d events committed before the relay, %d while it ran", len(backlog), len(committed)-len(backlog))
}

// TestKilledRelayRepeatsNothingAfterTheDuplicateWindow SIGKILLs relay
// processes while writers commit, so that events are acknowledged but the
// slot is not yet told, and keeps each down for twice the stream's duplicate
// window (1s) before restarting it: the stream's deduplication has forgotten
// the events by then, and still none is appended twice.
func TestKilledRelayRepeatsNothingAfterTheDuplicateWindow(t *testing.T) {
	e := newEnv(t)
	if _, err := nats.EnsureStream(t.Context(), e.js, nats.StreamConfig{DuplicateWindow: time.Second}); err != nil {
		t.Fatal(err)
	}
	w := startWriter(t, e.pool, writerOptions{goroutines: 3, aggregates: 20, pause: time.Millisecond})

	var children []*child
	for i := range 4 {
		c := e.startChild("relay-killed")
		children = append(children, c)
		e.waitStreaming("relay-killed", 30*time.Second)
		time.Sleep(time.Duration(300+rand.IntN(700)) * time.Millisecond)
		c.kill()
		t.Logf("kill %d: stream holds %d events, writers committed %d", i+1, e.streamCount(), len(w.committedIDs()))
		time.Sleep(2 * time.Second)
	}
	final := e.startChild("relay-killed")
	children = append(children, final)
	e.waitStreaming("relay-killed", 30*time.Second)
	w.finish()
	committed := w.committedIDs()
	e.waitCount(uint64(len(committed)), 2*time.Minute)
	time.Sleep(time.Second)
	if err := final.terminate(20 * time.Second); err != nil {
		t.Errorf("relay after SIGTERM: %v", err)
	}
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)

	// The scenario happened: a restarted relay found events the stream
	// held that the slot or the ledger did not know of yet.
	recovered := 0
	for _, c := range children[1:] {
		out := c.out.String()
		if strings.Contains(out, "skipped events the slot sent again") ||
			strings.Contains(out, "marked the events the stream stored after the ledger") {
			recovered++
		}
	}
	if recovered == 0 {
		t.Error("no restarted relay met an acknowledged but unconfirmed event; the test proved nothing")
	}
	t.Logf("%d events; %d of %d restarts met acknowledged but unconfirmed events", len(got), recovered, len(children)-1)
}

// dropSlotUnderRelay ends the walsender streaming the slot and drops the
// slot before the relay reconnects.
func (e *env) dropSlotUnderRelay() {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := e.pool.Exec(e.t.Context(), `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
			WHERE slot_name = $1 AND active_pid IS NOT NULL`, e.slot)
		if err == nil {
			_, err = e.pool.Exec(e.t.Context(), `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE slot_name = $1`, e.slot)
		}
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("drop slot under the relay: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSlotDroppedUnderLoad drops the slot twice while the relay streams and
// writers commit: the relay re-creates it and backfills what committed
// while it was gone, and nothing is lost or repeated.
func TestSlotDroppedUnderLoad(t *testing.T) {
	e := newEnv(t)
	e.startRelay(e.config())
	w := startWriter(t, e.pool, writerOptions{goroutines: 3, aggregates: 20, pause: 2 * time.Millisecond})
	for i := range 2 {
		e.waitStreaming("jetcqrs-relay", 30*time.Second)
		w.waitCommitted(len(w.committedIDs())+300, 30*time.Second)
		e.dropSlotUnderRelay()
		t.Logf("drop %d: stream holds %d events, writers committed %d", i+1, e.streamCount(), len(w.committedIDs()))
		w.waitCommitted(len(w.committedIDs())+300, 30*time.Second)
	}
	e.waitStreaming("jetcqrs-relay", 30*time.Second)
	w.finish()
	committed := w.committedIDs()
	e.waitCount(uint64(len(committed)), 2*time.Minute)
	time.Sleep(500 * time.Millisecond)
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
}

// TestSlotInvalidatedByMaxSlotWALKeepSize lets the slot fall behind with
// the relay stopped, then has PostgreSQL invalidate it through
// max_slot_wal_keep_size: the relay, restarted, reports the lost slot,
// re-creates it and backfills, and every event committed meanwhile arrives
// once. The setting is server-wide, so the test runs alone among slot tests.
func TestSlotInvalidatedByMaxSlotWALKeepSize(t *testing.T) {
	testenv.ExclusiveSlots(t)
	e := newEnv(t)
	ctx := t.Context()
	var before string
	if err := e.pool.QueryRow(ctx, `SELECT setting FROM pg_settings WHERE name = 'max_slot_wal_keep_size'`).Scan(&before); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := e.pool.Exec(ctx, `ALTER SYSTEM SET max_slot_wal_keep_size = `+quoteSetting(before)); err != nil {
			t.Errorf("restore max_slot_wal_keep_size: %v", err)
		}
		if _, err := e.pool.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
			t.Errorf("reload configuration: %v", err)
		}
	})

	_, stop := e.runRelay(e.config())
	w := startWriter(t, e.pool, writerOptions{goroutines: 2, aggregates: 20, pause: 2 * time.Millisecond})
	e.waitStreaming("jetcqrs-relay", 30*time.Second)
	w.waitCommitted(300, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatalf("relay Run: %v", err)
	}
	// The slot falls behind by five WAL segments.
	for range 5 {
		w.waitCommitted(len(w.committedIDs())+20, 30*time.Second)
		if _, err := e.pool.Exec(ctx, `SELECT pg_switch_wal()`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.pool.Exec(ctx, `CHECKPOINT`); err != nil {
		t.Fatal(err)
	}
	var lag int64
	if err := e.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
		FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&lag); err != nil {
		t.Fatal(err)
	}
	keep := lag / 2 / (1 << 20)
	if keep < 1 {
		t.Fatalf("slot only %d bytes behind; cannot invalidate it alone", lag)
	}
	if _, err := e.pool.Exec(ctx, fmt.Sprintf(`ALTER SYSTEM SET max_slot_wal_keep_size = '%dMB'`, keep)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "slot invalidated", func() bool {
		_, _ = e.pool.Exec(ctx, `SELECT pg_switch_wal()`)
		_, _ = e.pool.Exec(ctx, `CHECKPOINT`)
		var status *string
		err := e.pool.QueryRow(ctx, `SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&status)
		return err == nil && status != nil && *status == "lost"
	})
	if _, err := e.pool.Exec(ctx, `ALTER SYSTEM SET max_slot_wal_keep_size = `+quoteSetting(before)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	cfg := e.config()
	cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := e.startRelay(cfg)
	e.waitStreaming("jetcqrs-relay", 30*time.Second)
	w.waitCommitted(len(w.committedIDs())+300, 30*time.Second)
	w.finish()
	committed := w.committedIDs()
	e.waitCount(uint64(len(committed)), 2*time.Minute)
	time.Sleep(500 * time.Millisecond)
	got := e.streamEvents()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
	if !strings.Contains(logs.String(), "invalidated by PostgreSQL (wal_status=lost)") {
		t.Errorf("the relay did not report the invalidated slot; logs:\n%s", logs.String())
	}
	if st := r.Status(); st.WALStatus != "reserved" && st.WALStatus != "extended" {
		t.Errorf("Status().WALStatus = %q after the slot was re-created", st.WALStatus)
	}
}

// quoteSetting renders a pg_settings value for ALTER SYSTEM (-1, or a
// number in the setting's unit, MB).
func quoteSetting(v string) string {
	if v == "-1" {
		return "-1"
	}
	return "'" + strings.ReplaceAll(v, "'", "") + "MB'"
}

// TestModeSwitchUnderLoad switches the relay from CDC to polling and back
// while writers commit: nothing is lost and nothing repeated, although CDC
// never read what polling published and polling starts after CDC.
func TestModeSwitchUnderLoad(t *testing.T) {
	e := newEnv(t)
	w := startWriter(t, e.pool, writerOptions{goroutines: 3, aggregates: 20, pause: 2 * time.Millisecond})
	cdc := e.config()
	cdc.Mode = relay.ModeCDC
	for i, cfg := range []relay.Config{cdc, e.pollConfig(), cdc} {
		_, stop := e.runRelay(cfg)
		w.waitCommitted(len(w.committedIDs())+400, 30*time.Second)
		if i == 2 {
			w.finish()
			e.waitCount(uint64(len(w.committedIDs())), 2*time.Minute)
			time.Sleep(500 * time.Millisecond)
		}
		if err := stop(); err != nil {
			t.Fatalf("relay %d (%s) Run: %v", i+1, cfg.Mode, err)
		}
		t.Logf("after %s: stream holds %d events, writers committed %d", cfg.Mode, e.streamCount(), len(w.committedIDs()))
	}
	got := e.streamEvents()
	committed := w.committedIDs()
	checkExactlyOnce(t, got, committed)
	checkAggregateOrder(t, got)
}
