package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pollQuery reads the oldest unpublished rows with, for each, whether its
// transaction is below the snapshot horizon.
//
// Why this is enough not to skip, duplicate or reorder (per aggregate):
//
//   - seq is taken from a sequence when a row is inserted, but the row
//     becomes visible when its transaction commits, so rows appear out of
//     seq order: a transaction A may insert seq 10, B insert seq 11 and
//     commit first. A relay that kept a "highest seq published" cursor would
//     skip 10. This relay keeps no cursor: published_at IS NULL is the
//     to-do list, and a row leaves it only when the relay marks it, after
//     the stream acknowledged it. No row can be skipped, whenever it
//     commits.
//   - pg_snapshot_xmin(pg_current_snapshot()) is the oldest transaction
//     still running in the snapshot the query reads with. A row whose txid
//     is below it is settled: its transaction has ended and will write
//     nothing more. A visible row at or above it belongs to a transaction
//     that committed while an older one is still running.
//   - The relay publishes, in seq order, the prefix of unpublished visible
//     rows that are settled, and stops at the first visible row that is
//     not. So a committed row above the horizon is never overtaken by a
//     settled row with a larger seq. Together with the write store, which
//     serializes an aggregate's commands with row locks (version n+1 is
//     inserted, hence gets its seq, only after version n committed), an
//     aggregate's events leave in version order: when version n+1 is
//     visible, version n is visible with a smaller seq and comes first.
//   - Rows are marked in the order they were acknowledged, only by the
//     session holding the leader lock, so a relay that lost the leadership
//     cannot mark anything. A crash between the acknowledgement and the
//     mark re-sends nothing: the next leader reads the stream's messages
//     after the ledger's mark back and marks their rows first (reconcile).
//
// The price of the horizon: while a transaction that began before a
// committed row's transaction keeps running (a long batch job), rows behind
// it wait; the relay logs when that lasts.
//
// Columns are read as text, as pgoutput sends them, so both modes decode
// alike; the ORDER BY names the table's column (o.seq), not the text one.
const pollQuery = `SELECT o.seq::text, o.id::text, o.aggregate_type, o.aggregate_id, o.aggregate_version::text,
		o.event_type, o.schema_version::text, o.payload::text, o.headers::text, o.occurred_at::text,
		o.txid < pg_snapshot_xmin(pg_current_snapshot()) AS settled
	FROM ` + outboxTable + ` o
	WHERE o.published_at IS NULL
	ORDER BY o.seq
	LIMIT $1`

// horizonRetry is how soon the relay looks again when rows wait behind the
// horizon; the transaction holding it may end without writing to the
// outbox, so no notification would come.
const horizonRetry = 100 * time.Millisecond

// poll relays with queries on conn, the session holding the leader lock,
// until t.stop ends.
func (r *Relay) poll(t *term, conn *pgx.Conn) error {
	if _, err := conn.Exec(t.stop, `LISTEN `+notifyChannel); err != nil {
		return fmt.Errorf("relay: listen: %w", err)
	}
	var blockedSince time.Time
	lastWarn := time.Time{}
	for {
		if t.stop.Err() != nil {
			return nil
		}
		n, blocked, err := r.pollOnce(t, conn)
		if err != nil {
			if t.stop.Err() != nil {
				return nil
			}
			return err
		}
		switch {
		case !blocked:
			blockedSince = time.Time{}
		case blockedSince.IsZero():
			blockedSince = time.Now()
		case time.Since(blockedSince) > 30*time.Second && time.Since(lastWarn) > time.Minute:
			lastWarn = time.Now()
			r.log.Warn("relay: committed outbox rows wait for an older transaction that is still running",
				"waiting_for", time.Since(blockedSince).Round(time.Second))
		}
		if n == r.cfg.BatchSize {
			continue
		}
		wait := r.cfg.PollInterval
		if blocked {
			wait = min(wait, horizonRetry)
		}
		wctx, cancel := context.WithTimeout(t.stop, wait)
		_, err = conn.WaitForNotification(wctx)
		cancel()
		if err != nil && t.stop.Err() == nil && !pgconn.Timeout(err) {
			return fmt.Errorf("relay: wait for notification: %w", err)
		}
	}
}

// pollOnce publishes the settled prefix of the unpublished rows and marks
// it. blocked reports that it stopped at a row above the horizon.
func (r *Relay) pollOnce(t *term, conn *pgx.Conn) (n int, blocked bool, err error) {
	rows, err := conn.Query(t.stop, pollQuery, r.cfg.BatchSize)
	if err != nil {
		return 0, false, fmt.Errorf("relay: poll: %w", err)
	}
	var events []Event
	for rows.Next() {
		var vals [numColumns][]byte
		var settled bool
		if err := rows.Scan(&vals[colSeq], &vals[colID], &vals[colAggregateType], &vals[colAggregateID],
			&vals[colAggregateVersion], &vals[colEventType], &vals[colSchemaVersion], &vals[colPayload],
			&vals[colHeaders], &vals[colOccurredAt], &settled); err != nil {
			rows.Close()
			return 0, false, fmt.Errorf("relay: poll: %w", err)
		}
		if !settled {
			blocked = true
			break
		}
		ev, err := eventFromText(vals)
		if err != nil {
			rows.Close()
			return 0, false, err
		}
		events = append(events, ev)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, fmt.Errorf("relay: poll: %w", err)
	}
	if len(events) == 0 {
		return 0, blocked, nil
	}
	err = r.publishAll(t.stop, t.hard, events, func(acked []Event, firstSeq uint64) error {
		// hard, not stop: acknowledged rows are marked while draining too.
		return markAcked(t.hard, conn, acked, firstSeq)
	})
	return len(events), blocked, err
}
