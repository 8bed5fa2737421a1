package postgres

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jetcqrs/jetcqrs/internal/testenv"
)

func migratedPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := testenv.PostgresURL(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := Migrate(ctx, url, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestGuardFailsTheCommitInTheServer sends a write whose guard misses with
// COMMIT in the same round trip: the server must roll back every write of the
// batch, and the error must be the retryable serialization failure.
func TestGuardFailsTheCommitInTheServer(t *testing.T) {
	pool := migratedPool(t)
	ctx := t.Context()
	pc, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Release()
	tx := &txn{conn: pc.Conn()}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM products`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("first read in the transaction: %d, %v", n, err)
	}
	w := &writer{}
	w.write(`INSERT INTO products (sku, name, description, category, price_cents, version, created_at, updated_at)
		VALUES ('G-1', 'n', 'd', 'c', 1, 1, now(), now())`)
	w.update(1, `UPDATE products SET version = 2 WHERE sku = 'G-1' AND version = 5`) // touches no row
	err = w.flush(ctx, tx, true)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "40001" || !retryable(err) {
		t.Fatalf("flush = %v, want a serialization failure", err)
	}
	tx.rollback(ctx)
	if status := pc.Conn().PgConn().TxStatus(); status != 'I' {
		t.Errorf("connection left in transaction status %c", status)
	}
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM products WHERE sku = 'G-1'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("products G-1 after the failed commit: %d, %v; want none", n, err)
	}
}

// TestTxnQueriesShareTheTransaction checks the pipelined BEGIN: what the
// first statement wrote is seen by the next and vanishes on rollback, and
// QueryRow reports ErrNoRows as pgx does.
func TestTxnQueriesShareTheTransaction(t *testing.T) {
	pool := migratedPool(t)
	ctx := t.Context()
	pc, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Release()
	tx := &txn{conn: pc.Conn()}
	if _, err := tx.Exec(ctx, `INSERT INTO products (sku, name, description, category, price_cents, version, created_at, updated_at)
		VALUES ('T-1', 'n', 'd', 'c', 1, 1, now(), now())`); err != nil {
		t.Fatal(err)
	}
	var xid1, xid2 int64
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid1); err != nil {
		t.Fatal(err)
	}
	rows, err := tx.Query(ctx, `SELECT sku FROM products`)
	if err != nil {
		t.Fatal(err)
	}
	skus, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(skus) != 1 || skus[0] != "T-1" {
		t.Fatalf("products inside the transaction: %v, %v", skus, err)
	}
	if err := tx.QueryRow(ctx, `SELECT pg_current_xact_id()::text::bigint`).Scan(&xid2); err != nil || xid1 != xid2 {
		t.Fatalf("statements ran in transactions %d and %d (%v)", xid1, xid2, err)
	}
	tx.rollback(ctx)
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM products`).Scan(&n); err != nil || n != 0 {
		t.Errorf("products after rollback: %d, %v", n, err)
	}

	// A first statement that is a query, and finds nothing.
	tx = &txn{conn: pc.Conn()}
	var sku string
	if err := tx.QueryRow(ctx, `SELECT sku FROM products WHERE sku = 'none'`).Scan(&sku); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("QueryRow of no row: %v, want pgx.ErrNoRows", err)
	}
	if status := pc.Conn().PgConn().TxStatus(); status != 'T' {
		t.Errorf("transaction status %c after the first query, want T (in a transaction)", status)
	}
	tx.rollback(ctx)
}
