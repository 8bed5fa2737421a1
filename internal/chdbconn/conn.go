//go:build chdb

package chdbconn

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	chdb "github.com/chdb-io/chdb-go/chdb-purego"
)

// Conn is a chDB session behind clickhouse-go's driver.Conn. It serves what a
// store needs of a connection: Exec, Query, QueryRow, PrepareBatch, Ping and
// Close; the embedded nil driver.Conn panics on the other methods, as
// clickhouse-go recommends for adapters.
//
// chDB runs one session per process, so a program opens one Conn and shares
// it; Conn runs one statement at a time. Arguments are bound on the client,
// as clickhouse-go does over the native protocol.
type Conn struct {
	driver.Conn
	mu      sync.Mutex
	session chdb.ChdbConn // nil once closed
}

var _ driver.Conn = (*Conn)(nil)

// Open starts the process's chDB session. connString is chdb-go's:
// ":memory:" keeps the data in a temporary directory that Close removes.
// Opening a second session closes the first.
func Open(connString string) (*Conn, error) {
	session, err := chdb.NewConnectionFromConnString(connString)
	if err != nil {
		return nil, fmt.Errorf("chdbconn: open %q: %w", connString, err)
	}
	return &Conn{session: session}, nil
}

// run executes one statement and returns its output in resultFormat.
func (c *Conn) run(ctx context.Context, query string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == nil {
		return "", errors.New("chdbconn: connection is closed")
	}
	res, err := c.session.Query(query, resultFormat)
	if err != nil {
		return "", fmt.Errorf("chdb: %w", err)
	}
	defer res.Free()
	return res.String(), nil
}

// Exec runs a statement whose ? placeholders take args.
func (c *Conn) Exec(ctx context.Context, query string, args ...any) error {
	q, err := bind(query, args...)
	if err != nil {
		return err
	}
	_, err = c.run(ctx, q)
	return err
}

// Query runs a query whose ? placeholders take args and returns its whole
// result.
func (c *Conn) Query(ctx context.Context, query string, args ...any) (driver.Rows, error) {
	q, err := bind(query, args...)
	if err != nil {
		return nil, err
	}
	out, err := c.run(ctx, q)
	if err != nil {
		return nil, err
	}
	return parseRows(out)
}

// QueryRow is Query for one row: its Scan reads the first row, or returns
// sql.ErrNoRows.
func (c *Conn) QueryRow(ctx context.Context, query string, args ...any) driver.Row {
	r, err := c.Query(ctx, query, args...)
	if err != nil {
		return &row{err: err}
	}
	return &row{rows: r.(*rows)}
}

// Ping runs SELECT 1.
func (c *Conn) Ping(ctx context.Context) error {
	_, err := c.run(ctx, "SELECT 1")
	return err
}

// Close ends the session; with ":memory:" its data is gone.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session != nil {
		c.session.Close()
		c.session = nil
	}
	return nil
}

// insertPattern is the INSERT a batch takes: a table and, optionally, its
// columns, without data.
var insertPattern = regexp.MustCompile("(?is)^\\s*INSERT\\s+INTO\\s+(`[^`]+`|[\\w.]+)\\s*(\\([^)]*\\))?\\s*$")

// PrepareBatch starts an INSERT whose rows Append renders as VALUES; Send runs
// it as one statement.
func (c *Conn) PrepareBatch(ctx context.Context, query string, _ ...driver.PrepareBatchOption) (driver.Batch, error) {
	if !insertPattern.MatchString(query) {
		return nil, fmt.Errorf("chdbconn: PrepareBatch(%q): want INSERT INTO table [(columns)]", query)
	}
	return &batch{conn: c, ctx: ctx, insert: strings.TrimSpace(query)}, nil
}

// batch serves the driver.Batch methods a store uses: Append, Send, Abort,
// Close, IsSent and Rows; the embedded nil driver.Batch panics on the others.
type batch struct {
	driver.Batch
	conn   *Conn
	ctx    context.Context
	insert string
	values []string // one "(v1, v2, ...)" per row
	sent   bool
}

func (b *batch) Append(v ...any) error {
	if b.sent {
		return errors.New("chdbconn: Append to a batch already sent")
	}
	lits := make([]string, len(v))
	for i, x := range v {
		lit, err := literal(x)
		if err != nil {
			return fmt.Errorf("chdbconn: append column %d: %w", i+1, err)
		}
		lits[i] = lit
	}
	b.values = append(b.values, "("+strings.Join(lits, ", ")+")")
	return nil
}

// Send runs the INSERT with every row appended; a batch without rows sends
// nothing.
func (b *batch) Send() error {
	if b.sent {
		return errors.New("chdbconn: batch already sent")
	}
	b.sent = true
	if len(b.values) == 0 {
		return nil
	}
	_, err := b.conn.run(b.ctx, b.insert+" VALUES "+strings.Join(b.values, ", "))
	return err
}

func (b *batch) Abort() error {
	b.sent = true
	b.values = nil
	return nil
}

func (b *batch) Close() error {
	if !b.sent {
		return b.Abort()
	}
	return nil
}

func (b *batch) IsSent() bool { return b.sent }
func (b *batch) Rows() int    { return len(b.values) }
