package chstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/internal/testenv"
	"github.com/jetcqrs/jetcqrs/projections"
	chstore "github.com/jetcqrs/jetcqrs/projections/clickhouse"
	"github.com/jetcqrs/jetcqrs/projections/contract"
)

func TestSalesStoreContract(t *testing.T) {
	contract.Sales(t, func(t *testing.T) contract.SalesUnderTest {
		return newStore(t, connect(t), "g1")
	})
}

func TestSchemaPerGeneration(t *testing.T) {
	conn := connect(t)
	ctx := t.Context()
	g1 := newStore(t, conn, "g1")
	if err := g1.EnsureSchema(ctx); err != nil {
		t.Fatalf("EnsureSchema on an existing table: %v", err)
	}
	g2 := newStore(t, conn, "g-2")
	if got := tables(t, conn); !slices.Equal(got, []string{"sales_lines_g-2", "sales_lines_g1"}) {
		t.Fatalf("tables = %v, want sales_lines_g-2 and sales_lines_g1", got)
	}

	batch := []projections.Envelope{placed(t, 1, "order-1", testT0, 3)}
	if err := g1.Apply(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := g2.Apply(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := g1.Drop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := g1.Drop(ctx); err != nil {
		t.Fatalf("Drop of a dropped generation: %v", err)
	}
	if got := tables(t, conn); !slices.Equal(got, []string{"sales_lines_g-2"}) {
		t.Errorf("tables after dropping g1 = %v, want sales_lines_g-2", got)
	}
	rows, err := g2.Sales(ctx, projections.SalesQuery{From: testT0, To: testT0.Add(time.Hour), GroupBy: "sku"})
	if want := []projections.SalesRow{{Key: "SKU-0", Orders: 1, Units: 1, RevenueCents: 100}}; err != nil || len(rows) != 3 || rows[0] != want[0] {
		t.Errorf("g2 report after dropping g1 = %+v, %v", rows, err)
	}
}

// Redelivered events are duplicate rows until ClickHouse merges them, which
// it does when it likes; the report is the same before and after.
func TestReportIsTheSameBeforeAndAfterMerges(t *testing.T) {
	conn := connect(t)
	ctx := t.Context()
	s := newStore(t, conn, "g1")
	events := []projections.Envelope{
		placed(t, 1, "order-1", testT0, 2),
		placed(t, 2, "order-2", testT0.Add(time.Minute), 1),
		cancelled(t, 3, "order-2", testT0.Add(time.Minute), 1),
	}
	for range 3 {
		for _, e := range events {
			if err := s.Apply(ctx, []projections.Envelope{e}); err != nil {
				t.Fatal(err)
			}
		}
	}
	q := projections.SalesQuery{From: testT0.Add(-time.Hour), To: testT0.Add(time.Hour), GroupBy: "day"}
	want := []projections.SalesRow{{Key: "2025-05-01", Orders: 1, Units: 3, RevenueCents: 300}}
	check := func(when string) {
		t.Helper()
		rows, err := s.Sales(ctx, q)
		if err != nil || !slices.Equal(rows, want) {
			t.Errorf("%s: report = %+v, %v; want %+v", when, rows, err, want)
		}
	}
	check("before merges")
	// OPTIMIZE ... FINAL does nothing while a background merge holds the
	// parts, so it is repeated until one row per order line remains.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := conn.Exec(ctx, "OPTIMIZE TABLE `"+s.Table()+"` FINAL"); err != nil {
			t.Fatalf("OPTIMIZE: %v", err)
		}
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM `"+s.Table()+"`").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows after OPTIMIZE FINAL = %d, want 3, one per order line", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	check("after merges")
}

// A table of an earlier build, versioned by the stream sequence, cannot keep
// the version rule: EnsureSchema says to rebuild rather than write into it.
func TestEnsureSchemaRefusesATableVersionedBySequence(t *testing.T) {
	conn := connect(t)
	err := conn.Exec(t.Context(), `CREATE TABLE sales_lines_g1 (order_id String, line_no UInt16, sku String,
	category String, day Date, placed_at DateTime, placed_at_us Int64, quantity Int64, price_cents Int64,
	cancelled UInt8, seq UInt64) ENGINE = ReplacingMergeTree(seq) PARTITION BY toYYYYMM(day) ORDER BY (order_id, line_no)`)
	if err != nil {
		t.Fatal(err)
	}
	s, err := chstore.NewSalesStore(conn, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureSchema(t.Context()); !errors.Is(err, chstore.ErrSchemaMismatch) {
		t.Fatalf("EnsureSchema on a table versioned by seq = %v, want ErrSchemaMismatch", err)
	}
}

func TestNewSalesStoreRejectsBadGenerations(t *testing.T) {
	t.Parallel()
	for _, g := range []string{"", "g1; DROP TABLE x", "g`1", "g1.x", strings.Repeat("g", 65)} {
		if _, err := chstore.NewSalesStore(nil, g); err == nil {
			t.Errorf("NewSalesStore(%q): no error", g)
		}
	}
}

var testT0 = time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)

// connect opens a connection to a fresh database of the test's own.
func connect(t *testing.T) driver.Conn {
	t.Helper()
	addr, database := testenv.ClickHouseAddr(t)
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{addr},
		Auth:        clickhouse.Auth{Database: database},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("open ClickHouse at %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func newStore(t *testing.T, conn driver.Conn, generation string) *chstore.SalesStore {
	t.Helper()
	s, err := chstore.NewSalesStore(conn, generation)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureSchema(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

func tables(t *testing.T, conn driver.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		names = append(names, n)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// placed is an OrderPlaced of lines lines, line i of SKU-i: i+1 units at 100 cents.
func placed(t *testing.T, seq uint64, id string, at time.Time, lines int) projections.Envelope {
	return orderEvent(t, seq, domain.EventOrderPlaced, snapshot(id, domain.StatusPlaced, at, lines))
}

func cancelled(t *testing.T, seq uint64, id string, at time.Time, lines int) projections.Envelope {
	snap := snapshot(id, domain.StatusCancelled, at, lines)
	snap.Version = 2
	return orderEvent(t, seq, domain.EventOrderCancelled, domain.OrderCancelled{OrderSnapshot: snap, PreviousStatus: domain.StatusPlaced})
}

func snapshot(id string, status domain.OrderStatus, at time.Time, lines int) domain.OrderSnapshot {
	s := domain.OrderSnapshot{OrderID: id, UserID: "user-1", Status: status, Version: 1, PlacedAt: at, UpdatedAt: at}
	for i := range lines {
		s.Items = append(s.Items, domain.OrderLine{SKU: fmt.Sprintf("SKU-%d", i), Category: "misc", Quantity: int64(i + 1), PriceCents: 100})
		s.TotalCents += int64(i+1) * 100
	}
	return s
}

func orderEvent(t *testing.T, seq uint64, typ string, payload any) projections.Envelope {
	t.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return projections.Envelope{Seq: seq, ID: fmt.Sprintf("event-%d", seq), AggregateType: domain.AggregateOrder,
		EventType: typ, SchemaVersion: domain.CurrentSchemaVersion, Payload: raw}
}
