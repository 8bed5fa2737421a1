package postgres

import (
	"context"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what a command's transaction offers its reads (and the
// fault-injection hooks): the statements of pgx.Tx that commands use.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// txn is a transaction on one connection whose BEGIN travels with its first
// statement and whose COMMIT travels with its writes: a command costs two
// round trips (read and lock, then write and commit) instead of four. Every
// check that must stop the commit therefore runs in the server (see
// guardedSQL); the client only learns the outcome.
type txn struct {
	conn  *pgx.Conn
	begun bool // BEGIN has been sent
}

var _ Querier = (*txn)(nil)

// Exec runs sql in the transaction.
func (t *txn) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.begun {
		return t.conn.Exec(ctx, sql, args...)
	}
	var b pgx.Batch
	var tag pgconn.CommandTag
	b.Queue(sql, args...).Exec(func(ct pgconn.CommandTag) error {
		tag = ct
		return nil
	})
	return tag, t.send(ctx, &b, false)
}

// Query runs sql in the transaction. The rows must be closed (pgx's
// ForEachRow and CollectRows do) before the next statement.
func (t *txn) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.begun {
		return t.conn.Query(ctx, sql, args...)
	}
	t.begun = true
	var b pgx.Batch
	b.Queue("BEGIN")
	b.Queue(sql, args...)
	br := t.conn.SendBatch(ctx, &b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow runs sql in the transaction and scans its only row.
func (t *txn) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.begun {
		return t.conn.QueryRow(ctx, sql, args...)
	}
	rows, err := t.Query(ctx, sql, args...)
	return &firstRow{rows: rows, err: err}
}

// send sends b in the transaction, after BEGIN if nothing was sent yet and
// followed by COMMIT when commit is set, and runs b's callbacks. When a
// statement fails the server skips the rest, COMMIT included, and the
// transaction is left aborted for rollback.
func (t *txn) send(ctx context.Context, b *pgx.Batch, commit bool) error {
	var full pgx.Batch
	full.QueuedQueries = make([]*pgx.QueuedQuery, 0, len(b.QueuedQueries)+2)
	if !t.begun {
		full.Queue("BEGIN")
		t.begun = true
	}
	full.QueuedQueries = append(full.QueuedQueries, b.QueuedQueries...)
	if commit {
		full.Queue("COMMIT")
	}
	return t.conn.SendBatch(ctx, &full).Close()
}

// rollback ends a transaction that did not commit. A connection it cannot
// bring back to idle is not reused: the pool destroys connections released
// inside a transaction.
func (t *txn) rollback(ctx context.Context) {
	if t.begun {
		_, _ = t.conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
	}
}

// batchRows are the rows of a statement sent in a batch; closing them
// finishes the batch so the connection is free for the next statement.
type batchRows struct {
	pgx.Rows
	br     pgx.BatchResults
	closed bool
	err    error
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Close() {
	r.Rows.Close()
	if !r.closed {
		r.closed = true
		r.err = r.br.Close()
	}
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// firstRow is QueryRow's result over batchRows, as pgx's own row behaves.
type firstRow struct {
	rows pgx.Rows
	err  error
}

func (r *firstRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// guardedSQL wraps the data-modifying statement sql so that the server fails
// the transaction (serialization_failure, which a retry can cure) unless it
// touched exactly want rows. The check's arguments follow sql's own.
func guardedSQL(want int64, sql string, args []any) (string, []any) {
	fields := strings.Fields(sql)
	label := strings.Join(fields[:min(3, len(fields))], " ")
	n := len(args)
	return "WITH affected AS (" + sql + " RETURNING 1) SELECT jetcqrs_expect_rows(count(*), $" +
			strconv.Itoa(n+1) + ", $" + strconv.Itoa(n+2) + ") FROM affected",
		append(args[:n:n], want, label)
}
