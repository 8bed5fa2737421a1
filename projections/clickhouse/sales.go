// Package chstore keeps the sales analytics read model in ClickHouse, over
// the native protocol: one row per order line, in a table per read-model
// generation, reported by day, SKU and category.
//
// The schema and the SQL stay within what ClickHouse 18.16 and current
// releases both accept: no LowCardinality, no DateTime64, no server-side
// query parameters.
package chstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"

	"github.com/jetcqrs/jetcqrs/domain"
	"github.com/jetcqrs/jetcqrs/projections"
)

// SalesStore is the sales read model. Its table holds one row per order line
// and event: OrderPlaced writes the lines, OrderCancelled writes them again
// with cancelled = 1. The table is a ReplacingMergeTree versioned by the
// order's aggregate version and keyed by (order_id, line_no), so for each
// line the row of the newest order version wins whatever order the rows
// arrived in: an OrderPlaced re-published after its cancellation (with a new,
// higher stream sequence) never brings the order back. A row depends on its
// event only, so an event applied again (redelivered, replayed, re-published)
// adds an identical duplicate, which merges away. Reports pick each line's
// newest row themselves (argMax by version) instead of trusting merges, which
// happen at the server's leisure.
type SalesStore struct {
	conn  driver.Conn
	table string // the table's name
	ident string // the table's name, quoted for SQL
}

var (
	_ projections.Applier     = (*SalesStore)(nil)
	_ projections.SalesReader = (*SalesStore)(nil)
)

// EventTypes are the events the sales model reads; its projection's
// consumers need no others.
var EventTypes = []string{domain.EventOrderPlaced, domain.EventOrderCancelled}

var generationPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// NewSalesStore returns the sales model of one generation, such as "g1",
// kept in the table sales_lines_<generation> of the connection's database.
// A generation is 1 to 64 letters, digits, '-' or '_'.
func NewSalesStore(conn driver.Conn, generation string) (*SalesStore, error) {
	if !generationPattern.MatchString(generation) {
		return nil, fmt.Errorf("chstore: generation %q: want 1 to 64 letters, digits, - or _", generation)
	}
	table := "sales_lines_" + generation
	return &SalesStore{conn: conn, table: table, ident: "`" + table + "`"}, nil
}

// Table is the name of the generation's table.
func (s *SalesStore) Table() string { return s.table }

// EnsureSchema creates the generation's table when it does not exist.
// placed_at is the time in seconds, for people; placed_at_us is the same in
// microseconds, which reports filter on so that [from, to) is exact.
func (s *SalesStore) EnsureSchema(ctx context.Context) error {
	err := s.conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.ident+` (
	order_id String,
	line_no UInt16,
	sku String,
	category String,
	day Date,
	placed_at DateTime,
	placed_at_us Int64,
	quantity Int64,
	price_cents Int64,
	cancelled UInt8,
	version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (order_id, line_no)`)
	if err != nil {
		return fmt.Errorf("chstore: create table %s: %w", s.table, err)
	}
	// A table of an earlier build was versioned by the stream sequence.
	var versioned uint64
	if err := s.conn.QueryRow(ctx, `SELECT count() FROM system.columns
WHERE database = currentDatabase() AND table = ? AND name = 'version'`, s.table).Scan(&versioned); err != nil {
		return fmt.Errorf("chstore: columns of %s: %w", s.table, err)
	}
	if versioned == 0 {
		return fmt.Errorf("%w (%s has no version column)", ErrSchemaMismatch, s.table)
	}
	return nil
}

// ErrSchemaMismatch is returned by EnsureSchema for a table created by an
// earlier build with another layout; rebuild the read model into a new
// generation.
var ErrSchemaMismatch = errors.New("chstore: table was created with another sales layout; rebuild it into a new generation")

// Drop deletes the generation's table, if it exists.
func (s *SalesStore) Drop(ctx context.Context) error {
	if err := s.conn.Exec(ctx, "DROP TABLE IF EXISTS "+s.ident); err != nil {
		return fmt.Errorf("chstore: drop table %s: %w", s.table, err)
	}
	return nil
}

// salesLine is one row of the table.
type salesLine struct {
	orderID    string
	lineNo     uint16
	sku        string
	category   string
	day        time.Time
	placedAt   time.Time
	placedAtUS int64
	quantity   int64
	priceCents int64
	cancelled  uint8
	version    uint64
}

// Apply inserts the lines of the OrderPlaced and OrderCancelled events of the
// batch in one INSERT; other events are ignored.
func (s *SalesStore) Apply(ctx context.Context, events []projections.Envelope) error {
	var lines []salesLine
	var poison error
	for _, e := range events {
		ls, err := decodeSalesEvent(e)
		if err != nil {
			poison = err
			break
		}
		lines = append(lines, ls...)
	}
	if len(lines) > 0 {
		if err := s.insert(ctx, lines); err != nil {
			return fmt.Errorf("chstore: apply to %s: %w", s.table, classify(err))
		}
	}
	return poison
}

// insert sends lines as one block. The INSERT names its columns and goes
// through PrepareBatch, the native protocol's insert, which every server
// version speaks.
func (s *SalesStore) insert(ctx context.Context, lines []salesLine) error {
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.ident+
		" (order_id, line_no, sku, category, day, placed_at, placed_at_us, quantity, price_cents, cancelled, version)")
	if err != nil {
		return fmt.Errorf("prepare insert: %w", err)
	}
	defer batch.Close()
	for _, l := range lines {
		if err := batch.Append(l.orderID, l.lineNo, l.sku, l.category, l.day, l.placedAt, l.placedAtUS,
			l.quantity, l.priceCents, l.cancelled, l.version); err != nil {
			return fmt.Errorf("append row of order %s: %w", l.orderID, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("send insert: %w", err)
	}
	return nil
}

// decodeSalesEvent returns the rows an event writes: none for the events the
// model does not follow.
func decodeSalesEvent(e projections.Envelope) ([]salesLine, error) {
	var cancelled uint8
	switch e.EventType {
	case domain.EventOrderPlaced:
	case domain.EventOrderCancelled:
		cancelled = 1
	default:
		return nil, nil
	}
	poison := func(format string, args ...any) error {
		return &projections.PoisonError{Seq: e.Seq, Reason: e.EventType + ": " + fmt.Sprintf(format, args...)}
	}
	if e.SchemaVersion < 0 || e.SchemaVersion > domain.CurrentSchemaVersion {
		return nil, poison("unknown schema version %d", e.SchemaVersion)
	}
	// Both events embed the order snapshot at their top level.
	var snap domain.OrderSnapshot
	if err := json.Unmarshal(e.Payload, &snap); err != nil {
		return nil, poison("decode payload: %v", err)
	}
	if snap.OrderID == "" {
		return nil, poison("payload has no order_id")
	}
	if snap.Version < 1 {
		return nil, poison("order version %d is not positive", snap.Version)
	}
	if len(snap.Items) > math.MaxUint16+1 {
		return nil, poison("%d lines is more than the table numbers", len(snap.Items))
	}
	placed := snap.PlacedAt.UTC()
	day := time.Date(placed.Year(), placed.Month(), placed.Day(), 0, 0, 0, 0, time.UTC)
	lines := make([]salesLine, len(snap.Items))
	for i, it := range snap.Items {
		lines[i] = salesLine{
			orderID:    snap.OrderID,
			lineNo:     uint16(i),
			sku:        it.SKU,
			category:   it.Category,
			day:        day,
			placedAt:   placed.Truncate(time.Second),
			placedAtUS: placed.UnixMicro(),
			quantity:   it.Quantity,
			priceCents: it.PriceCents,
			cancelled:  cancelled,
			version:    uint64(snap.Version),
		}
	}
	return lines, nil
}

// groupKeys are the report's group_by values and the key each groups by.
var groupKeys = map[string]string{
	"day":      "toString(line_day)",
	"sku":      "line_sku",
	"category": "line_category",
}

// Sales reports the orders that are not cancelled, placed in [q.From, q.To),
// grouped by q.GroupBy ("day" keys are YYYY-MM-DD in UTC) and ordered by key.
//
// The inner query takes each line's newest row (argMax by version): un-merged
// duplicates count once and a cancellation hides the line. It filters on
// placed_at only, which no event changes, so the filter cannot pick an older
// row of a line; cancelled is filtered after the pick. (FINAL with WHERE
// cancelled = 0 is not safe: where the condition moves to PREWHERE, rows are
// filtered before the replacing merge and a cancelled line's placed row
// survives.)
func (s *SalesStore) Sales(ctx context.Context, q projections.SalesQuery) ([]projections.SalesRow, error) {
	key, ok := groupKeys[q.GroupBy]
	if !ok {
		return nil, fmt.Errorf("chstore: sales: unknown group_by %q: want day, sku or category", q.GroupBy)
	}
	report := []projections.SalesRow{}
	if !q.From.Before(q.To) {
		return report, nil
	}
	from, to := q.From.UTC(), q.To.UTC()
	// The day bounds only let ClickHouse skip partitions and parts; the
	// microsecond bounds decide.
	rows, err := s.conn.Query(ctx, `SELECT `+key+` AS k,
	uniqExact(order_id), sum(line_quantity), sum(line_quantity * line_price_cents)
FROM (
	SELECT order_id,
		argMax(sku, version) AS line_sku,
		argMax(category, version) AS line_category,
		argMax(day, version) AS line_day,
		argMax(quantity, version) AS line_quantity,
		argMax(price_cents, version) AS line_price_cents,
		argMax(cancelled, version) AS line_cancelled
	FROM `+s.ident+`
	WHERE day >= toDate(?) AND day <= toDate(?) AND placed_at_us >= ? AND placed_at_us < ?
	GROUP BY order_id, line_no
)
WHERE line_cancelled = 0
GROUP BY k
ORDER BY k`, from.Format(time.DateOnly), to.Format(time.DateOnly), ceilMicro(from), ceilMicro(to))
	if err != nil {
		return nil, fmt.Errorf("chstore: sales from %s: %w", s.table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r      projections.SalesRow
			orders uint64
		)
		if err := rows.Scan(&r.Key, &orders, &r.Units, &r.RevenueCents); err != nil {
			return nil, fmt.Errorf("chstore: sales from %s: %w", s.table, err)
		}
		r.Orders = int64(orders)
		report = append(report, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chstore: sales from %s: %w", s.table, err)
	}
	return report, nil
}

// ceilMicro is t in Unix microseconds, rounded up: for placed_at_us, kept in
// whole microseconds, "placed_at_us >= ceilMicro(t)" is "placed_at >= t" and
// "placed_at_us < ceilMicro(t)" is "placed_at < t".
func ceilMicro(t time.Time) int64 {
	us := t.UnixMicro()
	if t.Nanosecond()%1000 != 0 {
		us++
	}
	return us
}

// permanentCodes are the ClickHouse exceptions that name the rows of an
// INSERT themselves: a value the column's type cannot hold or parse. Sending
// the same rows again cannot succeed. Every other exception (too many parts,
// memory limits, a readonly or restarting server, a missing table) and every
// network error is a state of the server, which a retry outlives.
var permanentCodes = map[int32]bool{
	6:   true, // CANNOT_PARSE_TEXT
	27:  true, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
	38:  true, // CANNOT_PARSE_DATE
	41:  true, // CANNOT_PARSE_DATETIME
	53:  true, // TYPE_MISMATCH
	69:  true, // ARGUMENT_OUT_OF_BOUND
	70:  true, // CANNOT_CONVERT_TYPE
	72:  true, // CANNOT_PARSE_NUMBER
	131: true, // TOO_LARGE_STRING_SIZE
	321: true, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
}

// classify marks a server exception with its name, as the store's reply, and
// as a rejection when it is one of permanentCodes.
func classify(err error) error {
	var ex *proto.Exception
	if !errors.As(err, &ex) {
		return err
	}
	reply := ex.CodeName
	if reply == "" {
		reply = fmt.Sprintf("code_%d", ex.Code)
	}
	err = projections.WithReply(reply, err)
	if permanentCodes[ex.Code] {
		return fmt.Errorf("%w: %w", projections.ErrRejected, err)
	}
	return err
}
