package apitest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Tables lists every table of the write store.
var Tables = []string{"products", "inventory", "orders", "order_items", "outbox_events", "idempotency_keys"}

// TableState is what Snapshot records of one table: its row count and a
// digest of its rows, so that an UPDATE shows as well as an INSERT.
type TableState struct {
	Rows   int64
	Digest string
}

// Snapshot returns the state of every table in Tables.
func Snapshot(t testing.TB, pool *pgxpool.Pool) map[string]TableState {
	t.Helper()
	out := make(map[string]TableState, len(Tables))
	for _, table := range Tables {
		var s TableState
		c, cancel := queryCtx()
		// table comes from Tables, never from input.
		err := pool.QueryRow(c, `SELECT count(*), coalesce(md5(string_agg(x::text, E'\n' ORDER BY x::text)), '')
			FROM `+table+` x`).Scan(&s.Rows, &s.Digest)
		cancel()
		if err != nil {
			t.Fatalf("snapshot %s: %v", table, err)
		}
		out[table] = s
	}
	return out
}

// Snapshot returns the state of every table (see the function Snapshot).
func (e *Env) Snapshot(t testing.TB) map[string]TableState {
	t.Helper()
	return Snapshot(t, e.Pool)
}

// WantUnchanged fails the test unless every table is as before.
func (e *Env) WantUnchanged(t testing.TB, before map[string]TableState) {
	t.Helper()
	after := e.Snapshot(t)
	for _, table := range Tables {
		if before[table] != after[table] {
			t.Errorf("table %s changed: %d rows before, %d after (digest %s → %s)",
				table, before[table].Rows, after[table].Rows, before[table].Digest, after[table].Digest)
		}
	}
}

// Int runs a query that returns one integer, such as a count.
func Int(t testing.TB, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	c, cancel := queryCtx()
	defer cancel()
	var n int64
	if err := pool.QueryRow(c, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// Int runs a query that returns one integer (see the function Int).
func (e *Env) Int(t testing.TB, sql string, args ...any) int64 {
	t.Helper()
	return Int(t, e.Pool, sql, args...)
}

// OutboxEvent is one row of outbox_events.
type OutboxEvent struct {
	Seq              int64
	ID               string
	AggregateType    string
	AggregateID      string
	AggregateVersion int64
	EventType        string
	SchemaVersion    int32
	Payload          json.RawMessage
	Headers          json.RawMessage
	OccurredAt       time.Time
}

// Outbox returns every outbox row in seq order.
func Outbox(t testing.TB, pool *pgxpool.Pool) []OutboxEvent {
	t.Helper()
	c, cancel := queryCtx()
	defer cancel()
	rows, err := pool.Query(c, `SELECT seq, id::text, aggregate_type, aggregate_id, aggregate_version, event_type,
		schema_version, payload, headers, occurred_at FROM outbox_events ORDER BY seq`)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (OutboxEvent, error) {
		var e OutboxEvent
		var payload, headers []byte
		err := row.Scan(&e.Seq, &e.ID, &e.AggregateType, &e.AggregateID, &e.AggregateVersion, &e.EventType,
			&e.SchemaVersion, &payload, &headers, &e.OccurredAt)
		e.Payload, e.Headers = payload, headers
		return e, err
	})
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	return events
}

// Outbox returns every outbox row in seq order.
func (e *Env) Outbox(t testing.TB) []OutboxEvent {
	t.Helper()
	return Outbox(t, e.Pool)
}

// Stock is a row of the inventory table.
type Stock struct {
	OnHand   int64
	Reserved int64
	Version  int64
}

// StockOf returns the inventory row of sku.
func StockOf(t testing.TB, pool *pgxpool.Pool, sku string) Stock {
	t.Helper()
	c, cancel := queryCtx()
	defer cancel()
	var s Stock
	err := pool.QueryRow(c, `SELECT on_hand, reserved, version FROM inventory WHERE sku = $1`, sku).
		Scan(&s.OnHand, &s.Reserved, &s.Version)
	if err != nil {
		t.Fatalf("inventory of %s: %v", sku, err)
	}
	return s
}

// Stock returns the inventory row of sku.
func (e *Env) Stock(t testing.TB, sku string) Stock {
	t.Helper()
	return StockOf(t, e.Pool, sku)
}

// queryCtx bounds one inspection query, so that a wedged database fails the
// test instead of hanging it.
func queryCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}
