package relay

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The ledger is how the relay knows, in every mode and after any crash,
// which outbox rows the stream holds:
//
//   - The relay is the stream's only writer and appends each event at the
//     sequence it names (Publisher.PublishBatch), so the stream holds a
//     gap-free prefix of what the relay sent, in the order it sent it.
//   - A row is marked (published_at, stream_seq) with relay_stream_mark.last_seq
//     raised in the same statement, in stream order, so every message up to
//     the mark is marked. The backfill and the poll relay mark as the
//     stream acknowledges; the CDC relay, to keep the publishing path free
//     of writes, leaves it to keepLedger.
//   - Messages after the mark (a relay that died between an
//     acknowledgement and its mark, or CDC's not yet marked) are read back
//     from the stream (their event ids) and marked by reconcile, which runs
//     before the backfill asks what the stream lacks and before the poll
//     relay sends anything.
//   - The CDC relay itself needs no marks to resume: each event it appends
//     carries its commit position, and a restarted session skips the
//     slot's replay up to the position of the stream's last message.
//
// So after a reconcile an unmarked row is one the stream does not hold,
// whatever happened to the slot, the relay or the mode; that is what the
// backfill and the poll relay publish. An outbox prune deletes marked rows
// only. The duplicate window plays no part.

// errStreamDiverged marks a stream that does not hold what the ledger says
// it appended. Permanent: appending more could only make it worse.
var errStreamDiverged = errors.New("relay: the stream does not hold what the outbox records")

// errResync means the stream holds messages the relay did not just send
// (a leader that lost its lock published for a moment longer): the session
// ends, and the next one learns the stream anew (reconcile) before it sends.
var errResync = errors.New("relay: the stream moved under the relay")

// markChunk bounds the rows one marking statement updates.
const markChunk = 4096

// markBySeqSQL marks acknowledged rows by outbox seq: $1 seqs, $2 their
// stream sequences, $3 the highest of those. It raises the mark only when
// it marked every row, and then returns a row.
const markBySeqSQL = `WITH marked AS (
		UPDATE ` + outboxTable + ` o SET published_at = coalesce(o.published_at, now()), stream_seq = u.sseq
		FROM unnest($1::bigint[], $2::bigint[]) AS u(oseq, sseq) WHERE o.seq = u.oseq
		RETURNING 1)
	INSERT INTO relay_stream_mark (last_seq) SELECT $3 WHERE (SELECT count(*) FROM marked) = cardinality($1::bigint[])
	ON CONFLICT (singleton) DO UPDATE SET last_seq = greatest(relay_stream_mark.last_seq, excluded.last_seq), updated_at = now()
	RETURNING last_seq`

// markByIDSQL marks rows by event id, for messages read back from the
// stream; an id that is no outbox row (pruned) marks nothing.
const markByIDSQL = `WITH marked AS (
		UPDATE ` + outboxTable + ` o SET published_at = coalesce(o.published_at, now()), stream_seq = u.sseq
		FROM unnest($1::text[], $2::bigint[]) AS u(id, sseq) WHERE o.id = u.id::uuid
		RETURNING 1)
	INSERT INTO relay_stream_mark (last_seq) VALUES ($3)
	ON CONFLICT (singleton) DO UPDATE SET last_seq = greatest(relay_stream_mark.last_seq, excluded.last_seq), updated_at = now()`

// execer is a pool, a connection or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// markAcked marks the rows of events, which the stream stored at firstSeq,
// firstSeq+1, …
func markAcked(ctx context.Context, db execer, events []Event, firstSeq uint64) error {
	return markSeqs(ctx, db, outboxSeqs(events), firstSeq)
}

func outboxSeqs(events []Event) []int64 {
	seqs := make([]int64, len(events))
	for i := range events {
		seqs[i] = events[i].Seq
	}
	return seqs
}

// markSeqs marks the rows of outbox seqs, which the stream stored at
// firstSeq, firstSeq+1, …
//
// A transaction's commit reaches logical decoding a moment before other
// sessions see it (the commit record is flushed before the transaction
// leaves the proc array), so a CDC event may be acknowledged before its row
// is visible here: the statement is repeated until it marks every row.
func markSeqs(ctx context.Context, db execer, seqs []int64, firstSeq uint64) error {
	for len(seqs) > 0 {
		n := min(len(seqs), markChunk)
		oseqs, sseqs := seqs[:n], make([]int64, n)
		for i := range n {
			sseqs[i] = int64(firstSeq) + int64(i)
		}
		for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
			var mark int64
			err := db.QueryRow(ctx, markBySeqSQL, oseqs, sseqs, sseqs[n-1]).Scan(&mark)
			if err == nil {
				break
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("relay: mark published: %w", err)
			}
			if !sleep(ctx, wait) {
				return fmt.Errorf("relay: mark published: rows not visible yet: %w", ctx.Err())
			}
		}
		seqs, firstSeq = seqs[n:], firstSeq+uint64(n)
	}
	return nil
}

// reconcile brings the ledger up to the stream: it marks the rows of the
// messages the stream stored after the mark, and returns the stream's last
// sequence, after which the relay appends.
func (r *Relay) reconcile(ctx context.Context, db execer) (uint64, error) {
	last, from, err := r.reconcileFrom(ctx, db)
	if err == nil && from <= last {
		r.log.Info("relay: marked the events the stream stored after the ledger's mark", "from_seq", from, "to_seq", last)
	}
	return last, err
}

// reconcileFrom is reconcile, also returning the first sequence it read
// (last+1 when there was nothing to read).
func (r *Relay) reconcileFrom(ctx context.Context, db execer) (last, from uint64, err error) {
	var mark int64
	err = db.QueryRow(ctx, `SELECT last_seq FROM relay_stream_mark`).Scan(&mark)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, fmt.Errorf("relay: read the stream mark: %w", err)
	}
	last, _, err = r.pub.Last(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("relay: stream's last sequence: %w", err)
	}
	if last < uint64(mark) {
		return 0, 0, permanent(fmt.Errorf("%w: the stream's last sequence is %d but the outbox records events stored "+
			"up to sequence %d, so the stream was re-created or lost events. Fix: point the relay at the stream it "+
			"published to, or, to publish the whole outbox into this stream again, clear the ledger: "+
			"UPDATE outbox_events SET published_at = NULL, stream_seq = NULL; DELETE FROM relay_stream_mark;",
			errStreamDiverged, last, mark))
	}
	if last == uint64(mark) {
		return last, last + 1, nil
	}
	var ids []string
	var seqs []int64
	flush := func() error {
		if len(ids) == 0 {
			return nil
		}
		if _, err := db.Exec(ctx, markByIDSQL, ids, seqs, seqs[len(seqs)-1]); err != nil {
			return fmt.Errorf("relay: mark what the stream holds: %w", err)
		}
		ids, seqs = ids[:0], seqs[:0]
		return nil
	}
	err = r.pub.EventIDs(ctx, uint64(mark), last, func(seq uint64, id string) error {
		if !isUUID([]byte(id)) {
			return permanent(fmt.Errorf("%w: stream message %d has event id %q, which is no outbox event id; "+
				"the relay must be the stream's only writer", errStreamDiverged, seq, id))
		}
		ids, seqs = append(ids, id), append(seqs, int64(seq))
		if len(ids) == markChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return 0, 0, err
	}
	return last, uint64(mark) + 1, nil
}

// learnStored is called after a failed publish of events: it asks the stream
// how many of them it stored (a prefix, possibly longer than the
// acknowledged one) and checks their ids.
func (r *Relay) learnStored(ctx context.Context, events []Event) (int, error) {
	last, _, err := r.pub.Last(ctx)
	if err != nil {
		return 0, fmt.Errorf("relay: stream's last sequence: %w", err)
	}
	switch {
	case last < r.streamLast:
		return 0, permanent(fmt.Errorf("%w: the stream's last sequence went back from %d to %d",
			errStreamDiverged, r.streamLast, last))
	case last-r.streamLast > uint64(len(events)):
		return 0, fmt.Errorf("%w: the stream holds %d messages after sequence %d, more than the %d events sent",
			errResync, last-r.streamLast, r.streamLast, len(events))
	case last == r.streamLast:
		return 0, nil
	}
	i := 0
	err = r.pub.EventIDs(ctx, r.streamLast, last, func(seq uint64, id string) error {
		if i >= len(events) || id != events[i].ID {
			return fmt.Errorf("%w: stream message %d has event id %s where the relay sent %s",
				errResync, seq, id, events[min(i, len(events)-1)].ID)
		}
		i++
		return nil
	})
	if err != nil {
		return 0, err
	}
	if uint64(i) != last-r.streamLast {
		return 0, fmt.Errorf("relay: read %d of the %d messages after sequence %d", i, last-r.streamLast, r.streamLast)
	}
	return i, nil
}

// slotState is what the relay needs to know about its slot before it
// streams.
type slotState struct {
	exists bool
	// active is true while a walsender streams the slot: a previous leader
	// that has not noticed yet that it lost its lock.
	active    bool
	walStatus string
	// snapshot is the snapshot exported with the slot, "" when the relay
	// has none for it (created by hand or by an older version, or poll mode
	// published since).
	snapshot string
	// backfilledSeq is the stream's last sequence when the rows visible in
	// snapshot that the stream did not hold had been published; -1 until
	// then. Only messages after it come from the slot.
	backfilledSeq int64
}

func readSlotState(ctx context.Context, db execer, slot string) (slotState, error) {
	var st slotState
	var walStatus, snapshot *string
	err := db.QueryRow(ctx, `SELECT s.active, s.wal_status, r.snapshot::text, coalesce(r.backfilled_seq, -1)
		FROM pg_replication_slots s LEFT JOIN relay_slots r ON r.slot_name = s.slot_name WHERE s.slot_name = $1`, slot).
		Scan(&st.active, &walStatus, &snapshot, &st.backfilledSeq)
	if errors.Is(err, pgx.ErrNoRows) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("relay: read slot %s: %w", slot, err)
	}
	st.exists = true
	if walStatus != nil {
		st.walStatus = *walStatus
	}
	if snapshot != nil {
		st.snapshot = *snapshot
	}
	return st, nil
}

// prepareSlot makes sure the slot exists, is valid and has its snapshot,
// re-creating it when not, and returns that snapshot (the rows visible in it
// are those the slot will not stream) and the stream's last sequence once
// they were backfilled, -1 if they were not.
func (r *Relay) prepareSlot(ctx context.Context, pool *pgxpool.Pool) (string, int64, error) {
	st, err := readSlotState(ctx, pool, r.cfg.SlotName)
	if err != nil {
		return "", -1, err
	}
	switch {
	case st.active:
		// Nothing is sent, not even a backfill, until the previous leader's
		// walsender is gone.
		return "", -1, fmt.Errorf("%w: streamed by another session", errSlotActive)
	case st.exists && st.walStatus != "lost" && st.snapshot != "":
		return st.snapshot, st.backfilledSeq, nil
	case !st.exists:
		r.log.Warn("relay: replication slot is missing (first start, dropped, or a PostgreSQL failover); " +
			"creating it and backfilling the events committed without it")
	case st.walStatus == "lost":
		r.metrics.slotInvalidated.Inc()
		r.log.Error("relay: replication slot was invalidated by PostgreSQL (wal_status=lost): the WAL it needed " +
			"was removed because the slot fell more than max_slot_wal_keep_size behind; re-creating it and " +
			"backfilling from the outbox every event the stream does not hold")
	default:
		r.log.Warn("relay: replication slot has no recorded snapshot (created outside the relay, or the poll " +
			"relay published since); re-creating it and backfilling the events the stream does not hold")
	}
	snapshot, err := createSlot(ctx, r.cfg, st.exists)
	return snapshot, -1, err
}

// createSlot (re-)creates the slot with an exported snapshot and records the
// snapshot in relay_slots. It holds the install lock, so concurrent Installs
// do not race it. A crash before the record leaves a slot without one, which
// the next start re-creates.
func createSlot(ctx context.Context, cfg Config, dropFirst bool) (string, error) {
	conn, err := cfg.connect(ctx, "install")
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, installLockKey); err != nil {
		return "", fmt.Errorf("relay: create slot: lock: %w", err)
	}
	return createSlotLocked(ctx, cfg, conn, dropFirst)
}

// createSlotLocked is createSlot on a session that holds the install lock.
func createSlotLocked(ctx context.Context, cfg Config, conn *pgx.Conn, dropFirst bool) (string, error) {
	if _, err := conn.Exec(ctx, `DELETE FROM relay_slots WHERE slot_name = $1`, cfg.SlotName); err != nil {
		return "", fmt.Errorf("relay: create slot %s: %w", cfg.SlotName, err)
	}
	if dropFirst {
		if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
			WHERE slot_name = $1`, cfg.SlotName); err != nil {
			return "", fmt.Errorf("relay: drop slot %s: %w", cfg.SlotName, err)
		}
	}
	rcfg, err := pgconn.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return "", permanent(fmt.Errorf("relay: DatabaseURL: %w", err))
	}
	cfg.sessionParams(rcfg.RuntimeParams, "replication")
	rcfg.RuntimeParams["replication"] = "database"
	repl, err := pgconn.ConnectConfig(ctx, rcfg)
	if err != nil {
		return "", fmt.Errorf("relay: replication connection: %w", err)
	}
	defer repl.Close(context.WithoutCancel(ctx))
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, cfg.SlotName, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode:           pglogrepl.LogicalReplication,
		SnapshotAction: "EXPORT_SNAPSHOT",
	})
	if err != nil {
		return "", fmt.Errorf("relay: create replication slot %s: %w", cfg.SlotName, err)
	}
	// The exported snapshot lives while repl stays idle: read it now.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return "", fmt.Errorf("relay: slot %s snapshot: %w", cfg.SlotName, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SET TRANSACTION SNAPSHOT '`+strings.ReplaceAll(res.SnapshotName, `'`, ``)+`'`); err != nil {
		return "", fmt.Errorf("relay: slot %s: import snapshot: %w", cfg.SlotName, err)
	}
	var snapshot string
	if err := tx.QueryRow(ctx, `SELECT pg_current_snapshot()::text`).Scan(&snapshot); err != nil {
		return "", fmt.Errorf("relay: slot %s snapshot: %w", cfg.SlotName, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("relay: slot %s snapshot: %w", cfg.SlotName, err)
	}
	if snapshot, err = normalizeSnapshot(snapshot); err != nil {
		return "", fmt.Errorf("relay: slot %s snapshot: %w", cfg.SlotName, err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO relay_slots (slot_name, snapshot, consistent_lsn) VALUES ($1, $2::pg_snapshot, $3::pg_lsn)`,
		cfg.SlotName, snapshot, res.ConsistentPoint); err != nil {
		return "", fmt.Errorf("relay: record slot %s: %w", cfg.SlotName, err)
	}
	return snapshot, nil
}

// normalizeSnapshot makes a snapshot's text acceptable to pg_snapshot's
// input. The snapshot logical decoding exports may have xmax below xmin;
// visibility tests xmin first (an xid below it is visible), then xmax, so
// such a snapshot sees exactly the xids below xmin, which xmin:xmin: says.
func normalizeSnapshot(s string) (string, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 {
		return "", fmt.Errorf("snapshot %q is not xmin:xmax:xip", s)
	}
	xmin, err1 := strconv.ParseUint(parts[0], 10, 64)
	xmax, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil {
		return "", fmt.Errorf("snapshot %q is not xmin:xmax:xip", s)
	}
	if xmax < xmin {
		return parts[0] + ":" + parts[0] + ":", nil
	}
	return s, nil
}

// backfillQuery reads, in seq order from $2, the rows the stream does not
// hold that committed before the slot existed (visible in its snapshot $1).
// seq order is each aggregate's version order: the write store inserts
// version n+1 only after version n committed.
const backfillQuery = `SELECT o.seq::text, o.id::text, o.aggregate_type, o.aggregate_id, o.aggregate_version::text,
		o.event_type, o.schema_version::text, o.payload::text, o.headers::text, o.occurred_at::text
	FROM ` + outboxTable + ` o
	WHERE o.published_at IS NULL AND o.seq > $2 AND pg_visible_in_snapshot(o.txid, $1::pg_snapshot)
	ORDER BY o.seq
	LIMIT $3`

// backfill publishes every row committed before the slot's snapshot that
// the stream does not hold, and marks it; then it records that the slot is
// backfilled, and after which stream sequence the slot's own events start.
// The ledger must be reconciled first.
func (r *Relay) backfill(t *term, pool *pgxpool.Pool, snapshot string) (int64, error) {
	var after int64
	total := 0
	for {
		rows, err := pool.Query(t.stop, backfillQuery, snapshot, after, r.cfg.BatchSize)
		if err != nil {
			return -1, fmt.Errorf("relay: backfill: %w", err)
		}
		var events []Event
		for rows.Next() {
			var vals [numColumns][]byte
			if err := rows.Scan(&vals[colSeq], &vals[colID], &vals[colAggregateType], &vals[colAggregateID],
				&vals[colAggregateVersion], &vals[colEventType], &vals[colSchemaVersion], &vals[colPayload],
				&vals[colHeaders], &vals[colOccurredAt]); err != nil {
				rows.Close()
				return -1, fmt.Errorf("relay: backfill: %w", err)
			}
			ev, err := eventFromText(vals)
			if err != nil {
				rows.Close()
				return -1, err
			}
			events = append(events, ev)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return -1, fmt.Errorf("relay: backfill: %w", err)
		}
		if len(events) == 0 {
			if _, err := pool.Exec(t.stop, `UPDATE relay_slots SET backfilled_seq = $2 WHERE slot_name = $1`,
				r.cfg.SlotName, int64(r.streamLast)); err != nil {
				return -1, fmt.Errorf("relay: backfill: %w", err)
			}
			if total > 0 {
				r.log.Info("relay: backfill done", "events", total)
			}
			return int64(r.streamLast), nil
		}
		if total == 0 {
			r.log.Info("relay: backfilling the events committed before the slot that the stream does not hold")
		}
		err = r.publishAll(t.stop, t.hard, events, func(acked []Event, firstSeq uint64) error {
			r.metrics.backfilled.Add(float64(len(acked)))
			return markAcked(t.hard, pool, acked, firstSeq)
		})
		if err != nil {
			return -1, err
		}
		total += len(events)
		after = events[len(events)-1].Seq
	}
}
